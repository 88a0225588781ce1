//! The Pingora proxy: backend selection, retries, passive ejection,
//! forwarding headers and error responses.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::health::{backend_address, Ejections};
use crate::metrics::metrics;
use crate::Policy;

/// Upper bound on the candidates that round-robin selection inspects for one
/// pick. Each candidate is cheap to inspect, and with fewer backends than
/// this every backend is inspected.
const MAX_SELECTION_ITERATIONS: usize = 256;

/// Maximum length of a client-supplied `x-request-id` that is passed on.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Requests in flight per backend, for least-connections selection.
#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
}

impl InFlight {
    fn counter(&self, backend: SocketAddr) -> Arc<AtomicUsize> {
        let mut counts = self.counts.lock().expect("in-flight lock");
        Arc::clone(counts.entry(backend).or_default())
    }

    fn count(&self, backend: &SocketAddr) -> usize {
        let counts = self.counts.lock().expect("in-flight lock");
        counts
            .get(backend)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Counts a request against `backend` until the returned guard drops.
    fn start(&self, backend: SocketAddr) -> InFlightGuard {
        let counter = self.counter(backend);
        counter.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { counter }
    }

    /// Drops the counters of backends that are no longer configured. Guards
    /// of requests still in flight keep their own reference.
    pub fn retain(&self, backends: &BTreeSet<SocketAddr>) {
        let mut counts = self.counts.lock().expect("in-flight lock");
        counts.retain(|backend, _| backends.contains(backend));
    }
}

/// One request counted in [`InFlight`]. Dropping it ends the count.
pub struct InFlightGuard {
    counter: Arc<AtomicUsize>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per-request state kept by Pingora between the proxy hooks.
#[derive(Default)]
pub struct RequestContext {
    request_id: String,
    /// Whether a failed attempt may be repeated: the method is safe, or the
    /// request carries an Idempotency-Key.
    retry_allowed: bool,
    /// Backends already attempted, in order. The last one is the backend of
    /// the current attempt.
    tried: Vec<SocketAddr>,
    retries: usize,
    in_flight: Option<InFlightGuard>,
    /// Set when no backend could be selected.
    no_backend: bool,
    /// Set once the current backend's response header arrived, after which
    /// the request is never retried.
    response_started: bool,
}

impl RequestContext {
    fn backend(&self) -> Option<SocketAddr> {
        self.tried.last().copied()
    }
}

/// The load balancer's [`ProxyHttp`] implementation.
pub struct Balancer {
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    pub policy: Policy,
    pub ejections: Arc<Ejections>,
    pub in_flight: Arc<InFlight>,
    pub max_retries: usize,
    pub connect_timeout: Duration,
    /// The maximum wait for each read from, or write to, a backend.
    pub read_timeout: Duration,
    /// Turn counter that spreads picks over the backends tied for the fewest
    /// requests in flight.
    pub tie_breaker: AtomicUsize,
}

impl Balancer {
    /// Returns whether `backend` may take this request: healthy by the active
    /// checks, not ejected, and not attempted already.
    fn accepts(&self, ctx: &RequestContext, backend: &Backend, healthy: bool) -> bool {
        let Some(address) = backend_address(backend) else {
            return false;
        };
        healthy && !self.ejections.is_ejected(&address) && !ctx.tried.contains(&address)
    }

    /// Picks the backend for the next attempt, following the policy.
    fn select(&self, ctx: &RequestContext) -> Option<SocketAddr> {
        match self.policy {
            Policy::RoundRobin => self
                .lb
                .select_with(b"", MAX_SELECTION_ITERATIONS, |backend, healthy| {
                    self.accepts(ctx, backend, healthy)
                })
                .and_then(|backend| backend_address(&backend)),
            Policy::LeastConnections => self.select_least_connections(ctx),
        }
    }

    fn select_least_connections(&self, ctx: &RequestContext) -> Option<SocketAddr> {
        let counts: Vec<(SocketAddr, usize)> = self
            .candidates(ctx)
            .into_iter()
            .map(|backend| (backend, self.in_flight.count(&backend)))
            .collect();
        let fewest = counts.iter().map(|(_, count)| *count).min()?;
        let tied: Vec<SocketAddr> = counts
            .into_iter()
            .filter(|(_, count)| *count == fewest)
            .map(|(backend, _)| backend)
            .collect();
        let index = self.tie_breaker.fetch_add(1, Ordering::Relaxed) % tied.len();
        Some(tied[index])
    }

    /// Returns every backend that [`Self::accepts`] this request.
    fn candidates(&self, ctx: &RequestContext) -> Vec<SocketAddr> {
        let backends = self.lb.backends();
        backends
            .get_backend()
            .iter()
            .filter(|backend| self.accepts(ctx, backend, backends.ready(backend)))
            .filter_map(backend_address)
            .collect()
    }

    /// Decides whether a failed attempt is repeated on another backend, and
    /// counts the retry if so.
    fn take_retry(&self, ctx: &mut RequestContext) -> bool {
        let retry =
            ctx.retry_allowed && ctx.retries < self.max_retries && !self.candidates(ctx).is_empty();
        if retry {
            ctx.retries += 1;
            metrics().retries.inc();
        }
        retry
    }
}

/// Returns whether a client-supplied request id is passed on unchanged: 1 to
/// 128 visible ASCII characters.
fn is_valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|byte| (0x21..=0x7e).contains(byte))
}

fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Joins every `x-forwarded-for` value of the request with the client IP.
fn forwarded_for(request: &RequestHeader, client_ip: std::net::IpAddr) -> String {
    let mut hops: Vec<String> = request
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
        .collect();
    hops.push(client_ip.to_string());
    hops.join(", ")
}

