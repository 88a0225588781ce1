//! The outbox on PostgreSQL: the same statements as on SQLite, with
//! `FOR UPDATE SKIP LOCKED` so that the relays of several nodes claim
//! distinct rows without waiting for each other.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;

use super::{count, PostgresStore};
use crate::error::StoreResult;
use crate::ids::Id;
use crate::jobs::{lease_end, JobRecord};
use crate::outbox::{
    not_started, stats_from_rows, KindStats, Outbox, StartOutcome, KIND_STATS_SQL, STARTABLE,
};
use crate::rows::{records, to_ms, JobRow};

#[async_trait]
impl Outbox for PostgresStore {
    async fn claim_unpublished(
        &self,
        relay: &str,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<JobRecord>> {
        count("claim_outbox");
        let rows: Vec<JobRow> = sqlx::query_as(
            "UPDATE jobs SET lease_owner = $1, lease_until = $2, updated_at = $3 \
             WHERE id IN (SELECT id FROM jobs \
               WHERE state = 'queued' \
                 AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1) \
               ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(relay)
        .bind(lease_end(lease))
        .bind(to_ms(Utc::now()))
        .bind(i64::from(limit))
        .fetch_all(&self.primary_pool()?)
        .await?;
        let mut jobs = records(rows)?;
        jobs.sort_by_key(|job: &JobRecord| job.id);
        Ok(jobs)
    }

    async fn mark_published(&self, relay: &str, ids: &[Id]) -> StoreResult<u64> {
        count("mark_published");
        self.execute(
            sqlx::query(
                "UPDATE jobs SET state = 'published', lease_owner = NULL, lease_until = NULL, \
                   updated_at = $1 \
                 WHERE id = ANY($2) AND state = 'queued' AND lease_owner = $3",
            )
            .bind(to_ms(Utc::now()))
            .bind(ids)
            .bind(relay),
        )
        .await
    }

    async fn start(&self, id: Id, worker: &str, lease: Duration) -> StoreResult<StartOutcome> {
        count("start_job");
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2, \
               attempts = attempts + 1, updated_at = $3 \
             WHERE id = $4 AND {} RETURNING *",
            STARTABLE.replace("{now}", "$3")
        );
        let pool = self.primary_pool()?;
        let row: Option<JobRow> = sqlx::query_as(&sql)
            .bind(worker)
            .bind(lease_end(lease))
            .bind(to_ms(Utc::now()))
            .bind(id)
            .fetch_optional(&pool)
            .await?;
        if let Some(row) = row {
            return Ok(StartOutcome::Started(row.try_into()?));
        }
        let state: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT state, lease_until FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&pool)
                .await?;
        Ok(not_started(state))
    }

    async fn defer(&self, id: Id, worker: &str, error: &str) -> StoreResult<bool> {
        count("defer_job");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE jobs SET state = 'published', last_error = $1, lease_owner = NULL, \
                       lease_until = NULL, updated_at = $2 \
                     WHERE id = $3 AND state = 'running' AND lease_owner = $4",
                )
                .bind(error)
                .bind(to_ms(Utc::now()))
                .bind(id)
                .bind(worker),
            )
            .await?;
        Ok(rows == 1)
    }

    async fn bury(&self, id: Id, error: &str) -> StoreResult<bool> {
        count("bury_job");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE jobs SET state = 'dead', last_error = $1, lease_owner = NULL, \
                       lease_until = NULL, updated_at = $2 \
                     WHERE id = $3 AND state NOT IN ('done', 'dead')",
                )
                .bind(error)
                .bind(to_ms(Utc::now()))
                .bind(id),
            )
            .await?;
        Ok(rows == 1)
    }

    async fn kind_stats(&self, window: Duration) -> StoreResult<Vec<KindStats>> {
        count("job_kind_stats");
        let since = to_ms(Utc::now()) - window.as_millis() as i64;
        let rows: Vec<(String, String, i64, i64, i64)> =
            sqlx::query_as(&KIND_STATS_SQL.replace("{since}", "$1"))
                .bind(since)
                .fetch_all(&self.primary_pool()?)
                .await?;
        Ok(stats_from_rows(rows))
    }

    async fn pending_before(&self, kind: &str, created_at: i64) -> StoreResult<u64> {
        count("pending_jobs_before");
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM jobs WHERE kind = $1 AND created_at <= $2 \
               AND state IN ('queued', 'published', 'running')",
        )
        .bind(kind)
        .bind(created_at)
        .fetch_one(&self.primary_pool()?)
        .await?;
        Ok(count as u64)
    }
}
