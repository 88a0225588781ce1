//! HTTP client for the RealWorld API of the target.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

/// Maximum attempts of one seeding request that the target rejects with 429.
const MAX_RATE_LIMITED_ATTEMPTS: u32 = 30;

/// Header under which the target stores a write's first response and replays it for a
/// repeat; see [`ApiClient::request`].
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Pause after a 429 without a usable Retry-After header.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Maximum pause honoured from a Retry-After header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Failure of an API call made while seeding or logging in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path} returned status {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {path} still returned 429 after {attempts} attempts")]
    RateLimited {
        method: Method,
        path: String,
        attempts: u32,
    },
    #[error("{method} {path} failed: {source}")]
    Transport {
        method: Method,
        path: String,
        source: reqwest::Error,
    },
    #[error("{method} {path} returned a body without {field}")]
    MissingField {
        method: Method,
        path: String,
        field: &'static str,
    },
}

/// Result of one photo upload.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadOutcome {
    /// The target accepted the photo and returned this upload id.
    Accepted(String),
    /// The target has no upload route (404).
    Unsupported,
}

/// Client of one target, with a connection pool shared by all tasks.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    rate_limited: AtomicU64,
}

impl ApiClient {
    /// Builds a client for `base` (such as http://127.0.0.1:8080) that keeps up to
    /// `pool_size` idle connections and gives up on a request after `timeout`.
    pub fn new(base: &str, pool_size: usize, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool_size)
            .timeout(timeout)
            // Proxies from the environment and redirects could send load to another host.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            rate_limited: 0.into(),
        })
    }

    /// Number of 429 responses received by seeding and login calls so far.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Starts a request to `path` (which begins with /api), with the token when given.
    ///
    /// Every request that is not GET, HEAD or OPTIONS gets a new random
    /// `Idempotency-Key`, so that a load balancer may repeat it on another node after a
    /// broken connection, and the server replays the first response instead of applying
    /// it twice. A request sent again after a response (such as a 429) is built anew and
    /// gets a new key, because the server would replay the stored response for the old one.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let is_write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut builder = self.http.request(method, format!("{}{path}", self.base));
        if is_write {
            builder = builder.header(IDEMPOTENCY_KEY, new_idempotency_key());
        }
        match token {
            Some(token) => builder.header(header::AUTHORIZATION, format!("Token {token}")),
            None => builder,
        }
    }

    /// Sends a JSON request and returns the JSON response body. After a 429 response, waits
    /// for the Retry-After pause and sends the request again.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let transport = |source| ApiError::Transport {
            method: method.clone(),
            path: path.into(),
            source,
        };
        for _ in 0..MAX_RATE_LIMITED_ATTEMPTS {
            let mut request = self.request(method.clone(), path, token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let pause = retry_after(response.headers());
                tracing::debug!(%method, path, ?pause, "rate limited, retrying");
                tokio::time::sleep(pause).await;
                continue;
            }
            let bytes = response.bytes().await.map_err(transport)?;
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
                return Err(ApiError::Status {
                    method,
                    path: path.into(),
                    status,
                    body,
                });
            }
            return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
        }
        let attempts = MAX_RATE_LIMITED_ATTEMPTS;
        Err(ApiError::RateLimited {
            method,
            path: path.into(),
            attempts,
        })
    }

    /// Registers a user and returns its token. Logs in instead when the target rejects the
    /// registration with 409 or 422, as it does for a username that exists.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<String, ApiError> {
        let body = json!({"user": {"username": username, "email": email, "password": password}});
        match self
            .call(Method::POST, "/api/users", None, Some(&body))
            .await
        {
            Ok(body_json) => user_token(&body_json, "/api/users"),
            Err(rejection @ ApiError::Status { status, .. })
                if status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::CONFLICT =>
            {
                // A failed login means the registration was rejected for another reason,
                // which the registration error explains better.
                match self.login(email, password).await {
                    Err(ApiError::Status { .. }) => Err(rejection),
                    login => login,
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Logs a user in and returns its token.
    pub async fn login(&self, email: &str, password: &str) -> Result<String, ApiError> {
        let body = json!({"user": {"email": email, "password": password}});
        let body_json = self
            .call(Method::POST, "/api/users/login", None, Some(&body))
            .await?;
        user_token(&body_json, "/api/users/login")
    }

    /// Returns whether the target accepts `token`, by reading the current user.
    pub async fn token_is_valid(&self, token: &str) -> Result<bool, ApiError> {
        match self.call(Method::GET, "/api/user", Some(token), None).await {
            Ok(_) => Ok(true),
            Err(ApiError::Status { status, .. }) if status == StatusCode::UNAUTHORIZED => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Uploads one photo as the multipart field `file`.
    pub async fn upload(&self, token: &str, path: &Path) -> anyhow::Result<UploadOutcome> {
        let bytes = tokio::fs::read(path).await?;
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.unwrap_or_default());
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = self
            .request(Method::POST, "/api/uploads", Some(token))
            .multipart(form)
            .send()
            .await?;

        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(UploadOutcome::Unsupported);
        }
        if !status.is_success() {
            anyhow::bail!(
                "POST /api/uploads of {} returned status {status}",
                path.display()
            );
        }
        let body_json: Value = response.json().await?;
        match &body_json["upload"]["id"] {
            Value::String(id) => Ok(UploadOutcome::Accepted(id.clone())),
            Value::Number(id) => Ok(UploadOutcome::Accepted(id.to_string())),
            _ => anyhow::bail!("POST /api/uploads returned a body without upload.id"),
        }
    }
}

fn user_token(body_json: &Value, path: &str) -> Result<String, ApiError> {
    match body_json["user"]["token"].as_str() {
        Some(token) => Ok(token.to_string()),
        None => Err(ApiError::MissingField {
            method: Method::POST,
            path: path.into(),
            field: "user.token",
        }),
    }
}

/// Returns a new `Idempotency-Key` value: 128 random bits as 32 hexadecimal digits.
fn new_idempotency_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Returns the pause a Retry-After header requests, capped at [`MAX_RETRY_AFTER`].
///
/// NOTE: only the delay-seconds form is read. An HTTP-date value falls back to
/// [`DEFAULT_RETRY_AFTER`].
pub fn retry_after(headers: &header::HeaderMap) -> Duration {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(|seconds| Duration::from_secs_f64(seconds).min(MAX_RETRY_AFTER))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> header::HeaderMap {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, value.parse().unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(retry_after(&headers("3")), Duration::from_secs(3));
        assert_eq!(retry_after(&headers("0.5")), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_falls_back_and_caps() {
        assert_eq!(retry_after(&header::HeaderMap::new()), DEFAULT_RETRY_AFTER);
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            DEFAULT_RETRY_AFTER
        );
        assert_eq!(retry_after(&headers("-2")), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(&headers("86400")), MAX_RETRY_AFTER);
    }

    #[test]
    fn writes_get_a_new_idempotency_key() {
        let client = ApiClient::new("http://127.0.0.1:1", 1, Duration::from_secs(1)).unwrap();
        let key = |method: Method| {
            let request = client
                .request(method, "/api/articles", Some("t"))
                .build()
                .unwrap();
            request
                .headers()
                .get(IDEMPOTENCY_KEY)
                .map(|value| value.to_str().unwrap().to_string())
        };
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let first = key(method.clone()).expect("a write carries a key");
            let second = key(method.clone()).expect("a write carries a key");
            assert_eq!(first.len(), 32, "{method} {first}");
            assert!(
                first.bytes().all(|byte| byte.is_ascii_hexdigit()),
                "{first}"
            );
            assert_ne!(first, second, "{method} reuses a key");
        }
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(key(method.clone()), None, "{method}");
        }
    }

    #[test]
    fn user_token_reads_token() {
        let body_json = json!({"user": {"token": "abc", "username": "u"}});
        assert_eq!(user_token(&body_json, "/api/users").unwrap(), "abc");
        let error = user_token(&json!({"user": {}}), "/api/users").unwrap_err();
        assert!(error.to_string().contains("user.token"), "{error}");
    }
}
