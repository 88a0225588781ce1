//! PostgreSQL: one primary for writes, any number of streaming replicas for
//! reads.
//!
//! A read goes to a replica in rotation that has replayed the floor of the
//! current [`consistency`] scope, and otherwise to the primary. A replica
//! that fails or stalls a read is taken out of rotation and the read runs
//! again on the primary, so a lost replica costs no failed request. After
//! each commit the store records the primary's WAL position in the scope, so
//! that the same request, and the session that made it, reads its own write.

mod cluster;
mod jobs;
mod outbox;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Acquire, QueryBuilder, Transaction};

use crate::consistency::{self, Position};
use crate::error::{
    is_connection_error, is_invalid_text_error, with_fresh_ids, StoreError, StoreResult,
    UniqueField,
};
use crate::ids::{shard_of, Id, IdGenerator};
use crate::model::*;
use crate::rows::{records, to_ms, ArticleRow, CommentRow, SessionRow, UploadRow, UserRow};
use crate::sql::{map_unique, now, one_row, push_article_filter, sorted_tags, ARTICLE_COLUMNS};
use crate::{slug, SessionStore, Store};

pub use cluster::{server_name, Role, ServerStatus};
use cluster::{Cluster, Timing};

/// Settings for [`PostgresStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresOptions {
    /// The primary's URL, as in `postgres://user@host:5432/infinity`.
    pub primary: String,
    /// Streaming replicas of the primary, for reads.
    pub replicas: Vec<String>,
    /// Connections per server.
    pub connections: u32,
    /// A replica further behind the primary than this leaves rotation.
    pub max_replica_lag: Duration,
    /// How often every server is asked for its role and position.
    pub probe_interval: Duration,
    /// How long a replica may take to respond to a probe or a read before it
    /// leaves rotation and the read goes to the primary.
    pub replica_timeout: Duration,
    /// Requires the primary to confirm each commit with a synchronous
    /// standby, so that no acknowledged write is lost when it dies.
    pub synchronous: bool,
}

impl PostgresOptions {
    /// Options for a primary alone, with default timings.
    pub fn new(primary: impl Into<String>) -> Self {
        Self {
            primary: primary.into(),
            replicas: Vec::new(),
            connections: 16,
            max_replica_lag: Duration::from_secs(5),
            probe_interval: Duration::from_millis(100),
            replica_timeout: Duration::from_secs(2),
            synchronous: false,
        }
    }
}

pub struct PostgresStore {
    cluster: std::sync::Arc<Cluster>,
    ids: IdGenerator,
    replica_timeout: Duration,
}

/// The longest a probe of one server may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Fails unless `names`, the primary's `synchronous_standby_names`, names a
/// standby.
fn check_synchronous(primary: &str, names: &str) -> StoreResult<()> {
    if names.trim().is_empty() {
        return Err(StoreError::Unavailable(format!(
            "synchronous replication is required, but the primary {primary} has an empty \
             synchronous_standby_names; set it, for example to 'ANY 1 (*)', and reload"
        )));
    }
    Ok(())
}

pub(crate) fn count(operation: &'static str) {
    metrics::counter!("infinity_db_queries_total", "engine" => "postgres", "operation" => operation)
        .increment(1);
}

fn count_read(target: &'static str) {
    metrics::counter!("infinity_db_reads_total", "target" => target).increment(1);
}

impl PostgresStore {
    /// Connects to every server and finds the primary. The schema is not
    /// touched; see [`PostgresStore::migrate`].
    pub async fn connect(options: PostgresOptions) -> StoreResult<Self> {
        let mut urls = vec![options.primary.clone()];
        urls.extend(options.replicas.iter().cloned());
        let timing = Timing {
            max_lag: options.max_replica_lag,
            probe_interval: options.probe_interval,
            // A probe is one tiny query; waiting long for a dead server
            // would delay every other server's probe in the same round.
            probe_timeout: options.replica_timeout.min(PROBE_TIMEOUT),
        };
        let cluster = Cluster::connect(&urls, options.connections, timing).await?;
        // Without a primary the store still starts, so that replicas serve
        // reads and `infinity db promote` can reach them; writes fail with
        // `Unavailable` until a primary appears.
        match cluster.primary() {
            Ok(primary) => {
                if options.synchronous {
                    check_synchronous(&primary.name, &primary.synchronous_names())?;
                }
                tracing::info!(primary = %primary.name, servers = urls.len(), "connected to PostgreSQL");
            }
            Err(error) => tracing::warn!(%error, "connected to PostgreSQL without a primary"),
        }
        cluster.spawn_prober();
        Ok(Self {
            cluster,
            ids: IdGenerator::new(),
            replica_timeout: options.replica_timeout,
        })
    }

