//! `Idempotency-Key`: a repeated key returns the first response and does
//! nothing twice; a key reused for another request is a 422.

mod common;

use std::sync::Arc;

use common::{assert_error, join_all, Reply, TestServer};
use serde_json::{json, Value};

async fn keyed(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    key: &str,
    body: Option<Value>,
) -> Reply {
    let mut request = server
        .client
        .request(method, format!("{}/api{path}", server.base))
        .header("Idempotency-Key", key);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Token {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    server.send(request).await
}

fn article(title: &str) -> Value {
    json!({"article": {"title": title, "description": "d", "body": "b"}})
}

fn replayed(reply: &Reply) -> bool {
    reply
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

#[tokio::test]
async fn repeated_post_creates_one_article() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let post = reqwest::Method::POST;
    let first = keyed(
        &server,
        post.clone(),
        "/articles",
        Some(&token),
        "k-1",
        Some(article("Once")),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(!replayed(&first));

    let second = keyed(
        &server,
        post,
        "/articles",
        Some(&token),
        "k-1",
        Some(article("Once")),
    )
    .await;
    assert_eq!(second.status, 201);
    assert!(replayed(&second));
    assert_eq!(second.body, first.body);

    let list = server.get("/articles?author=alice", None).await;
    assert_eq!(list.body["articlesCount"], 1, "{}", list.body);
}

#[tokio::test]
async fn key_reused_for_other_body_is_rejected() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let post = reqwest::Method::POST;
    let first = keyed(
        &server,
        post.clone(),
        "/articles",
        Some(&token),
        "k-2",
        Some(article("First")),
    )
    .await;
    assert_eq!(first.status, 201);
    let other = keyed(
        &server,
        post,
        "/articles",
        Some(&token),
        "k-2",
        Some(article("Second")),
    )
    .await;
    assert_error(&other, 422, "Idempotency-Key");
    let list = server.get("/articles?author=alice", None).await;
    assert_eq!(list.body["articlesCount"], 1);
}

#[tokio::test]
async fn invalid_key_is_rejected() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let reply = keyed(
        &server,
        reqwest::Method::POST,
        "/articles",
        Some(&token),
        &"k".repeat(256),
        Some(article("Too Long Key")),
    )
    .await;
    assert_error(&reply, 422, "Idempotency-Key");
    let list = server.get("/articles?author=alice", None).await;
    assert_eq!(list.body["articlesCount"], 0);
}

#[tokio::test]
async fn keys_belong_to_their_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let post = reqwest::Method::POST;
    let a = keyed(
        &server,
        post.clone(),
        "/articles",
        Some(&alice),
        "shared",
        Some(article("Same")),
    )
    .await;
    let b = keyed(
        &server,
        post,
        "/articles",
        Some(&bob),
        "shared",
        Some(article("Same")),
    )
    .await;
    assert_eq!(a.status, 201);
    assert_eq!(b.status, 201);
    assert!(!replayed(&b));
    assert_eq!(b.body["article"]["author"]["username"], "bob");
    assert_ne!(a.body["article"]["slug"], b.body["article"]["slug"]);
}

#[tokio::test]
async fn repeated_delete_returns_first_status() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Short Lived", &[]).await;
    let path = format!("/articles/{slug}");
    let delete = reqwest::Method::DELETE;
    let first = keyed(&server, delete.clone(), &path, Some(&token), "d-1", None).await;
    assert!(first.status.is_success(), "{}", first.status);
    let second = keyed(&server, delete.clone(), &path, Some(&token), "d-1", None).await;
    assert_eq!(second.status, first.status);
    assert!(replayed(&second));
    // A new key runs again, and the article is gone.
    let third = keyed(&server, delete, &path, Some(&token), "d-2", None).await;
    assert_eq!(third.status, 404);
}

#[tokio::test]
async fn repeated_registration_returns_same_token() {
    let server = TestServer::start().await;
    let body = json!({"user": {"username": "carol", "email": "carol@example.com", "password": "password-carol"}});
    let post = reqwest::Method::POST;
    let first = keyed(
        &server,
        post.clone(),
        "/users",
        None,
        "r-1",
        Some(body.clone()),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = keyed(&server, post, "/users", None, "r-1", Some(body)).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.body["user"]["token"], first.body["user"]["token"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_create_one_article() {
    let server = Arc::new(TestServer::start().await);
    let token = server.register("alice").await;
    let replies = join_all((0..8).map(|_| {
        let server = server.clone();
        let token = token.clone();
        async move {
            keyed(
                &server,
                reqwest::Method::POST,
                "/articles",
                Some(&token),
                "race",
                Some(article("Raced")),
            )
            .await
        }
    }))
    .await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let in_progress = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!(created + in_progress, replies.len());
    assert!(created >= 1);
    let fresh = replies
        .iter()
        .filter(|r| r.status == 201 && !replayed(r))
        .count();
    assert_eq!(fresh, 1);
    let list = server.get("/articles?author=alice", None).await;
    assert_eq!(list.body["articlesCount"], 1);
}

#[tokio::test]
async fn get_ignores_the_key() {
    let server = TestServer::start().await;
    let reply = keyed(
        &server,
        reqwest::Method::GET,
        "/tags",
        None,
        "ignored",
        None,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(!replayed(&reply));
}
