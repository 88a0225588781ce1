//! The embedded engine: SQLite in WAL mode.
//!
//! Writes go through a pool of one connection, so writers queue in the pool
//! instead of contending for SQLite's write lock. Reads use a pool of their
//! own and run beside the writer, as WAL allows.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite, Transaction};

use crate::error::{StoreError, StoreResult};
use crate::ids::{shard_of, Id, IdGenerator};
use crate::model::*;
use crate::rows::{from_ms, to_ms, ArticleRow, CommentRow, SessionRow, UploadRow, UserRow};
use crate::sql::{map_unique, now, one_row, push_article_filter, sorted_tags, ARTICLE_COLUMNS};
use crate::{slug, SessionStore, Store};

/// Connection settings for [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Connections for reads; writes always use one connection of their own.
    pub read_connections: u32,
    /// How long a statement waits for a lock before it fails.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    ids: IdGenerator,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies
    /// pending migrations.
    pub async fn open(path: &Path, options: SqliteOptions) -> StoreResult<Self> {
        let url = format!("sqlite://{}", path.display());
        let connect = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL syncs the WAL at every commit, so an acknowledged write
            // survives a power cut, not only a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;

        let reader = SqlitePoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .connect_with(connect.read_only(true))
            .await?;

        Ok(Self {
            reader,
            writer,
            ids: IdGenerator::new(),
        })
    }

    /// Returns the pool for writes.
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Returns the pool for reads.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The identifier generator shared by every table of this database.
    pub fn ids(&self) -> &IdGenerator {
        &self.ids
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin().await?)
    }

    /// Begins a transaction that holds the database's write lock from its
    /// first statement, so that what it reads stays current until it
    /// commits, even with a writer in another process.
    async fn begin_immediate(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

pub(crate) fn count_query(operation: &'static str) {
    metrics::counter!("infinity_db_queries_total", "engine" => "sqlite", "operation" => operation)
        .increment(1);
}

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRecord> {
    UserRow::from_row(row)?.try_into()
}

fn article_from_row(row: &SqliteRow) -> StoreResult<ArticleRecord> {
    ArticleRow::from_row(row)?.try_into()
}

fn comment_from_row(row: &SqliteRow) -> StoreResult<CommentRecord> {
    CommentRow::from_row(row)?.try_into()
}

fn session_from_row(row: &SqliteRow) -> StoreResult<SessionRecord> {
    SessionRow::from_row(row)?.try_into()
}

/// Inserts jobs inside the caller's transaction.
async fn enqueue_jobs(
    tx: &mut Transaction<'static, Sqlite>,
    ids: &IdGenerator,
    shard: u16,
    jobs: Vec<NewJob>,
) -> StoreResult<()> {
    let now = to_ms(now());
    for job in jobs {
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, run_at, created_at, updated_at) \
             VALUES (?, ?, ?, 'queued', ?, ?, ?)",
        )
        .bind(ids.next(shard))
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn replace_tags(
    tx: &mut Transaction<'static, Sqlite>,
    article: Id,
    tags: &[String],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM article_tags WHERE article_id = ?")
        .bind(article)
        .execute(&mut **tx)
        .await?;
    for tag in tags {
        sqlx::query("INSERT INTO article_tags (article_id, tag) VALUES (?, ?)")
            .bind(article)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Picks a free slug for `title`: the plain stem if no other article has it,
/// else the stem with the article's identifier appended.
async fn free_slug(
    tx: &mut Transaction<'static, Sqlite>,
    title: &str,
    article: Id,
) -> StoreResult<String> {
    let stem = slug::stem(title);
    let holder: Option<Id> = sqlx::query_scalar("SELECT id FROM articles WHERE slug = ?")
        .bind(&stem)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match holder {
        None => stem,
        Some(id) if id == article => stem,
        Some(_) => slug::with_suffix(&stem, article),
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    fn pool_usage(&self) -> Vec<(String, u32, usize)> {
        vec![
            ("read".into(), self.reader.size(), self.reader.num_idle()),
            ("write".into(), self.writer.size(), self.writer.num_idle()),
        ]
    }

    fn next_id(&self, shard: u16) -> Id {
        self.ids.next(shard)
    }

    async fn ping(&self) -> StoreResult<()> {
        count_query("ping");
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_user(&self, user: NewUser, jobs: Vec<NewJob>) -> StoreResult<UserRecord> {
        count_query("create_user");
        let id = self.ids.next_random_shard();
        let now = now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(to_ms(now))
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        enqueue_jobs(&mut tx, &self.ids, shard_of(id), jobs).await?;
        tx.commit().await?;
        Ok(UserRecord {
            id,
            username: user.username,
            email: user.email,
            password_hash: user.password_hash,
            bio: String::new(),
            image: String::new(),
            created_at: from_ms(to_ms(now))?,
            updated_at: from_ms(to_ms(now))?,
        })
    }

    async fn user_by_id(&self, id: Id) -> StoreResult<Option<UserRecord>> {
        count_query("user_by_id");
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        count_query("user_by_email");
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email.to_lowercase())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_id_by_username(&self, username: &str) -> StoreResult<Option<Id>> {
        count_query("user_id_by_username");
        Ok(
            sqlx::query_scalar("SELECT id FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn update_user(&self, id: Id, changes: UserChanges) -> StoreResult<Updated<UserRecord>> {
        count_query("update_user");
        let mut tx = self.begin_immediate().await?;
        let previous = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let row = sqlx::query(
            "UPDATE users SET \
               username = coalesce(?, username), \
               email = coalesce(?, email), \
               password_hash = coalesce(?, password_hash), \
               bio = coalesce(?, bio), \
               image = coalesce(?, image), \
               updated_at = ? \
             WHERE id = ? RETURNING *",
        )
        .bind(changes.username)
        .bind(changes.email)
        .bind(changes.password_hash)
        .bind(changes.bio)
        .bind(changes.image)
        .bind(to_ms(now()))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_unique)?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(Updated {
            previous: user_from_row(&previous)?,
            current: user_from_row(&row)?,
        })
    }

    async fn follow(&self, follower: Id, followee: Id, jobs: Vec<NewJob>) -> StoreResult<bool> {
        count_query("follow");
        let now = to_ms(now());
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO following (user_id, target_id, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(follower)
        .bind(followee)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !inserted {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO followers (user_id, follower_id, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(followee)
        .bind(follower)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        enqueue_jobs(&mut tx, &self.ids, shard_of(followee), jobs).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn unfollow(&self, follower: Id, followee: Id) -> StoreResult<bool> {
        count_query("unfollow");
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM following WHERE user_id = ? AND target_id = ?")
            .bind(follower)
            .bind(followee)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        sqlx::query("DELETE FROM followers WHERE user_id = ? AND follower_id = ?")
            .bind(followee)
            .bind(follower)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn following_ids(&self, follower: Id) -> StoreResult<Vec<Id>> {
        count_query("following_ids");
        Ok(
            sqlx::query_scalar("SELECT target_id FROM following WHERE user_id = ?")
                .bind(follower)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn favorite(&self, user: Id, article: Id) -> StoreResult<bool> {
        count_query("favorite");
        let mut tx = self.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM articles WHERE id = ?")
            .bind(article)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let inserted = sqlx::query(
            "INSERT INTO favorites (user_id, article_id, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(article)
        .bind(to_ms(now()))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            sqlx::query("UPDATE articles SET favorites_count = favorites_count + 1 WHERE id = ?")
                .bind(article)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn unfavorite(&self, user: Id, article: Id) -> StoreResult<bool> {
        count_query("unfavorite");
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM favorites WHERE user_id = ? AND article_id = ?")
            .bind(user)
            .bind(article)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            sqlx::query("UPDATE articles SET favorites_count = favorites_count - 1 WHERE id = ?")
                .bind(article)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn favorited_ids(&self, user: Id) -> StoreResult<Vec<Id>> {
        count_query("favorited_ids");
        Ok(
            sqlx::query_scalar("SELECT article_id FROM favorites WHERE user_id = ?")
                .bind(user)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn create_article(&self, author: Id, article: NewArticle) -> StoreResult<ArticleRecord> {
        count_query("create_article");
        // An article lives on its author's shard.
        let id = self.ids.next(shard_of(author));
        let tags = sorted_tags(&article.tags);
        let now = from_ms(to_ms(now()))?;
        let mut tx = self.begin().await?;
        let slug = free_slug(&mut tx, &article.title, id).await?;
        sqlx::query(
            "INSERT INTO articles (id, author_id, slug, title, description, body, tag_list, \
               images, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(author)
        .bind(&slug)
        .bind(&article.title)
        .bind(&article.description)
        .bind(&article.body)
        .bind(serde_json::to_string(&tags).expect("strings serialize"))
        .bind(serde_json::to_string(&article.images).expect("ids serialize"))
        .bind(to_ms(now))
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await
        .map_err(map_unique)?;
        replace_tags(&mut tx, id, &tags).await?;
        tx.commit().await?;
        Ok(ArticleRecord {
            id,
            slug,
            title: article.title,
            description: article.description,
            body: article.body,
            tags,
            images: article.images,
            author_id: author,
            favorites_count: 0,
            created_at: now,
            updated_at: now,
        })
    }

    async fn article_id_by_slug(&self, slug: &str) -> StoreResult<Option<Id>> {
        count_query("article_id_by_slug");
        Ok(sqlx::query_scalar("SELECT id FROM articles WHERE slug = ?")
            .bind(slug)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn article_by_id(&self, id: Id) -> StoreResult<Option<ArticleRecord>> {
        count_query("article_by_id");
        let row = sqlx::query(&format!(
            "SELECT {ARTICLE_COLUMNS} FROM articles a WHERE a.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(article_from_row).transpose()
    }

    async fn articles_by_ids(&self, ids: &[Id]) -> StoreResult<Vec<ArticleRecord>> {
        count_query("articles_by_ids");
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {ARTICLE_COLUMNS} FROM articles a WHERE a.id IN ("
        ));
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(")");
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(article_from_row).collect()
    }

    async fn update_article(
        &self,
        id: Id,
        changes: ArticleChanges,
    ) -> StoreResult<Updated<ArticleRecord>> {
        count_query("update_article");
        let mut tx = self.begin_immediate().await?;
        let previous = sqlx::query(&format!(
            "SELECT {ARTICLE_COLUMNS} FROM articles a WHERE a.id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let slug = match &changes.title {
            Some(title) => Some(free_slug(&mut tx, title, id).await?),
            None => None,
        };
        let tags = changes.tags.as_deref().map(sorted_tags);
        let tag_list = tags
            .as_ref()
            .map(|t| serde_json::to_string(t).expect("strings serialize"));
        let images = changes
            .images
            .as_ref()
            .map(|i| serde_json::to_string(i).expect("ids serialize"));
        let row = sqlx::query(
            "UPDATE articles AS a SET \
               slug = coalesce(?, slug), \
               title = coalesce(?, title), \
               description = coalesce(?, description), \
               body = coalesce(?, body), \
               tag_list = coalesce(?, tag_list), \
               images = coalesce(?, images), \
               updated_at = ? \
             WHERE id = ? RETURNING *",
        )
        .bind(slug)
        .bind(changes.title)
        .bind(changes.description)
        .bind(changes.body)
        .bind(tag_list)
        .bind(images)
        .bind(to_ms(now()))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_unique)?
        .ok_or(StoreError::NotFound)?;
        if let Some(tags) = &tags {
            replace_tags(&mut tx, id, tags).await?;
        }
        tx.commit().await?;
        Ok(Updated {
            previous: article_from_row(&previous)?,
            current: article_from_row(&row)?,
        })
    }

    async fn delete_article(&self, id: Id) -> StoreResult<()> {
        count_query("delete_article");
        let rows = sqlx::query("DELETE FROM articles WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        one_row(rows)
    }

    async fn list_articles(&self, filter: &ArticleFilter, page: Page) -> StoreResult<ArticlePage> {
        count_query("list_articles");
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM articles a");
        push_article_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.reader).await?;

        let mut select =
            QueryBuilder::<Sqlite>::new(format!("SELECT {ARTICLE_COLUMNS} FROM articles a"));
        push_article_filter(&mut select, filter);
        select
            .push(" ORDER BY a.id DESC LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = select.build().fetch_all(&self.reader).await?;
        Ok(ArticlePage {
            articles: rows
                .iter()
                .map(article_from_row)
                .collect::<StoreResult<_>>()?,
            total: total as u64,
        })
    }

    async fn feed(&self, user: Id, page: Page) -> StoreResult<ArticlePage> {
        count_query("feed");
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM articles a JOIN following f ON f.target_id = a.author_id \
             WHERE f.user_id = ?",
        )
        .bind(user)
        .fetch_one(&self.reader)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT {ARTICLE_COLUMNS} FROM articles a JOIN following f \
             ON f.target_id = a.author_id WHERE f.user_id = ? \
             ORDER BY a.id DESC LIMIT ? OFFSET ?"
        ))
        .bind(user)
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .fetch_all(&self.reader)
        .await?;
        Ok(ArticlePage {
            articles: rows
                .iter()
                .map(article_from_row)
                .collect::<StoreResult<_>>()?,
            total: total as u64,
        })
    }

    async fn article_ids_by_author(&self, author: Id) -> StoreResult<Vec<Id>> {
        count_query("article_ids_by_author");
        // Reads only the articles_author index (author_id, id).
        Ok(
            sqlx::query_scalar("SELECT id FROM articles WHERE author_id = ? ORDER BY id DESC")
                .bind(author)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn article_ids_by_tag(&self, tag: &str) -> StoreResult<Vec<Id>> {
        count_query("article_ids_by_tag");
        // Reads only the article_tags_tag index (tag, article_id).
        Ok(sqlx::query_scalar(
            "SELECT article_id FROM article_tags WHERE tag = ? ORDER BY article_id DESC",
        )
        .bind(tag)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn tags(&self, limit: u32) -> StoreResult<Vec<String>> {
        count_query("tags");
        Ok(sqlx::query_scalar(
            "SELECT tag FROM article_tags GROUP BY tag ORDER BY count(*) DESC, tag LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?)
    }

    async fn add_comment(
        &self,
        article: Id,
        author: Id,
        body: String,
    ) -> StoreResult<CommentRecord> {
        count_query("add_comment");
        let id = self.ids.next(shard_of(article));
        let now = from_ms(to_ms(now()))?;
        let result = sqlx::query(
            "INSERT INTO comments (id, article_id, author_id, body, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(article)
        .bind(author)
        .bind(&body)
        .bind(to_ms(now))
        .bind(to_ms(now))
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => {}
            // The article was deleted between the lookup and this insert.
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Err(StoreError::NotFound)
            }
            Err(e) => return Err(e.into()),
        }
        Ok(CommentRecord {
            id,
            article_id: article,
            author_id: author,
            body,
            created_at: now,
            updated_at: now,
        })
    }

    async fn comments(&self, article: Id) -> StoreResult<Vec<CommentRecord>> {
        count_query("comments");
        let rows = sqlx::query("SELECT * FROM comments WHERE article_id = ? ORDER BY id")
            .bind(article)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(comment_from_row).collect()
    }

    async fn comment_by_id(&self, id: Id) -> StoreResult<Option<CommentRecord>> {
        count_query("comment_by_id");
        let row = sqlx::query("SELECT * FROM comments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(comment_from_row).transpose()
    }

    async fn delete_comment(&self, id: Id) -> StoreResult<()> {
        count_query("delete_comment");
        let rows = sqlx::query("DELETE FROM comments WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?
            .rows_affected();
        one_row(rows)
    }

    async fn create_upload(
        &self,
        upload: NewUpload,
        jobs: Vec<NewJob>,
    ) -> StoreResult<UploadRecord> {
        count_query("create_upload");
        let shard = shard_of(upload.user_id);
        let id = upload.id;
        let now = to_ms(now());
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "INSERT INTO uploads (id, user_id, state, source_digest, format, width, height, \
               animated, created_at, updated_at) \
             VALUES (?, ?, 'processing', ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(id)
        .bind(upload.user_id)
        .bind(&upload.source_digest)
        .bind(&upload.format)
        .bind(i64::from(upload.width))
        .bind(i64::from(upload.height))
        .bind(upload.animated)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        enqueue_jobs(&mut tx, &self.ids, shard, jobs).await?;
        tx.commit().await?;
        upload_from_row(&row)
    }

    async fn upload_by_id(&self, id: Id) -> StoreResult<Option<UploadRecord>> {
        count_query("upload_by_id");
        let row = sqlx::query("SELECT * FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    async fn finish_upload(
        &self,
        id: Id,
        variants: Vec<VariantRecord>,
        note: Option<String>,
    ) -> StoreResult<()> {
        count_query("finish_upload");
        let variants = serde_json::to_string(&variants).expect("variants serialize");
        let rows = sqlx::query(
            "UPDATE uploads SET state = 'ready', variants = ?, note = ?, error = NULL, \
               updated_at = ? WHERE id = ?",
        )
        .bind(variants)
        .bind(note)
        .bind(to_ms(now()))
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        one_row(rows)
    }

    async fn fail_upload(&self, id: Id, error: &str) -> StoreResult<()> {
        count_query("fail_upload");
        let rows = sqlx::query(
            "UPDATE uploads SET state = 'failed', error = ?, updated_at = ? WHERE id = ?",
        )
        .bind(error)
        .bind(to_ms(now()))
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        one_row(rows)
    }
}

fn upload_from_row(row: &SqliteRow) -> StoreResult<UploadRecord> {
    UploadRow::from_row(row)?.try_into()
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        count_query("create_session");
        sqlx::query(
            "INSERT INTO sessions (token_digest, user_id, created_at, expires_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&session.token_digest)
        .bind(session.user_id)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.expires_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn session(&self, token_digest: &str) -> StoreResult<Option<SessionRecord>> {
        count_query("session");
        let row = sqlx::query("SELECT * FROM sessions WHERE token_digest = ? AND expires_at > ?")
            .bind(token_digest)
            .bind(to_ms(now()))
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn delete_session(&self, token_digest: &str) -> StoreResult<bool> {
        count_query("delete_session");
        Ok(sqlx::query("DELETE FROM sessions WHERE token_digest = ?")
            .bind(token_digest)
            .execute(&self.writer)
            .await?
            .rows_affected()
            == 1)
    }

    async fn delete_sessions_except(&self, user: Id, keep: &str) -> StoreResult<Vec<String>> {
        count_query("delete_sessions_except");
        Ok(sqlx::query_scalar(
            "DELETE FROM sessions WHERE user_id = ? AND token_digest <> ? RETURNING token_digest",
        )
        .bind(user)
        .bind(keep)
        .fetch_all(&self.writer)
        .await?)
    }
}
