//! Profiles and follows.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use infinity_store::{Id, NewJob};
use serde_json::{json, Value};

use crate::auth::{AuthUser, MaybeUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/profiles/{username}", get(get_profile))
        .route("/profiles/{username}/follow", post(follow).delete(unfollow))
}

async fn user_id(state: &AppState, username: &str) -> ApiResult<Id> {
    state
        .reads
        .user_id(username)
        .await?
        .ok_or(ApiError::NotFound("profile"))
}

async fn profile_body(state: &AppState, viewer: Option<Id>, id: Id) -> ApiResult<Json<Value>> {
    let viewer = state.viewer(viewer).await?;
    let profile = state.profile_view(&viewer, id).await?;
    Ok(Json(json!({ "profile": profile })))
}

/// `GET /api/profiles/{username}`
async fn get_profile(
    State(state): State<AppState>,
    MaybeUser(auth): MaybeUser,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = user_id(&state, &username).await?;
    profile_body(&state, auth.map(|a| a.id), id).await
}

/// `POST /api/profiles/{username}/follow`. Following twice is harmless.
async fn follow(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let target = user_id(&state, &username).await?;
    if target == auth.id {
        return Err(ApiError::invalid("username: you cannot follow yourself"));
    }
    let notice = NewJob {
        kind: "email.new_follower".into(),
        payload: json!({ "user_id": target, "follower_id": auth.id }),
    };
    let followed = state
        .reads
        .store()
        .follow(auth.id, target, vec![notice])
        .await?;
    if followed {
        state.reads.follows_changed(auth.id).await;
    }
    profile_body(&state, Some(auth.id), target).await
}

/// `DELETE /api/profiles/{username}/follow`. Unfollowing twice is harmless.
async fn unfollow(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(username): Path<String>,
) -> ApiResult<Json<Value>> {
    let target = user_id(&state, &username).await?;
    if target == auth.id {
        return Err(ApiError::invalid("username: you cannot unfollow yourself"));
    }
    if state.reads.store().unfollow(auth.id, target).await? {
        state.reads.follows_changed(auth.id).await;
    }
    profile_body(&state, Some(auth.id), target).await
}