/// Returns the status code Pingora's default `fail_to_proxy` would send, or
/// 0 when the client connection is already gone.
fn error_status(error: &Error) -> u16 {
    if let ErrorType::HTTPStatus(code) = error.etype() {
        return *code;
    }
    if error.esource() == &ErrorSource::Upstream
        && matches!(
            error.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        )
    {
        return 504;
    }
    match error.esource() {
        ErrorSource::Upstream => 502,
        ErrorSource::Downstream => match error.etype() {
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
            _ => 400,
        },
        ErrorSource::Internal | ErrorSource::Unset => 500,
    }
}

/// Builds a JSON error body in the Conduit API's format.
fn error_body(message: &str) -> Bytes {
    let body = serde_json::json!({ "errors": { "body": [message] } });
    Bytes::from(body.to_string())
}

#[async_trait]
impl ProxyHttp for Balancer {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext::default()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora_core::Result<bool> {
        let request = session.req_header();
        ctx.request_id = match request.headers.get("x-request-id") {
            Some(value) if is_valid_request_id(value.as_bytes()) => {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            }
            _ => generate_request_id(),
        };
        ctx.retry_allowed =
            is_safe_method(&request.method) || request.headers.contains_key("idempotency-key");
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestContext,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        let Some(backend) = self.select(ctx) else {
            ctx.no_backend = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy backend",
            ));
        };
        ctx.tried.push(backend);
        ctx.response_started = false;
        // Replacing the guard moves the in-flight count from the previously
        // attempted backend to this one.
        ctx.in_flight = Some(self.in_flight.start(backend));

        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.write_timeout = Some(self.read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> pingora_core::Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|address| address.as_inet())
            .map(|address| address.ip());
        if let Some(ip) = client_ip {
            let value = forwarded_for(upstream_request, ip);
            upstream_request.insert_header("x-forwarded-for", value)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> pingora_core::Result<()> {
        let status = upstream_response.status;
        if status.is_informational() {
            return Ok(());
        }
        ctx.response_started = true;
        if let Some(backend) = ctx.backend() {
            if matches!(status.as_u16(), 502..=504) {
                let reason = format!("responded with status {}", status.as_u16());
                self.ejections.record_failure(backend, &reason);
            } else {
                self.ejections.record_success(backend);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> pingora_core::Result<()> {
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut error: Box<Error>,
    ) -> Box<Error> {
        if let Some(backend) = ctx.backend() {
            self.ejections.record_failure(backend, "connect failed");
            tracing::warn!(%backend, request_id = ctx.request_id, %error,
                "failed to connect to backend");
        }
        let retry = self.take_retry(ctx);
        error.set_retry(retry);
        error
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut RequestContext,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut error = error.more_context(format!("Peer: {peer}"));
        // The request may have reached the backend, so it is repeated only
        // when that is harmless, and never once a response began.
        let retry = !ctx.response_started
            && !session.as_ref().retry_buffer_truncated()
            && self.take_retry(ctx);
        error.set_retry(retry);
        error
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let status = if ctx.no_backend {
            503
        } else {
            error_status(error)
        };
        // A request that failed before `request_filter` has no id yet.
        if ctx.request_id.is_empty() {
            ctx.request_id = generate_request_id();
        }
        if status > 0 && session.response_written().is_none() {
            if let Err(write_error) = write_error_response(session, status, ctx).await {
                tracing::warn!(request_id = ctx.request_id, error = %write_error,
                    "failed to send error response to client");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(
        &self,
        session: &mut Session,
        error: Option<&Error>,
        ctx: &mut RequestContext,
    ) {
        let status = session.response_written().map_or_else(
            || "none".to_string(),
            |response| response.status.as_u16().to_string(),
        );
        let backend = ctx
            .backend()
            .map_or_else(|| "none".to_string(), |backend| backend.to_string());
        metrics()
            .requests
            .with_label_values(&[&backend, &status])
            .inc();
        if let Some(error) = error {
            tracing::warn!(request_id = ctx.request_id, %backend, status, %error,
                retries = ctx.retries, "request failed");
        }
    }
}

/// Sends a JSON error response. A 503 for lack of a backend also gets
/// `Retry-After: 1`. The client connection is closed afterwards because the
/// request body may be unread.
async fn write_error_response(
    session: &mut Session,
    status: u16,
    ctx: &RequestContext,
) -> pingora_core::Result<()> {
    let message = if ctx.no_backend {
        "no healthy backend".to_string()
    } else {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason())
            .unwrap_or("error")
            .to_lowercase()
    };
    let body = error_body(&message);
    let mut response = ResponseHeader::build(status, Some(5))?;
    response.insert_header("content-type", "application/json")?;
    response.insert_header("content-length", body.len().to_string())?;
    response.insert_header("x-request-id", ctx.request_id.as_str())?;
    if ctx.no_backend {
        response.insert_header("retry-after", "1")?;
    }
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_validation() {
        assert!(is_valid_request_id(b"abc-123_XYZ"));
        assert!(is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn generated_request_id_is_hex() {
        let id = generate_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|character| character.is_ascii_hexdigit()));
    }

    #[test]
    fn forwarded_for_appends_client() {
        let mut request = RequestHeader::build("GET", b"/", None).unwrap();
        request
            .append_header("x-forwarded-for", "10.0.0.1")
            .unwrap();
        request
            .append_header("x-forwarded-for", "10.0.0.2, 10.0.0.3")
            .unwrap();
        let value = forwarded_for(&request, "127.0.0.1".parse().unwrap());
        assert_eq!(value, "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1");
    }

    #[test]
    fn error_body_is_conduit_json() {
        let body = error_body("no healthy backend");
        assert_eq!(&body[..], br#"{"errors":{"body":["no healthy backend"]}}"#);
    }
}
