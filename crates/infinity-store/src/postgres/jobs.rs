//! The job queue on PostgreSQL: the same table and states as the embedded
//! engine, with `FOR UPDATE SKIP LOCKED` so that workers on many nodes take
//! distinct jobs without waiting for each other.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{count, PostgresStore};
use crate::error::StoreResult;
use crate::ids::Id;
use crate::jobs::{counts_by_state, lease_end, JobQueue, JobRecord, JobState};
use crate::model::NewJob;
use crate::rows::{records, to_ms, JobRow};

#[async_trait]
impl JobQueue for PostgresStore {
    async fn enqueue(&self, job: NewJob) -> StoreResult<Id> {
        count("enqueue");
        let id = self.ids().next_random_shard();
        let now = to_ms(Utc::now());
        self.execute(
            sqlx::query(
                "INSERT INTO jobs (id, kind, payload, state, run_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'queued', $4, $4, $4)",
            )
            .bind(id)
            .bind(&job.kind)
            .bind(job.payload.to_string())
            .bind(now),
        )
        .await?;
        Ok(id)
    }

    async fn take(&self, worker: &str, lease: Duration) -> StoreResult<Option<JobRecord>> {
        count("take_job");
        let now = to_ms(Utc::now());
        let row: Option<JobRow> = sqlx::query_as(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
               attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs \
               WHERE (state = 'queued' AND run_at <= $3) \
                  OR (state = 'running' AND lease_until < $3) \
               ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(worker)
        .bind(lease_end(lease))
        .bind(now)
        .fetch_optional(&self.primary_pool()?)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn extend(&self, id: Id, worker: &str, lease: Duration) -> StoreResult<bool> {
        count("extend_job");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE jobs SET lease_until = $1, updated_at = $2 \
                     WHERE id = $3 AND state = 'running' AND lease_owner = $4",
                )
                .bind(lease_end(lease))
                .bind(to_ms(Utc::now()))
                .bind(id)
                .bind(worker),
            )
            .await?;
        Ok(rows == 1)
    }

    async fn complete(&self, id: Id, worker: &str) -> StoreResult<bool> {
        count("complete_job");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_until = NULL, \
                       updated_at = $1 \
                     WHERE id = $2 AND state = 'running' AND lease_owner = $3",
                )
                .bind(to_ms(Utc::now()))
                .bind(id)
                .bind(worker),
            )
            .await?;
        Ok(rows == 1)
    }

    async fn fail(
        &self,
        id: Id,
        worker: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        count("fail_job");
        let (state, run_at) = match retry_at {
            Some(at) => ("queued", Some(to_ms(at))),
            None => ("dead", None),
        };
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE jobs SET state = $1, run_at = coalesce($2, run_at), last_error = $3, \
                       lease_owner = NULL, lease_until = NULL, updated_at = $4 \
                     WHERE id = $5 AND state = 'running' AND lease_owner = $6",
                )
                .bind(state)
                .bind(run_at)
                .bind(error)
                .bind(to_ms(Utc::now()))
                .bind(id)
                .bind(worker),
            )
            .await?;
        Ok(rows == 1)
    }

    async fn jobs(&self, state: Option<JobState>, limit: u32) -> StoreResult<Vec<JobRecord>> {
        count("list_jobs");
        let rows: Vec<JobRow> = sqlx::query_as(
            "SELECT * FROM jobs WHERE ($1::text IS NULL OR state = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(state.map(JobState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.primary_pool()?)
        .await?;
        records(rows)
    }

    async fn retry(&self, id: Id) -> StoreResult<bool> {
        count("retry_job");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $1, updated_at = $1 \
                     WHERE id = $2 AND state = 'dead'",
                )
                .bind(to_ms(Utc::now()))
                .bind(id),
            )
            .await?;
        Ok(rows == 1)
    }

    async fn discard(&self, id: Id) -> StoreResult<bool> {
        count("discard_job");
        let rows = self
            .execute(sqlx::query("DELETE FROM jobs WHERE id = $1 AND state = 'dead'").bind(id))
            .await?;
        Ok(rows == 1)
    }

    async fn counts(&self) -> StoreResult<Vec<(JobState, u64)>> {
        count("count_jobs");
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                .fetch_all(&self.primary_pool()?)
                .await?;
        Ok(counts_by_state(&rows))
    }
}
