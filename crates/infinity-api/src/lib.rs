//! Infinity's HTTP API: the RealWorld "Conduit" API under `/api`, Infinity's
//! additions, and the operational endpoints every role exposes.

mod articles;
pub mod auth;
pub mod backlog;
mod bench;
mod comments;
pub mod consistency;
pub mod error;
mod extract;
pub mod idempotency;
mod media;
pub mod ops;
mod profiles;
pub mod ratelimit;
pub mod reads;
pub mod shared_cache;
pub mod telemetry;
pub mod uploads;
mod users;
pub mod validate;
pub mod views;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderName, Method};
use axum::routing::get;
use axum::{Json, Router};
use infinity_store::{SessionStore, Store};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long a client may take to send a request body, so that a slow or
/// stalled client cannot hold a connection open.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
use tower_http::cors::{Any, CorsLayer};

use crate::error::ApiResult;
use crate::ratelimit::{LoginLimiter, LoginQuota};
use crate::reads::{CacheSettings, Reads};

/// Settings of the API role.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long a login session lasts.
    pub session_ttl: Duration,
    pub login_per_account: LoginQuota,
    pub login_per_address: LoginQuota,
    pub cache: CacheSettings,
    /// The largest JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// Mounts `/bench/bare`, a handler that returns stored bytes, for
    /// throughput comparisons. Off by default.
    pub bench_routes: bool,
    /// Peers whose `x-forwarded-for` names the client, such as the load
    /// balancer. Loopback by default.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            login_per_account: LoginQuota {
                burst: 10,
                per_minute: 10,
            },
            login_per_address: LoginQuota {
                burst: 100,
                per_minute: 100,
            },
            cache: CacheSettings::default(),
            max_body_bytes: 1 << 20,
            bench_routes: false,
            trusted_proxies: ratelimit::loopback(),
        }
    }
}

/// The state every handler shares. Cloning is cheap.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub reads: Reads,
    pub limiter: LoginLimiter,
    pub config: ApiConfig,
    pub metrics: PrometheusHandle,
    /// Photo uploads and media; `None` on a node that serves neither.
    pub uploads: Option<uploads::UploadSettings>,
    /// Set when shutdown begins, so `/readyz` fails before the listener
    /// closes and a load balancer stops sending requests.
    pub draining: AtomicBool,
    /// Each session's last write position, for read-your-writes.
    pub positions: consistency::SessionPositions,
    /// Responses stored under their `Idempotency-Key`.
    pub idempotency: Arc<dyn idempotency::IdempotencyStore>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, sessions: Arc<dyn SessionStore>, config: ApiConfig) -> Self {
        let limiter = LoginLimiter::new(config.login_per_account, config.login_per_address);
        Self(Arc::new(Shared {
            reads: Reads::new(store, sessions, &config.cache),
            limiter,
            config,
            metrics: telemetry::prometheus(),
            uploads: None,
            draining: AtomicBool::new(false),
            positions: consistency::SessionPositions::default(),
            idempotency: idempotency::local(),
        }))
    }

    /// Keeps `Idempotency-Key` records in `store`, such as one that every
    /// node shares. Call it before the state is shared.
    pub fn with_idempotency(mut self, store: Arc<dyn idempotency::IdempotencyStore>) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("with_idempotency is called before the state is shared")
            .idempotency = store;
        self
    }

    /// Enables photo uploads and media. Call it before the state is shared.
    pub fn with_uploads(mut self, settings: uploads::UploadSettings) -> Self {
        Arc::get_mut(&mut self.0)
            .expect("with_uploads is called before the state is shared")
            .uploads = Some(settings);
        self
    }

    /// Returns the upload settings, or a 503 on a node without them.
    pub fn uploads(&self) -> ApiResult<&uploads::UploadSettings> {
        self.0.uploads.as_ref().ok_or_else(|| {
            error::ApiError::Unavailable("photo uploads are not enabled on this node".into())
        })
    }
}

/// Builds the whole HTTP application.
pub fn app(state: AppState) -> Router {
    let upload_limits = state
        .0
        .uploads
        .as_ref()
        .map(|u| u.limits.clone())
        .unwrap_or_default();
    let api = Router::new()
        .merge(users::router())
        .merge(profiles::router())
        .merge(articles::router())
        .merge(comments::router())
        .route("/tags", get(tags))
        .merge(uploads::router(&upload_limits))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::guard,
        ));

    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            telemetry::REQUEST_ID,
        ])
        .expose_headers([
            header::RETRY_AFTER,
            telemetry::REQUEST_ID,
            idempotency::IDEMPOTENT_REPLAYED,
        ])
        .max_age(Duration::from_secs(3600));

    let mut router = Router::new()
        .nest("/api", api)
        .merge(ops::router())
        .merge(media::router());
    if state.config.bench_routes {
        router = router.merge(bench::router());
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            consistency::scope_requests,
        ))
        .layer(axum::middleware::from_fn(telemetry::record_metrics))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::new())
        .layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .layer(cors)
        .with_state(state);
    telemetry::layers(router)
}

/// `GET /api/tags`: tags in use, most used first.
async fn tags(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({ "tags": state.reads.tags().await? })))
}

async fn not_found() -> error::ApiError {
    error::ApiError::NotFound("route")
}

async fn method_not_allowed(method: Method) -> error::ApiError {
    error::ApiError::MethodNotAllowed(method.to_string())
}