    /// Applies pending migrations on the primary. PostgreSQL's advisory lock
    /// keeps two nodes from migrating at once.
    pub async fn migrate(&self) -> StoreResult<()> {
        let primary = self.cluster.primary()?;
        sqlx::migrate!("./migrations/postgres")
            .run(&primary.pool)
            .await?;
        Ok(())
    }

    /// Probes every server now instead of waiting for the next tick.
    pub async fn probe(&self) {
        self.cluster.probe_all().await;
    }

    /// The identifier generator shared by every table of this database.
    pub fn ids(&self) -> &IdGenerator {
        &self.ids
    }

    fn primary_pool(&self) -> StoreResult<PgPool> {
        Ok(self.cluster.primary()?.pool.clone())
    }

    /// Runs a read on a replica that has the current floor, or on the
    /// primary. `run` may be called twice: on a replica, then on the primary
    /// if the replica failed.
    async fn read<T, F, Fut>(&self, run: F) -> StoreResult<T>
    where
        F: Fn(PgPool) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, sqlx::Error>> + Send,
        T: Send,
    {
        let floor = consistency::floor();
        if let Some(replica) = self.cluster.replica_for(floor).await {
            match tokio::time::timeout(self.replica_timeout, run(replica.pool.clone())).await {
                Ok(Ok(value)) => {
                    count_read("replica");
                    return Ok(value);
                }
                Ok(Err(error)) if is_connection_error(&error) => {
                    replica.eject(format!("a read failed: {error}"));
                }
                Ok(Err(error)) if is_invalid_text_error(&error) => return Err(error.into()),
                Ok(Err(error)) => {
                    // Such as a query cancelled by a conflict with recovery.
                    tracing::warn!(server = %replica.name, %error, "replica read failed; reading the primary");
                }
                Err(_) => replica.eject(format!(
                    "a read took over {} ms",
                    self.replica_timeout.as_millis()
                )),
            }
        }
        count_read("primary");
        Ok(run(self.primary_pool()?).await?)
    }

    /// Begins a transaction on the primary. A connection that broke while
    /// idle fails `BEGIN`, before anything is written, so that one retry is
    /// safe.
    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let pool = self.primary_pool()?;
        match pool.begin().await {
            Ok(tx) => Ok(tx),
            Err(error) if is_connection_error(&error) => Ok(pool.begin().await?),
            Err(error) => Err(error.into()),
        }
    }

    async fn commit(&self, tx: Transaction<'static, Postgres>) -> StoreResult<()> {
        tx.commit().await?;
        self.committed().await;
        Ok(())
    }

    /// Records the primary's WAL position after a commit, which is at or past
    /// the commit record. When it cannot be read, the scope is sent to the
    /// primary for every later read, which is slower but never stale.
    async fn committed(&self) {
        let position = match self.primary_pool() {
            Ok(pool) => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
                )
                .fetch_one(&pool)
                .await
            }
            Err(error) => Err(sqlx::Error::Protocol(error.to_string())),
        };
        match position {
            Ok(position) => consistency::wrote(position as Position),
            Err(error) => {
                tracing::warn!(%error, "reading the WAL position after a commit failed");
                consistency::wrote(Position::MAX);
            }
        }
    }

    /// Runs one statement on the primary outside a transaction and records
    /// its commit position. Returns the rows it affected.
    async fn execute(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> StoreResult<u64> {
        let rows = query.execute(&self.primary_pool()?).await?.rows_affected();
        self.committed().await;
        Ok(rows)
    }
}

