//! The API's one error type and the single place that turns causes into
//! status codes and the RealWorld error body.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use infinity_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token, or a token that names no live session.
    #[error("{0}")]
    Unauthorized(String),
    /// 401 for a failed login: the message stays the same whichever of the
    /// e-mail address or password was wrong.
    #[error("email or password is invalid")]
    BadCredentials,
    /// 403: acting on another user's article or comment.
    #[error("{0}")]
    Forbidden(String),
    /// 404, naming what was not found.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405: the path exists, but not with this method.
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    /// 422 with one message per invalid field.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// 413: a body or file over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a file of a kind that is recognised but not supported.
    #[error("{0}")]
    Unsupported(String),
    /// 416: a byte range that starts past the end.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// 503: a feature this node is not configured for.
    #[error("{0}")]
    Unavailable(String),
    /// 429 with the seconds after which a retry may succeed.
    #[error("too many login attempts; retry in {0} seconds")]
    TooManyRequests(u64),
    /// 500: logged with its cause, never shown to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Builds a 422 with one message.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![message.into()])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::BadCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn messages(&self) -> Vec<String> {
        match self {
            ApiError::Invalid(messages) => messages.clone(),
            ApiError::Internal(_) => vec!["internal server error".to_string()],
            other => vec![other.to_string()],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let body = json!({ "errors": { "body": self.messages() } });
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
            }
            ApiError::TooManyRequests(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Taken(field) => {
                ApiError::invalid(format!("{} has already been taken", field.name()))
            }
            StoreError::NotFound => ApiError::NotFound("record"),
            other if other.is_invalid_text() => invalid_text(),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "database unavailable");
                ApiError::Unavailable("the database is unavailable; try again shortly".into())
            }
            other if other.is_id_taken() => {
                tracing::warn!(error = %other, "every minted id was taken by concurrent writes");
                ApiError::Unavailable(
                    "concurrent writes took every id minted for this one; try again".into(),
                )
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The cache shares one load's error among every caller that waited for it.
impl From<Arc<StoreError>> for ApiError {
    fn from(error: Arc<StoreError>) -> Self {
        match Arc::try_unwrap(error) {
            Ok(error) => error.into(),
            Err(shared) if shared.is_invalid_text() => invalid_text(),
            Err(shared) if shared.is_unavailable() => {
                ApiError::Unavailable("the database is unavailable; try again shortly".into())
            }
            Err(shared) => ApiError::Internal(shared.to_string()),
        }
    }
}

fn invalid_text() -> ApiError {
    ApiError::invalid("text must not contain NUL characters (U+0000)".to_string())
}

pub type ApiResult<T> = Result<T, ApiError>;
