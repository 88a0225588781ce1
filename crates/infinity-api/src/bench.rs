//! Benchmark-only routes, mounted when `ApiConfig::bench_routes` is set.
//!
//! `GET /bench/bare` returns a byte string held in memory, through the same
//! middleware as the API, so a benchmark can divide the throughput of a real
//! route by the throughput of a handler that does no work of its own.
//! `PUT /bench/bare` stores the bytes to return, for example a copy of a
//! `GET /api/articles/{slug}` response.

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

/// The response body of `GET /bench/bare`, empty until the first `PUT`.
#[derive(Clone, Default)]
struct BareBody(Arc<RwLock<Option<Bytes>>>);

/// Builds the benchmark routes. They keep their own state, so the router
/// merges into an application of any state type.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/bench/bare", get(bare).put(store_bare))
        .with_state(BareBody::default())
}

/// `GET /bench/bare`: the stored bytes as `application/json`, as the JSON
/// routes label their responses.
async fn bare(State(body): State<BareBody>) -> Response {
    let stored = body
        .0
        .read()
        .expect("no writer panics while holding the lock")
        .clone();
    match stored {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        // Reads "benchmark body not found": PUT /bench/bare stores one.
        None => ApiError::NotFound("benchmark body").into_response(),
    }
}

/// `PUT /bench/bare`: replaces the bytes that `GET /bench/bare` returns.
async fn store_bare(State(body): State<BareBody>, bytes: Bytes) -> StatusCode {
    *body
        .0
        .write()
        .expect("no reader panics while holding the lock") = Some(bytes);
    StatusCode::NO_CONTENT
}
