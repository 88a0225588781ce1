//! Prometheus metrics of the balancer, registered in the `prometheus` crate's
//! default registry that pingora-prometheus serves.

use std::sync::OnceLock;

use pingora_prometheus::prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec,
    IntGauge,
};

/// The balancer's own metrics.
pub struct Metrics {
    /// Responses sent to clients, by the last backend attempted (`none` when
    /// no backend was selected) and by status code.
    pub requests: IntCounterVec,
    /// Attempts repeated on another backend after a failed one.
    pub retries: IntCounter,
    /// Backends taken out of rotation for failing proxied requests.
    pub ejections: IntCounterVec,
    /// Backends that are healthy and not ejected.
    pub backends_healthy: IntGauge,
}

/// Returns the metrics, registering them on first use. The default registry
/// is global, so a second balancer in the same process shares them.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        requests: register_int_counter_vec!(
            "infinity_lb_requests_total",
            "Responses sent to clients, by backend and status code.",
            &["backend", "status"]
        )
        .expect("register infinity_lb_requests_total"),
        retries: register_int_counter!(
            "infinity_lb_retries_total",
            "Request attempts repeated on another backend after a failed one."
        )
        .expect("register infinity_lb_retries_total"),
        ejections: register_int_counter_vec!(
            "infinity_lb_ejections_total",
            "Backends taken out of rotation after consecutive failed requests.",
            &["backend"]
        )
        .expect("register infinity_lb_ejections_total"),
        backends_healthy: register_int_gauge!(
            "infinity_lb_backends_healthy",
            "Backends that pass health checks and are not ejected."
        )
        .expect("register infinity_lb_backends_healthy"),
    })
}
