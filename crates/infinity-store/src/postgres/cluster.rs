//! The PostgreSQL servers behind one store: which of them is the primary,
//! how far each replica has replayed, and which replicas may serve reads.
//!
//! A probe task asks every server for its role and WAL position a few times
//! a second. The primary is the server that is not in recovery, on the
//! highest timeline, so that after a promotion every node follows the new
//! primary without a restart. A replica serves reads while it answers and
//! its lag stays within the configured bound. It leaves rotation at the first
//! failure and comes back only after several good probes in a row, so a
//! flapping server does not bounce in and out.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::consistency::Position;
use crate::error::{StoreError, StoreResult};

/// Consecutive good probes a replica needs before it serves reads again.
const REJOIN_PROBES: u32 = 3;

/// How long a request waits for a connection. While a dead server refuses
/// connections, sqlx keeps trying for this long, so it bounds how long a
/// write hangs on a primary that has died before it fails with a 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The least history of the primary's positions kept to measure lag.
const LAG_HISTORY: Duration = Duration::from_secs(300);

/// No primary known yet.
const NO_PRIMARY: usize = usize::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
    /// The last probe failed.
    Unreachable,
}

/// One server as the last probe saw it, for `/readyz` and `infinity db`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    /// Host, port and database; never the password.
    pub name: String,
    pub role: Role,
    /// True for the primary, and for a replica that serves reads.
    pub in_rotation: bool,
    /// The server's WAL position: written on a primary, replayed on a
    /// replica.
    pub position: Position,
    /// How long ago the primary had written what this replica has replayed.
    pub lag_seconds: f64,
    /// The bytes of WAL this replica has still to replay.
    pub lag_bytes: u64,
    /// Why the last probe failed or the replica left rotation.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Health {
    role: Role,
    position: Position,
    timeline: i32,
    lag: Duration,
    lag_bytes: u64,
    in_rotation: bool,
    good_probes: u32,
    error: Option<String>,
    synchronous_names: String,
}

pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) pool: PgPool,
    health: Mutex<Health>,
}

impl Server {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a replica out of rotation after a failed read; probes bring it
    /// back once it answers again.
    pub(crate) fn eject(&self, reason: String) {
        let mut health = self.health();
        if health.in_rotation {
            tracing::warn!(server = %self.name, %reason, "replica left rotation");
        }
        health.in_rotation = false;
        health.good_probes = 0;
        health.error = Some(reason);
    }

    /// The server's `synchronous_standby_names` setting at the last probe.
    pub(crate) fn synchronous_names(&self) -> String {
        self.health().synchronous_names.clone()
    }

    fn status(&self) -> ServerStatus {
        let health = self.health();
        ServerStatus {
            name: self.name.clone(),
            role: health.role,
            in_rotation: health.in_rotation,
            position: health.position,
            lag_seconds: health.lag.as_secs_f64(),
            lag_bytes: health.lag_bytes,
            error: health.error.clone(),
        }
    }
}

/// Timing settings of a [`Cluster`].
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub max_lag: Duration,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
}

pub(crate) struct Cluster {
    servers: Vec<Server>,
    primary: AtomicUsize,
    /// The highest timeline any primary has had.
    newest_timeline: AtomicI32,
    next_replica: AtomicUsize,
    /// Recent (time, WAL position) readings of the primary, oldest first,
    /// from which a replica's lag in seconds is read off.
    samples: Mutex<VecDeque<(Instant, Position)>>,
    timing: Timing,
}

/// The result of one probe of one server.
struct Probe {
    in_recovery: bool,
    position: Position,
    /// A primary's timeline, or the timeline a replica streams from (0
    /// while its WAL receiver is not streaming).
    timeline: i32,
    synchronous_names: String,
}

/// Returns `host:port/database` of a PostgreSQL URL, without credentials.
pub fn server_name(url: &str) -> StoreResult<String> {
    Ok(parse_url(url)?.0)
}

fn parse_url(url: &str) -> StoreResult<(String, PgConnectOptions)> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Unavailable(format!("invalid PostgreSQL URL {:?}: {e}", redact(url)))
    })?;
    let name = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    Ok((name, options))
}

