//! The read side: every hot read goes through a versioned read-through
//! cache, and every write names the keys it changed once it has committed.

use std::collections::{BinaryHeap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use infinity_cache::{CacheConfig, ReadThrough};
use infinity_store::consistency::{self, Position};
use infinity_store::{
    ArticleFilter, ArticleRecord, CommentRecord, Id, Page, ProfileRecord, SessionRecord, Store,
};
use infinity_store::{SessionStore, StoreError};

use crate::consistency::skip_local_caches;
use crate::shared_cache::{CacheKey, SharedCache, Stale};

/// How many of the newest articles the cached first pages of the global list
/// cover; deeper pages and filtered lists always query the store.
pub const CACHED_LIST_DEPTH: u32 = 100;

/// The maximum number of tags that `GET /api/tags` returns, most used first.
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
    /// Every article id of an author, newest first: the feed's source.
    author_articles: ReadThrough<Id, Arc<Vec<Id>>>,
    /// Every article id with a tag, newest first.
    tag_articles: ReadThrough<String, Arc<Vec<Id>>>,
    /// Returns an article's comments, oldest first.
    comments: ReadThrough<Id, Arc<Vec<CommentRecord>>>,
    bus: OnceLock<Arc<dyn ChangeBus>>,
    shared: OnceLock<Arc<dyn SharedCache>>,
    bypass: AtomicBool,
    ttl: Duration,
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
            author_articles: ReadThrough::new(config("author_articles", settings)),
            tag_articles: ReadThrough::new(config("tag_articles", settings)),
            comments: ReadThrough::new(config("comments", settings)),
            bus: OnceLock::new(),
            shared: OnceLock::new(),
            bypass: AtomicBool::new(false),
            ttl: settings.ttl,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// Returns the cached value of `key`, or loads it at the key's floor.
    /// While the caches are bypassed (the bus that keeps them coherent with
    /// other nodes is down) every read goes to the store.
    async fn cached<K, V, F, Fut>(&self, cache: &ReadThrough<K, V>, key: &K, load: F) -> Shared<V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        if self.bypassed() || skip_local_caches() {
            return load().await.map_err(Arc::new);
        }
        cache
            .get_or_load(key, || consistency::cache_fill(cache.floor(key), load()))
            .await
    }

    /// Like [`Reads::cached`], with the shared cache, when there is one,
    /// between the in-process cache and the store.
    async fn cached_shared<K, V, F, Fut>(
        &self,
        cache: &ReadThrough<K, V>,
        key: &K,
        load: F,
    ) -> Shared<V>
    where
        K: CacheKey + Hash + Eq + Clone + Send + Sync + 'static,
        V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        if self.bypassed() {
            return load().await.map_err(Arc::new);
        }
        let through_shared = || async {
            let Some(shared) = self.shared.get() else {
                return load().await;
            };
            let name = key.cache_key();
            let found = self
                .shared_get::<V>(shared.as_ref(), cache.name(), std::slice::from_ref(&name))
                .await;
            if let Some(Some(value)) = found.into_iter().next() {
                return Ok(value);
            }
            // Inside a cache fill the floor is what this read observes.
            let position = consistency::floor();
            let value = load().await?;
            self.shared_put(shared.as_ref(), cache.name(), &[(name, &value)], position)
                .await;
            Ok(value)
        };
        if skip_local_caches() {
            return consistency::cache_fill(cache.floor(key), through_shared())
                .await
                .map_err(Arc::new);
        }
        cache
            .get_or_load(key, || {
                consistency::cache_fill(cache.floor(key), through_shared())
            })
            .await
    }

    /// Returns what the shared cache holds for `keys`, `None` for each
    /// missing or undecodable entry and for every key when it is
    /// unreachable.
    async fn shared_get<V: DeserializeOwned>(
        &self,
        shared: &dyn SharedCache,
        cache: &'static str,
        keys: &[String],
    ) -> Vec<Option<V>> {
        let stored = match shared.get(cache, keys).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::debug!(%error, cache, "shared cache unavailable");
                return keys.iter().map(|_| None).collect();
            }
        };
        stored
            .into_iter()
            .map(|bytes| {
                let value = bytes.and_then(|bytes| serde_json::from_slice(&bytes).ok());
                let result = if value.is_some() { "hit" } else { "miss" };
                metrics::counter!("infinity_shared_cache_requests_total", "cache" => cache, "result" => result)
                    .increment(1);
                value
            })
            .collect()
    }

    async fn shared_put<V: Serialize>(
        &self,
        shared: &dyn SharedCache,
        cache: &'static str,
        entries: &[(String, &V)],
        position: Position,
    ) {
        let encoded: Vec<(String, Vec<u8>)> = entries
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), serde_json::to_vec(value).ok()?)))
            .collect();
        if let Err(error) = shared.put(cache, &encoded, position, self.ttl).await {
            tracing::debug!(%error, cache, "storing in the shared cache failed");
        }
    }

    /// Returns the live session behind a token digest.
    pub async fn session(&self, digest: &str) -> Shared<Option<SessionRecord>> {
        let key = digest.to_string();
        let session = self
            .cached(&self.session_cache, &key, || self.sessions.session(digest))
            .await?;
        Ok(session.filter(|s| s.expires_at > chrono::Utc::now()))
    }

    pub async fn profile(&self, id: Id) -> Shared<Option<ProfileRecord>> {
        self.cached_shared(&self.profiles, &id, || async move {
            let user = self.store.user_by_id(id).await?;
            Ok(user.as_ref().map(ProfileRecord::from))
        })
        .await
    }

    pub async fn user_id(&self, username: &str) -> Shared<Option<Id>> {
        let key = username.to_string();
        self.cached_shared(&self.user_ids, &key, || {
            self.store.user_id_by_username(username)
        })
        .await
    }

    pub async fn article_id(&self, slug: &str) -> Shared<Option<Id>> {
        let key = slug.to_string();
        self.cached_shared(&self.article_ids, &key, || {
            self.store.article_id_by_slug(slug)
        })
        .await
    }

    pub async fn article(&self, id: Id) -> Shared<Option<ArticleRecord>> {
        self.cached_shared(&self.articles, &id, || self.store.article_by_id(id))
            .await
    }

    /// Returns a newest-first page of articles. The first pages of the unfiltered
    /// list, and every page of a list filtered by one of tag, author or
    /// favourited, come from cached id lists.
    pub async fn list(
        &self,
        filter: &ArticleFilter,
        page: Page,
    ) -> Shared<(Vec<ArticleRecord>, u64)> {
        let ids = match filter {
            ArticleFilter {
                tag: Some(tag),
                author: None,
                favorited_by: None,
            } => Some(self.tag_articles(tag).await?),
            ArticleFilter {
                tag: None,
                author: Some(author),
                favorited_by: None,
            } => match self.user_id(author).await? {
                Some(author) => Some(self.author_articles(author).await?),
                None => Some(Arc::new(Vec::new())),
            },
            ArticleFilter {
                tag: None,
                author: None,
                favorited_by: Some(user),
            } => match self.user_id(user).await? {
                Some(user) => {
                    let mut ids: Vec<Id> = self.favorites(user).await?.iter().copied().collect();
                    // Identifiers are time-ordered, so this is newest first.
                    ids.sort_unstable_by(|a, b| b.cmp(a));
                    Some(Arc::new(ids))
                }
                None => Some(Arc::new(Vec::new())),
            },
            _ => None,
        };
        if let Some(ids) = ids {
            return self.page_of(&ids, page).await;
        }
        if !filter.is_empty() || page.offset + page.limit > CACHED_LIST_DEPTH {
            let found = self.store.list_articles(filter, page).await?;
            return Ok((found.articles, found.total));
        }
        let (ids, total) = self
            .cached_shared(&self.global_pages, &page, || async {
                let found = self.store.list_articles(filter, page).await?;
                let ids = found.articles.iter().map(|a| a.id).collect();
                Ok((ids, found.total))
            })
            .await?;
        let articles = self.articles_in_order(&ids).await?;
        Ok((articles, total))
    }

    /// Returns a newest-first page of the articles by the users that `user` follows,
    /// with their total. The page is merged in memory from each followee's
    /// cached article ids, so a warm feed sends no query to the store.
    pub async fn feed(&self, user: Id, page: Page) -> Shared<(Vec<ArticleRecord>, u64)> {
        let following = self.following(user).await?;
        let mut lists = Vec::with_capacity(following.len());
        for &author in following.iter() {
            lists.push(self.author_articles(author).await?);
        }
        let total = lists.iter().map(|ids| ids.len() as u64).sum();
        let articles = self.articles_in_order(&newest_first(&lists, page)).await?;
        Ok((articles, total))
    }

    /// Resolves one page of a newest-first id list through the article cache.
    async fn page_of(&self, ids: &[Id], page: Page) -> Shared<(Vec<ArticleRecord>, u64)> {
        let start = (page.offset as usize).min(ids.len());
        let end = (start + page.limit as usize).min(ids.len());
        let articles = self.articles_in_order(&ids[start..end]).await?;
        Ok((articles, ids.len() as u64))
    }

    /// Returns the articles of `ids` in that order, from the caches, loading
    /// every miss in one query. An article deleted since its id was listed
    /// is skipped; the delete has made the list stale for the next read.
    pub async fn articles_in_order(&self, ids: &[Id]) -> Shared<Vec<ArticleRecord>> {
        if self.bypassed() {
            let mut found = by_id(self.store.articles_by_ids(ids).await?);
            return Ok(ids.iter().filter_map(|id| found.remove(id)).collect());
        }
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        let local = !skip_local_caches();
        for &id in ids {
            let cached = match local {
                true => self.articles.get_current(&id).await,
                false => None,
            };
            match cached {
                Some(Some(article)) => {
                    found.insert(id, article);
                }
                Some(None) => {}
                // The version is taken before the query, so a write that
                // lands meanwhile makes the primed entry stale.
                None => missing.push((id, self.articles.snapshot(&id))),
            }
        }
        if missing.is_empty() {
            return Ok(ids.iter().filter_map(|id| found.remove(id)).collect());
        }
        let missing_ids: Vec<Id> = missing.iter().map(|(id, _)| *id).collect();
        let floor = missing_ids
            .iter()
            .map(|id| self.articles.floor(id))
            .max()
            .unwrap_or(0);
        let loaded = consistency::cache_fill(floor, self.load_articles(&missing_ids)).await?;
        for (id, snapshot) in missing {
            let article = loaded.get(&id).cloned().flatten();
            if local {
                self.articles.prime(id, snapshot, article.clone()).await;
            }
            if let Some(article) = article {
                found.insert(id, article);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Loads articles through the shared cache, when there is one, and then
    /// the store. `None` marks an id with no article.
    async fn load_articles(
        &self,
        ids: &[Id],
    ) -> Result<std::collections::HashMap<Id, Option<ArticleRecord>>, StoreError> {
        let Some(shared) = self.shared.get() else {
            let mut found = by_id(self.store.articles_by_ids(ids).await?);
            return Ok(ids.iter().map(|id| (*id, found.remove(id))).collect());
        };
        let cache = self.articles.name();
        let keys: Vec<String> = ids.iter().map(|id| id.cache_key()).collect();
        let stored = self
            .shared_get::<Option<ArticleRecord>>(shared.as_ref(), cache, &keys)
            .await;
        let mut result = std::collections::HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for (&id, stored) in ids.iter().zip(stored) {
            match stored {
                Some(article) => {
                    result.insert(id, article);
                }
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Ok(result);
        }
        let position = consistency::floor();
        let mut loaded = by_id(self.store.articles_by_ids(&missing).await?);
        let fresh: Vec<(Id, Option<ArticleRecord>)> =
            missing.iter().map(|id| (*id, loaded.remove(id))).collect();
        let entries: Vec<(String, &Option<ArticleRecord>)> = fresh
            .iter()
            .map(|(id, article)| (id.cache_key(), article))
            .collect();
        self.shared_put(shared.as_ref(), cache, &entries, position)
            .await;
        result.extend(fresh);
        Ok(result)
    }

    /// Returns every article id with `tag`, newest first.
    pub async fn tag_articles(&self, tag: &str) -> Shared<Arc<Vec<Id>>> {
        let key = tag.to_string();
        self.cached_shared(&self.tag_articles, &key, || async {
            Ok(Arc::new(self.store.article_ids_by_tag(tag).await?))
        })
        .await
    }

    /// An article's comments, oldest first.
    pub async fn comments(&self, article: Id) -> Shared<Arc<Vec<CommentRecord>>> {
        self.cached_shared(&self.comments, &article, || async move {
            Ok(Arc::new(self.store.comments(article).await?))
        })
        .await
    }

    /// Returns every article id of `author`, newest first.
    pub async fn author_articles(&self, author: Id) -> Shared<Arc<Vec<Id>>> {
        self.cached_shared(&self.author_articles, &author, || async move {
            Ok(Arc::new(self.store.article_ids_by_author(author).await?))
        })
        .await
    }

    pub async fn tags(&self) -> Shared<Vec<String>> {
        self.cached_shared(&self.tags, &(), || self.store.tags(MAX_TAGS_LISTED))
            .await
    }

    /// Everyone `user` follows.
    pub async fn following(&self, user: Id) -> Shared<Arc<HashSet<Id>>> {
        self.cached_shared(&self.following, &user, || async move {
            let ids = self.store.following_ids(user).await?;
            Ok(Arc::new(ids.into_iter().collect()))
        })
        .await
    }

    /// Returns every article `user` has favourited.
    pub async fn favorites(&self, user: Id) -> Shared<Arc<HashSet<Id>>> {
        self.cached_shared(&self.favorites, &user, || async move {
            let ids = self.store.favorited_ids(user).await?;
            Ok(Arc::new(ids.into_iter().collect()))
        })
        .await
    }

    // Invalidation, called after the write has committed. Each key keeps
    // the write's log position as its floor, so that the next load cannot
    // come from a replica that has not replayed the write. The same change
    // goes to the other nodes through the bus, when there is one.

    pub async fn session_ended(&self, digest: &str) {
        self.changed(Change::SessionEnded {
            digest: digest.to_string(),
        })
        .await;
    }

    pub async fn user_changed(&self, id: Id, usernames: &[&str]) {
        let usernames = usernames.iter().map(|n| n.to_string()).collect();
        self.changed(Change::User { id, usernames }).await;
    }

    pub async fn follows_changed(&self, follower: Id) {
        self.changed(Change::Follows { follower }).await;
    }

    pub async fn favorites_changed(&self, user: Id, article: Id) {
        self.changed(Change::Favorites { user, article }).await;
    }

    pub async fn comments_changed(&self, article: Id) {
        self.changed(Change::Comments { article }).await;
    }

    /// Invalidates what an article by `author` changed when it was created,
    /// edited or deleted. `slugs` are its old and new slugs, and `tags` its old
    /// and new tags.
    pub async fn article_changed(&self, id: Id, author: Id, slugs: &[&str], tags: &[String]) {
        self.changed(Change::Article {
            id,
            author,
            slugs: slugs.iter().map(|s| s.to_string()).collect(),
            tags: tags.to_vec(),
        })
        .await;
    }

    /// Invalidates what a deleted article changed: beyond [`Reads::article_changed`], its
    /// comments go, and every user's favourites may have held it.
    pub async fn article_deleted(&self, article: &ArticleRecord) {
        self.changed(Change::ArticleDeleted {
            id: article.id,
            author: article.author_id,
            slug: article.slug.clone(),
            tags: article.tags.clone(),
        })
        .await;
    }

    /// Applies a change made by this node and sends it to the others. The
    /// shared cache drops the change's keys before this returns, so before
    /// the write is acknowledged.
    async fn changed(&self, change: Change) {
        let floor = consistency::written();
        let stale = self.apply(&change, floor).await;
        if let Some(bus) = self.bus.get() {
            if let Some(sequence) = bus.publish(&change, floor, &stale).await {
                crate::consistency::published(sequence);
            }
        }
    }

    /// Drops every in-process key that `change` made stale, leaving `floor`
    /// on each, and returns their names for the shared cache. Changes from
    /// other nodes arrive here through the bus.
    pub async fn apply(&self, change: &Change, floor: Position) -> Vec<Stale> {
        let mut stale = Vec::new();
        match change {
            Change::SessionEnded { digest } => {
                self.session_cache.invalidate_at(digest, floor).await;
            }
            Change::User { id, usernames } => {
                drop_key(&self.profiles, id, floor, &mut stale).await;
                for name in usernames {
                    drop_key(&self.user_ids, name, floor, &mut stale).await;
                }
            }
            Change::Follows { follower } => {
                drop_key(&self.following, follower, floor, &mut stale).await;
            }
            Change::Favorites { user, article } => {
                drop_key(&self.favorites, user, floor, &mut stale).await;
                drop_key(&self.articles, article, floor, &mut stale).await;
            }
            Change::Comments { article } => {
                drop_key(&self.comments, article, floor, &mut stale).await;
            }
            Change::Article {
                id,
                author,
                slugs,
                tags,
            } => {
                self.article_keys_changed(*id, *author, slugs, tags, floor, &mut stale)
                    .await;
            }
            Change::ArticleDeleted {
                id,
                author,
                slug,
                tags,
            } => {
                let slugs = std::slice::from_ref(slug);
                self.article_keys_changed(*id, *author, slugs, tags, floor, &mut stale)
                    .await;
                drop_key(&self.comments, id, floor, &mut stale).await;
                drop_all(&self.favorites, floor, &mut stale);
            }
        }
        stale
    }

    async fn article_keys_changed(
        &self,
        id: Id,
        author: Id,
        slugs: &[String],
        tags: &[String],
        floor: Position,
        stale: &mut Vec<Stale>,
    ) {
        drop_key(&self.articles, &id, floor, stale).await;
        drop_key(&self.author_articles, &author, floor, stale).await;
        for tag in tags {
            drop_key(&self.tag_articles, tag, floor, stale).await;
        }
        for slug in slugs {
            drop_key(&self.article_ids, slug, floor, stale).await;
        }
        drop_all(&self.global_pages, floor, stale);
        drop_key(&self.tags, &(), floor, stale).await;
    }

    /// Sends this node's changes to `bus`. Call it once, at start-up.
    pub fn set_bus(&self, bus: Arc<dyn ChangeBus>) {
        if self.bus.set(bus).is_err() {
            tracing::warn!("the change bus was already set; keeping the first");
        }
    }

    /// Puts `shared` between the in-process caches and the store. Call it
    /// once, at start-up, and only over a store that reports log positions.
    pub fn set_shared_cache(&self, shared: Arc<dyn SharedCache>) {
        if self.shared.set(shared).is_err() {
            tracing::warn!("the shared cache was already set; keeping the first");
        }
    }

    /// Waits at most `wait` until this node has applied the change with bus
    /// sequence number `change`. Returns false when it has not, or when
    /// there is no bus.
    pub async fn catch_up(&self, change: u64, wait: Duration) -> bool {
        match self.bus.get() {
            Some(bus) => bus.catch_up(change, wait).await,
            None => false,
        }
    }

    /// True while reads skip the caches.
    pub fn bypassed(&self) -> bool {
        self.bypass.load(Ordering::SeqCst)
    }

    /// Makes reads skip the caches, while changes from other nodes cannot
    /// arrive.
    pub fn bypass_caches(&self) {
        if !self.bypass.swap(true, Ordering::SeqCst) {
            tracing::warn!("caches bypassed: changes from other nodes cannot arrive");
        }
    }

    /// Makes reads use the caches again, after dropping every entry:
    /// changes that other nodes made meanwhile may not have arrived.
    /// `floor` is a position at or past every write those changes could
    /// name, so that no load from a replica behind it refills a replaced
    /// value.
    pub fn use_caches(&self, floor: Position) {
        self.invalidate_everything_at(floor);
        if self.bypass.swap(false, Ordering::SeqCst) {
            tracing::info!("caches in use again");
        }
    }

    /// Drops every entry of every cache.
    pub fn invalidate_everything(&self) {
        self.invalidate_everything_at(consistency::written());
    }

    /// Drops every entry of every cache and leaves `floor` on every key, so
    /// that no later load observes less than `floor`.
    pub fn invalidate_everything_at(&self, floor: Position) {
        self.session_cache.invalidate_all_at(floor);
        self.profiles.invalidate_all_at(floor);
        self.user_ids.invalidate_all_at(floor);
        self.articles.invalidate_all_at(floor);
        self.article_ids.invalidate_all_at(floor);
        self.global_pages.invalidate_all_at(floor);
        self.tags.invalidate_all_at(floor);
        self.following.invalidate_all_at(floor);
        self.favorites.invalidate_all_at(floor);
        self.author_articles.invalidate_all_at(floor);
        self.tag_articles.invalidate_all_at(floor);
        self.comments.invalidate_all_at(floor);
    }
}

/// A committed write, named by the cached keys it made stale. Nodes send
/// changes to each other so that no node's cache outlives another's write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    SessionEnded {
        digest: String,
    },
    User {
        id: Id,
        usernames: Vec<String>,
    },
    Follows {
        follower: Id,
    },
    Favorites {
        user: Id,
        article: Id,
    },
    Comments {
        article: Id,
    },
    Article {
        id: Id,
        author: Id,
        slugs: Vec<String>,
        tags: Vec<String>,
    },
    ArticleDeleted {
        id: Id,
        author: Id,
        slug: String,
        tags: Vec<String>,
    },
}

/// Carries each node's changes to every other node, in one order.
#[async_trait]
pub trait ChangeBus: Send + Sync + 'static {
    /// Drops `stale` from the shared cache and sends `change`, committed at
    /// `floor`, without waiting for it to arrive. Returns the change's
    /// sequence number on the bus, or `None` when it could not be sent.
    async fn publish(&self, change: &Change, floor: Position, stale: &[Stale]) -> Option<u64>;

    /// Waits at most `wait` until this node has applied every change up to
    /// sequence number `change`. Returns whether it has.
    async fn catch_up(&self, change: u64, wait: Duration) -> bool;
}

