//! Seeding: creates a planned population through the public API.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::Method;
use serde_json::json;

use crate::client::{ApiClient, UploadOutcome};
use crate::distributions::Popularity;
use crate::population::{Article, FeedUser, Plan, Population, User};
use crate::report::SeedSummary;

/// Failed seeding requests logged one by one. Later ones are only counted.
const LOGGED_ERRORS: u64 = 10;

/// Runs the seeding phases with bounded concurrency and counts what failed.
pub struct Seeder<'a> {
    pub client: &'a ApiClient,
    pub concurrency: usize,
    pub quiet: bool,
    /// Zipf exponent of the popularity that picks which user uploads each photo.
    pub zipf_exponent: f64,
    errors: AtomicU64,
}

impl<'a> Seeder<'a> {
    pub fn new(client: &'a ApiClient, concurrency: usize, quiet: bool, zipf_exponent: f64) -> Self {
        let errors = AtomicU64::new(0);
        Self {
            client,
            concurrency,
            quiet,
            zipf_exponent,
            errors,
        }
    }

    /// Creates everything in `plan` and returns the population with its tokens and slugs.
    pub async fn seed(
        &self,
        plan: &Plan,
        target: &str,
        seed: u64,
        photos: Option<(&Path, usize)>,
    ) -> anyhow::Result<(Population, SeedSummary)> {
        let started = Instant::now();
        let tokens = self.register_users(plan).await?;
        let follows = self.seed_follows(plan, &tokens).await;
        let slugs = self.seed_articles(plan, &tokens).await;
        let comments = self.seed_comments(plan, &tokens, &slugs).await;
        let favorites = self.seed_favorites(plan, &tokens, &slugs).await;
        let uploads = match photos {
            Some((folder, max)) => self.seed_uploads(folder, max, &tokens, seed).await?,
            None => Vec::new(),
        };

        let mut population = assemble(plan, target, seed, tokens, &slugs, &follows);
        population.uploads = uploads;

        let summary = SeedSummary {
            elapsed_s: started.elapsed().as_secs_f64(),
            users: population.users.len() as u64,
            follows: follows.iter().sum::<usize>() as u64,
            articles: population.articles.len() as u64,
            comments,
            favorites,
            uploads: population.uploads.len() as u64,
            errors: self.errors.load(Ordering::Relaxed),
            rate_limited: self.client.rate_limited_count(),
        };
        Ok((population, summary))
    }

    /// Registers every user, or fails: later phases need every user's token.
    async fn register_users(&self, plan: &Plan) -> anyhow::Result<Vec<String>> {
        let results = self
            .phase(
                "users",
                plan.users.iter().enumerate().collect(),
                |(index, user)| async move {
                    let token = self
                        .client
                        .register(&user.username, &user.email, &user.password)
                        .await;
                    (index, token)
                },
            )
            .await;
        let mut tokens = vec![String::new(); plan.users.len()];
        for (index, token) in results {
            match token {
                Ok(token) => tokens[index] = token,
                Err(error) => {
                    let username = &plan.users[index].username;
                    anyhow::bail!("failed to register or log in user {username}: {error}");
                }
            }
        }
        Ok(tokens)
    }

    /// Creates the planned follows and returns the number each user created.
    async fn seed_follows(&self, plan: &Plan, tokens: &[String]) -> Vec<usize> {
        let pairs: Vec<(usize, usize)> = plan
            .follows
            .iter()
            .enumerate()
            .flat_map(|(follower, followees)| followees.iter().map(move |&f| (follower, f)))
            .collect();
        let results = self
            .phase("follows", pairs, |(follower, followee)| async move {
                let path = format!("/api/profiles/{}/follow", plan.users[followee].username);
                let result = self
                    .client
                    .call(Method::POST, &path, Some(&tokens[follower]), None)
                    .await;
                (follower, self.check(result, &path).is_some())
            })
            .await;
        let mut created = vec![0; plan.users.len()];
        for (follower, ok) in results {
            created[follower] += usize::from(ok);
        }
        created
    }

    async fn seed_articles(&self, plan: &Plan, tokens: &[String]) -> Vec<Option<String>> {
        let items: Vec<_> = plan.articles.iter().enumerate().collect();
        let results = self
            .phase("articles", items, |(index, article)| async move {
                let body = json!({"article": {
                    "title": article.title,
                    "description": article.description,
                    "body": article.body,
                    "tagList": article.tags,
                }});
                let token = &tokens[article.author];
                let result = self
                    .client
                    .call(Method::POST, "/api/articles", Some(token), Some(&body))
                    .await;
                let slug = match result {
                    Ok(response) => response["article"]["slug"]
                        .as_str()
                        .map(String::from)
                        .ok_or_else(|| "the response body has no article.slug".to_string()),
                    Err(error) => Err(error.to_string()),
                };
                (index, self.check(slug, "/api/articles"))
            })
            .await;
        let mut slugs = vec![None; plan.articles.len()];
        for (index, slug) in results {
            slugs[index] = slug;
        }
        slugs
    }

