//! Favouriting and unfavouriting articles.

mod common;

use common::{assert_error, TestServer};
use serde_json::json;

#[tokio::test]
async fn favorite_twice_counts_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Liked", &[]).await;
    let path = format!("/articles/{slug}/favorite");
    for _ in 0..2 {
        let reply = server.post(&path, Some(&bob), json!({})).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["article"]["slug"], slug.as_str());
        assert_eq!(reply.body["article"]["favorited"], true);
        assert_eq!(reply.body["article"]["favoritesCount"], 1);
        assert_eq!(reply.body["article"]["body"], "the text");
    }
    let as_bob = server.get(&format!("/articles/{slug}"), Some(&bob)).await;
    assert_eq!(as_bob.body["article"]["favorited"], true);
    assert_eq!(as_bob.body["article"]["favoritesCount"], 1);
    let as_alice = server.get(&format!("/articles/{slug}"), Some(&alice)).await;
    assert_eq!(as_alice.body["article"]["favorited"], false);
    assert_eq!(as_alice.body["article"]["favoritesCount"], 1);
}

#[tokio::test]
async fn unfavorite_twice_is_harmless() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Liked", &[]).await;
    let path = format!("/articles/{slug}/favorite");
    server.post(&path, Some(&alice), json!({})).await;
    server.post(&path, Some(&bob), json!({})).await;
    for _ in 0..2 {
        let reply = server.delete(&path, Some(&bob)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["article"]["favorited"], false);
        assert_eq!(reply.body["article"]["favoritesCount"], 1);
    }
    let never = server.delete(&path, Some(&bob)).await;
    assert_eq!(never.body["article"]["favoritesCount"], 1);
    let favorited = server.get("/articles?favorited=bob", None).await;
    assert_eq!(favorited.body["articlesCount"], 0);
}

#[tokio::test]
async fn favorite_unknown_article_is_404() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let add = server
        .post("/articles/missing/favorite", Some(&token), json!({}))
        .await;
    assert_error(&add, 404, "article not found");
    let remove = server
        .delete("/articles/missing/favorite", Some(&token))
        .await;
    assert_error(&remove, 404, "article not found");
}

#[tokio::test]
async fn favorite_needs_token() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Liked", &[]).await;
    let path = format!("/articles/{slug}/favorite");
    let add = server.post(&path, None, json!({})).await;
    assert_error(&add, 401, "authorization token is missing");
    let remove = server.delete(&path, Some("expired")).await;
    assert_error(&remove, 401, "token is invalid or expired");
    let read = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(read.body["article"]["favoritesCount"], 0);
}
