//! `Idempotency-Key` on every mutating request.
//!
//! A client that may retry a POST, PUT, PATCH or DELETE (after a timeout, or
//! a load balancer on its behalf) sends the same `Idempotency-Key` with each
//! attempt. The first attempt runs and its response is stored; a repeat
//! gets the stored response and changes nothing. A repeat with a different
//! method, path or body is a 422. A repeat while the first attempt is still
//! running waits for it, and gets a 409 if it runs on for several seconds.
//! Keys belong to the session that sent them, so one user can never replay
//! another's response.
//!
//! Responses with a 5xx, 408, 409 or 429 status are not stored: they say
//! "try again later", and the client may do so with the same key. Neither is
//! an attempt whose client went away before the response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::token_digest;
use crate::error::ApiError;
use crate::AppState;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Set on a response that repeats a stored one.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a stored response is kept.
pub const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a running attempt keeps its key in this process's records. A
/// record here dies with its process, so it needs no renewal.
pub const IN_PROGRESS_TTL: Duration = Duration::from_secs(120);

/// How long a running attempt keeps its key in a shared store without a
/// renewal, so that a repeat can take over the key soon after the node
/// running the attempt dies.
pub const ATTEMPT_LEASE: Duration = Duration::from_secs(5);

/// How often a running attempt renews its lease.
const LEASE_RENEWAL: Duration = Duration::from_millis(1500);

/// How long a repeat waits for a running attempt with the same key to
/// finish (or for its lease to run out) before it gets a 409. Longer than
/// the lease, so that a repeat sent on after its node died, as a load
/// balancer does, runs instead of failing.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(6);

/// How often a waiting repeat checks the key again.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(100);

/// The longest accepted key.
const MAX_KEY_LENGTH: usize = 255;

/// The largest response body that is stored; a larger one is passed on
/// without being stored, and its key is released.
const MAX_STORED_BODY: usize = 1 << 20;

/// A finished response, as stored for repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The state of a key when an attempt began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key was free and now marks this attempt as running.
    Started,
    /// Another attempt with the same request is running.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
    /// The same request already finished with this response.
    Done(StoredResponse),
}

/// The record of one key: the request's fingerprint and, once it finished,
/// its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub fingerprint: String,
    pub response: Option<StoredResponse>,
}

impl Record {
    /// Returns what a new attempt with `fingerprint` finds in this record.
    pub fn begin(&self, fingerprint: &str) -> Begin {
        if self.fingerprint != fingerprint {
            return Begin::Mismatch;
        }
        match &self.response {
            Some(response) => Begin::Done(response.clone()),
            None => Begin::InProgress,
        }
    }
}

/// Storage for idempotency records: in the process, or shared by every node.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Marks `key` as running for `fingerprint`, unless it already holds a
    /// record, which is returned instead.
    async fn begin(&self, key: &str, fingerprint: &str) -> Result<Begin, String>;
    /// Stores the finished response of the attempt that began `key`.
    async fn finish(
        &self,
        key: &str,
        fingerprint: &str,
        response: StoredResponse,
    ) -> Result<(), String>;
    /// Frees `key` after an attempt whose outcome must not be repeated.
    async fn release(&self, key: &str) -> Result<(), String>;
    /// Extends the lease of the running attempt on `key`, for stores whose
    /// records outlive the node that runs it.
    async fn renew(&self, _key: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Records in this process only: enough for one node.
pub struct LocalIdempotency {
    records: Cache<String, Record>,
}

/// Keeps a running attempt's mark for [`IN_PROGRESS_TTL`] and a finished
/// response for [`RECORD_TTL`].
struct RecordExpiry;

impl moka::Expiry<String, Record> for RecordExpiry {
    fn expire_after_create(&self, _: &String, record: &Record, _: Instant) -> Option<Duration> {
        Some(lifetime(record))
    }

    fn expire_after_update(
        &self,
        _: &String,
        record: &Record,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(lifetime(record))
    }
}

fn lifetime(record: &Record) -> Duration {
    if record.response.is_some() {
        RECORD_TTL
    } else {
        IN_PROGRESS_TTL
    }
}

impl Default for LocalIdempotency {
    fn default() -> Self {
        Self {
            records: Cache::builder()
                .max_capacity(100_000)
                .expire_after(RecordExpiry)
                .build(),
        }
    }
}

#[async_trait]
impl IdempotencyStore for LocalIdempotency {
    async fn begin(&self, key: &str, fingerprint: &str) -> Result<Begin, String> {
        let entry = self
            .records
            .entry_by_ref(key)
            .or_insert_with(async {
                Record {
                    fingerprint: fingerprint.to_string(),
                    response: None,
                }
            })
            .await;
        if entry.is_fresh() {
            return Ok(Begin::Started);
        }
        Ok(entry.into_value().begin(fingerprint))
    }

    async fn finish(
        &self,
        key: &str,
        fingerprint: &str,
        response: StoredResponse,
    ) -> Result<(), String> {
        let record = Record {
            fingerprint: fingerprint.to_string(),
            response: Some(response),
        };
        self.records.insert(key.to_string(), record).await;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), String> {
        self.records.invalidate(key).await;
        Ok(())
    }
}

fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Checks a key: 1 to 255 visible ASCII characters.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Hashes what makes two requests the same: method, path with query, and
/// body.
fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// The record key: the session's token digest and the client's key. Keys
/// sent without a session (registration, login) also carry the request's
/// fingerprint, because unrelated clients may pick the same key.
fn record_key(request: &Request, key: &str, fingerprint: &str) -> String {
    let session = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .map(|(_, token)| token_digest(token.trim()));
    match session {
        Some(digest) => format!("{digest}:{key}"),
        None => format!("anonymous:{fingerprint}:{key}"),
    }
}

/// Statuses that say "try again later" rather than what the request did,
/// so they are not stored.
fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// Frees the key of an attempt that ends without storing a response,
/// including one whose client went away and dropped the request.
struct Attempt {
    store: Arc<dyn IdempotencyStore>,
    record: Option<String>,
}

impl Attempt {
    /// Marks the attempt as settled: its record is stored, or was released.
    fn settle(&mut self) {
        self.record = None;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.release(&record).await {
                    tracing::warn!(%error, "releasing an idempotency key failed");
                }
            });
        }
    }
}