    async fn seed_comments(&self, plan: &Plan, tokens: &[String], slugs: &[Option<String>]) -> u64 {
        let items: Vec<_> = plan
            .comments
            .iter()
            .filter_map(|comment| Some((comment, slugs[comment.article].as_deref()?)))
            .collect();
        let results = self
            .phase("comments", items, |(comment, slug)| async move {
                let path = format!("/api/articles/{slug}/comments");
                let body = json!({"comment": {"body": comment.body}});
                let token = Some(tokens[comment.author].as_str());
                let result = self
                    .client
                    .call(Method::POST, &path, token, Some(&body))
                    .await;
                self.check(result, &path).is_some()
            })
            .await;
        results.into_iter().filter(|ok| *ok).count() as u64
    }

    async fn seed_favorites(
        &self,
        plan: &Plan,
        tokens: &[String],
        slugs: &[Option<String>],
    ) -> u64 {
        let items: Vec<_> = plan
            .favorites
            .iter()
            .filter_map(|&(user, article)| Some((user, slugs[article].as_deref()?)))
            .collect();
        let results = self
            .phase("favourites", items, |(user, slug)| async move {
                let path = format!("/api/articles/{slug}/favorite");
                let result = self
                    .client
                    .call(Method::POST, &path, Some(&tokens[user]), None)
                    .await;
                self.check(result, &path).is_some()
            })
            .await;
        results.into_iter().filter(|ok| *ok).count() as u64
    }

    /// Uploads up to `max` files of `folder`, each by a user drawn by popularity. Stops after
    /// the first 404, because the target then has no upload route.
    async fn seed_uploads(
        &self,
        folder: &Path,
        max: usize,
        tokens: &[String],
        seed: u64,
    ) -> anyhow::Result<Vec<String>> {
        let files = photo_files(folder, max)?;
        let popularity = Popularity::new(tokens.len(), self.zipf_exponent)?;
        // A separate stream, so that adding photos leaves the rest of the population unchanged.
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
        let items: Vec<_> = files
            .into_iter()
            .map(|file| (file, popularity.sample(&mut rng)))
            .collect();
        let unsupported = AtomicBool::new(false);
        let results = self
            .phase("uploads", items, |(file, user)| {
                let unsupported = &unsupported;
                async move {
                    if unsupported.load(Ordering::Relaxed) {
                        return None;
                    }
                    match self.client.upload(&tokens[user], &file).await {
                        Ok(UploadOutcome::Accepted(id)) => Some(id),
                        Ok(UploadOutcome::Unsupported) => {
                            if !unsupported.swap(true, Ordering::Relaxed) {
                                tracing::warn!("target returned 404 for POST /api/uploads, skipping photo uploads");
                            }
                            None
                        }
                        Err(error) => self.check::<String, _>(Err(error), "/api/uploads"),
                    }
                }
            })
            .await;
        Ok(results.into_iter().flatten().collect())
    }

    /// Counts and logs a failed request, and returns the value of a successful one.
    fn check<T, E: std::fmt::Display>(&self, result: Result<T, E>, path: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                if self.errors.fetch_add(1, Ordering::Relaxed) < LOGGED_ERRORS {
                    tracing::warn!(path, %error, "seeding request failed");
                }
                None
            }
        }
    }

    /// Runs `task` on every item, at most `concurrency` at a time, with a progress bar.
    async fn phase<T, O, F, Fut>(&self, name: &str, items: Vec<T>, task: F) -> Vec<O>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = O>,
    {
        let bar = progress_bar(name, items.len() as u64, self.quiet);
        let results = stream::iter(items)
            .map(|item| {
                let bar = &bar;
                let future = task(item);
                async move {
                    let output = future.await;
                    bar.inc(1);
                    output
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        bar.finish();
        results
    }
}

/// Builds the population from the plan and the results of seeding, without uploads.
/// Articles that failed to be created are left out.
fn assemble(
    plan: &Plan,
    target: &str,
    seed: u64,
    tokens: Vec<String>,
    slugs: &[Option<String>],
    follows: &[usize],
) -> Population {
    let users: Vec<User> = plan
        .users
        .iter()
        .zip(tokens)
        .map(|(spec, token)| User {
            username: spec.username.clone(),
            email: spec.email.clone(),
            password: spec.password.clone(),
            token,
        })
        .collect();
    let articles: Vec<Article> = plan
        .articles
        .iter()
        .zip(slugs)
        .filter_map(|(spec, slug)| {
            Some(Article {
                slug: slug.clone()?,
                author: spec.author,
            })
        })
        .collect();
    let feed_user = plan.feed_user.map(|user| FeedUser {
        user,
        follows: follows[user],
    });
    if let Some(feed) = feed_user.filter(|feed| feed.follows != plan.follows[feed.user].len()) {
        tracing::warn!(
            planned = plan.follows[feed.user].len(),
            created = feed.follows,
            "some follows of the fixed-feed user failed"
        );
    }

    Population {
        target: target.to_string(),
        seed,
        users,
        articles,
        tags: plan.tags.clone(),
        feed_user,
        uploads: Vec::new(),
    }
}

/// Lists up to `max` regular files of `folder`, sorted by name so runs are repeatable.
fn photo_files(folder: &Path, max: usize) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(folder).map_err(|error| {
        anyhow::anyhow!("failed to read --photos {}: {error}", folder.display())
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    files.truncate(max);
    Ok(files)
}

/// Builds a progress bar on stderr, or a hidden one when `quiet`.
pub fn progress_bar(name: &str, len: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("the template is valid")
            .progress_chars("=> ");
    ProgressBar::new(len)
        .with_style(style)
        .with_prefix(name.to_string())
}
