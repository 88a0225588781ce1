//! Registration, login, logout and the current user.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use infinity_store::{
    with_fresh_ids, NewJob, NewUser, SessionRecord, StoreError, UserChanges, UserRecord,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{hash_password, new_token, verify_password, AuthUser};
use crate::consistency;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::ratelimit;
use crate::validate::{self, Problems};
use crate::views::UserView;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", post(register))
        .route("/users/login", post(login))
        .route("/user", get(current_user).put(update_user))
        .route("/user/session", axum::routing::delete(logout))
}

/// The variant a user's image names when it is set from an upload.
const AVATAR_SIZE: u32 = 640;

#[derive(Deserialize)]
struct Envelope<T> {
    user: T,
}

#[derive(Deserialize)]
struct Registration {
    username: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UserUpdate {
    email: Option<String>,
    username: Option<String>,
    password: Option<String>,
    bio: Option<String>,
    image: Option<String>,
}

fn user_body(user: UserRecord, token: String) -> Json<Value> {
    Json(json!({ "user": UserView::new(user, token) }))
}

/// Starts a session for `user` and returns its token.
async fn start_session(state: &AppState, user: &UserRecord) -> ApiResult<String> {
    let (token, token_digest) = new_token();
    let now = Utc::now();
    let session = SessionRecord {
        token_digest: token_digest.clone(),
        user_id: user.id,
        created_at: now,
        expires_at: now + state.config.session_ttl,
    };
    state.reads.sessions().create_session(session).await?;
    // The new token's first requests must find the session row.
    state
        .positions
        .raise(&token_digest, consistency::written_mark())
        .await;
    Ok(token)
}

/// `POST /api/users`
async fn register(
    State(state): State<AppState>,
    JsonBody(Envelope { user }): JsonBody<Envelope<Registration>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut problems = Problems::new();
    let username = problems.check(validate::username(&user.username));
    let email = problems.check(validate::email(&user.email));
    let password = problems.check(validate::password(&user.password));
    problems.into_result()?;
    let (username, email, password) = (username.unwrap(), email.unwrap(), password.unwrap());

    let password_hash = hash_password(password).await?;
    let welcome = NewJob {
        kind: "email.welcome".into(),
        payload: json!({ "email": email, "username": username }),
    };
    let new_user = NewUser {
        username,
        email,
        password_hash,
    };
    let store = state.reads.store();
    let user =
        with_fresh_ids(|| store.create_user(new_user.clone(), vec![welcome.clone()])).await?;
    state.reads.user_changed(user.id, &[&user.username]).await;
    let token = start_session(&state, &user).await?;
    tracing::info!(user_id = user.id, "user registered");
    Ok((StatusCode::CREATED, user_body(user, token)))
}

/// `POST /api/users/login`
async fn login(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    JsonBody(Envelope { user }): JsonBody<Envelope<Login>>,
) -> ApiResult<Json<Value>> {
    let mut problems = Problems::new();
    if user.email.trim().is_empty() {
        problems.add("email can't be blank");
    }
    if user.password.is_empty() {
        problems.add("password can't be blank");
    }
    problems.into_result()?;
    let address = ratelimit::client_address(client.ip(), &headers, &state.config.trusted_proxies);
    state.limiter.check(user.email.trim(), address).await?;

    let found = state.reads.store().user_by_email(user.email.trim()).await?;
    let Some(found) = found else {
        return Err(ApiError::BadCredentials);
    };
    if !verify_password(user.password, found.password_hash.clone()).await? {
        return Err(ApiError::BadCredentials);
    }
    let token = start_session(&state, &found).await?;
    Ok(user_body(found, token))
}

/// `GET /api/user`
async fn current_user(State(state): State<AppState>, auth: AuthUser) -> ApiResult<Json<Value>> {
    let user = state
        .reads
        .store()
        .user_by_id(auth.id)
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized("the user of this session no longer exists".into())
        })?;
    Ok(user_body(user, auth.token))
}

/// `PUT /api/user`. A new password ends every other session of the user.
async fn update_user(
    State(state): State<AppState>,
    auth: AuthUser,
    JsonBody(Envelope { user: update }): JsonBody<Envelope<UserUpdate>>,
) -> ApiResult<Json<Value>> {
    let mut problems = Problems::new();
    // An image may also name one of the user's uploads by id.
    let image_upload = update
        .image
        .as_deref()
        .and_then(|v| v.trim().parse::<infinity_store::Id>().ok());
    let image = update.image.filter(|_| image_upload.is_none());
    let mut changes = UserChanges {
        username: update
            .username
            .and_then(|v| problems.check(validate::username(&v))),
        email: update
            .email
            .and_then(|v| problems.check(validate::email(&v))),
        bio: update
            .bio
            .and_then(|v| problems.check(validate::text("bio", &v, 0, validate::MAX_BIO))),
        image: image.and_then(|v| problems.check(validate::image_url(&v))),
        password_hash: None,
    };
    let password = update
        .password
        .and_then(|v| problems.check(validate::password(&v)));
    let nothing = changes.username.is_none()
        && changes.email.is_none()
        && changes.bio.is_none()
        && changes.image.is_none()
        && image_upload.is_none()
        && password.is_none();
    if nothing && problems.is_empty() {
        problems.add("user must contain at least one of email, username, password, bio, image");
    }
    problems.into_result()?;

    if let Some(id) = image_upload {
        let settings = state.uploads()?;
        let upload = crate::uploads::usable_upload(&state, auth.id, id).await?;
        let url = crate::uploads::variant_url(settings, &upload.source_digest, AVATAR_SIZE);
        changes.image = Some(url);
    }
    let changing_password = password.is_some();
    if let Some(password) = password {
        changes.password_hash = Some(hash_password(password).await?);
    }
    let updated = state
        .reads
        .store()
        .update_user(auth.id, changes)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => {
                ApiError::Unauthorized("the user of this session no longer exists".into())
            }
            other => other.into(),
        })?;
    // Invalidate the username of the row this update replaced, because a
    // concurrent update may have changed it after this request began.
    let user = updated.current;
    state
        .reads
        .user_changed(user.id, &[&updated.previous.username, &user.username])
        .await;

    if changing_password {
        let ended = state
            .reads
            .sessions()
            .delete_sessions_except(user.id, &auth.token_digest)
            .await?;
        for digest in &ended {
            state.reads.session_ended(digest).await;
        }
        tracing::info!(
            user_id = user.id,
            sessions_ended = ended.len(),
            "password changed"
        );
    }
    Ok(user_body(user, auth.token))
}

/// `DELETE /api/user/session`: ends the session of the token sent.
async fn logout(State(state): State<AppState>, auth: AuthUser) -> ApiResult<StatusCode> {
    state
        .reads
        .sessions()
        .delete_session(&auth.token_digest)
        .await?;
    state.reads.session_ended(&auth.token_digest).await;
    Ok(StatusCode::NO_CONTENT)
}
