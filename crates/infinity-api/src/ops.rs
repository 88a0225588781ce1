//! Operational endpoints: liveness, readiness, metrics and the OpenAPI
//! document.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::AppState;

/// How long `/readyz` waits for the database, so that a hung server makes
/// the node unready instead of hanging the check.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Infinity's OpenAPI document: the RealWorld specification plus Infinity's
/// additions, in YAML as maintained, served as JSON.
const OPENAPI_YAML: &str = include_str!("../openapi.yml");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
}

/// The OpenAPI document as JSON, parsed once.
pub fn openapi_document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_yaml::from_str(OPENAPI_YAML).expect("the embedded OpenAPI document is valid YAML")
    })
}

/// Reports that the process is alive.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Reports whether the process can serve: its database responds and it is
/// not shutting down.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.reads.store();
    let database = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => json!({ "engine": store.engine(), "status": "up" }),
        Ok(Err(error)) => {
            json!({ "engine": store.engine(), "status": "down", "error": error.to_string() })
        }
        Err(_) => json!({
            "engine": store.engine(),
            "status": "down",
            "error": format!("the database did not respond within {} s", PING_TIMEOUT.as_secs()),
        }),
    };
    let draining = state.draining.load(Ordering::SeqCst);
    let ready = database["status"] == "up" && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut database = database;
    let servers = store.servers();
    if !servers.is_empty() {
        database["servers"] = json!(servers);
    }
    let body = json!({
        "status": if ready { "ready" } else if draining { "draining" } else { "unavailable" },
        "checks": { "database": database },
    });
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    for (pool, size, idle) in state.reads.store().pool_usage() {
        metrics::gauge!("infinity_db_pool_connections", "pool" => pool.clone(), "state" => "open")
            .set(f64::from(size));
        metrics::gauge!("infinity_db_pool_connections", "pool" => pool, "state" => "idle")
            .set(idle as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn openapi() -> Json<Value> {
    Json(openapi_document().clone())
}
