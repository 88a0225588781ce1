//! Sends the operation mix in a closed loop (fixed concurrency) or an open loop (fixed rate).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{retry_after, ApiClient};
use crate::mix::{Mix, RequestSpec};
use crate::report::{Outcome, Recorder};
use crate::requests::Targets;

/// Maximum pause a closed-loop worker takes after a 429 with Retry-After.
const MAX_WORKER_PAUSE: Duration = Duration::from_secs(5);

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many requests.
    Requests(u64),
    /// When this much time has passed since the start.
    After(Duration),
}

/// Everything the workers of a run share.
pub struct Driver {
    pub client: Arc<ApiClient>,
    pub targets: Arc<Targets>,
    pub mix: Mix,
    /// Seed of the per-worker RNGs.
    pub seed: u64,
    /// Text that makes titles of articles created by this run unique.
    pub nonce: String,
    pub progress: ProgressBar,
    pub stop: Stop,
}

impl Driver {
    /// Runs `workers` closed-loop workers until the stop condition holds. Returns what they
    /// recorded and the wall time of the run.
    pub async fn closed_loop(self: Arc<Self>, workers: u32) -> (Recorder, Duration) {
        let started = Instant::now();
        let issued = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for worker in 0..workers {
            let driver = Arc::clone(&self);
            let issued = Arc::clone(&issued);
            tasks.spawn(async move { driver.worker(worker, started, &issued).await });
        }

        let mut recorder = Recorder::default();
        while let Some(joined) = tasks.join_next().await {
            recorder.merge(&joined.expect("load workers do not panic"));
        }
        (recorder, started.elapsed())
    }

    async fn worker(&self, worker: u32, started: Instant, issued: &AtomicU64) -> Recorder {
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(u64::from(worker) + 1));
        let mut recorder = Recorder::default();
        let mut sent = 0u64;
        loop {
            let allowed = match self.stop {
                Stop::Requests(total) => issued.fetch_add(1, Ordering::Relaxed) < total,
                Stop::After(duration) => started.elapsed() < duration,
            };
            if !allowed {
                break;
            }

            let op = self.mix.choose(&mut rng);
            let unique = format!("{}-w{worker}-{sent}", self.nonce);
            sent += 1;
            let spec = self.targets.build_request(op, &mut rng, &unique);
            let sent_at = Instant::now();
            let (outcome, pause) = self.send(&spec).await;
            recorder.record(&spec.operation, sent_at.elapsed(), outcome);
            self.advance(started);

            if let Some(pause) = pause {
                tokio::time::sleep(pause.min(MAX_WORKER_PAUSE)).await;
            }
        }
        recorder
    }

    /// Sends `rate` requests per second by the clock, with at most `max_in_flight` at once.
    /// Latency runs from each request's scheduled send time, so a stalled target shows up as
    /// latency instead of as fewer requests.
    pub async fn open_loop(self: Arc<Self>, rate: f64, max_in_flight: u32) -> (Recorder, Duration) {
        let started = Instant::now();
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let permits = Arc::new(Semaphore::new(max_in_flight as usize));
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_add(1));
        let mut tasks = JoinSet::new();

        for index in 0u64.. {
            let offset = Duration::from_secs_f64(index as f64 / rate);
            let done = match self.stop {
                Stop::Requests(total) => index >= total,
                Stop::After(duration) => offset >= duration,
            };
            if done {
                break;
            }
            let scheduled = started + offset;
            tokio::time::sleep_until(scheduled.into()).await;
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .expect("semaphore is never closed");

            let op = self.mix.choose(&mut rng);
            let spec = self
                .targets
                .build_request(op, &mut rng, &format!("{}-{index}", self.nonce));
            let driver = Arc::clone(&self);
            let recorder = Arc::clone(&recorder);
            tasks.spawn(async move {
                let (outcome, _) = driver.send(&spec).await;
                let latency = scheduled.elapsed();
                recorder
                    .lock()
                    .expect("recorder lock is not poisoned")
                    .record(&spec.operation, latency, outcome);
                driver.advance(started);
                drop(permit);
            });
            // Reap finished tasks so the set stays small on long runs.
            while tasks.try_join_next().is_some() {}
        }

        while tasks.join_next().await.is_some() {}
        let elapsed = started.elapsed();
        let recorder = recorder
            .lock()
            .expect("recorder lock is not poisoned")
            .clone();
        (recorder, elapsed)
    }

    /// Moves the progress bar after one finished request.
    fn advance(&self, started: Instant) {
        match self.stop {
            Stop::Requests(_) => self.progress.inc(1),
            Stop::After(_) => {
                let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.progress
                    .set_position(millis.min(self.progress.length().unwrap_or(0)));
            }
        }
    }

    /// Sends one request and reads its whole body. Returns the outcome and, for a 429, the
    /// pause its Retry-After header requests.
    async fn send(&self, spec: &RequestSpec) -> (Outcome, Option<Duration>) {
        let token = spec
            .user
            .map(|user| self.targets.population.users[user].token.as_str());
        let mut request = self.client.request(spec.method.clone(), &spec.path, token);
        if !spec.query.is_empty() {
            request = request.query(&spec.query);
        }
        if let Some(body) = &spec.body {
            request = request.json(body);
        }

        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return (transport_outcome(&error), None),
        };
        let status = response.status();
        let pause = (status == reqwest::StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(response.headers()));
        match response.bytes().await {
            Ok(_) => (Outcome::Status(status.as_u16()), pause),
            Err(error) => (transport_outcome(&error), pause),
        }
    }
}

fn transport_outcome(error: &reqwest::Error) -> Outcome {
    tracing::debug!(%error, "load request failed");
    if error.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Transport
    }
}
