//! Comments on articles.

mod common;

use common::{assert_error, assert_timestamp, TestServer};
use serde_json::{json, Value};

async fn comment(server: &TestServer, token: &str, slug: &str, body: &str) -> Value {
    let reply = server
        .post(
            &format!("/articles/{slug}/comments"),
            Some(token),
            json!({"comment": {"body": body}}),
        )
        .await;
    assert_eq!(reply.status, 200, "comment: {}", reply.body);
    reply.body["comment"].clone()
}

#[tokio::test]
async fn create_comment_returns_values() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    server
        .post("/profiles/alice/follow", Some(&bob), json!({}))
        .await;
    server
        .post("/profiles/bob/follow", Some(&alice), json!({}))
        .await;

    let created = comment(&server, &bob, &slug, "Nice\nshot").await;
    assert!(created["id"].as_i64().unwrap() > 0);
    assert_eq!(created["body"], "Nice\nshot");
    assert_timestamp(&created["createdAt"]);
    assert_eq!(created["createdAt"], created["updatedAt"]);
    assert_eq!(
        created["author"],
        json!({"username": "bob", "bio": "", "image": "", "following": false})
    );

    let as_alice = server
        .get(&format!("/articles/{slug}/comments"), Some(&alice))
        .await;
    assert_eq!(as_alice.status, 200);
    assert_eq!(as_alice.body["comments"][0]["id"], created["id"]);
    assert_eq!(as_alice.body["comments"][0]["author"]["following"], true);
}

#[tokio::test]
async fn comments_listed_oldest_first() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    let empty = server
        .get(&format!("/articles/{slug}/comments"), None)
        .await;
    assert_eq!(empty.body, json!({"comments": []}));

    for body in ["first", "second", "third"] {
        comment(&server, &alice, &slug, body).await;
    }
    let reply = server
        .get(&format!("/articles/{slug}/comments"), None)
        .await;
    let bodies: Vec<&str> = reply.body["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, vec!["first", "second", "third"]);
}

#[tokio::test]
async fn delete_comment_removes_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    let kept = comment(&server, &alice, &slug, "kept").await;
    let doomed = comment(&server, &alice, &slug, "doomed").await;
    let path = format!("/articles/{slug}/comments/{}", doomed["id"]);

    let reply = server.delete(&path, Some(&alice)).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_null());
    let list = server
        .get(&format!("/articles/{slug}/comments"), None)
        .await;
    assert_eq!(list.body["comments"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["comments"][0]["id"], kept["id"]);
    let again = server.delete(&path, Some(&alice)).await;
    assert_error(&again, 404, "comment not found");
}

#[tokio::test]
async fn others_comment_is_403() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    let created = comment(&server, &bob, &slug, "mine").await;
    let path = format!("/articles/{slug}/comments/{}", created["id"]);
    // Writing the article does not give its author the reader's comments.
    let reply = server.delete(&path, Some(&alice)).await;
    assert_error(&reply, 403, "only the author may delete this comment");
    let list = server
        .get(&format!("/articles/{slug}/comments"), None)
        .await;
    assert_eq!(list.body["comments"][0]["body"], "mine");
}

#[tokio::test]
async fn comment_not_found_cases() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    let other = server.article(&alice, "Elsewhere", &[]).await;
    let created = comment(&server, &alice, &slug, "here").await;

    let list = server.get("/articles/missing/comments", None).await;
    assert_error(&list, 404, "article not found");
    let create = server
        .post(
            "/articles/missing/comments",
            Some(&alice),
            json!({"comment": {"body": "x"}}),
        )
        .await;
    assert_error(&create, 404, "article not found");
    let unknown = server
        .delete(&format!("/articles/{slug}/comments/12345"), Some(&alice))
        .await;
    assert_error(&unknown, 404, "comment not found");
    // A comment is found only under its own article.
    let wrong_article = server
        .delete(
            &format!("/articles/{other}/comments/{}", created["id"]),
            Some(&alice),
        )
        .await;
    assert_error(&wrong_article, 404, "comment not found");
}

#[tokio::test]
async fn comment_invalid_input_is_422() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    let path = format!("/articles/{slug}/comments");
    let cases = [
        (json!({"comment": {"body": "  "}}), "body can't be blank"),
        (
            json!({"comment": {"body": "a\u{8}"}}),
            "body must not contain control characters",
        ),
        (
            json!({"comment": {"body": "x".repeat(10_001)}}),
            "body is too long (maximum is 10000 characters)",
        ),
        (
            json!({"comment": {"body": 1}}),
            "comment.body: invalid type",
        ),
        (json!({"comment": {}}), "missing field `body`"),
        (json!({}), "missing field `comment`"),
    ];
    for (body, needle) in cases {
        let reply = server.post(&path, Some(&alice), body).await;
        assert_error(&reply, 422, needle);
    }
    let bad_id = server.delete(&format!("{path}/abc"), Some(&alice)).await;
    assert_error(&bad_id, 422, "");
    let list = server.get(&path, None).await;
    assert_eq!(list.body["comments"], json!([]));
}

#[tokio::test]
async fn comment_needs_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let slug = server.article(&alice, "Talk", &[]).await;
    let created = comment(&server, &alice, &slug, "hello").await;
    let create = server
        .post(
            &format!("/articles/{slug}/comments"),
            None,
            json!({"comment": {"body": "x"}}),
        )
        .await;
    assert_error(&create, 401, "authorization token is missing");
    let delete = server
        .delete(
            &format!("/articles/{slug}/comments/{}", created["id"]),
            None,
        )
        .await;
    assert_error(&delete, 401, "authorization token is missing");
}
