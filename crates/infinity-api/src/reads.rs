//! The read side: every hot read goes through a versioned read-through
//! cache, and every write names the keys it changed once it has committed.

use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use infinity_cache::{CacheConfig, ReadThrough};
use infinity_store::consistency;
use infinity_store::{
    ArticleFilter, ArticleRecord, CommentRecord, Id, Page, ProfileRecord, SessionRecord, Store,
};
use infinity_store::{SessionStore, StoreError};

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
            .get_or_load(&key, || {
                consistency::cache_fill(
                    self.session_cache.floor(&key),
                    self.sessions.session(digest),
                )
            })
            .await?;
        Ok(session.filter(|s| s.expires_at > chrono::Utc::now()))
    }

    pub async fn profile(&self, id: Id) -> Shared<Option<ProfileRecord>> {
        self.profiles
            .get_or_load(&id, || async move {
                let user =
                    consistency::cache_fill(self.profiles.floor(&id), self.store.user_by_id(id))
                        .await?;
                Ok(user.as_ref().map(ProfileRecord::from))
            })
            .await
    }

    pub async fn user_id(&self, username: &str) -> Shared<Option<Id>> {
        let key = username.to_string();
        self.user_ids
            .get_or_load(&key, || {
                consistency::cache_fill(
                    self.user_ids.floor(&key),
                    self.store.user_id_by_username(username),
                )
            })
            .await
    }

    pub async fn article_id(&self, slug: &str) -> Shared<Option<Id>> {
        let key = slug.to_string();
        self.article_ids
            .get_or_load(&key, || {
                consistency::cache_fill(
                    self.article_ids.floor(&key),
                    self.store.article_id_by_slug(slug),
                )
            })
            .await
    }

    pub async fn article(&self, id: Id) -> Shared<Option<ArticleRecord>> {
        self.articles
            .get_or_load(&id, || {
                consistency::cache_fill(self.articles.floor(&id), self.store.article_by_id(id))
            })
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
            .global_pages
            .get_or_load(&page, || async {
                let found = consistency::cache_fill(
                    self.global_pages.floor(&page),
                    self.store.list_articles(filter, page),
                )
                .await?;
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

    /// Returns the articles of `ids` in that order, from the cache, loading
    /// every miss in one query. An article deleted since its id was listed
    /// is skipped; the delete has made the list stale for the next read.
    pub async fn articles_in_order(&self, ids: &[Id]) -> Shared<Vec<ArticleRecord>> {
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match self.articles.get_current(&id).await {
                Some(Some(article)) => {
                    found.insert(id, article);
                }
                Some(None) => {}
                // The version is taken before the query, so a write that
                // lands meanwhile makes the primed entry stale.
                None => missing.push((id, self.articles.snapshot(&id))),
            }
        }
        if !missing.is_empty() {
            let missing_ids: Vec<Id> = missing.iter().map(|(id, _)| *id).collect();
            let floor = missing_ids
                .iter()
                .map(|id| self.articles.floor(id))
                .max()
                .unwrap_or(0);
            let loaded =
                consistency::cache_fill(floor, self.store.articles_by_ids(&missing_ids)).await?;
            for article in loaded {
                found.insert(article.id, article);
            }
            for (id, snapshot) in missing {
                self.articles
                    .prime(id, snapshot, found.get(&id).cloned())
                    .await;
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Returns every article id with `tag`, newest first.
    pub async fn tag_articles(&self, tag: &str) -> Shared<Arc<Vec<Id>>> {
        let key = tag.to_string();
        self.tag_articles
            .get_or_load(&key, || async {
                let floor = self.tag_articles.floor(&key);
                let ids =
                    consistency::cache_fill(floor, self.store.article_ids_by_tag(tag)).await?;
                Ok(Arc::new(ids))
            })
            .await
    }

    /// An article's comments, oldest first.
    pub async fn comments(&self, article: Id) -> Shared<Arc<Vec<CommentRecord>>> {
        self.comments
            .get_or_load(&article, || async move {
                let floor = self.comments.floor(&article);
                let comments = consistency::cache_fill(floor, self.store.comments(article)).await?;
                Ok(Arc::new(comments))
            })
            .await
    }

    pub async fn comments_changed(&self, article: Id) {
        self.comments
            .invalidate_at(&article, consistency::written())
            .await;
    }

    /// Returns every article id of `author`, newest first.
    pub async fn author_articles(&self, author: Id) -> Shared<Arc<Vec<Id>>> {
        self.author_articles
            .get_or_load(&author, || async move {
                let floor = self.author_articles.floor(&author);
                let ids = consistency::cache_fill(floor, self.store.article_ids_by_author(author))
                    .await?;
                Ok(Arc::new(ids))
            })
            .await
    }

    pub async fn tags(&self) -> Shared<Vec<String>> {
        self.tags
            .get_or_load(&(), || {
                consistency::cache_fill(self.tags.floor(&()), self.store.tags(MAX_TAGS_LISTED))
            })
            .await
    }

    /// Everyone `user` follows.
    pub async fn following(&self, user: Id) -> Shared<Arc<HashSet<Id>>> {
        self.following
            .get_or_load(&user, || async move {
                let floor = self.following.floor(&user);
                let ids = consistency::cache_fill(floor, self.store.following_ids(user)).await?;
                Ok(Arc::new(ids.into_iter().collect()))
            })
            .await
    }

    /// Returns every article `user` has favourited.
    pub async fn favorites(&self, user: Id) -> Shared<Arc<HashSet<Id>>> {
        self.favorites
            .get_or_load(&user, || async move {
                let floor = self.favorites.floor(&user);
                let ids = consistency::cache_fill(floor, self.store.favorited_ids(user)).await?;
                Ok(Arc::new(ids.into_iter().collect()))
            })
            .await
    }

    // Invalidation, called after the write has committed. Each key keeps
    // the write's log position as its floor, so that the next load cannot
    // come from a replica that has not replayed the write.

    pub async fn session_ended(&self, digest: &str) {
        self.session_cache
            .invalidate_at(&digest.to_string(), consistency::written())
            .await;
    }

    pub async fn user_changed(&self, id: Id, usernames: &[&str]) {
        self.profiles
            .invalidate_at(&id, consistency::written())
            .await;
        for name in usernames {
            self.user_ids
                .invalidate_at(&name.to_string(), consistency::written())
                .await;
        }
    }

    pub async fn follows_changed(&self, follower: Id) {
        self.following
            .invalidate_at(&follower, consistency::written())
            .await;
    }

    pub async fn favorites_changed(&self, user: Id, article: Id) {
        self.favorites
            .invalidate_at(&user, consistency::written())
            .await;
        self.articles
            .invalidate_at(&article, consistency::written())
            .await;
    }

    /// Invalidates what an article by `author` changed when it was created,
    /// edited or deleted. `slugs` are its old and new slugs, and `tags` its old
    /// and new tags.
    pub async fn article_changed(&self, id: Id, author: Id, slugs: &[&str], tags: &[String]) {
        self.articles
            .invalidate_at(&id, consistency::written())
            .await;
        self.author_articles
            .invalidate_at(&author, consistency::written())
            .await;
        for tag in tags {
            self.tag_articles
                .invalidate_at(tag, consistency::written())
                .await;
        }
        for slug in slugs {
            self.article_ids
                .invalidate_at(&slug.to_string(), consistency::written())
                .await;
        }
        self.global_pages.invalidate_all_at(consistency::written());
        self.tags.invalidate_at(&(), consistency::written()).await;
    }

    /// Invalidates what a deleted article changed: beyond [`Reads::article_changed`], its
    /// comments go, and every user's favourites may have held it.
    pub async fn article_deleted(&self, article: &ArticleRecord) {
        self.article_changed(
            article.id,
            article.author_id,
            &[&article.slug],
            &article.tags,
        )
        .await;
        self.comments
            .invalidate_at(&article.id, consistency::written())
            .await;
        self.favorites.invalidate_all_at(consistency::written());
    }
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
