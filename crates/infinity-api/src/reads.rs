//! The read side: every hot read goes through a versioned read-through
//! cache, and every write names the keys it changed once it has committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use infinity_cache::{CacheConfig, ReadThrough};
use infinity_store::{ArticleFilter, ArticleRecord, Id, Page, ProfileRecord, SessionRecord, Store};
use infinity_store::{SessionStore, StoreError};

/// How many of the newest articles the cached first pages of the global list
/// cover; deeper pages and filtered lists always query the store.
pub const CACHED_LIST_DEPTH: u32 = 100;

/// The most tags that `GET /api/tags` returns, most used first.
pub const MAX_TAGS_LISTED: u32 = 200;

/// Cache sizes and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Entries per cache.
    pub entries: u64,
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            entries: 50_000,
            ttl: Duration::from_secs(300),
        }
    }
}

type Shared<E> = Result<E, Arc<StoreError>>;

/// The cached read model over [`Store`] and [`SessionStore`].
pub struct Reads {
    store: Arc<dyn Store>,
    sessions: Arc<dyn SessionStore>,
    session_cache: ReadThrough<String, Option<SessionRecord>>,
    profiles: ReadThrough<Id, Option<ProfileRecord>>,
    user_ids: ReadThrough<String, Option<Id>>,
    articles: ReadThrough<Id, Option<ArticleRecord>>,
    article_ids: ReadThrough<String, Option<Id>>,
    global_pages: ReadThrough<Page, (Vec<Id>, u64)>,
    tags: ReadThrough<(), Vec<String>>,
    following: ReadThrough<Id, Arc<HashSet<Id>>>,
    favorites: ReadThrough<Id, Arc<HashSet<Id>>>,
}

fn config(name: &'static str, settings: &CacheSettings) -> CacheConfig {
    CacheConfig {
        name,
        capacity: settings.entries,
        ttl: settings.ttl,
        jitter: 0.2,
    }
}

impl Reads {
    pub fn new(
        store: Arc<dyn Store>,
        sessions: Arc<dyn SessionStore>,
        settings: &CacheSettings,
    ) -> Self {
        Self {
            store,
            sessions,
            session_cache: ReadThrough::new(config("session", settings)),
            profiles: ReadThrough::new(config("profile", settings)),
            user_ids: ReadThrough::new(config("username", settings)),
            articles: ReadThrough::with_weigher(config("article", settings), |_, article| {
                // Long articles count for more, at one unit per 4 KiB.
                article
                    .as_ref()
                    .map_or(1, |a| 1 + (a.body.len() / 4096) as u32)
            }),
            article_ids: ReadThrough::new(config("slug", settings)),
            global_pages: ReadThrough::new(config("article_list", settings)),
            tags: ReadThrough::new(config("tags", settings)),
            following: ReadThrough::new(config("following", settings)),
            favorites: ReadThrough::new(config("favorites", settings)),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Returns the live session behind a token digest.
    pub async fn session(&self, digest: &str) -> Shared<Option<SessionRecord>> {
        let key = digest.to_string();
        let session = self
            .session_cache
            .get_or_load(&key, || self.sessions.session(digest))
            .await?;
        Ok(session.filter(|s| s.expires_at > chrono::Utc::now()))
    }

    pub async fn profile(&self, id: Id) -> Shared<Option<ProfileRecord>> {
        self.profiles
            .get_or_load(&id, || async move {
                Ok(self
                    .store
                    .user_by_id(id)
                    .await?
                    .as_ref()
                    .map(ProfileRecord::from))
            })
            .await
    }

    pub async fn user_id(&self, username: &str) -> Shared<Option<Id>> {
        let key = username.to_string();
        self.user_ids
            .get_or_load(&key, || self.store.user_id_by_username(username))
            .await
    }

    pub async fn article_id(&self, slug: &str) -> Shared<Option<Id>> {
        let key = slug.to_string();
        self.article_ids
            .get_or_load(&key, || self.store.article_id_by_slug(slug))
            .await
    }

    pub async fn article(&self, id: Id) -> Shared<Option<ArticleRecord>> {
        self.articles
            .get_or_load(&id, || self.store.article_by_id(id))
            .await
    }

    /// A newest-first page of articles. The first pages of the unfiltered
    /// list come from the cache.
    pub async fn list(
        &self,
        filter: &ArticleFilter,
        page: Page,
    ) -> Shared<(Vec<ArticleRecord>, u64)> {
        if !filter.is_empty() || page.offset + page.limit > CACHED_LIST_DEPTH {
            let found = self.store.list_articles(filter, page).await?;
            return Ok((found.articles, found.total));
        }
        let (ids, total) = self
            .global_pages
            .get_or_load(&page, || async {
                let found = self.store.list_articles(filter, page).await?;
                let ids = found.articles.iter().map(|a| a.id).collect();
                Ok((ids, found.total))
            })
            .await?;
        let mut articles = Vec::with_capacity(ids.len());
        for id in ids {
            // An article deleted since the page was cached is skipped; the
            // delete has already made the page itself stale.
            if let Some(article) = self.article(id).await? {
                articles.push(article);
            }
        }
        Ok((articles, total))
    }

    pub async fn tags(&self) -> Shared<Vec<String>> {
        self.tags
            .get_or_load(&(), || self.store.tags(MAX_TAGS_LISTED))
            .await
    }

    /// Everyone `user` follows.
    pub async fn following(&self, user: Id) -> Shared<Arc<HashSet<Id>>> {
        self.following
            .get_or_load(&user, || async move {
                Ok(Arc::new(
                    self.store.following_ids(user).await?.into_iter().collect(),
                ))
            })
            .await
    }

    /// Every article `user` has favourited.
    pub async fn favorites(&self, user: Id) -> Shared<Arc<HashSet<Id>>> {
        self.favorites
            .get_or_load(&user, || async move {
                Ok(Arc::new(
                    self.store.favorited_ids(user).await?.into_iter().collect(),
                ))
            })
            .await
    }

    // Invalidation, called after the write has committed.

    pub async fn session_ended(&self, digest: &str) {
        self.session_cache.invalidate(&digest.to_string()).await;
    }

    pub async fn user_changed(&self, id: Id, usernames: &[&str]) {
        self.profiles.invalidate(&id).await;
        for name in usernames {
            self.user_ids.invalidate(&name.to_string()).await;
        }
    }

    pub async fn follows_changed(&self, follower: Id) {
        self.following.invalidate(&follower).await;
    }

    pub async fn favorites_changed(&self, user: Id, article: Id) {
        self.favorites.invalidate(&user).await;
        self.articles.invalidate(&article).await;
    }

    /// An article was created, edited or deleted: `slugs` are its old and
    /// new slugs.
    pub async fn article_changed(&self, id: Id, slugs: &[&str]) {
        self.articles.invalidate(&id).await;
        for slug in slugs {
            self.article_ids.invalidate(&slug.to_string()).await;
        }
        self.global_pages.invalidate_all();
        self.tags.invalidate(&()).await;
    }
}
