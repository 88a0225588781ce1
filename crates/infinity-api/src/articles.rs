//! Articles: lists, the feed, single articles and favourites.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use infinity_store::{
    with_fresh_ids, ArticleChanges, ArticleFilter, ArticleRecord, Id, ImageRef, NewArticle, Page,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{AuthUser, MaybeUser};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Path, Query};
use crate::validate::{self, Problems};
use crate::views::Viewer;
use crate::AppState;

/// The largest page a list returns.
pub const MAX_LIMIT: u32 = 100;
/// The deepest offset a list accepts; offset paging reads every skipped row.
pub const MAX_OFFSET: u32 = 100_000;
const DEFAULT_LIMIT: u32 = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/articles", get(list).post(create))
        .route("/articles/feed", get(feed))
        .route(
            "/articles/{slug}",
            get(get_article).put(update).delete(delete),
        )
        .route(
            "/articles/{slug}/favorite",
            post(favorite).delete(unfavorite),
        )
}

#[derive(Deserialize, Default)]
pub struct PageParams {
    limit: Option<String>,
    offset: Option<String>,
}

impl PageParams {
    /// Parses `limit` and `offset`, naming the bad one in the 422.
    pub fn page(&self) -> ApiResult<Page> {
        let mut problems = Problems::new();
        let limit = parse_bound(&mut problems, "limit", self.limit.as_deref(), 1, MAX_LIMIT);
        let offset = parse_bound(
            &mut problems,
            "offset",
            self.offset.as_deref(),
            0,
            MAX_OFFSET,
        );
        problems.into_result()?;
        Ok(Page {
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            offset: offset.unwrap_or(0),
        })
    }
}

fn parse_bound(
    problems: &mut Problems,
    name: &str,
    value: Option<&str>,
    min: u32,
    max: u32,
) -> Option<u32> {
    let value = value?;
    match value.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            problems.add(format!(
                "{name} must be an integer from {min} to {max}, not {value:?}"
            ));
            None
        }
    }
}

