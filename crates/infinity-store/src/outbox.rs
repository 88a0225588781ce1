//! The `jobs` table as a transactional outbox in front of a message broker.
//!
//! A job row is written with the change that causes it, as for the embedded
//! queue. A relay claims `queued` rows, publishes them, and marks them
//! `published` once the broker has confirmed them. Workers that consume the
//! broker's messages record each run on the row, so that the table stays the
//! record of truth and a message delivered twice runs its job once.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;

use crate::error::StoreResult;
use crate::ids::Id;
use crate::jobs::{lease_end, JobQueue, JobRecord, JobState};
use crate::rows::{to_ms, JobRow};
use crate::sqlite::count_query;
use crate::SqliteStore;

/// The state of a job row when a worker requests to run it.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// The worker now holds the job under a lease; `attempts` counts this run.
    Started(JobRecord),
    /// Another worker holds a lease that has not expired yet.
    Busy,
    /// The job has already run to completion.
    Done,
    /// The job is dead; an operator retries or discards it.
    Dead,
    /// No such row: the job was discarded.
    Missing,
}

/// Per-kind job figures, for `infinity status` and the expected wait of an
/// upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStats {
    pub kind: String,
    /// Rows not yet done or dead: queued, published or running.
    pub pending: u64,
    /// Rows that became done within the window.
    pub done_recently: u64,
    /// Rows that became dead within the window.
    pub dead_recently: u64,
    /// Pending rows that have failed at least once and wait for a retry.
    pub retrying: u64,
    /// Dead rows in total.
    pub dead: u64,
}

