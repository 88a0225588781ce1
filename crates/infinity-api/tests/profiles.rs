//! Profiles, follows and the feed.

mod common;

use common::{assert_error, slugs, TestServer};
use serde_json::json;

#[tokio::test]
async fn profile_shows_public_fields() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    server
        .put("/user", Some(&token), json!({"user": {"bio": "trees"}}))
        .await;
    let reply = server.get("/profiles/alice", None).await;
    assert_eq!(reply.status, 200);
    let profile = &reply.body["profile"];
    assert_eq!(profile["username"], "alice");
    assert_eq!(profile["bio"], "trees");
    assert_eq!(profile["image"], "");
    assert_eq!(profile["following"], false);
    assert!(profile.get("email").is_none());
    assert!(profile.get("token").is_none());
}

#[tokio::test]
async fn unknown_profile_is_404() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let reply = server.get("/profiles/nobody", None).await;
    assert_error(&reply, 404, "profile not found");
    let follow = server
        .post("/profiles/nobody/follow", Some(&token), json!({}))
        .await;
    assert_error(&follow, 404, "profile not found");
    let unfollow = server.delete("/profiles/nobody/follow", Some(&token)).await;
    assert_error(&unfollow, 404, "profile not found");
}

#[tokio::test]
async fn follow_twice_is_harmless() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    server.register("bob").await;
    for _ in 0..2 {
        let reply = server
            .post("/profiles/bob/follow", Some(&alice), json!({}))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["profile"]["username"], "bob");
        assert_eq!(reply.body["profile"]["following"], true);
    }
    let seen = server.get("/profiles/bob", Some(&alice)).await;
    assert_eq!(seen.body["profile"]["following"], true);
    let anonymous = server.get("/profiles/bob", None).await;
    assert_eq!(anonymous.body["profile"]["following"], false);

    for _ in 0..2 {
        let reply = server.delete("/profiles/bob/follow", Some(&alice)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["profile"]["following"], false);
    }
    let seen = server.get("/profiles/bob", Some(&alice)).await;
    assert_eq!(seen.body["profile"]["following"], false);
}

#[tokio::test]
async fn follow_self_is_422() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let follow = server
        .post("/profiles/alice/follow", Some(&alice), json!({}))
        .await;
    assert_error(&follow, 422, "you cannot follow yourself");
    let unfollow = server.delete("/profiles/alice/follow", Some(&alice)).await;
    assert_error(&unfollow, 422, "you cannot unfollow yourself");
    let profile = server.get("/profiles/alice", Some(&alice)).await;
    assert_eq!(profile.body["profile"]["following"], false);
}

#[tokio::test]
async fn follow_needs_token() {
    let server = TestServer::start().await;
    server.register("bob").await;
    let follow = server.post("/profiles/bob/follow", None, json!({})).await;
    assert_error(&follow, 401, "authorization token is missing");
    let unfollow = server
        .delete("/profiles/bob/follow", Some("bad-token"))
        .await;
    assert_error(&unfollow, 401, "token is invalid or expired");
}

#[tokio::test]
async fn feed_lists_followed_authors() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let first = server.article(&bob, "Bob one", &[]).await;
    server.article(&carol, "Carol one", &[]).await;
    let second = server.article(&bob, "Bob two", &[]).await;

    let empty = server.get("/articles/feed", Some(&alice)).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body["articlesCount"], 0);
    assert!(slugs(&empty).is_empty());

    server
        .post("/profiles/bob/follow", Some(&alice), json!({}))
        .await;
    let feed = server.get("/articles/feed", Some(&alice)).await;
    assert_eq!(slugs(&feed), vec![second.clone(), first.clone()]);
    assert_eq!(feed.body["articlesCount"], 2);
    assert_eq!(feed.body["articles"][0]["author"]["following"], true);
    assert!(feed.body["articles"][0].get("body").is_none());

    let page = server
        .get("/articles/feed?limit=1&offset=1", Some(&alice))
        .await;
    assert_eq!(slugs(&page), vec![first]);
    assert_eq!(page.body["articlesCount"], 2);

    let bad = server.get("/articles/feed?limit=0", Some(&alice)).await;
    assert_error(&bad, 422, "limit must be an integer from 1 to 100");
    let anonymous = server.get("/articles/feed", None).await;
    assert_error(&anonymous, 401, "authorization token is missing");
}
