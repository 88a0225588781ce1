//! Rows as the storage tier returns them, independent of any viewer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::Id;

/// A user account, with the password hash that only login needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Id,
    pub username: String,
    /// Lower-cased at registration, so lookups ignore case.
    pub email: String,
    /// An Argon2id hash in PHC string format.
    pub password_hash: String,
    pub bio: String,
    pub image: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The public part of a user, shared by every viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub id: Id,
    pub username: String,
    pub bio: String,
    pub image: String,
}

impl From<&UserRecord> for ProfileRecord {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            bio: user.bio.clone(),
            image: user.image.clone(),
        }
    }
}

/// An article without its author's profile or any viewer's flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleRecord {
    pub id: Id,
    pub slug: String,
    pub title: String,
    pub description: String,
    pub body: String,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    /// Photos shown with the article, in order.
    pub images: Vec<ImageRef>,
    pub author_id: Id,
    pub favorites_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentRecord {
    pub id: Id,
    pub article_id: Id,
    pub author_id: Id,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A server-side login session. The token itself is never stored, only its
/// SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_digest: String,
    pub user_id: Id,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Fields of a new account, already validated.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub email: String,
    pub password_hash: String,
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
}

/// Fields of a new article, already validated.
#[derive(Debug, Clone)]
pub struct NewArticle {
    pub title: String,
    pub description: String,
    pub body: String,
    pub tags: Vec<String>,
    pub images: Vec<ImageRef>,
}

/// Changes to an article; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ArticleChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
    pub images: Option<Vec<ImageRef>>,
}

/// A row just before and just after one update. `previous` is read in the
/// update's own transaction, under its write lock, so a concurrent update
/// of the same row is never skipped between `previous` and `current`.
#[derive(Debug, Clone)]
pub struct Updated<T> {
    pub previous: T,
    pub current: T,
}

/// Filters of the article list. Usernames that match no user give an empty
/// page, not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ArticleFilter {
    pub tag: Option<String>,
    pub author: Option<String>,
    pub favorited_by: Option<String>,
}

impl ArticleFilter {
    pub fn is_empty(&self) -> bool {
        self.tag.is_none() && self.author.is_none() && self.favorited_by.is_none()
    }
}

/// A page of a newest-first list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    pub limit: u32,
    pub offset: u32,
}

/// One page of articles and the count of all that match the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticlePage {
    pub articles: Vec<ArticleRecord>,
    pub total: u64,
}

/// A background job to enqueue in the same transaction as the write that
/// causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The handler's name, such as `email.welcome`.
    pub kind: String,
    /// Handler input as JSON.
    pub payload: serde_json::Value,
}

/// An upload shown with an article. The fields never change after the
/// upload is accepted, so a copy is kept with the article.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub upload_id: Id,
    /// SHA-256 of the original, which names its variants.
    pub digest: String,
    pub width: u32,
    pub height: u32,
}

/// An uploaded photo and the state of its variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: Id,
    pub user_id: Id,
    pub state: UploadState,
    /// SHA-256 of the original bytes, in hex.
    pub source_digest: String,
    pub format: String,
    /// The displayed size, after the EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    pub animated: bool,
    pub variants: Vec<VariantRecord>,
    /// A remark on the result, such as an animation kept as a still.
    pub note: Option<String>,
    /// The reason making the variants failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Processing,
    Ready,
    Failed,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Processing => "processing",
            UploadState::Ready => "ready",
            UploadState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            UploadState::Processing,
            UploadState::Ready,
            UploadState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One made variant of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantRecord {
    /// The maximum length of the longer side, which names the variant.
    pub size: u32,
    pub width: u32,
    pub height: u32,
    pub mime: String,
}

/// A validated upload whose original is already stored.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Minted with [`crate::Store::next_id`] on the owner's shard, so that
    /// jobs enqueued with the upload can name it.
    pub id: Id,
    pub user_id: Id,
    pub source_digest: String,
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub animated: bool,
}
