//! Comments on articles.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use infinity_store::{Id, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::articles::article_id;
use crate::auth::{AuthUser, MaybeUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Path};
use crate::validate;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/articles/{slug}/comments", get(list).post(create))
        .route("/articles/{slug}/comments/{id}", delete(remove))
}

#[derive(Deserialize)]
struct Envelope {
    comment: CommentInput,
}

#[derive(Deserialize)]
struct CommentInput {
    body: String,
}

/// `GET /api/articles/{slug}/comments`, oldest first.
async fn list(
    State(state): State<AppState>,
    MaybeUser(auth): MaybeUser,
    Path(slug): Path<String>,
) -> ApiResult<Json<Value>> {
    let article = article_id(&state, &slug).await?;
    let viewer = state.viewer(auth.map(|a| a.id)).await?;
    let comments = state.reads.comments(article).await?;
    let mut views = Vec::with_capacity(comments.len());
    for comment in comments.iter() {
        views.push(state.comment_view(&viewer, comment.clone()).await?);
    }
    Ok(Json(json!({ "comments": views })))
}

/// `POST /api/articles/{slug}/comments`. The specification's status is 200.
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(slug): Path<String>,
    JsonBody(Envelope { comment }): JsonBody<Envelope>,
) -> ApiResult<Json<Value>> {
    let body = validate::text("body", &comment.body, 1, validate::MAX_COMMENT)
        .map_err(ApiError::invalid)?;
    let article = article_id(&state, &slug).await?;
    let created = state
        .reads
        .store()
        .add_comment(article, auth.id, body)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("article"),
            other => other.into(),
        })?;
    state.reads.comments_changed(article).await;
    let viewer = state.viewer(Some(auth.id)).await?;
    let view = state.comment_view(&viewer, created).await?;
    Ok(Json(json!({ "comment": view })))
}

/// `DELETE /api/articles/{slug}/comments/{id}`. Only the comment's author
/// may delete it.
async fn remove(
    State(state): State<AppState>,
    auth: AuthUser,
    Path((slug, id)): Path<(String, Id)>,
) -> ApiResult<StatusCode> {
    let article = article_id(&state, &slug).await?;
    let comment = state
        .reads
        .store()
        .comment_by_id(id)
        .await?
        .filter(|c| c.article_id == article)
        .ok_or(ApiError::NotFound("comment"))?;
    if comment.author_id != auth.id {
        return Err(ApiError::Forbidden(
            "only the author may delete this comment".into(),
        ));
    }
    state.reads.store().delete_comment(id).await?;
    state.reads.comments_changed(article).await;
    Ok(StatusCode::NO_CONTENT)
}