#[derive(Deserialize)]
pub struct ListParams {
    tag: Option<String>,
    author: Option<String>,
    favorited: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

#[derive(Deserialize)]
struct Envelope<T> {
    article: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArticleInput {
    title: String,
    description: String,
    body: String,
    #[serde(default)]
    tag_list: Option<Vec<String>>,
    /// Upload ids of the photos to show, an Infinity addition.
    #[serde(default)]
    images: Option<Vec<Id>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ArticleUpdate {
    title: Option<String>,
    description: Option<String>,
    body: Option<String>,
    tag_list: Option<Vec<String>>,
    images: Option<Vec<Id>>,
}

/// The maximum number of photos one article shows.
pub const MAX_IMAGES: usize = 20;

/// Resolves upload ids to image references; each upload must be `user`'s
/// own and not failed.
async fn image_refs(state: &AppState, user: Id, ids: &[Id]) -> ApiResult<Vec<ImageRef>> {
    if ids.len() > MAX_IMAGES {
        return Err(ApiError::invalid(format!(
            "images has too many uploads (maximum is {MAX_IMAGES})"
        )));
    }
    let mut refs: Vec<ImageRef> = Vec::with_capacity(ids.len());
    for &id in ids {
        if refs.iter().any(|r| r.upload_id == id) {
            continue;
        }
        let upload = crate::uploads::usable_upload(state, user, id).await?;
        refs.push(ImageRef {
            upload_id: upload.id,
            digest: upload.source_digest,
            width: upload.width,
            height: upload.height,
        });
    }
    Ok(refs)
}

async fn list_body(
    state: &AppState,
    viewer: &Viewer,
    articles: Vec<ArticleRecord>,
    total: u64,
) -> ApiResult<Json<Value>> {
    let mut views = Vec::with_capacity(articles.len());
    for article in articles {
        views.push(state.article_view(viewer, article, false).await?);
    }
    Ok(Json(json!({ "articles": views, "articlesCount": total })))
}

async fn article_body(state: &AppState, viewer: Option<Id>, id: Id) -> ApiResult<Json<Value>> {
    let viewer = state.viewer(viewer).await?;
    let article = state
        .reads
        .article(id)
        .await?
        .ok_or(ApiError::NotFound("article"))?;
    let view = state.article_view(&viewer, article, true).await?;
    Ok(Json(json!({ "article": view })))
}

/// Finds the id of the article behind `slug`, or a 404.
pub(crate) async fn article_id(state: &AppState, slug: &str) -> ApiResult<Id> {
    state
        .reads
        .article_id(slug)
        .await?
        .ok_or(ApiError::NotFound("article"))
}

/// Finds the article behind `slug` and checks that `user` wrote it.
async fn own_article(state: &AppState, user: Id, slug: &str) -> ApiResult<ArticleRecord> {
    let id = article_id(state, slug).await?;
    let article = state
        .reads
        .article(id)
        .await?
        .ok_or(ApiError::NotFound("article"))?;
    if article.author_id != user {
        return Err(ApiError::Forbidden(
            "only the author may change this article".into(),
        ));
    }
    Ok(article)
}

/// `GET /api/articles`
async fn list(
    State(state): State<AppState>,
    MaybeUser(auth): MaybeUser,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Value>> {
    let page = params.page.page()?;
    let filter = ArticleFilter {
        tag: params.tag,
        author: params.author,
        favorited_by: params.favorited,
    };
    let viewer = state.viewer(auth.map(|a| a.id)).await?;
    let (articles, total) = state.reads.list(&filter, page).await?;
    list_body(&state, &viewer, articles, total).await
}

/// `GET /api/articles/feed`
async fn feed(
    State(state): State<AppState>,
    auth: AuthUser,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Value>> {
    let page = params.page()?;
    let viewer = state.viewer(Some(auth.id)).await?;
    let (articles, total) = state.reads.feed(auth.id, page).await?;
    list_body(&state, &viewer, articles, total).await
}

/// `GET /api/articles/{slug}`
async fn get_article(
    State(state): State<AppState>,
    MaybeUser(auth): MaybeUser,
    Path(slug): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = article_id(&state, &slug).await?;
    article_body(&state, auth.map(|a| a.id), id).await
}

/// `POST /api/articles`
async fn create(
    State(state): State<AppState>,
    auth: AuthUser,
    JsonBody(Envelope { article }): JsonBody<Envelope<ArticleInput>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut problems = Problems::new();
    let title = problems.check(validate::line(
        "title",
        &article.title,
        1,
        validate::MAX_TITLE,
    ));
    let description = problems.check(validate::text(
        "description",
        &article.description,
        0,
        validate::MAX_DESCRIPTION,
    ));
    let body = problems.check(validate::text("body", &article.body, 1, validate::MAX_BODY));
    let tags = problems.check(validate::tags(article.tag_list.as_deref().unwrap_or(&[])));
    problems.into_result()?;

    let images = image_refs(&state, auth.id, article.images.as_deref().unwrap_or(&[])).await?;
    let new = NewArticle {
        title: title.unwrap(),
        description: description.unwrap(),
        body: body.unwrap(),
        tags: tags.unwrap(),
        images,
    };
    let store = state.reads.store();
    let created = with_fresh_ids(|| store.create_article(auth.id, new.clone())).await?;
    state
        .reads
        .article_changed(
            created.id,
            created.author_id,
            &[&created.slug],
            &created.tags,
        )
        .await;
    tracing::info!(article_id = created.id, slug = %created.slug, "article created");
    let body = article_body(&state, Some(auth.id), created.id).await?;
    Ok((StatusCode::CREATED, body))
}

/// `PUT /api/articles/{slug}`. Infinity also accepts `tagList` here.
async fn update(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(slug): Path<String>,
    JsonBody(Envelope { article: update }): JsonBody<Envelope<ArticleUpdate>>,
) -> ApiResult<Json<Value>> {
    let mut problems = Problems::new();
    let mut changes = ArticleChanges {
        title: update
            .title
            .and_then(|v| problems.check(validate::line("title", &v, 1, validate::MAX_TITLE))),
        description: update.description.and_then(|v| {
            problems.check(validate::text(
                "description",
                &v,
                0,
                validate::MAX_DESCRIPTION,
            ))
        }),
        body: update
            .body
            .and_then(|v| problems.check(validate::text("body", &v, 1, validate::MAX_BODY))),
        tags: update
            .tag_list
            .and_then(|v| problems.check(validate::tags(&v))),
        images: None,
    };
    let nothing = changes.title.is_none()
        && changes.description.is_none()
        && changes.body.is_none()
        && changes.tags.is_none()
        && update.images.is_none();
    if nothing && problems.is_empty() {
        problems.add("article must contain at least one of title, description, body, tagList");
    }
    problems.into_result()?;

    let article = own_article(&state, auth.id, &slug).await?;
    if let Some(ids) = &update.images {
        changes.images = Some(image_refs(&state, auth.id, ids).await?);
    }
    let updated = state
        .reads
        .store()
        .update_article(article.id, changes)
        .await?;
    // Invalidate the slug and tags of the row this update replaced, not
    // those of `article`, because a concurrent edit may have changed them
    // after `article` was read.
    let (previous, current) = (&updated.previous, &updated.current);
    state
        .reads
        .article_changed(
            current.id,
            current.author_id,
            &[&previous.slug, &current.slug],
            &[previous.tags.as_slice(), current.tags.as_slice()].concat(),
        )
        .await;
    article_body(&state, Some(auth.id), current.id).await
}

/// `DELETE /api/articles/{slug}`
async fn delete(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(slug): Path<String>,
) -> ApiResult<StatusCode> {
    let article = own_article(&state, auth.id, &slug).await?;
    state.reads.store().delete_article(article.id).await?;
    state.reads.article_deleted(&article).await;
    tracing::info!(article_id = article.id, "article deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/articles/{slug}/favorite`. Favouriting twice counts once.
async fn favorite(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(slug): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = article_id(&state, &slug).await?;
    let store = state.reads.store();
    if store
        .favorite(auth.id, id)
        .await
        .map_err(not_found_as_article)?
    {
        state.reads.favorites_changed(auth.id, id).await;
    }
    article_body(&state, Some(auth.id), id).await
}

/// `DELETE /api/articles/{slug}/favorite`
async fn unfavorite(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(slug): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = article_id(&state, &slug).await?;
    if state.reads.store().unfavorite(auth.id, id).await? {
        state.reads.favorites_changed(auth.id, id).await;
    }
    article_body(&state, Some(auth.id), id).await
}

fn not_found_as_article(error: infinity_store::StoreError) -> ApiError {
    match error {
        infinity_store::StoreError::NotFound => ApiError::NotFound("article"),
        other => other.into(),
    }
}