/// Hides the password of a URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Cluster {
    /// Creates lazy pools for `urls` (the configured primary first) and
    /// probes every server once.
    pub(crate) async fn connect(
        urls: &[String],
        connections: u32,
        timing: Timing,
    ) -> StoreResult<Arc<Self>> {
        let mut servers = Vec::with_capacity(urls.len());
        for url in urls {
            let (name, options) = parse_url(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(connections.max(1))
                .min_connections(0)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // A broken connection fails its statement; reads then go to
                // the primary and writes retry `BEGIN` once, so a ping before
                // every statement would only add a round trip.
                .test_before_acquire(false)
                .connect_lazy_with(options.application_name("infinity"));
            servers.push(Server {
                name,
                pool,
                health: Mutex::new(Health {
                    role: Role::Unreachable,
                    position: 0,
                    timeline: 0,
                    lag: Duration::ZERO,
                    lag_bytes: 0,
                    // A replica that responds to the first probe serves at once.
                    in_rotation: false,
                    good_probes: REJOIN_PROBES - 1,
                    error: None,
                    synchronous_names: String::new(),
                }),
            });
        }
        let cluster = Arc::new(Self {
            servers,
            primary: AtomicUsize::new(NO_PRIMARY),
            newest_timeline: AtomicI32::new(0),
            next_replica: AtomicUsize::new(0),
            samples: Mutex::new(VecDeque::new()),
            timing,
        });
        cluster.probe_all().await;
        Ok(cluster)
    }

    /// Probes every server at the configured interval for as long as the
    /// cluster is in use.
    pub(crate) fn spawn_prober(self: &Arc<Self>) {
        let cluster: Weak<Self> = Arc::downgrade(self);
        let interval = self.timing.probe_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                cluster.probe_all().await;
            }
        });
    }

    pub(crate) fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// The current primary, or [`StoreError::Unavailable`] while none is
    /// known.
    pub(crate) fn primary(&self) -> StoreResult<&Server> {
        self.servers
            .get(self.primary.load(Ordering::SeqCst))
            .ok_or_else(|| {
                let servers: Vec<String> = self
                    .servers
                    .iter()
                    .map(|s| {
                        let health = s.health();
                        match (&health.error, health.role) {
                            (Some(error), _) => format!("{} ({error})", s.name),
                            (None, Role::Replica) => format!("{} (a replica)", s.name),
                            (None, _) => s.name.clone(),
                        }
                    })
                    .collect();
                StoreError::Unavailable(format!("no primary among {}", servers.join(", ")))
            })
    }

    pub(crate) fn status(&self) -> Vec<ServerStatus> {
        self.servers.iter().map(Server::status).collect()
    }

    /// Picks a replica in rotation that has replayed `floor`, taking turns
    /// among them. When none is known to have, it queries one replica for its
    /// replay position directly, because the last probe may be a few
    /// milliseconds old. Returns `None` when the primary must serve.
    pub(crate) async fn replica_for(&self, floor: Position) -> Option<&Server> {
        let primary = self.primary.load(Ordering::SeqCst);
        let candidates: Vec<&Server> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != primary && s.health().in_rotation)
            .map(|(_, s)| s)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let start = self.next_replica.fetch_add(1, Ordering::Relaxed);
        for offset in 0..candidates.len() {
            let server = candidates[(start + offset) % candidates.len()];
            if server.health().position >= floor {
                return Some(server);
            }
        }
        let server = candidates[start % candidates.len()];
        crate::postgres::count("replay_position");
        let asked = tokio::time::timeout(
            self.timing.probe_timeout,
            sqlx::query_scalar::<_, i64>(
                "SELECT (coalesce(pg_last_wal_replay_lsn(), '0/0') - '0/0'::pg_lsn)::bigint",
            )
            .fetch_one(&server.pool),
        )
        .await;
        match asked {
            Ok(Ok(position)) => {
                let position = position as Position;
                let mut health = server.health();
                health.position = health.position.max(position);
                (position >= floor).then_some(server)
            }
            Ok(Err(error)) => {
                server.eject(format!("reading the replay position failed: {error}"));
                None
            }
            Err(_) => {
                server.eject("reading the replay position timed out".to_string());
                None
            }
        }
    }

    async fn probe(&self, server: &Server) -> Result<Probe, String> {
        let query = sqlx::query_as::<_, (bool, i64, i32, String)>(
            "SELECT pg_is_in_recovery(), \
               (CASE WHEN pg_is_in_recovery() \
                  THEN coalesce(pg_last_wal_replay_lsn(), '0/0') \
                  ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint, \
               CASE WHEN pg_is_in_recovery() \
                  THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver \
                                 WHERE status = 'streaming'), 0) \
                  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int \
               END, \
               current_setting('synchronous_standby_names')",
        )
        .fetch_one(&server.pool);
        match tokio::time::timeout(self.timing.probe_timeout, query).await {
            Ok(Ok((in_recovery, position, timeline, synchronous_names))) => Ok(Probe {
                in_recovery,
                position: position as Position,
                timeline,
                synchronous_names,
            }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.timing.probe_timeout.as_millis()
            )),
        }
    }

    /// Probes every server at once, then elects the primary and updates each
    /// replica's lag and place in rotation.
    pub(crate) async fn probe_all(&self) {
        let probes =
            futures::future::join_all(self.servers.iter().map(|server| self.probe(server))).await;
        let now = Instant::now();
        self.elect_primary(&probes);
        let primary = self.primary.load(Ordering::SeqCst);
        let primary_position = match probes.get(primary) {
            Some(Ok(probe)) if !probe.in_recovery => Some(probe.position),
            _ => None,
        };
        if let Some(position) = primary_position {
            self.record_sample(now, position);
        }
        for (index, (server, probe)) in self.servers.iter().zip(probes).enumerate() {
            let mut health = server.health();
            match probe {
                Err(error) => {
                    if health.role != Role::Unreachable {
                        tracing::warn!(server = %server.name, %error, "database server unreachable");
                    }
                    health.role = Role::Unreachable;
                    health.in_rotation = false;
                    health.good_probes = 0;
                    health.error = Some(error);
                }
                Ok(probe) => {
                    health.position = health.position.max(probe.position);
                    health.timeline = probe.timeline;
                    health.synchronous_names = probe.synchronous_names;
                    if index == primary {
                        health.role = Role::Primary;
                        health.in_rotation = true;
                        health.lag = Duration::ZERO;
                        health.lag_bytes = 0;
                        health.error = None;
                    } else if !probe.in_recovery {
                        // Another server that calls itself primary, on an
                        // older timeline: a former primary after a failover.
                        health.role = Role::Primary;
                        health.in_rotation = false;
                        health.error = Some("a primary on an older timeline".to_string());
                    } else {
                        health.role = Role::Replica;
                        health.position = probe.position;
                        let lag = self.lag_behind(now, probe.position);
                        health.lag = lag;
                        health.lag_bytes =
                            primary_position.map_or(0, |p| p.saturating_sub(probe.position));
                        let primary_timeline = self.newest_timeline.load(Ordering::SeqCst);
                        if health.lag_bytes > 0 && probe.timeline != primary_timeline {
                            // Not streaming the primary's timeline: stopped,
                            // or still following a primary that was replaced.
                            // It may never catch up, so it serves nothing
                            // until it streams again.
                            let reason = format!(
                                "not streaming from the primary's timeline {primary_timeline} \
                                 (streaming timeline {})",
                                probe.timeline
                            );
                            if health.in_rotation {
                                tracing::warn!(server = %server.name, %reason, "replica left rotation");
                            }
                            health.in_rotation = false;
                            health.good_probes = 0;
                            health.error = Some(reason);
                        } else {
                            self.update_rotation(server, &mut health, lag);
                        }
                    }
                }
            }
            export_metrics(server, &health);
        }
    }

    /// Keeps the current primary unless another server is a primary on a
    /// newer timeline, or the current one is gone and another has taken
    /// over. A server on an older timeline than any primary seen so far is
    /// never elected: it is a former primary that came back after a
    /// failover, and writes to it would be lost.
    fn elect_primary(&self, probes: &[Result<Probe, String>]) {
        let current = self.primary.load(Ordering::SeqCst);
        let newest_seen = self.newest_timeline.load(Ordering::SeqCst);
        let best = probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Ok(p) if !p.in_recovery && p.timeline >= newest_seen => Some((i, p.timeline)),
                _ => None,
            })
            .max_by_key(|&(i, timeline)| (timeline, i == current));
        let Some((index, timeline)) = best else {
            return;
        };
        self.newest_timeline.fetch_max(timeline, Ordering::SeqCst);
        if index == current {
            return;
        }
        let current_timeline = match probes.get(current) {
            Some(Ok(p)) if !p.in_recovery => Some(p.timeline),
            _ => None,
        };
        if current_timeline.is_none_or(|t| timeline > t) {
            if current == NO_PRIMARY {
                tracing::info!(server = %self.servers[index].name, timeline, "found the primary");
            } else {
                tracing::warn!(
                    server = %self.servers[index].name,
                    timeline,
                    "following a new primary"
                );
            }
            self.primary.store(index, Ordering::SeqCst);
        }
    }

    fn update_rotation(&self, server: &Server, health: &mut Health, lag: Duration) {
        if lag > self.timing.max_lag {
            if health.in_rotation {
                tracing::warn!(
                    server = %server.name,
                    lag_ms = lag.as_millis() as u64,
                    "replica left rotation: lag over the bound"
                );
            }
            health.in_rotation = false;
            health.good_probes = 0;
            health.error = Some(format!(
                "lag {:.1} s is over the bound of {:.1} s",
                lag.as_secs_f64(),
                self.timing.max_lag.as_secs_f64()
            ));
            return;
        }
        health.good_probes = health.good_probes.saturating_add(1);
        if !health.in_rotation && health.good_probes >= REJOIN_PROBES {
            tracing::info!(server = %server.name, "replica serves reads");
            health.in_rotation = true;
            health.error = None;
        }
    }

    fn record_sample(&self, now: Instant, position: Position) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.back().is_none_or(|&(_, last)| position > last) {
            samples.push_back((now, position));
        }
        // Enough history to measure a lag of twice the bound, and at least
        // five minutes for the lag that `/readyz` shows.
        let keep = (self.timing.max_lag * 2).max(LAG_HISTORY) + self.timing.probe_interval * 4;
        while samples.len() > 1 && samples.front().is_some_and(|&(t, _)| now - t > keep) {
            samples.pop_front();
        }
    }

    /// How long ago the primary first wrote past `replayed`: zero when the
    /// replica has replayed every position seen, else the age of the oldest
    /// sample it has not reached (at most the history kept).
    fn lag_behind(&self, now: Instant, replayed: Position) -> Duration {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .find(|&&(_, position)| position > replayed)
            .map_or(Duration::ZERO, |&(time, _)| now - time)
    }
}

fn export_metrics(server: &Server, health: &Health) {
    let name = server.name.clone();
    metrics::gauge!("infinity_db_replica_lag_seconds", "server" => name.clone())
        .set(health.lag.as_secs_f64());
    metrics::gauge!("infinity_db_replica_lag_bytes", "server" => name.clone())
        .set(health.lag_bytes as f64);
    metrics::gauge!("infinity_db_in_rotation", "server" => name.clone())
        .set(if health.in_rotation { 1.0 } else { 0.0 });
    metrics::gauge!("infinity_db_primary", "server" => name).set(
        if health.role == Role::Primary && health.in_rotation {
            1.0
        } else {
            0.0
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("postgres://app:secret@db:5432/infinity"),
            "postgres://app:***@db:5432/infinity"
        );
        assert_eq!(
            redact("postgres://app@db/infinity"),
            "postgres://app@db/infinity"
        );
        assert_eq!(redact("postgres://db/infinity"), "postgres://db/infinity");
    }

    #[test]
    fn server_name_has_no_credentials() {
        let name = server_name("postgres://app:secret@10.0.0.5:6543/photos").unwrap();
        assert_eq!(name, "10.0.0.5:6543/photos");
    }
}
