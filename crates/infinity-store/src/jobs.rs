//! The embedded job queue: jobs are rows of the `jobs` table, written in the
//! same transaction as their cause and taken by workers under a lease.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;

use crate::error::StoreResult;
use crate::ids::Id;
use crate::model::NewJob;
use crate::rows::{to_ms, JobRow};
use crate::sqlite::count_query;
use crate::SqliteStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at` time and a worker, or, with a broker, for
    /// the relay to publish it.
    Queued,
    /// Handed to the broker, which holds its message until a worker takes it.
    Published,
    /// Held by a worker until its lease ends.
    Running,
    Done,
    /// Failed too often; kept for an operator to retry or discard.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Published,
        JobState::Running,
        JobState::Done,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Published => "published",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    pub id: Id,
    pub kind: String,
    pub payload: serde_json::Value,
    pub state: JobState,
    /// Times a worker has taken the job, this run included.
    pub attempts: u32,
    pub run_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A durable job queue with leases. A worker that dies leaves its job to be
/// taken again once the lease has run out, so handlers must make their
/// effects idempotent.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Enqueues a job on its own, outside any other write.
    async fn enqueue(&self, job: NewJob) -> StoreResult<Id>;
    /// Takes the next due job (queued and due, or running with an expired
    /// lease) and leases it to `worker` for `lease`.
    async fn take(&self, worker: &str, lease: Duration) -> StoreResult<Option<JobRecord>>;
    /// Extends the lease; false when `worker` no longer holds the job.
    async fn extend(&self, id: Id, worker: &str, lease: Duration) -> StoreResult<bool>;
    /// Marks the job done. Returns false when `worker` no longer has the lease.
    async fn complete(&self, id: Id, worker: &str) -> StoreResult<bool>;
    /// Records a failure: the job runs again at `retry_at`, or becomes dead
    /// when that is `None`. Returns false when `worker` no longer has the lease.
    async fn fail(
        &self,
        id: Id,
        worker: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;
    /// Jobs in `state` (all states when `None`), newest first.
    async fn jobs(&self, state: Option<JobState>, limit: u32) -> StoreResult<Vec<JobRecord>>;
    /// Queues a dead job again with its attempts reset; false if it is not dead.
    async fn retry(&self, id: Id) -> StoreResult<bool>;
    /// Deletes a dead job; false if it is not dead.
    async fn discard(&self, id: Id) -> StoreResult<bool>;
    /// Counts the jobs in each state.
    async fn counts(&self) -> StoreResult<Vec<(JobState, u64)>>;
}

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRecord> {
    JobRow::from_row(row)?.try_into()
}

/// Turns `(state, count)` rows into a count for every state, zero for the
/// states without rows.
pub(crate) fn counts_by_state(rows: &[(String, i64)]) -> Vec<(JobState, u64)> {
    JobState::ALL
        .into_iter()
        .map(|state| {
            let count = rows
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n as u64);
            (state, count)
        })
        .collect()
}

/// The end of a lease taken now, in Unix milliseconds.
pub(crate) fn lease_end(lease: Duration) -> i64 {
    to_ms(Utc::now()) + lease.as_millis() as i64
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn enqueue(&self, job: NewJob) -> StoreResult<Id> {
        count_query("enqueue");
        let id = self.ids().next_random_shard();
        let now = to_ms(Utc::now());
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, run_at, created_at, updated_at) \
             VALUES (?, ?, ?, 'queued', ?, ?, ?)",
        )
        .bind(id)
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(id)
    }

    async fn take(&self, worker: &str, lease: Duration) -> StoreResult<Option<JobRecord>> {
        count_query("take_job");
        let now = to_ms(Utc::now());
        // One writer connection serialises this statement, so two workers
        // never take the same job.
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, \
               attempts = attempts + 1, updated_at = ? \
             WHERE id = (SELECT id FROM jobs \
               WHERE (state = 'queued' AND run_at <= ?) OR (state = 'running' AND lease_until < ?) \
               ORDER BY run_at, id LIMIT 1) \
             RETURNING *",
        )
        .bind(worker)
        .bind(lease_end(lease))
        .bind(now)
        .bind(now)
        .bind(now)
        .fetch_optional(self.writer())
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn extend(&self, id: Id, worker: &str, lease: Duration) -> StoreResult<bool> {
        count_query("extend_job");
        Ok(sqlx::query(
            "UPDATE jobs SET lease_until = ?, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(lease_end(lease))
        .bind(to_ms(Utc::now()))
        .bind(id)
        .bind(worker)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    async fn complete(&self, id: Id, worker: &str) -> StoreResult<bool> {
        count_query("complete_job");
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(to_ms(Utc::now()))
        .bind(id)
        .bind(worker)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    async fn fail(
        &self,
        id: Id,
        worker: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        count_query("fail_job");
        let (state, run_at) = match retry_at {
            Some(at) => ("queued", Some(to_ms(at))),
            None => ("dead", None),
        };
        Ok(sqlx::query(
            "UPDATE jobs SET state = ?, run_at = coalesce(?, run_at), last_error = ?, \
               lease_owner = NULL, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(to_ms(Utc::now()))
        .bind(id)
        .bind(worker)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    async fn jobs(&self, state: Option<JobState>, limit: u32) -> StoreResult<Vec<JobRecord>> {
        count_query("list_jobs");
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(state.map(JobState::as_str))
        .bind(state.map(JobState::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.writer())
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn retry(&self, id: Id) -> StoreResult<bool> {
        count_query("retry_job");
        let now = to_ms(Utc::now());
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?, updated_at = ? \
             WHERE id = ? AND state = 'dead'",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    async fn discard(&self, id: Id) -> StoreResult<bool> {
        count_query("discard_job");
        Ok(
            sqlx::query("DELETE FROM jobs WHERE id = ? AND state = 'dead'")
                .bind(id)
                .execute(self.writer())
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn counts(&self) -> StoreResult<Vec<(JobState, u64)>> {
        count_query("count_jobs");
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
                .fetch_all(self.reader())
                .await?;
        Ok(counts_by_state(&rows))
    }
}
