//! `GET /api/tags` and how article writes change it.

mod common;

use common::{slugs, TestServer};
use serde_json::json;

async fn tags(server: &TestServer) -> Vec<String> {
    let reply = server.get("/tags", None).await;
    assert_eq!(reply.status, 200);
    serde_json::from_value(reply.body["tags"].clone()).unwrap()
}

#[tokio::test]
async fn tags_most_used_first() {
    let server = TestServer::start().await;
    assert!(tags(&server).await.is_empty());
    let token = server.register("alice").await;
    server.article(&token, "One", &["b", "a"]).await;
    server.article(&token, "Two", &["c", "a"]).await;
    assert_eq!(tags(&server).await, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn untagged_article_adds_no_tag() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    server.article(&token, "Bare", &[]).await;
    assert!(tags(&server).await.is_empty());
}

#[tokio::test]
async fn deleting_last_article_drops_tag() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let keep = server.article(&token, "Keep", &["shared"]).await;
    let drop = server.article(&token, "Drop", &["shared", "lonely"]).await;
    assert_eq!(tags(&server).await, vec!["shared", "lonely"]);

    server
        .delete(&format!("/articles/{drop}"), Some(&token))
        .await;
    assert_eq!(tags(&server).await, vec!["shared"]);
    server
        .delete(&format!("/articles/{keep}"), Some(&token))
        .await;
    assert!(tags(&server).await.is_empty());
}

#[tokio::test]
async fn retagging_to_used_tags() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = server.article(&alice, "First", &["x"]).await;
    let second = server.article(&bob, "Second", &["y"]).await;
    assert_eq!(tags(&server).await, vec!["x", "y"]);

    let reply = server
        .put(
            &format!("/articles/{second}"),
            Some(&bob),
            json!({"article": {"tagList": ["x"]}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["article"]["tagList"], json!(["x"]));

    let mut tagged = slugs(&server.get("/articles?tag=x", None).await);
    tagged.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(tagged, expected);
    let old = server.get("/articles?tag=y", None).await;
    assert_eq!(old.body["articlesCount"], 0);
    assert_eq!(tags(&server).await, vec!["x"]);
}

#[tokio::test]
async fn clearing_tags_removes_them() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Tagged", &["gone"]).await;
    let reply = server
        .put(
            &format!("/articles/{slug}"),
            Some(&token),
            json!({"article": {"tagList": []}}),
        )
        .await;
    assert_eq!(reply.body["article"]["tagList"], json!([]));
    assert!(tags(&server).await.is_empty());
    let filtered = server.get("/articles?tag=gone", None).await;
    assert_eq!(filtered.body["articlesCount"], 0);
}
