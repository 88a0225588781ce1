//! Turns an operation into a concrete request against the population.

use rand::Rng;
use reqwest::Method;
use serde_json::json;

use crate::distributions::Popularity;
use crate::mix::{Op, RequestSpec};
use crate::population::{words, Population};

/// Page size of list and feed requests, the RealWorld default.
const PAGE_SIZE: usize = 20;

/// The population a run targets, with Zipf popularity over its users, articles and tags.
#[derive(Debug)]
pub struct Targets {
    pub population: Population,
    users: Popularity,
    articles: Option<Popularity>,
    tags: Option<Popularity>,
    fixed_feed_name: String,
}

impl Targets {
    /// Builds popularity over `population`, where index 0 is the most popular everywhere.
    pub fn new(population: Population, zipf_exponent: f64) -> anyhow::Result<Self> {
        let users = Popularity::new(population.users.len(), zipf_exponent)?;
        let popularity = |len: usize| match len {
            0 => Ok(None),
            len => Popularity::new(len, zipf_exponent).map(Some),
        };
        let articles = popularity(population.articles.len())?;
        let tags = popularity(population.tags.len())?;
        let fixed_feed_name = match population.feed_user {
            Some(feed) => format!("feed_{}", feed.follows),
            None => Op::FixedFeed.name().to_string(),
        };
        Ok(Self {
            population,
            users,
            articles,
            tags,
            fixed_feed_name,
        })
    }

    /// Returns whether the population has at least one article.
    pub fn has_articles(&self) -> bool {
        self.articles.is_some()
    }

    /// Name that the report gives the operation.
    pub fn operation_name(&self, op: Op) -> &str {
        match op {
            Op::FixedFeed => &self.fixed_feed_name,
            op => op.name(),
        }
    }

    /// Builds the request for `op`. `unique` makes titles of new articles unique.
    pub fn build_request<R: Rng + ?Sized>(&self, op: Op, rng: &mut R, unique: &str) -> RequestSpec {
        let actor = self.actor(rng);
        // Half of the public reads are sent signed in, which makes the target compute
        // `following` and `favorited` for the reader.
        let reader = rng.random_bool(0.5).then_some(actor);
        let mut spec = RequestSpec {
            operation: self.operation_name(op).to_string(),
            method: Method::GET,
            path: String::new(),
            query: Vec::new(),
            user: reader,
            body: None,
        };
        match op {
            Op::Feed | Op::FixedFeed => {
                spec.user = Some(match op {
                    Op::FixedFeed => self.population.feed_user.map_or(actor, |feed| feed.user),
                    _ => actor,
                });
                spec.path = "/api/articles/feed".into();
                spec.query = self.page(rng);
            }
            Op::GetArticle => spec.path = format!("/api/articles/{}", self.article(rng)),
            Op::GetComments => spec.path = format!("/api/articles/{}/comments", self.article(rng)),
            Op::GetProfile => spec.path = format!("/api/profiles/{}", self.username(rng)),
            Op::GetTags => spec.path = "/api/tags".into(),
            Op::ListArticles | Op::ListByTag | Op::ListByAuthor | Op::ListByFavorited => {
                spec.path = "/api/articles".into();
                spec.query = self.page(rng);
                spec.query.extend(self.list_filter(op, rng));
            }
            _ => self.fill_write(&mut spec, op, actor, rng, unique),
        }
        spec
    }

    fn fill_write<R: Rng + ?Sized>(
        &self,
        spec: &mut RequestSpec,
        op: Op,
        actor: usize,
        rng: &mut R,
        unique: &str,
    ) {
        spec.user = Some(actor);
        spec.method = Method::POST;
        match op {
            Op::CreateArticle => {
                spec.path = "/api/articles".into();
                let tag = self
                    .tags
                    .map(|tags| self.population.tags[tags.sample(rng)].clone());
                spec.body = Some(json!({"article": {
                    "title": format!("{} {unique}", words(rng, 4)),
                    "description": words(rng, 8),
                    "body": words(rng, 40),
                    "tagList": tag.into_iter().collect::<Vec<_>>(),
                }}));
            }
            Op::CreateComment => {
                spec.path = format!("/api/articles/{}/comments", self.article(rng));
                spec.body = Some(json!({"comment": {"body": words(rng, 12)}}));
            }
            Op::Favorite | Op::Unfavorite => {
                spec.path = format!("/api/articles/{}/favorite", self.article(rng));
            }
            Op::Follow | Op::Unfollow => {
                let followee = self.users.sample_distinct(rng, 1, Some(actor))[0];
                let username = &self.population.users[followee].username;
                spec.path = format!("/api/profiles/{username}/follow");
            }
            _ => unreachable!("fill_write is called for write operations only"),
        }
        if matches!(op, Op::Unfavorite | Op::Unfollow) {
            spec.method = Method::DELETE;
        }
    }

    /// Draws the user who sends a request: anyone but the fixed-feed user, so its follow
    /// count stays as seeded.
    fn actor<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let users = self.population.users.len();
        let fixed = self.population.feed_user.map(|feed| feed.user);
        loop {
            let user = rng.random_range(0..users);
            if Some(user) != fixed {
                return user;
            }
        }
    }

    fn article<R: Rng + ?Sized>(&self, rng: &mut R) -> &str {
        let articles = self
            .articles
            .expect("the mix leaves out article operations without articles");
        &self.population.articles[articles.sample(rng)].slug
    }

    fn username<R: Rng + ?Sized>(&self, rng: &mut R) -> &str {
        &self.population.users[self.users.sample(rng)].username
    }

    /// Mostly the first page, sometimes one of the next two.
    fn page<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<(&'static str, String)> {
        let offset = if rng.random_bool(0.8) {
            0
        } else {
            rng.random_range(1..=2) * PAGE_SIZE
        };
        vec![
            ("limit", PAGE_SIZE.to_string()),
            ("offset", offset.to_string()),
        ]
    }

    fn list_filter<R: Rng + ?Sized>(&self, op: Op, rng: &mut R) -> Option<(&'static str, String)> {
        match op {
            Op::ListByTag => {
                let tags = self.tags?;
                Some(("tag", self.population.tags[tags.sample(rng)].clone()))
            }
            Op::ListByAuthor => Some(("author", self.username(rng).to_string())),
            Op::ListByFavorited => {
                let user = rng.random_range(0..self.population.users.len());
                Some(("favorited", self.population.users[user].username.clone()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "requests_tests.rs"]
mod tests;