/// The outbox operations of a job table that feeds a broker.
#[async_trait]
pub trait Outbox: JobQueue {
    /// Claims up to `limit` queued rows that no other relay holds under a
    /// live lease, oldest first, and leases them to `relay` for `lease`.
    async fn claim_unpublished(
        &self,
        relay: &str,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<JobRecord>>;
    /// Marks rows that `relay` claimed as published. Returns how many it
    /// marked: a row that a worker has started meanwhile stays as it is.
    async fn mark_published(&self, relay: &str, ids: &[Id]) -> StoreResult<u64>;
    /// Starts a run of job `id` for `worker`: a queued or published row, or a
    /// running one whose lease has expired, becomes running under a new
    /// lease with one more attempt.
    async fn start(&self, id: Id, worker: &str, lease: Duration) -> StoreResult<StartOutcome>;
    /// Records a failed run whose retry waits in the broker: the row held by
    /// `worker` goes back to published, with `error`. Returns false when
    /// `worker` no longer has the lease.
    async fn defer(&self, id: Id, worker: &str, error: &str) -> StoreResult<bool>;
    /// Marks a job dead that the broker dead-lettered on its own (its
    /// delivery limit), unless it is done or dead already.
    async fn bury(&self, id: Id, error: &str) -> StoreResult<bool>;
    /// Returns the figures of each job kind, with `window` for the recent
    /// counts, ordered by kind.
    async fn kind_stats(&self, window: Duration) -> StoreResult<Vec<KindStats>>;
    /// Counts the pending jobs of `kind` created at or before `created_at`
    /// (Unix milliseconds), the jobs ahead of a new one in a first-in,
    /// first-out queue.
    async fn pending_before(&self, kind: &str, created_at: i64) -> StoreResult<u64>;
}

/// The SQL condition of a row that a worker may start at `now` (bound as
/// the single parameter `now`).
pub(crate) const STARTABLE: &str =
    "(state IN ('queued', 'published') OR (state = 'running' AND lease_until < {now}))";

/// Classifies a row that `start` did not update, from its state and lease.
pub(crate) fn not_started(state: Option<(String, Option<i64>)>) -> StartOutcome {
    match state {
        None => StartOutcome::Missing,
        Some((state, _)) => match JobState::parse(&state) {
            Some(JobState::Done) => StartOutcome::Done,
            Some(JobState::Dead) => StartOutcome::Dead,
            _ => StartOutcome::Busy,
        },
    }
}

/// Builds [`KindStats`] rows from `(kind, state, count, recent, retrying)`
/// tuples.
pub(crate) fn stats_from_rows(rows: Vec<(String, String, i64, i64, i64)>) -> Vec<KindStats> {
    let mut stats: Vec<KindStats> = Vec::new();
    for (kind, state, count, recent, retrying) in rows {
        let index = match stats.iter().position(|s| s.kind == kind) {
            Some(index) => index,
            None => {
                stats.push(KindStats {
                    kind,
                    ..KindStats::default()
                });
                stats.len() - 1
            }
        };
        let entry = &mut stats[index];
        let (count, recent, retrying) = (count as u64, recent as u64, retrying as u64);
        match JobState::parse(&state) {
            Some(JobState::Done) => entry.done_recently += recent,
            Some(JobState::Dead) => {
                entry.dead += count;
                entry.dead_recently += recent;
            }
            _ => {
                entry.pending += count;
                entry.retrying += retrying;
            }
        }
    }
    stats.sort_by(|a, b| a.kind.cmp(&b.kind));
    stats
}

/// The SELECT that [`stats_from_rows`] reads, with `{since}` as the
/// parameter of the window's start.
pub(crate) const KIND_STATS_SQL: &str = "SELECT kind, state, count(*), \
       coalesce(sum(CASE WHEN updated_at >= {since} THEN 1 ELSE 0 END), 0), \
       coalesce(sum(CASE WHEN last_error IS NOT NULL THEN 1 ELSE 0 END), 0) \
     FROM jobs GROUP BY kind, state";

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRecord> {
    JobRow::from_row(row)?.try_into()
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim_unpublished(
        &self,
        relay: &str,
        lease: Duration,
        limit: u32,
    ) -> StoreResult<Vec<JobRecord>> {
        count_query("claim_outbox");
        let now = to_ms(Utc::now());
        // One writer connection serialises this statement, so two relays
        // never claim the same row at once.
        let rows = sqlx::query(
            "UPDATE jobs SET lease_owner = ?, lease_until = ?, updated_at = ? \
             WHERE id IN (SELECT id FROM jobs \
               WHERE state = 'queued' \
                 AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?) \
               ORDER BY id LIMIT ?) \
             RETURNING *",
        )
        .bind(relay)
        .bind(lease_end(lease))
        .bind(now)
        .bind(now)
        .bind(relay)
        .bind(i64::from(limit))
        .fetch_all(self.writer())
        .await?;
        let mut jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    async fn mark_published(&self, relay: &str, ids: &[Id]) -> StoreResult<u64> {
        count_query("mark_published");
        let now = to_ms(Utc::now());
        let mut tx = self.writer().begin().await?;
        let mut marked = 0;
        for id in ids {
            marked += sqlx::query(
                "UPDATE jobs SET state = 'published', lease_owner = NULL, lease_until = NULL, \
                   updated_at = ? \
                 WHERE id = ? AND state = 'queued' AND lease_owner = ?",
            )
            .bind(now)
            .bind(id)
            .bind(relay)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(marked)
    }

    async fn start(&self, id: Id, worker: &str, lease: Duration) -> StoreResult<StartOutcome> {
        count_query("start_job");
        let now = to_ms(Utc::now());
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, \
               attempts = attempts + 1, updated_at = ? \
             WHERE id = ? AND {} RETURNING *",
            STARTABLE.replace("{now}", "?")
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(lease_end(lease))
            .bind(now)
            .bind(id)
            .bind(now)
            .fetch_optional(self.writer())
            .await?;
        if let Some(row) = row {
            return Ok(StartOutcome::Started(job_from_row(&row)?));
        }
        let state: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT state, lease_until FROM jobs WHERE id = ?")
                .bind(id)
                .fetch_optional(self.writer())
                .await?;
        Ok(not_started(state))
    }

    async fn defer(&self, id: Id, worker: &str, error: &str) -> StoreResult<bool> {
        count_query("defer_job");
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'published', last_error = ?, lease_owner = NULL, \
               lease_until = NULL, updated_at = ? \
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )
        .bind(error)
        .bind(to_ms(Utc::now()))
        .bind(id)
        .bind(worker)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    async fn bury(&self, id: Id, error: &str) -> StoreResult<bool> {
        count_query("bury_job");
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'dead', last_error = ?, lease_owner = NULL, \
               lease_until = NULL, updated_at = ? \
             WHERE id = ? AND state NOT IN ('done', 'dead')",
        )
        .bind(error)
        .bind(to_ms(Utc::now()))
        .bind(id)
        .execute(self.writer())
        .await?
        .rows_affected()
            == 1)
    }

    async fn kind_stats(&self, window: Duration) -> StoreResult<Vec<KindStats>> {
        count_query("job_kind_stats");
        let since = to_ms(Utc::now()) - window.as_millis() as i64;
        let rows: Vec<(String, String, i64, i64, i64)> =
            sqlx::query_as(&KIND_STATS_SQL.replace("{since}", "?"))
                .bind(since)
                .fetch_all(self.reader())
                .await?;
        Ok(stats_from_rows(rows))
    }

    async fn pending_before(&self, kind: &str, created_at: i64) -> StoreResult<u64> {
        count_query("pending_jobs_before");
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM jobs WHERE kind = ? AND created_at <= ? \
               AND state IN ('queued', 'published', 'running')",
        )
        .bind(kind)
        .bind(created_at)
        .fetch_one(self.reader())
        .await?;
        Ok(count as u64)
    }
}
