//! A private Infinity API on a free loopback port, a client that checks
//! every response body against the service's own OpenAPI document, and
//! helpers for the common set-up steps.
//!
//! The suite runs on SQLite, or with `INFINITY_TEST_DATABASE=postgres` on a
//! private PostgreSQL primary with one streaming replica, a new database per
//! server.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use infinity_api::{app, ops::openapi_document, ApiConfig, AppState};
use infinity_store::{
    JobQueue, PostgresOptions, PostgresStore, SessionStore, SqliteOptions, SqliteStore, Store,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub jobs: Arc<dyn JobQueue>,
    /// The PostgreSQL database behind the server; `None` on SQLite.
    pub postgres: Option<infinity_local::SharedDatabase>,
    _data: TempDir,
}

/// The engine behind a test server, as three interfaces.
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub sessions: Arc<dyn SessionStore>,
    pub jobs: Arc<dyn JobQueue>,
    pub postgres: Option<infinity_local::SharedDatabase>,
}

fn engine_of<S: Store + SessionStore + JobQueue>(
    engine: S,
    postgres: Option<infinity_local::SharedDatabase>,
) -> Engine {
    let engine = Arc::new(engine);
    Engine {
        store: engine.clone(),
        sessions: engine.clone(),
        jobs: engine,
        postgres,
    }
}

/// True when the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("INFINITY_TEST_DATABASE").is_ok_and(|engine| engine == "postgres")
}

/// Opens the engine the suite runs on: SQLite in `data`, or a new database
/// on the shared PostgreSQL cluster with its replica.
pub async fn open_engine(data: &Path) -> Engine {
    if !on_postgres() {
        let store = SqliteStore::open(&data.join("test.db"), SqliteOptions::default())
            .await
            .expect("open the test database");
        return engine_of(store, None);
    }
    let database = infinity_local::shared_database("api");
    let mut options = PostgresOptions::new(&database.primary_url);
    options.replicas = database.replica_urls.clone();
    options.connections = 4;
    let store = PostgresStore::connect(options)
        .await
        .expect("connect to the test cluster");
    store.migrate().await.expect("apply the schema");
    engine_of(store, Some(database))
}

/// A response: status, body as JSON (`Null` when empty) and headers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ApiConfig::default()).await
    }

    pub async fn start_with(config: ApiConfig) -> Self {
        let data = tempfile::tempdir().expect("temporary folder");
        let engine = open_engine(data.path()).await;
        let state = AppState::new(engine.store.clone(), engine.sessions.clone(), config);
        Self::serve(state, engine, data).await
    }

    /// Serves `state` on a free loopback port for the rest of the test.
    async fn serve(state: AppState, engine: Engine, data: TempDir) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app(state).into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            store: engine.store,
            jobs: engine.jobs,
            postgres: engine.postgres,
            _data: data,
        }
    }

    /// Sends a request to `/api{path}` and checks the reply against the
    /// OpenAPI document's schema for that operation and status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method.clone(), format!("{}/api{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Token {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = self.send(request).await;
        check_schema(&method, path, &reply);
        reply
    }

    /// Sends a raw request without any schema check.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read the body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status} body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Registers `name` (e-mail `name@example.com`, password `password-<name>`)
    /// and returns the token.
    pub async fn register(&self, name: &str) -> String {
        let reply = self
            .post(
                "/users",
                None,
                json!({"user": {"username": name, "email": format!("{name}@example.com"), "password": format!("password-{name}")}}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "register {name}: {}",
            reply.body
        );
        reply.body["user"]["token"].as_str().unwrap().to_string()
    }

    /// Sends `body` as raw bytes with a JSON content type to `/api{path}` and
    /// checks the reply against the document, like [`TestServer::call`].
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> Reply {
        let mut request = self
            .client
            .request(method.clone(), format!("{}/api{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.header("Authorization", format!("Token {token}"));
        }
        let reply = self.send(request).await;
        check_schema(&method, path, &reply);
        reply
    }

    /// Logs in with an e-mail address and password and returns the reply.
    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/users/login",
            None,
            json!({"user": {"email": email, "password": password}}),
        )
        .await
    }

    /// Creates an article and returns its slug.
    pub async fn article(&self, token: &str, title: &str, tags: &[&str]) -> String {
        let reply = self
            .post(
                "/articles",
                Some(token),
                json!({"article": {"title": title, "description": "about it", "body": "the text", "tagList": tags}}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create {title}: {}",
            reply.body
        );
        reply.body["article"]["slug"].as_str().unwrap().to_string()
    }
}

/// Runs every future on its own task, so they run in parallel on a
/// multi-threaded runtime, and returns their outputs in order.
pub async fn join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("the task finished without a panic"));
    }
    outputs
}

/// Asserts that a 4xx body is the RealWorld error body and that one of its
/// messages contains `needle`.
pub fn assert_error(reply: &Reply, status: u16, needle: &str) {
    assert_eq!(reply.status.as_u16(), status, "body: {}", reply.body);
    let messages = reply.body["errors"]["body"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors.body in {}", reply.body));
    assert!(
        messages
            .iter()
            .any(|m| m.as_str().unwrap_or("").contains(needle)),
        "no message contains {needle:?}: {messages:?}"
    );
}

/// Asserts that `text` is RFC 3339 UTC with milliseconds, such as
/// `2026-01-01T00:00:00.007Z`.
pub fn assert_timestamp(text: &Value) {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{text} is not a string"));
    let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    let fits = text.len() == pattern.len()
        && text.chars().zip(pattern.chars()).all(|(c, p)| match p {
            'd' => c.is_ascii_digit(),
            other => c == other,
        });
    assert!(
        fits,
        "{text:?} is not a timestamp like 2026-01-01T00:00:00.007Z"
    );
}

/// Returns the slugs of a list reply's articles, in order.
pub fn slugs(reply: &Reply) -> Vec<String> {
    reply.body["articles"]
        .as_array()
        .unwrap_or_else(|| panic!("no articles in {}", reply.body))
        .iter()
        .map(|a| a["slug"].as_str().unwrap().to_string())
        .collect()
}

/// Maps a concrete path to the document's path template.
fn template(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap();
    let document = openapi_document();
    let segments: Vec<&str> = path.split('/').collect();
    document["paths"].as_object()?.keys().find_map(|candidate| {
        let parts: Vec<&str> = candidate.split('/').collect();
        let fits = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()));
        // A literal segment beats a parameter: /articles/feed, not /articles/{slug}.
        let literal = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k == path);
        (fits && (!literal || candidate == path)).then(|| candidate.clone())
    })
}

