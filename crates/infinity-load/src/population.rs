//! The population: what seeding plans to create, and what the state file stores.

use std::path::Path;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::args::LoadArgs;
use crate::distributions::{follow_graph, poisson_count, Popularity};

/// Words that titles, bodies and comments are made of.
const WORDS: &[&str] = &[
    "light", "shadow", "harbour", "morning", "street", "portrait", "river", "mountain", "film",
    "grain", "lens", "window", "city", "forest", "winter", "summer", "market", "bridge", "night",
    "colour", "frame", "coast", "garden", "station", "rain", "field", "tower", "ferry", "square",
    "studio", "cloud", "stone",
];

/// Sizes and shapes of the population, taken from the command line.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub users: usize,
    pub articles: usize,
    pub follows_per_user: f64,
    pub feed_user_follows: Option<usize>,
    pub comments_per_article: f64,
    pub favorites_per_user: f64,
    pub tags: usize,
    pub zipf_exponent: f64,
    pub prefix: String,
}

impl PlanConfig {
    pub fn from_args(args: &LoadArgs) -> Self {
        Self {
            users: args.users as usize,
            articles: args.articles as usize,
            follows_per_user: args.follows_per_user,
            feed_user_follows: args.feed_user_follows.map(|count| count as usize),
            comments_per_article: args.comments_per_article,
            favorites_per_user: args.favorites_per_user,
            tags: args.tags as usize,
            zipf_exponent: args.zipf_exponent,
            prefix: args.prefix.clone(),
        }
    }
}

/// Credentials of a user to register.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSpec {
    pub username: String,
    pub email: String,
    pub password: String,
}

/// An article to create, with `author` as an index into the plan's users.
#[derive(Debug, Clone, PartialEq)]
pub struct ArticleSpec {
    pub author: usize,
    pub title: String,
    pub description: String,
    pub body: String,
    pub tags: Vec<String>,
}

/// A comment by user `author` on article `article`, both indexes into the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CommentSpec {
    pub article: usize,
    pub author: usize,
    pub body: String,
}

/// Everything seeding creates, drawn from one RNG seed. User and article indexes are also
/// popularity ranks: index 0 is the most followed user and the most read article.
#[derive(Debug, Clone)]
pub struct Plan {
    pub users: Vec<UserSpec>,
    pub follows: Vec<Vec<usize>>,
    pub articles: Vec<ArticleSpec>,
    pub comments: Vec<CommentSpec>,
    /// Pairs of (user, article).
    pub favorites: Vec<(usize, usize)>,
    pub tags: Vec<String>,
    /// The user who follows exactly `PlanConfig::feed_user_follows` others.
    pub feed_user: Option<usize>,
}

/// Builds the plan for `config` from `seed`. `title_suffix` keeps titles, and so slugs,
/// unique when the same seed is seeded twice against one server.
pub fn plan(config: &PlanConfig, seed: u64, title_suffix: &str) -> anyhow::Result<Plan> {
    let mut rng = StdRng::seed_from_u64(seed);
    let user_popularity = Popularity::new(config.users, config.zipf_exponent)?;
    let tags: Vec<String> = (0..config.tags)
        .map(|index| format!("tag{index}"))
        .collect();
    let tag_popularity = Popularity::new(config.tags, config.zipf_exponent)?;

    let users = (0..config.users)
        .map(|index| user_spec(&mut rng, &config.prefix, seed, index))
        .collect();
    let feed_user = config.feed_user_follows.map(|_| config.users - 1);
    let fixed = feed_user.zip(config.feed_user_follows);
    let follows = follow_graph(&mut rng, &user_popularity, config.follows_per_user, fixed);

    // Popular users also write more, so authors are drawn by the same popularity.
    let articles = (0..config.articles)
        .map(|index| {
            let author = user_popularity.sample(&mut rng);
            let tag_count = rng.random_range(1..=3);
            let tags = tag_popularity
                .sample_distinct(&mut rng, tag_count, None)
                .into_iter()
                .map(|tag| tags[tag].clone())
                .collect();
            article_spec(&mut rng, author, tags, &format!("{title_suffix}-{index}"))
        })
        .collect();

    let (comments, favorites) = if config.articles == 0 {
        (Vec::new(), Vec::new())
    } else {
        let article_popularity = Popularity::new(config.articles, config.zipf_exponent)?;
        let comments = plan_comments(&mut rng, config, &article_popularity);
        let favorites = plan_favorites(&mut rng, config, &article_popularity);
        (comments, favorites)
    };

    Ok(Plan {
        users,
        follows,
        articles,
        comments,
        favorites,
        tags,
        feed_user,
    })
}

