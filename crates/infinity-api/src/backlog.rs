//! The expected wait of an upload whose variants are still being made: the
//! variant jobs queued up to and including it, divided by the rate at which
//! workers finished them over the last minute. Uploads are accepted however
//! deep the queue is, and their owners see this estimate instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use infinity_jobs::handlers::MAKE_VARIANTS;
use infinity_store::{Outbox, StoreResult};
use tokio::sync::Mutex;

/// The window over which the completion rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How long a measured rate is reused, because measuring it scans the jobs
/// of every kind.
const RATE_REUSE: Duration = Duration::from_secs(2);

/// Estimates the wait for variant jobs.
pub struct Backlog {
    queue: Arc<dyn Outbox>,
    /// The last measured rate, in jobs per second, and when it was measured.
    rate: Mutex<Option<(Instant, f64)>>,
}

impl Backlog {
    pub fn new(queue: Arc<dyn Outbox>) -> Self {
        Self {
            queue,
            rate: Mutex::new(None),
        }
    }

    /// Returns the expected wait in seconds for the variants of an upload
    /// created at `created_at_ms` (Unix milliseconds), or `None` when no
    /// variant job finished within the last minute, so there is no rate to
    /// divide by.
    pub async fn expected_wait(&self, created_at_ms: i64) -> StoreResult<Option<f64>> {
        let rate = self.rate().await?;
        if rate <= 0.0 {
            return Ok(None);
        }
        // The upload's own job counts as well, whether or not it was
        // created in the same millisecond as the upload.
        let ahead = self
            .queue
            .pending_before(MAKE_VARIANTS, created_at_ms)
            .await?
            .max(1);
        Ok(Some(round_tenths(ahead as f64 / rate)))
    }

    async fn rate(&self) -> StoreResult<f64> {
        let mut cached = self.rate.lock().await;
        if let Some((at, rate)) = *cached {
            if at.elapsed() < RATE_REUSE {
                return Ok(rate);
            }
        }
        let done = self
            .queue
            .kind_stats(RATE_WINDOW)
            .await?
            .into_iter()
            .find(|stats| stats.kind == MAKE_VARIANTS)
            .map_or(0, |stats| stats.done_recently);
        let rate = done as f64 / RATE_WINDOW.as_secs_f64();
        *cached = Some((Instant::now(), rate));
        Ok(rate)
    }
}

fn round_tenths(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use infinity_store::{JobQueue, NewJob, SqliteOptions, SqliteStore};

    #[tokio::test]
    async fn wait_is_jobs_ahead_over_the_recent_rate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("db"), SqliteOptions::default())
                .await
                .unwrap(),
        );
        let backlog = Backlog::new(store.clone());
        let job = || NewJob {
            kind: MAKE_VARIANTS.into(),
            payload: serde_json::json!({}),
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        assert_eq!(backlog.expected_wait(now_ms).await.unwrap(), None);

        // Six finished in the last minute: 0.1 jobs a second.
        for _ in 0..6 {
            store.enqueue(job()).await.unwrap();
            let running = store
                .take("w", Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            assert!(store.complete(running.id, "w").await.unwrap());
        }
        for _ in 0..3 {
            store.enqueue(job()).await.unwrap();
        }
        *backlog.rate.lock().await = None;
        let now_ms = chrono::Utc::now().timestamp_millis();
        assert_eq!(backlog.expected_wait(now_ms).await.unwrap(), Some(30.0));
        // An upload older than every queued job waits for its own job only.
        assert_eq!(backlog.expected_wait(0).await.unwrap(), Some(10.0));
    }
}
