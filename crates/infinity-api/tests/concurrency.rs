//! Concurrent writers: every reply is a documented status (never a 500,
//! which the schema check in `common` rejects) and counts stay exact.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{assert_error, join_all, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_favorites_count_exactly() {
    let server = Arc::new(TestServer::start().await);
    let author = server.register("author").await;
    let slug = server.article(&author, "Popular", &[]).await;
    let tokens = join_all((0..20).map(|n| {
        let server = server.clone();
        async move { server.register(&format!("fan{n}")).await }
    }))
    .await;

    let path = format!("/articles/{slug}/favorite");
    let replies = join_all(tokens.into_iter().map(|token| {
        let (server, path) = (server.clone(), path.clone());
        async move { server.post(&path, Some(&token), json!({})).await }
    }))
    .await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["article"]["favorited"], true);
    }
    let read = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(read.body["article"]["favoritesCount"], 20);
    let favorited = server.get("/articles?favorited=fan7", None).await;
    assert_eq!(favorited.body["articlesCount"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_same_username_one_wins() {
    let server = Arc::new(TestServer::start().await);
    let replies = join_all((0..8).map(|n| {
        let server = server.clone();
        async move {
            let body = json!({"user": {"username": "contested", "email": format!("c{n}@example.com"), "password": "password-c"}});
            server.post("/users", None, body).await
        }
    }))
    .await;
    let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1);
    for reply in replies.iter().filter(|r| r.status != 201) {
        assert_error(reply, 422, "username has already been taken");
    }
    let winner = created[0].body["user"]["email"].as_str().unwrap();
    let login = server.login(winner, "password-c").await;
    assert_eq!(login.body["user"]["username"], "contested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_same_title_distinct_slugs() {
    let server = Arc::new(TestServer::start().await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let replies = join_all((0..16).map(|n| {
        let server = server.clone();
        let token = if n % 2 == 0 { alice.clone() } else { bob.clone() };
        async move {
            let body = json!({"article": {"title": "Same Title", "description": "d", "body": format!("body {n}")}});
            server.post("/articles", Some(&token), body).await
        }
    }))
    .await;
    let mut slugs = HashSet::new();
    for reply in &replies {
        assert_eq!(reply.status, 201, "{}", reply.body);
        slugs.insert(reply.body["article"]["slug"].as_str().unwrap().to_string());
    }
    assert_eq!(slugs.len(), 16);
    assert!(slugs.contains("same-title"));
    for slug in &slugs {
        let read = server.get(&format!("/articles/{slug}"), None).await;
        assert_eq!(read.body["article"]["title"], "Same Title");
    }
    let list = server.get("/articles", None).await;
    assert_eq!(list.body["articlesCount"], 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_writes_no_errors() {
    let server = Arc::new(TestServer::start().await);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Busy", &["t"]).await;
    let tasks = (0..24).map(|n| {
        let (server, slug) = (server.clone(), slug.clone());
        let (alice, bob) = (alice.clone(), bob.clone());
        async move {
            let reply = match n % 4 {
                0 => {
                    let body = json!({"article": {"body": format!("edit {n}")}});
                    server
                        .put(&format!("/articles/{slug}"), Some(&alice), body)
                        .await
                }
                1 => {
                    let body = json!({"comment": {"body": format!("comment {n}")}});
                    server
                        .post(&format!("/articles/{slug}/comments"), Some(&bob), body)
                        .await
                }
                2 => {
                    server
                        .post("/profiles/alice/follow", Some(&bob), json!({}))
                        .await
                }
                _ => server.get(&format!("/articles/{slug}"), Some(&bob)).await,
            };
            assert_eq!(reply.status, 200, "task {n}: {}", reply.body);
        }
    });
    join_all(tasks).await;
    let comments = server
        .get(&format!("/articles/{slug}/comments"), None)
        .await;
    assert_eq!(comments.body["comments"].as_array().unwrap().len(), 6);
    let profile = server.get("/profiles/alice", Some(&bob)).await;
    assert_eq!(profile.body["profile"]["following"], true);
}