fn user_spec(rng: &mut StdRng, prefix: &str, seed: u64, index: usize) -> UserSpec {
    let username = format!("{prefix}{seed}u{index}");
    let password: String = (0..16)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    UserSpec {
        email: format!("{username}@example.com"),
        username,
        password,
    }
}

fn article_spec(rng: &mut StdRng, author: usize, tags: Vec<String>, suffix: &str) -> ArticleSpec {
    let title = format!("{} {suffix}", words(rng, 4));
    let description = words(rng, 8);
    let body = (0..4)
        .map(|_| words(rng, 12) + ".")
        .collect::<Vec<_>>()
        .join(" ");
    ArticleSpec {
        author,
        title,
        description,
        body,
        tags,
    }
}

fn plan_comments(rng: &mut StdRng, config: &PlanConfig, articles: &Popularity) -> Vec<CommentSpec> {
    let total = (config.articles as f64 * config.comments_per_article).round() as usize;
    (0..total)
        .map(|_| CommentSpec {
            article: articles.sample(rng),
            author: rng.random_range(0..config.users),
            body: words(rng, 10),
        })
        .collect()
}

fn plan_favorites(
    rng: &mut StdRng,
    config: &PlanConfig,
    articles: &Popularity,
) -> Vec<(usize, usize)> {
    let mut favorites = Vec::new();
    for user in 0..config.users {
        let count = poisson_count(rng, config.favorites_per_user, config.articles);
        for article in articles.sample_distinct(rng, count, None) {
            favorites.push((user, article));
        }
    }
    favorites
}

/// Joins `count` random words with spaces.
pub fn words<R: Rng + ?Sized>(rng: &mut R, count: usize) -> String {
    let picked: Vec<&str> = (0..count)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    picked.join(" ")
}

/// A seeded user as stored in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    pub username: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

/// A seeded article as stored in the state file, with `author` as an index into the users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Article {
    pub slug: String,
    pub author: usize,
}

/// The user whose feed is measured on its own, as the operation `feed_<follows>`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct FeedUser {
    pub user: usize,
    pub follows: usize,
}

/// The seeded population that the run reads from, saved as the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Population {
    pub target: String,
    pub seed: u64,
    pub users: Vec<User>,
    pub articles: Vec<Article>,
    pub tags: Vec<String>,
    pub feed_user: Option<FeedUser>,
    /// Ids the target returned for uploaded photos.
    pub uploads: Vec<String>,
}

impl Population {
    /// Writes the population as pretty JSON to `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json)
            .with_context(|| format!("failed to write state file {}", path.display()))
    }

    /// Reads and checks a population written by [`Population::save`].
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let json = std::fs::read(path)
            .with_context(|| format!("failed to read state file {}", path.display()))?;
        let population: Self = serde_json::from_slice(&json)
            .with_context(|| format!("invalid state file {}", path.display()))?;
        if population.users.len() < 2 {
            anyhow::bail!("invalid state file {}: fewer than 2 users", path.display());
        }
        let users = population.users.len();
        let authors_valid = population
            .articles
            .iter()
            .all(|article| article.author < users);
        let feed_user_valid = population.feed_user.is_none_or(|feed| feed.user < users);
        if !(authors_valid && feed_user_valid) {
            anyhow::bail!(
                "invalid state file {}: a user index is out of range",
                path.display()
            );
        }
        Ok(population)
    }
}

#[cfg(test)]
#[path = "population_tests.rs"]
mod tests;
