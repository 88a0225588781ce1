//! Photo uploads. `POST /api/uploads` checks the whole image in the request,
//! keeps the original privately and queues the job that makes the variants.
//! `GET /api/uploads/{id}` shows the state of that job.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use infinity_jobs::handlers::make_variants;
use infinity_jobs::objects::{original_key, variant_path, ObjectStore, VARIANT_SIZES};
use infinity_media::background::BackgroundError;
use infinity_media::{Limits, MediaError};
use infinity_store::{ids::shard_of, with_fresh_ids, Id, NewUpload, UploadRecord, UploadState};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::AuthUser;
use crate::backlog::Backlog;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::AppState;

/// Settings of photo uploads.
#[derive(Clone)]
pub struct UploadSettings {
    pub objects: Arc<dyn ObjectStore>,
    pub limits: Limits,
    /// Maximum time for the in-request check of an upload.
    pub check_timeout: Duration,
    /// Prefix of media URLs, such as `http://127.0.0.1:8080`; empty for
    /// URLs relative to the API's host.
    pub public_url: String,
    /// The expected wait of uploads still processing; `None` leaves it out
    /// of the responses.
    pub backlog: Option<Arc<Backlog>>,
}

pub fn router(limits: &Limits) -> Router<AppState> {
    // Room for the multipart framing around the file itself.
    let body_limit = limits.max_bytes.saturating_add(64 * 1024);
    Router::new()
        .route(
            "/uploads",
            post(upload).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/uploads/{id}", get(status))
}

#[derive(Serialize)]
struct VariantView {
    size: u32,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mime: Option<String>,
}

/// Returns the public URL of one variant.
pub fn variant_url(settings: &UploadSettings, digest: &str, size: u32) -> String {
    format!("{}{}", settings.public_url, variant_path(digest, size))
}

/// Returns the expected wait in seconds for an upload's variants, `None`
/// when it is not processing or there is no estimate. A failed estimate is
/// logged and left out, because the upload itself is fine.
async fn expected_wait(settings: &UploadSettings, upload: &UploadRecord) -> Option<f64> {
    if upload.state != UploadState::Processing {
        return None;
    }
    let backlog = settings.backlog.as_ref()?;
    match backlog
        .expected_wait(upload.created_at.timestamp_millis())
        .await
    {
        Ok(wait) => wait,
        Err(error) => {
            tracing::warn!(upload_id = upload.id, %error, "estimating the wait for variants failed");
            None
        }
    }
}

fn upload_view(settings: &UploadSettings, upload: &UploadRecord, wait: Option<f64>) -> Value {
    let variants: Vec<VariantView> = VARIANT_SIZES
        .iter()
        .map(|&size| {
            let made = upload.variants.iter().find(|v| v.size == size);
            VariantView {
                size,
                url: variant_url(settings, &upload.source_digest, size),
                width: made.map(|v| v.width),
                height: made.map(|v| v.height),
                mime: made.map(|v| v.mime.clone()),
            }
        })
        .collect();
    json!({
        "id": upload.id,
        "status": upload.state.as_str(),
        "format": upload.format,
        "width": upload.width,
        "height": upload.height,
        "animated": upload.animated,
        "note": upload.note.clone().unwrap_or_default(),
        "error": upload.error.clone().unwrap_or_default(),
        "variants": variants,
        "createdAt": crate::views::timestamp(upload.created_at),
        "expectedWaitSeconds": wait,
    })
}

fn media_error(error: MediaError) -> ApiError {
    match error.status() {
        413 => ApiError::TooLarge(format!("file: {error}")),
        415 => ApiError::Unsupported(format!("file: {error}")),
        500..=599 => ApiError::Internal(error.to_string()),
        _ => ApiError::invalid(format!("file: {error}")),
    }
}

/// Reads the `file` field of a multipart body.
async fn read_file(mut multipart: Multipart) -> ApiResult<Vec<u8>> {
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("file: {}", e.body_text()))
        } else {
            ApiError::invalid(format!("body: {}", e.body_text()))
        }
    };
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() == Some("file") {
            return Ok(field.bytes().await.map_err(multipart_error)?.to_vec());
        }
    }
    Err(ApiError::invalid(
        "file: the multipart body has no field named file",
    ))
}

/// Decodes the whole image on a low-priority image thread, bounded by the
/// decoder's limits and by `check_timeout`.
async fn check_image(
    settings: &UploadSettings,
    bytes: Arc<Vec<u8>>,
) -> ApiResult<infinity_media::Inspection> {
    let limits = settings.limits.clone();
    let work = move || infinity_media::validate(&bytes, &limits);
    match infinity_media::background::run(settings.check_timeout, work).await {
        Ok(result) => result.map_err(media_error),
        Err(BackgroundError::Panicked(panic)) => Err(ApiError::invalid(format!(
            "file: the image could not be decoded ({panic})"
        ))),
        Err(BackgroundError::TimedOut(limit)) => Err(ApiError::invalid(format!(
            "file: checking the image took longer than {} s",
            limit.as_secs()
        ))),
    }
}

/// `POST /api/uploads` (multipart, field `file`): 202 with the upload's id,
/// status and the URLs its variants will have.
async fn upload(
    State(state): State<AppState>,
    auth: AuthUser,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let settings = state.uploads()?;
    let multipart = multipart.map_err(|e| ApiError::invalid(format!("body: {}", e.body_text())))?;
    let bytes = Arc::new(read_file(multipart).await?);
    let inspection = check_image(settings, bytes.clone()).await?;

    let digest = hex::encode(Sha256::digest(bytes.as_slice()));
    let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
    settings
        .objects
        .put(&original_key(&digest), bytes)
        .await
        .map_err(|e| ApiError::Internal(format!("storing an original failed: {e}")))?;

    let store = state.reads.store();
    let upload = with_fresh_ids(|| {
        let id = store.next_id(shard_of(auth.id));
        let new = NewUpload {
            id,
            user_id: auth.id,
            source_digest: digest.clone(),
            format: inspection.format.name().to_string(),
            width: inspection.width,
            height: inspection.height,
            animated: inspection.animated,
        };
        store.create_upload(new, vec![make_variants(id)])
    })
    .await?;
    tracing::info!(upload_id = upload.id, format = %upload.format, "upload accepted");
    let wait = expected_wait(settings, &upload).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "upload": upload_view(settings, &upload, wait) })),
    ))
}

/// `GET /api/uploads/{id}`: only the owner sees an upload.
async fn status(
    State(state): State<AppState>,
    auth: AuthUser,
    Path(id): Path<Id>,
) -> ApiResult<Json<Value>> {
    let settings = state.uploads()?;
    let upload = state
        .reads
        .store()
        .upload_by_id(id)
        .await?
        .filter(|u| u.user_id == auth.id)
        .ok_or(ApiError::NotFound("upload"))?;
    let wait = expected_wait(settings, &upload).await;
    Ok(Json(
        json!({ "upload": upload_view(settings, &upload, wait) }),
    ))
}

/// Finds uploads of `owner` that may be shown (not failed), for an article's
/// `images` or a user's `image`.
pub async fn usable_upload(state: &AppState, owner: Id, id: Id) -> ApiResult<UploadRecord> {
    let upload = state
        .reads
        .store()
        .upload_by_id(id)
        .await?
        .filter(|u| u.user_id == owner)
        .ok_or_else(|| ApiError::invalid(format!("upload {id} not found among your uploads")))?;
    if upload.state == UploadState::Failed {
        return Err(ApiError::invalid(format!(
            "upload {id} failed and cannot be shown"
        )));
    }
    Ok(upload)
}
