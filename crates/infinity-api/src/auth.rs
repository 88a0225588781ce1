//! Passwords, tokens and the extractors that resolve a request's session.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use infinity_store::Id;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Bounds the Argon2 computations that run at once. Each one takes 19 MiB
/// for tens of milliseconds, so a burst of registrations or logins would
/// otherwise hold one buffer per request.
fn hashing_permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores)
    })
}

/// Runs one Argon2 computation on a blocking thread, waiting for a permit.
async fn run_argon2<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing is shut down: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("password hashing task failed: {e}")))?
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, two
/// passes), off the async threads because it takes tens of milliseconds.
pub async fn hash_password(password: String) -> ApiResult<String> {
    run_argon2(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing a password failed: {e}")))
    })
    .await
}

/// Checks a password against a stored PHC string.
pub async fn verify_password(password: String, hash: String) -> ApiResult<bool> {
    run_argon2(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::Internal(format!("stored password hash is invalid: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
}

/// Creates a session token: 32 random bytes, base64url. Returns the token
/// and the digest under which the session is stored.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = token_digest(&token);
    (token, digest)
}

/// Computes the SHA-256 of a token in hex, the key the session store keeps.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The signed-in user of a request that requires one.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Id,
    /// The token as the client sent it, returned in the user object.
    pub token: String,
    pub token_digest: String,
}

/// The signed-in user of a request where signing in is optional. A token
/// that is sent but invalid is still a 401, so that a client with an expired
/// session learns of it.
pub struct MaybeUser(pub Option<AuthUser>);

fn bearer(parts: &Parts) -> ApiResult<Option<String>> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("authorization header is not valid text".into()))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(|| {
        ApiError::Unauthorized("authorization header must be 'Token <token>'".into())
    })?;
    if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized(
            "authorization header must be 'Token <token>'".into(),
        ));
    }
    Ok(Some(token.trim().to_string()))
}

async fn resolve(parts: &Parts, state: &AppState) -> ApiResult<Option<AuthUser>> {
    let Some(token) = bearer(parts)? else {
        return Ok(None);
    };
    let digest = token_digest(&token);
    match state.reads.session(&digest).await? {
        Some(session) => Ok(Some(AuthUser {
            id: session.user_id,
            token,
            token_digest: digest,
        })),
        None => Err(ApiError::Unauthorized(
            "token is invalid or expired; log in again".into(),
        )),
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        resolve(parts, state)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("authorization token is missing".into()))
    }
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        Ok(MaybeUser(resolve(parts, state).await?))
    }
}
