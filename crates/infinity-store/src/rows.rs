//! Rows as both engines return them, and their conversion to records.
//!
//! Both schemas store times as Unix milliseconds and lists as JSON text, so
//! one set of row types decodes either engine's results.

use chrono::{DateTime, Utc};

use crate::error::{StoreError, StoreResult};
use crate::ids::Id;
use crate::jobs::{JobRecord, JobState};
use crate::model::*;

pub(crate) fn to_ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("time {ms}")))
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column} {text:?}: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Id,
    username: String,
    email: String,
    password_hash: String,
    bio: String,
    image: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(row: UserRow) -> StoreResult<Self> {
        Ok(UserRecord {
            id: row.id,
            username: row.username,
            email: row.email,
            password_hash: row.password_hash,
            bio: row.bio,
            image: row.image,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ArticleRow {
    id: Id,
    author_id: Id,
    slug: String,
    title: String,
    description: String,
    body: String,
    tag_list: String,
    images: String,
    favorites_count: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ArticleRow> for ArticleRecord {
    type Error = StoreError;

    fn try_from(row: ArticleRow) -> StoreResult<Self> {
        Ok(ArticleRecord {
            id: row.id,
            slug: row.slug,
            title: row.title,
            description: row.description,
            body: row.body,
            tags: from_json("tag_list", &row.tag_list)?,
            images: from_json("images", &row.images)?,
            author_id: row.author_id,
            favorites_count: row.favorites_count,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CommentRow {
    id: Id,
    article_id: Id,
    author_id: Id,
    body: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<CommentRow> for CommentRecord {
    type Error = StoreError;

    fn try_from(row: CommentRow) -> StoreResult<Self> {
        Ok(CommentRecord {
            id: row.id,
            article_id: row.article_id,
            author_id: row.author_id,
            body: row.body,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    token_digest: String,
    user_id: Id,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> StoreResult<Self> {
        Ok(SessionRecord {
            token_digest: row.token_digest,
            user_id: row.user_id,
            created_at: from_ms(row.created_at)?,
            expires_at: from_ms(row.expires_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UploadRow {
    id: Id,
    user_id: Id,
    state: String,
    source_digest: String,
    format: String,
    width: i64,
    height: i64,
    animated: bool,
    variants: String,
    note: Option<String>,
    error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<UploadRow> for UploadRecord {
    type Error = StoreError;

    fn try_from(row: UploadRow) -> StoreResult<Self> {
        let side = |value: i64| {
            u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("upload side {value}")))
        };
        Ok(UploadRecord {
            id: row.id,
            user_id: row.user_id,
            state: UploadState::parse(&row.state)
                .ok_or_else(|| StoreError::Corrupt(format!("upload state {:?}", row.state)))?,
            source_digest: row.source_digest,
            format: row.format,
            width: side(row.width)?,
            height: side(row.height)?,
            animated: row.animated,
            variants: from_json("variants", &row.variants)?,
            note: row.note,
            error: row.error,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: Id,
    kind: String,
    payload: String,
    state: String,
    attempts: i64,
    run_at: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(row: JobRow) -> StoreResult<Self> {
        Ok(JobRecord {
            id: row.id,
            kind: row.kind,
            payload: from_json("job payload", &row.payload)?,
            state: JobState::parse(&row.state)
                .ok_or_else(|| StoreError::Corrupt(format!("job state {:?}", row.state)))?,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            run_at: from_ms(row.run_at)?,
            lease_owner: row.lease_owner,
            lease_until: row.lease_until.map(from_ms).transpose()?,
            last_error: row.last_error,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

/// Decodes rows fetched with `query_as` into records.
pub(crate) fn records<R, T>(rows: Vec<R>) -> StoreResult<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