/// Renews the lease of a running attempt until the caller drops this.
async fn renew_lease(store: &dyn IdempotencyStore, record: &str) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(LEASE_RENEWAL).await;
        if let Err(error) = store.renew(record).await {
            tracing::debug!(%error, "renewing an Idempotency-Key lease failed");
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Body::from(stored.body)).into_response();
    let headers = response.headers_mut();
    if let Some(value) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Runs a mutating request with an `Idempotency-Key` at most once per key.
/// When the record store fails, the request runs unguarded and the failure
/// is logged, because refusing every write would be worse than a rare
/// repeat during an outage of the shared tier.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = request.headers().get(&IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    if !is_mutating(request.method()) {
        return next.run(request).await;
    }
    let key = match key.to_str() {
        Ok(key) if valid_key(key) => key.to_string(),
        _ => {
            return ApiError::invalid(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
            ))
            .into_response()
        }
    };
    let (parts, body) = request.into_parts();
    // The largest body any route accepts: a photo upload, or a JSON body.
    let upload_limit = state
        .uploads
        .as_ref()
        .map_or(0, |u| u.limits.max_bytes.saturating_add(64 * 1024));
    let limit = state.config.max_body_bytes.max(upload_limit);
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::TooLarge(format!("request body is over the limit of {limit} bytes"))
                .into_response()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let fingerprint = fingerprint(&parts.method, path, &bytes);
    let request = Request::from_parts(parts, Body::from(bytes));
    let record = record_key(&request, &key, &fingerprint);

    let store = &state.idempotency;
    let mut begun = store.begin(&record, &fingerprint).await;
    let waiting_since = Instant::now();
    while matches!(begun, Ok(Begin::InProgress)) && waiting_since.elapsed() < IN_PROGRESS_WAIT {
        tokio::time::sleep(IN_PROGRESS_POLL).await;
        begun = store.begin(&record, &fingerprint).await;
    }
    match begun {
        Ok(Begin::Started) => {}
        Ok(Begin::Done(stored)) => return replay(stored),
        Ok(Begin::InProgress) => {
            return (
                StatusCode::CONFLICT,
                [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                axum::Json(serde_json::json!({"errors": {"body": [
                    "a request with this Idempotency-Key is still in progress; retry later"
                ]}})),
            )
                .into_response()
        }
        Ok(Begin::Mismatch) => {
            return ApiError::invalid(
                "Idempotency-Key was already used for a different request".to_string(),
            )
            .into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "idempotency records unavailable; running the request unguarded");
            return next.run(request).await;
        }
    }

    let mut attempt = Attempt {
        store: store.clone(),
        record: Some(record.clone()),
    };
    let response = tokio::select! {
        response = next.run(request) => response,
        never = renew_lease(store.as_ref(), &record) => match never {},
    };
    let (parts, body) = response.into_parts();
    if is_transient(parts.status) {
        // Dropping `attempt` releases the key.
        return Response::from_parts(parts, body);
    }
    let bytes = match axum::body::to_bytes(body, MAX_STORED_BODY).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "response too large to store for its Idempotency-Key");
            return (StatusCode::INTERNAL_SERVER_ERROR, "response too large").into_response();
        }
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: bytes.to_vec(),
    };
    if let Err(error) = store.finish(&record, &fingerprint, stored).await {
        tracing::warn!(%error, "storing the response of an Idempotency-Key failed");
    }
    attempt.settle();
    Response::from_parts(parts, Body::from(bytes))
}

/// A store for one node, kept in this process.
pub fn local() -> Arc<dyn IdempotencyStore> {
    Arc::new(LocalIdempotency::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii() {
        assert!(valid_key("9f1c2b4e-0d6a-4c1e-9a57-3f0c5f6f7a10"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key("é"));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LENGTH + 1)));
    }

    #[test]
    fn fingerprint_covers_method_path_and_body() {
        let base = fingerprint(&Method::POST, "/api/articles", b"{}");
        assert_eq!(base, fingerprint(&Method::POST, "/api/articles", b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, "/api/articles", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/users", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/articles", b"{ }"));
    }

    #[tokio::test]
    async fn local_store_runs_a_key_once() {
        let store = LocalIdempotency::default();
        assert_eq!(store.begin("k", "a").await.unwrap(), Begin::Started);
        assert_eq!(store.begin("k", "a").await.unwrap(), Begin::InProgress);
        assert_eq!(store.begin("k", "b").await.unwrap(), Begin::Mismatch);
        let response = StoredResponse {
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
        };
        store.finish("k", "a", response.clone()).await.unwrap();
        assert_eq!(store.begin("k", "a").await.unwrap(), Begin::Done(response));
        store.release("k").await.unwrap();
        assert_eq!(store.begin("k", "a").await.unwrap(), Begin::Started);
    }
}