/// Invalidates `key` in `cache` at `floor` and names it in `stale`.
async fn drop_key<K, V>(cache: &ReadThrough<K, V>, key: &K, floor: Position, stale: &mut Vec<Stale>)
where
    K: CacheKey + Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache.invalidate_at(key, floor).await;
    stale.push(Stale {
        cache: cache.name(),
        key: Some(key.cache_key()),
    });
}

/// Invalidates every key of `cache` at `floor` and records that in `stale`.
fn drop_all<K, V>(cache: &ReadThrough<K, V>, floor: Position, stale: &mut Vec<Stale>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache.invalidate_all_at(floor);
    stale.push(Stale {
        cache: cache.name(),
        key: None,
    });
}

fn by_id(articles: Vec<ArticleRecord>) -> std::collections::HashMap<Id, ArticleRecord> {
    articles.into_iter().map(|a| (a.id, a)).collect()
}

/// Picks the ids of `page` from the union of `lists`, newest (largest) first.
/// Each list must be sorted newest first and no id may be in two lists.
fn newest_first(lists: &[Arc<Vec<Id>>], page: Page) -> Vec<Id> {
    // A max-heap of (id, list, position): the newest id not yet taken from
    // each list.
    let mut heads: BinaryHeap<(Id, usize, usize)> = lists
        .iter()
        .enumerate()
        .filter_map(|(list, ids)| ids.first().map(|&id| (id, list, 0)))
        .collect();
    let mut picked = Vec::with_capacity(page.limit as usize);
    let end = u64::from(page.offset) + u64::from(page.limit);
    let mut rank = 0u64;
    while rank < end {
        let Some((id, list, position)) = heads.pop() else {
            break;
        };
        if rank >= u64::from(page.offset) {
            picked.push(id);
        }
        rank += 1;
        if let Some(&next) = lists[list].get(position + 1) {
            heads.push((next, list, position + 1));
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(ids: &[&[Id]]) -> Vec<Arc<Vec<Id>>> {
        ids.iter().map(|ids| Arc::new(ids.to_vec())).collect()
    }

    #[test]
    fn newest_first_merges_pages() {
        let lists = lists(&[&[9, 4, 1], &[8, 7, 2], &[], &[6, 5, 3]]);
        let page = |offset, limit| Page { limit, offset };
        assert_eq!(newest_first(&lists, page(0, 4)), [9, 8, 7, 6]);
        assert_eq!(newest_first(&lists, page(4, 4)), [5, 4, 3, 2]);
        assert_eq!(newest_first(&lists, page(8, 4)), [1]);
        assert!(newest_first(&lists, page(9, 4)).is_empty());
    }

    #[test]
    fn newest_first_without_lists_is_empty() {
        let page = Page {
            limit: 20,
            offset: 0,
        };
        assert!(newest_first(&[], page).is_empty());
        assert!(newest_first(&lists(&[&[], &[]]), page).is_empty());
    }
}
