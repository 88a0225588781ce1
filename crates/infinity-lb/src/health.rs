//! Passive ejection of backends that fail proxied requests, and the active
//! `/readyz` health check that also brings ejected backends back.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::Backend;

use crate::metrics::metrics;

#[derive(Default)]
struct PassiveState {
    consecutive_failures: u64,
    ejected: bool,
    /// Consecutive successful active checks since the ejection.
    recovery_successes: u64,
}

/// Ejection state of every backend, fed by proxied requests and by the
/// active health check.
///
/// NOTE: nothing keeps the last backends in rotation, so when every backend
/// is ejected, clients get 503 until health checks bring one back.
pub struct Ejections {
    eject_after: u64,
    healthy_after: u64,
    states: Mutex<HashMap<SocketAddr, PassiveState>>,
}

impl Ejections {
    pub fn new(eject_after: u64, healthy_after: u64) -> Self {
        Self {
            eject_after,
            healthy_after,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Returns whether the backend is out of rotation for failed requests.
    pub fn is_ejected(&self, backend: &SocketAddr) -> bool {
        let states = self.states.lock().expect("ejection state lock");
        states.get(backend).is_some_and(|state| state.ejected)
    }

    /// Counts a failed proxied request and ejects the backend after
    /// `eject_after` consecutive failures.
    pub fn record_failure(&self, backend: SocketAddr, reason: &str) {
        let mut states = self.states.lock().expect("ejection state lock");
        let state = states.entry(backend).or_default();
        if state.ejected {
            return;
        }
        state.consecutive_failures += 1;
        if state.consecutive_failures >= self.eject_after {
            state.ejected = true;
            state.recovery_successes = 0;
            metrics()
                .ejections
                .with_label_values(&[&backend.to_string()])
                .inc();
            tracing::warn!(%backend, failures = state.consecutive_failures, reason,
                "backend ejected after consecutive failed requests");
        }
    }

    /// Resets the failure count after a successful proxied request.
    pub fn record_success(&self, backend: SocketAddr) {
        let mut states = self.states.lock().expect("ejection state lock");
        if let Some(state) = states.get_mut(&backend) {
            if !state.ejected {
                state.consecutive_failures = 0;
            }
        }
    }

    /// Counts an active health check result. An ejected backend returns to
    /// rotation after `healthy_after` consecutive successes.
    pub fn record_health_check(&self, backend: SocketAddr, healthy: bool) {
        let mut states = self.states.lock().expect("ejection state lock");
        let Some(state) = states.get_mut(&backend) else {
            return;
        };
        if !state.ejected {
            return;
        }
        if !healthy {
            state.recovery_successes = 0;
            return;
        }
        state.recovery_successes += 1;
        if state.recovery_successes >= self.healthy_after {
            *state = PassiveState::default();
            tracing::info!(%backend, checks = self.healthy_after,
                "ejected backend returns to rotation after successful health checks");
        }
    }

    /// Drops the state of backends that are no longer configured.
    pub fn retain(&self, backends: &BTreeSet<SocketAddr>) {
        let mut states = self.states.lock().expect("ejection state lock");
        states.retain(|backend, _| backends.contains(backend));
    }
}

/// Pingora's HTTP health check on `GET /readyz`, with the outcome also
/// reported to [`Ejections`] and each up or down change logged with its
/// reason.
pub struct ReadyzCheck {
    inner: HttpHealthCheck,
    ejections: Arc<Ejections>,
    /// Last check error per backend, logged when the backend goes down.
    last_errors: Mutex<HashMap<SocketAddr, String>>,
}

impl ReadyzCheck {
    /// Creates the check. Pingora flips a backend's health after
    /// `unhealthy_after` consecutive failures or `healthy_after` consecutive
    /// successes.
    pub fn new(
        unhealthy_after: u64,
        healthy_after: u64,
        timeout: Duration,
        ejections: Arc<Ejections>,
    ) -> Self {
        let mut inner = HttpHealthCheck::new("localhost", false);
        let mut request =
            RequestHeader::build("GET", b"/readyz", None).expect("valid health check request");
        request
            .append_header("Host", "localhost")
            .expect("valid Host header");
        inner.req = request;
        inner.consecutive_failure = to_usize(unhealthy_after);
        inner.consecutive_success = to_usize(healthy_after);
        inner.peer_template.options.connection_timeout = Some(timeout);
        inner.peer_template.options.read_timeout = Some(timeout);
        Self {
            inner,
            ejections,
            last_errors: Mutex::new(HashMap::new()),
        }
    }
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Returns the IP address and port of a backend. Backends come from
/// [`crate::discovery`], which creates only IP backends.
pub fn backend_address(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
}

#[async_trait]
impl HealthCheck for ReadyzCheck {
    async fn check(&self, target: &Backend) -> pingora_core::Result<()> {
        let result = self.inner.check(target).await;
        if let Some(address) = backend_address(target) {
            self.ejections.record_health_check(address, result.is_ok());
            if let Err(error) = &result {
                let mut last_errors = self.last_errors.lock().expect("last errors lock");
                last_errors.insert(address, error.to_string().trim().to_string());
            }
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let Some(backend) = backend_address(target) else {
            return;
        };
        if healthy {
            tracing::info!(%backend, checks = self.inner.consecutive_success,
                "backend up: GET /readyz succeeded on consecutive checks");
        } else {
            let last_error = self
                .last_errors
                .lock()
                .expect("last errors lock")
                .remove(&backend)
                .unwrap_or_default();
            tracing::warn!(%backend, checks = self.inner.consecutive_failure, error = last_error,
                "backend down: GET /readyz failed on consecutive checks");
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ejects_after_consecutive_failures() {
        let ejections = Ejections::new(3, 2);
        let backend = address(3001);
        ejections.record_failure(backend, "connect failed");
        ejections.record_failure(backend, "connect failed");
        assert!(!ejections.is_ejected(&backend));
        ejections.record_failure(backend, "connect failed");
        assert!(ejections.is_ejected(&backend));
    }

    #[test]
    fn success_resets_failure_count() {
        let ejections = Ejections::new(2, 2);
        let backend = address(3001);
        ejections.record_failure(backend, "status 503");
        ejections.record_success(backend);
        ejections.record_failure(backend, "status 503");
        assert!(!ejections.is_ejected(&backend));
    }

    #[test]
    fn returns_after_consecutive_health_checks() {
        let ejections = Ejections::new(1, 2);
        let backend = address(3001);
        ejections.record_failure(backend, "status 502");
        ejections.record_health_check(backend, true);
        ejections.record_health_check(backend, false);
        ejections.record_health_check(backend, true);
        assert!(ejections.is_ejected(&backend));
        ejections.record_health_check(backend, true);
        assert!(!ejections.is_ejected(&backend));
    }
}