/// Checks a reply against the schema the document gives for its operation
/// and status; panics when the status is not documented or the body breaks
/// the schema.
pub fn check_schema(method: &Method, path: &str, reply: &Reply) {
    let document = openapi_document();
    let template =
        template(path).unwrap_or_else(|| panic!("{path} is not in the OpenAPI document"));
    let operation = &document["paths"][&template][method.as_str().to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not in the OpenAPI document"
    );
    let mut response = &operation["responses"][reply.status.as_str()];
    assert!(
        response.is_object(),
        "{method} {template} answered {}, which the document does not list: {}",
        reply.status,
        reply.body
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        response = &document["components"]["responses"][name];
    }
    let schema = &response["content"]["application/json"]["schema"];
    if schema.is_null() {
        assert!(
            reply.body.is_null(),
            "{method} {template} {} has a body: {}",
            reply.status,
            reply.body
        );
        return;
    }
    let validator = validator_for(schema);
    if let Err(error) = validator.validate(&reply.body) {
        panic!(
            "{method} {template} {} breaks the schema: {error} at {}\nbody: {}",
            reply.status, error.instance_path, reply.body
        );
    }
}

fn validator_for(schema: &Value) -> jsonschema::Validator {
    static COMPONENTS: OnceLock<Value> = OnceLock::new();
    let components = COMPONENTS.get_or_init(|| openapi_document()["components"].clone());
    let root = json!({ "allOf": [schema], "components": components });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .expect("the document's schemas compile")
}

// Photo uploads: a server with uploads enabled, an in-process worker that
// makes the variants, and a multipart upload helper.

/// Stops the in-process worker of [`TestServer::start_media_worker`] when
/// dropped.
pub struct WorkerGuard(tokio::sync::watch::Sender<bool>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl TestServer {
    /// Starts a server with photo uploads enabled under `limits`. Objects go
    /// to the `objects` folder of the server's data folder.
    pub async fn start_with_uploads(limits: infinity_media::Limits) -> Self {
        let data = tempfile::tempdir().expect("temporary folder");
        let engine = open_engine(data.path()).await;
        let uploads = infinity_api::uploads::UploadSettings {
            objects: Arc::new(infinity_jobs::objects::LocalFolder::new(
                data.path().join("objects"),
            )),
            limits,
            check_timeout: std::time::Duration::from_secs(30),
            public_url: String::new(),
            backlog: None,
        };
        let state = AppState::new(
            engine.store.clone(),
            engine.sessions.clone(),
            ApiConfig::default(),
        )
        .with_uploads(uploads);
        Self::serve(state, engine, data).await
    }

    /// Counts the rows of `table`, straight from the database.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match &self.postgres {
            Some(database) => {
                let pool = sqlx::PgPool::connect(&database.primary_url).await.unwrap();
                let count = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                count
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.data_dir().join("test.db"))
                    .read_only(true);
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                let count = sqlx::query_scalar(&sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                count
            }
        }
    }

    /// The server's data folder: `test.db` and, with uploads, `objects/`.
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// Runs a `media.variants` worker over the server's database and
    /// objects until the guard is dropped.
    pub fn start_media_worker(&self) -> WorkerGuard {
        use infinity_jobs::handlers::{MakeVariants, MAKE_VARIANTS};
        use infinity_jobs::{Worker, WorkerConfig};

        let config = WorkerConfig {
            poll_interval: std::time::Duration::from_millis(20),
            ..WorkerConfig::default()
        };
        let handler = MakeVariants {
            store: self.store.clone(),
            objects: Arc::new(infinity_jobs::objects::LocalFolder::new(
                self.data_dir().join("objects"),
            )),
            limits: infinity_media::Limits::default(),
            timeout: std::time::Duration::from_secs(120),
        };
        let worker = Worker::new(self.jobs.clone(), config).handle(MAKE_VARIANTS, handler);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(Arc::new(worker).run(stopped));
        WorkerGuard(stop)
    }

    /// Posts `form` to `/api/uploads` and checks the reply against the
    /// OpenAPI document.
    pub async fn upload_form(&self, token: Option<&str>, form: reqwest::multipart::Form) -> Reply {
        let mut request = self
            .client
            .post(format!("{}/api/uploads", self.base))
            .multipart(form);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Token {token}"));
        }
        let reply = self.send(request).await;
        check_schema(&Method::POST, "/uploads", &reply);
        reply
    }

    /// Uploads `bytes` as the multipart field `file`, with the given file
    /// name and content type.
    pub async fn upload(
        &self,
        token: Option<&str>,
        file_name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Reply {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(file_name.to_string())
            .mime_str(content_type)
            .expect("a valid content type");
        self.upload_form(token, reqwest::multipart::Form::new().part("file", part))
            .await
    }
}