/// Inserts jobs inside the caller's transaction.
async fn enqueue_jobs(
    tx: &mut Transaction<'static, Postgres>,
    ids: &IdGenerator,
    shard: u16,
    jobs: Vec<NewJob>,
) -> StoreResult<()> {
    let now = to_ms(now());
    for job in jobs {
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 'queued', $4, $4, $4)",
        )
        .bind(ids.next(shard))
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn replace_tags(
    tx: &mut Transaction<'static, Postgres>,
    article: Id,
    tags: &[String],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM article_tags WHERE article_id = $1")
        .bind(article)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO article_tags (article_id, tag) SELECT $1, unnest($2::text[])")
        .bind(article)
        .bind(tags)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Picks a free slug for `title`: the plain stem if no other article has it,
/// else the stem with the article's identifier appended.
async fn free_slug(
    tx: &mut Transaction<'static, Postgres>,
    title: &str,
    article: Id,
) -> StoreResult<String> {
    let stem = slug::stem(title);
    let holder: Option<Id> = sqlx::query_scalar("SELECT id FROM articles WHERE slug = $1")
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
impl Store for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn pool_usage(&self) -> Vec<(String, u32, usize)> {
        self.cluster
            .servers()
            .iter()
            .map(|s| (s.name.clone(), s.pool.size(), s.pool.num_idle()))
            .collect()
    }

    fn servers(&self) -> Vec<ServerStatus> {
        self.cluster.status()
    }

    fn next_id(&self, shard: u16) -> Id {
        self.ids.next(shard)
    }

    async fn current_position(&self) -> StoreResult<Position> {
        count("current_position");
        let position: i64 =
            sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                .fetch_one(&self.primary_pool()?)
                .await?;
        Ok(position as Position)
    }

    async fn ping(&self) -> StoreResult<()> {
        count("ping");
        sqlx::query("SELECT 1")
            .execute(&self.primary_pool()?)
            .await?;
        Ok(())
    }

    async fn create_user(&self, user: NewUser, jobs: Vec<NewJob>) -> StoreResult<UserRecord> {
        count("create_user");
        let id = self.ids.next_random_shard();
        let now = to_ms(now());
        let mut tx = self.begin().await?;
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (id, username, email, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
        )
        .bind(id)
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_unique)?;
        enqueue_jobs(&mut tx, &self.ids, shard_of(id), jobs).await?;
        self.commit(tx).await?;
        row.try_into()
    }

    async fn user_by_id(&self, id: Id) -> StoreResult<Option<UserRecord>> {
        count("user_by_id");
        let row: Option<UserRow> = self
            .read(|pool| async move {
                sqlx::query_as("SELECT * FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
            })
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        count("user_by_email");
        let email = email.to_lowercase();
        let row: Option<UserRow> = self
            .read(|pool| {
                let email = email.clone();
                async move {
                    sqlx::query_as("SELECT * FROM users WHERE email = $1")
                        .bind(email)
                        .fetch_optional(&pool)
                        .await
                }
            })
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn user_id_by_username(&self, username: &str) -> StoreResult<Option<Id>> {
        count("user_id_by_username");
        self.read(|pool| async move {
            sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                .bind(username)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    async fn update_user(&self, id: Id, changes: UserChanges) -> StoreResult<Updated<UserRecord>> {
        count("update_user");
        let mut tx = self.begin().await?;
        // The row lock makes a concurrent update of this user wait for the
        // commit, so `previous` is the row this update replaces.
        let previous: UserRow = sqlx::query_as("SELECT * FROM users WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let row: UserRow = sqlx::query_as(
            "UPDATE users SET \
               username = coalesce($1, username), \
               email = coalesce($2, email), \
               password_hash = coalesce($3, password_hash), \
               bio = coalesce($4, bio), \
               image = coalesce($5, image), \
               updated_at = $6 \
             WHERE id = $7 RETURNING *",
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
        self.commit(tx).await?;
        Ok(Updated {
            previous: previous.try_into()?,
            current: row.try_into()?,
        })
    }

    async fn follow(&self, follower: Id, followee: Id, jobs: Vec<NewJob>) -> StoreResult<bool> {
        count("follow");
        let now = to_ms(now());
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO following (user_id, target_id, created_at) VALUES ($1, $2, $3) \
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
            "INSERT INTO followers (user_id, follower_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(followee)
        .bind(follower)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        enqueue_jobs(&mut tx, &self.ids, shard_of(followee), jobs).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn unfollow(&self, follower: Id, followee: Id) -> StoreResult<bool> {
        count("unfollow");
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM following WHERE user_id = $1 AND target_id = $2")
            .bind(follower)
            .bind(followee)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        sqlx::query("DELETE FROM followers WHERE user_id = $1 AND follower_id = $2")
            .bind(followee)
            .bind(follower)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(deleted)
    }

    async fn following_ids(&self, follower: Id) -> StoreResult<Vec<Id>> {
        count("following_ids");
        self.read(|pool| async move {
            sqlx::query_scalar("SELECT target_id FROM following WHERE user_id = $1")
                .bind(follower)
                .fetch_all(&pool)
                .await
        })
        .await
    }

    async fn favorite(&self, user: Id, article: Id) -> StoreResult<bool> {
        count("favorite");
        let mut tx = self.begin().await?;
        // Locks the article row, so the count below cannot race a delete.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM articles WHERE id = $1 FOR UPDATE")
                .bind(article)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let inserted = sqlx::query(
            "INSERT INTO favorites (user_id, article_id, created_at) VALUES ($1, $2, $3) \
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
            sqlx::query("UPDATE articles SET favorites_count = favorites_count + 1 WHERE id = $1")
                .bind(article)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(inserted)
    }

    async fn unfavorite(&self, user: Id, article: Id) -> StoreResult<bool> {
        count("unfavorite");
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM favorites WHERE user_id = $1 AND article_id = $2")
            .bind(user)
            .bind(article)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if deleted {
            sqlx::query("UPDATE articles SET favorites_count = favorites_count - 1 WHERE id = $1")
                .bind(article)
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(deleted)
    }

    async fn favorited_ids(&self, user: Id) -> StoreResult<Vec<Id>> {
        count("favorited_ids");
        self.read(|pool| async move {
            sqlx::query_scalar("SELECT article_id FROM favorites WHERE user_id = $1")
                .bind(user)
                .fetch_all(&pool)
                .await
        })
        .await
    }

    async fn create_article(&self, author: Id, article: NewArticle) -> StoreResult<ArticleRecord> {
        count("create_article");
        // An article lives on its author's shard.
        let id = self.ids.next(shard_of(author));
        let tags = sorted_tags(&article.tags);
        let mut tx = self.begin().await?;
        let stem_free = free_slug(&mut tx, &article.title, id).await?;
        let mut row = None;
        // Another transaction may take the free stem between the check and
        // the insert; the article then takes its own suffixed slug, which no
        // other article can hold.
        for slug in [
            stem_free,
            slug::with_suffix(&slug::stem(&article.title), id),
        ] {
            row = sqlx::query_as::<_, ArticleRow>(
                "INSERT INTO articles (id, author_id, slug, title, description, body, tag_list, \
                   images, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                 ON CONFLICT (slug) DO NOTHING RETURNING *",
            )
            .bind(id)
            .bind(author)
            .bind(&slug)
            .bind(&article.title)
            .bind(&article.description)
            .bind(&article.body)
            .bind(serde_json::to_string(&tags).expect("strings serialize"))
            .bind(serde_json::to_string(&article.images).expect("ids serialize"))
            .bind(to_ms(now()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_unique)?;
            if row.is_some() {
                break;
            }
        }
        let row = row.ok_or(StoreError::Taken(UniqueField::Slug))?;
        replace_tags(&mut tx, id, &tags).await?;
        self.commit(tx).await?;
        row.try_into()
    }

    async fn article_id_by_slug(&self, slug: &str) -> StoreResult<Option<Id>> {
        count("article_id_by_slug");
        self.read(|pool| async move {
            sqlx::query_scalar("SELECT id FROM articles WHERE slug = $1")
                .bind(slug)
                .fetch_optional(&pool)
                .await
        })
        .await
    }

    async fn article_by_id(&self, id: Id) -> StoreResult<Option<ArticleRecord>> {
        count("article_by_id");
        let sql = format!("SELECT {ARTICLE_COLUMNS} FROM articles a WHERE a.id = $1");
        let row: Option<ArticleRow> = self
            .read(|pool| {
                let sql = sql.clone();
                async move { sqlx::query_as(&sql).bind(id).fetch_optional(&pool).await }
            })
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn articles_by_ids(&self, ids: &[Id]) -> StoreResult<Vec<ArticleRecord>> {
        count("articles_by_ids");
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {ARTICLE_COLUMNS} FROM articles a WHERE a.id = ANY($1)");
        let rows: Vec<ArticleRow> = self
            .read(|pool| {
                let sql = sql.clone();
                async move { sqlx::query_as(&sql).bind(ids).fetch_all(&pool).await }
            })
            .await?;
        records(rows)
    }

    async fn update_article(
        &self,
        id: Id,
        changes: ArticleChanges,
    ) -> StoreResult<Updated<ArticleRecord>> {
        count("update_article");
        let mut tx = self.begin().await?;
        // The row lock makes a concurrent update of this article wait for
        // the commit, so `previous` is the row this update replaces.
        let previous: ArticleRow = sqlx::query_as(&format!(
            "SELECT {ARTICLE_COLUMNS} FROM articles a WHERE a.id = $1 FOR UPDATE"
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
        let update = |slug: Option<String>| {
            sqlx::query_as::<_, ArticleRow>(
                "UPDATE articles SET \
                   slug = coalesce($1, slug), \
                   title = coalesce($2, title), \
                   description = coalesce($3, description), \
                   body = coalesce($4, body), \
                   tag_list = coalesce($5, tag_list), \
                   images = coalesce($6, images), \
                   updated_at = $7 \
                 WHERE id = $8 RETURNING *",
            )
            .bind(slug)
            .bind(changes.title.clone())
            .bind(changes.description.clone())
            .bind(changes.body.clone())
            .bind(tag_list.clone())
            .bind(images.clone())
            .bind(to_ms(now()))
            .bind(id)
        };
        // A savepoint keeps the transaction usable if another transaction
        // took the free stem meanwhile; the article then takes its own
        // suffixed slug.
        let mut attempt = tx.begin().await?;
        let row = match update(slug.clone()).fetch_optional(&mut *attempt).await {
            Ok(row) => {
                attempt.commit().await?;
                row
            }
            Err(error) => match (map_unique(error), &changes.title) {
                (StoreError::Taken(UniqueField::Slug), Some(title)) => {
                    attempt.rollback().await?;
                    let suffixed = slug::with_suffix(&slug::stem(title), id);
                    update(Some(suffixed))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_unique)?
                }
                (error, _) => return Err(error),
            },
        }
        .ok_or(StoreError::NotFound)?;
        if let Some(tags) = &tags {
            replace_tags(&mut tx, id, tags).await?;
        }
        self.commit(tx).await?;
        Ok(Updated {
            previous: previous.try_into()?,
            current: row.try_into()?,
        })
    }

    async fn delete_article(&self, id: Id) -> StoreResult<()> {
        count("delete_article");
        let rows = self
            .execute(sqlx::query("DELETE FROM articles WHERE id = $1").bind(id))
            .await?;
        one_row(rows)
    }

    async fn list_articles(&self, filter: &ArticleFilter, page: Page) -> StoreResult<ArticlePage> {
        count("list_articles");
        let (total, rows) = self
            .read(|pool| async move {
                let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM articles a");
                push_article_filter(&mut count, filter);
                let total: i64 = count.build_query_scalar().fetch_one(&pool).await?;

                let mut select = QueryBuilder::<Postgres>::new(format!(
                    "SELECT {ARTICLE_COLUMNS} FROM articles a"
                ));
                push_article_filter(&mut select, filter);
                select
                    .push(" ORDER BY a.id DESC LIMIT ")
                    .push_bind(i64::from(page.limit))
                    .push(" OFFSET ")
                    .push_bind(i64::from(page.offset));
                let rows: Vec<ArticleRow> = select.build_query_as().fetch_all(&pool).await?;
                Ok((total, rows))
            })
            .await?;
        Ok(ArticlePage {
            articles: records(rows)?,
            total: total as u64,
        })
    }

    async fn feed(&self, user: Id, page: Page) -> StoreResult<ArticlePage> {
        count("feed");
        let (total, rows) = self
            .read(|pool| async move {
                let total: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM articles a JOIN following f \
                     ON f.target_id = a.author_id WHERE f.user_id = $1",
                )
                .bind(user)
                .fetch_one(&pool)
                .await?;
                let rows: Vec<ArticleRow> = sqlx::query_as(&format!(
                    "SELECT {ARTICLE_COLUMNS} FROM articles a JOIN following f \
                     ON f.target_id = a.author_id WHERE f.user_id = $1 \
                     ORDER BY a.id DESC LIMIT $2 OFFSET $3"
                ))
                .bind(user)
                .bind(i64::from(page.limit))
                .bind(i64::from(page.offset))
                .fetch_all(&pool)
                .await?;
                Ok((total, rows))
            })
            .await?;
        Ok(ArticlePage {
            articles: records(rows)?,
            total: total as u64,
        })
    }

    async fn article_ids_by_author(&self, author: Id) -> StoreResult<Vec<Id>> {
        count("article_ids_by_author");
        self.read(|pool| async move {
            sqlx::query_scalar("SELECT id FROM articles WHERE author_id = $1 ORDER BY id DESC")
                .bind(author)
                .fetch_all(&pool)
                .await
        })
        .await
    }

    async fn article_ids_by_tag(&self, tag: &str) -> StoreResult<Vec<Id>> {
        count("article_ids_by_tag");
        self.read(|pool| async move {
            sqlx::query_scalar(
                "SELECT article_id FROM article_tags WHERE tag = $1 ORDER BY article_id DESC",
            )
            .bind(tag)
            .fetch_all(&pool)
            .await
        })
        .await
    }

    async fn tags(&self, limit: u32) -> StoreResult<Vec<String>> {
        count("tags");
        self.read(|pool| async move {
            sqlx::query_scalar(
                "SELECT tag FROM article_tags GROUP BY tag ORDER BY count(*) DESC, tag LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&pool)
            .await
        })
        .await
    }

    async fn add_comment(
        &self,
        article: Id,
        author: Id,
        body: String,
    ) -> StoreResult<CommentRecord> {
        count("add_comment");
        let pool = self.primary_pool()?;
        let (pool, body) = (&pool, &body);
        let row = with_fresh_ids(|| async move {
            let id = self.ids.next(shard_of(article));
            sqlx::query_as::<_, CommentRow>(
                "INSERT INTO comments (id, article_id, author_id, body, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING *",
            )
            .bind(id)
            .bind(article)
            .bind(author)
            .bind(body)
            .bind(to_ms(now()))
            .fetch_one(pool)
            .await
            .map_err(|error| match error {
                // The article was deleted between the lookup and this insert.
                sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
                other => other.into(),
            })
        })
        .await?;
        self.committed().await;
        row.try_into()
    }

    async fn comments(&self, article: Id) -> StoreResult<Vec<CommentRecord>> {
        count("comments");
        let rows: Vec<CommentRow> = self
            .read(|pool| async move {
                sqlx::query_as("SELECT * FROM comments WHERE article_id = $1 ORDER BY id")
                    .bind(article)
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        records(rows)
    }

    async fn comment_by_id(&self, id: Id) -> StoreResult<Option<CommentRecord>> {
        count("comment_by_id");
        let row: Option<CommentRow> = self
            .read(|pool| async move {
                sqlx::query_as("SELECT * FROM comments WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
            })
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn delete_comment(&self, id: Id) -> StoreResult<()> {
        count("delete_comment");
        let rows = self
            .execute(sqlx::query("DELETE FROM comments WHERE id = $1").bind(id))
            .await?;
        one_row(rows)
    }

    async fn create_upload(
        &self,
        upload: NewUpload,
        jobs: Vec<NewJob>,
    ) -> StoreResult<UploadRecord> {
        count("create_upload");
        let shard = shard_of(upload.user_id);
        let now = to_ms(now());
        let mut tx = self.begin().await?;
        let row: UploadRow = sqlx::query_as(
            "INSERT INTO uploads (id, user_id, state, source_digest, format, width, height, \
               animated, created_at, updated_at) \
             VALUES ($1, $2, 'processing', $3, $4, $5, $6, $7, $8, $8) RETURNING *",
        )
        .bind(upload.id)
        .bind(upload.user_id)
        .bind(&upload.source_digest)
        .bind(&upload.format)
        .bind(i64::from(upload.width))
        .bind(i64::from(upload.height))
        .bind(upload.animated)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        enqueue_jobs(&mut tx, &self.ids, shard, jobs).await?;
        self.commit(tx).await?;
        row.try_into()
    }

    async fn upload_by_id(&self, id: Id) -> StoreResult<Option<UploadRecord>> {
        count("upload_by_id");
        let row: Option<UploadRow> = self
            .read(|pool| async move {
                sqlx::query_as("SELECT * FROM uploads WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
            })
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn finish_upload(
        &self,
        id: Id,
        variants: Vec<VariantRecord>,
        note: Option<String>,
    ) -> StoreResult<()> {
        count("finish_upload");
        let variants = serde_json::to_string(&variants).expect("variants serialize");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE uploads SET state = 'ready', variants = $1, note = $2, \
                       error = NULL, updated_at = $3 WHERE id = $4",
                )
                .bind(variants)
                .bind(note)
                .bind(to_ms(now()))
                .bind(id),
            )
            .await?;
        one_row(rows)
    }

    async fn fail_upload(&self, id: Id, error: &str) -> StoreResult<()> {
        count("fail_upload");
        let rows = self
            .execute(
                sqlx::query(
                    "UPDATE uploads SET state = 'failed', error = $1, updated_at = $2 \
                     WHERE id = $3",
                )
                .bind(error)
                .bind(to_ms(now()))
                .bind(id),
            )
            .await?;
        one_row(rows)
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        count("create_session");
        self.execute(
            sqlx::query(
                "INSERT INTO sessions (token_digest, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&session.token_digest)
            .bind(session.user_id)
            .bind(to_ms(session.created_at))
            .bind(to_ms(session.expires_at)),
        )
        .await?;
        Ok(())
    }

    async fn session(&self, token_digest: &str) -> StoreResult<Option<SessionRecord>> {
        count("session");
        let now = to_ms(now());
        let lookup = |pool: PgPool| async move {
            sqlx::query_as::<_, SessionRow>(
                "SELECT * FROM sessions WHERE token_digest = $1 AND expires_at > $2",
            )
            .bind(token_digest)
            .bind(now)
            .fetch_optional(&pool)
            .await
        };
        let mut row = self.read(lookup).await?;
        if row.is_none() {
            // A session created through another node may not have reached
            // this replica yet, and this node holds no floor for it; a
            // missing session is rare enough to confirm on the primary.
            row = lookup(self.primary_pool()?).await?;
        }
        row.map(TryInto::try_into).transpose()
    }

    async fn delete_session(&self, token_digest: &str) -> StoreResult<bool> {
        count("delete_session");
        let rows = self
            .execute(sqlx::query("DELETE FROM sessions WHERE token_digest = $1").bind(token_digest))
            .await?;
        Ok(rows == 1)
    }

    async fn delete_sessions_except(&self, user: Id, keep: &str) -> StoreResult<Vec<String>> {
        count("delete_sessions_except");
        let digests = sqlx::query_scalar(
            "DELETE FROM sessions WHERE user_id = $1 AND token_digest <> $2 \
             RETURNING token_digest",
        )
        .bind(user)
        .bind(keep)
        .fetch_all(&self.primary_pool()?)
        .await?;
        self.committed().await;
        Ok(digests)
    }
}
