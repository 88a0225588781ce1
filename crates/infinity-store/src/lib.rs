//! Infinity's relational storage tier.
//!
//! The request path talks to [`Store`] and [`SessionStore`] only, so the
//! engine behind them is chosen once, from configuration, at start-up.
//! [`SqliteStore`] is the embedded engine.

pub mod consistency;
mod error;
pub mod ids;
mod jobs;
pub mod model;
mod outbox;
mod postgres;
mod rows;
mod slug;
mod sql;
mod sqlite;

use async_trait::async_trait;

pub use error::{with_fresh_ids, StoreError, StoreResult, UniqueField};
pub use ids::{Id, IdGenerator};
pub use jobs::{JobQueue, JobRecord, JobState};
pub use model::*;
pub use outbox::{KindStats, Outbox, StartOutcome};
pub use postgres::{server_name, PostgresOptions, PostgresStore, Role, ServerStatus};
pub use sqlite::{SqliteOptions, SqliteStore};

/// The relational store: users, follows, articles, favourites, comments and
/// tags. Methods that take `jobs` enqueue them in the same transaction as the
/// write, so a job exists exactly when its cause was committed.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Returns the engine's name, for the start-up banner and `/readyz`.
    fn engine(&self) -> &'static str;

    /// Checks that the database responds to a trivial query.
    async fn ping(&self) -> StoreResult<()>;

    /// Connection pools as (name, open connections, idle connections), for
    /// `/metrics`.
    fn pool_usage(&self) -> Vec<(String, u32, usize)>;

    /// The database servers with their roles and replication lag, for
    /// `/readyz`. Empty for an engine without servers of its own.
    fn servers(&self) -> Vec<ServerStatus> {
        Vec::new()
    }

    /// Reads the log position at or past every write committed so far, or
    /// 0 for an engine without a log of positions.
    async fn current_position(&self) -> StoreResult<consistency::Position> {
        Ok(0)
    }

    /// Inserts a user, failing with [`StoreError::Taken`] on a username or
    /// e-mail address already in use.
    async fn create_user(&self, user: NewUser, jobs: Vec<NewJob>) -> StoreResult<UserRecord>;
    async fn user_by_id(&self, id: Id) -> StoreResult<Option<UserRecord>>;
    /// Looks a user up by e-mail address, ignoring case.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_id_by_username(&self, username: &str) -> StoreResult<Option<Id>>;
    /// Applies `changes` and returns the user as it was before and after
    /// them. Fails with [`StoreError::NotFound`] when the user is gone and
    /// [`StoreError::Taken`] on a clash.
    async fn update_user(&self, id: Id, changes: UserChanges) -> StoreResult<Updated<UserRecord>>;

    /// Records that `follower` follows `followee`, on both users' sides.
    /// Returns false when the edge already existed; then nothing changes and
    /// no job is enqueued.
    async fn follow(&self, follower: Id, followee: Id, jobs: Vec<NewJob>) -> StoreResult<bool>;
    /// Returns false when there was no such edge.
    async fn unfollow(&self, follower: Id, followee: Id) -> StoreResult<bool>;
    /// Every user that `follower` follows.
    async fn following_ids(&self, follower: Id) -> StoreResult<Vec<Id>>;

    /// Returns false when the favourite already existed.
    async fn favorite(&self, user: Id, article: Id) -> StoreResult<bool>;
    /// Returns false when there was no such favourite.
    async fn unfavorite(&self, user: Id, article: Id) -> StoreResult<bool>;
    /// Every article that `user` has favourited.
    async fn favorited_ids(&self, user: Id) -> StoreResult<Vec<Id>>;

    /// Inserts an article under a slug derived from its title, made unique.
    async fn create_article(&self, author: Id, article: NewArticle) -> StoreResult<ArticleRecord>;
    async fn article_id_by_slug(&self, slug: &str) -> StoreResult<Option<Id>>;
    async fn article_by_id(&self, id: Id) -> StoreResult<Option<ArticleRecord>>;
    /// The articles among `ids` that exist, in no particular order.
    async fn articles_by_ids(&self, ids: &[Id]) -> StoreResult<Vec<ArticleRecord>>;
    /// Applies `changes` and returns the article as it was before and after
    /// them. A new title gives the article a new slug.
    async fn update_article(
        &self,
        id: Id,
        changes: ArticleChanges,
    ) -> StoreResult<Updated<ArticleRecord>>;
    /// Deletes an article with its tags, favourites and comments.
    async fn delete_article(&self, id: Id) -> StoreResult<()>;
    /// A newest-first page of the articles that match `filter`.
    async fn list_articles(&self, filter: &ArticleFilter, page: Page) -> StoreResult<ArticlePage>;
    /// A newest-first page of the articles by authors that `user` follows.
    async fn feed(&self, user: Id, page: Page) -> StoreResult<ArticlePage>;
    /// The identifiers of every article by `author`, newest first.
    async fn article_ids_by_author(&self, author: Id) -> StoreResult<Vec<Id>>;
    /// Every article id with `tag`, newest first.
    async fn article_ids_by_tag(&self, tag: &str) -> StoreResult<Vec<Id>>;
    /// Tags in use, most used first, at most `limit`.
    async fn tags(&self, limit: u32) -> StoreResult<Vec<String>>;

    async fn add_comment(
        &self,
        article: Id,
        author: Id,
        body: String,
    ) -> StoreResult<CommentRecord>;
    /// An article's comments, oldest first.
    async fn comments(&self, article: Id) -> StoreResult<Vec<CommentRecord>>;
    async fn comment_by_id(&self, id: Id) -> StoreResult<Option<CommentRecord>>;
    async fn delete_comment(&self, id: Id) -> StoreResult<()>;

    /// Mints a new identifier on `shard`.
    fn next_id(&self, shard: u16) -> Id;

    /// Inserts an upload in the `processing` state, with `jobs` in the same
    /// transaction.
    async fn create_upload(
        &self,
        upload: NewUpload,
        jobs: Vec<NewJob>,
    ) -> StoreResult<UploadRecord>;
    async fn upload_by_id(&self, id: Id) -> StoreResult<Option<UploadRecord>>;
    /// Records the made variants and marks the upload ready.
    async fn finish_upload(
        &self,
        id: Id,
        variants: Vec<VariantRecord>,
        note: Option<String>,
    ) -> StoreResult<()>;
    /// Marks the upload failed with a reason a user can read.
    async fn fail_upload(&self, id: Id, error: &str) -> StoreResult<()>;
}

/// Server-side login sessions, keyed by the SHA-256 digest of the token.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn create_session(&self, session: SessionRecord) -> StoreResult<()>;
    /// Returns the session if it exists and has not expired.
    async fn session(&self, token_digest: &str) -> StoreResult<Option<SessionRecord>>;
    /// Returns false when there was no such session.
    async fn delete_session(&self, token_digest: &str) -> StoreResult<bool>;
    /// Deletes every session of `user` but `keep`, returning the deleted
    /// digests so that caches can drop them.
    async fn delete_sessions_except(&self, user: Id, keep: &str) -> StoreResult<Vec<String>>;
}
