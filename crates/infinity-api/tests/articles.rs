//! Creating, reading, editing and deleting articles, and slugs.

mod common;

use common::{assert_error, assert_timestamp, TestServer};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn create_returns_article_values() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let reply = server
        .post(
            "/articles",
            Some(&token),
            json!({"article": {"title": "  Morning Light ", "description": "a walk", "body": "line one\nline two", "tagList": ["sky", " trees ", "sky"]}}),
        )
        .await;
    assert_eq!(reply.status, 201);
    let article = &reply.body["article"];
    assert_eq!(article["slug"], "morning-light");
    assert_eq!(article["title"], "Morning Light");
    assert_eq!(article["description"], "a walk");
    assert_eq!(article["body"], "line one\nline two");
    assert_eq!(article["tagList"], json!(["sky", "trees"]));
    assert_eq!(article["favorited"], false);
    assert_eq!(article["favoritesCount"], 0);
    assert_timestamp(&article["createdAt"]);
    assert_eq!(article["createdAt"], article["updatedAt"]);
    assert_eq!(
        article["author"],
        json!({"username": "alice", "bio": "", "image": "", "following": false})
    );

    let read = server.get("/articles/morning-light", None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["article"], *article);
}

#[tokio::test]
async fn create_without_tags_or_description() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let reply = server
        .post(
            "/articles",
            Some(&token),
            json!({"article": {"title": "Plain", "description": "", "body": "text"}}),
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body["article"]["tagList"], json!([]));
    assert_eq!(reply.body["article"]["description"], "");
}

#[tokio::test]
async fn create_rejects_invalid_input() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let article = |title: serde_json::Value, body: &str, tags: serde_json::Value| json!({"article": {"title": title, "description": "d", "body": body, "tagList": tags}});
    let many: Vec<String> = (0..21).map(|n| format!("t{n}")).collect();
    let cases = [
        (article(json!(" "), "b", json!([])), "title can't be blank"),
        (
            article(json!("a\u{1b}b"), "b", json!([])),
            "title must not contain control characters",
        ),
        (
            article(json!("x".repeat(201)), "b", json!([])),
            "title is too long (maximum is 200 characters)",
        ),
        (
            article(json!(7), "b", json!([])),
            "article.title: invalid type",
        ),
        (
            article(json!("t"), "  \n ", json!([])),
            "body can't be blank",
        ),
        (
            article(json!("t"), "a\u{0}", json!([])),
            "body must not contain control characters",
        ),
        (
            article(json!("t"), "b", json!("sky")),
            "article.tagList: invalid type",
        ),
        (
            article(json!("t"), "b", json!([""])),
            "tagList item can't be blank",
        ),
        (
            article(json!("t"), "b", json!([1])),
            "article.tagList[0]: invalid type",
        ),
        (
            article(json!("t"), "b", json!(many)),
            "tagList has too many tags",
        ),
        (
            json!({"article": {"title": "t", "body": "b"}}),
            "missing field `description`",
        ),
        (
            json!({"article": {"description": "d", "body": "b"}}),
            "missing field `title`",
        ),
        (json!({"title": "t"}), "missing field `article`"),
    ];
    for (body, needle) in cases {
        let reply = server.post("/articles", Some(&token), body).await;
        assert_error(&reply, 422, needle);
    }
    let malformed = server
        .call_raw(Method::POST, "/articles", Some(&token), "{\"article\":")
        .await;
    assert_error(&malformed, 422, "body is not valid JSON");

    let list = server.get("/articles", None).await;
    assert_eq!(list.body["articlesCount"], 0);
}

#[tokio::test]
async fn create_needs_token() {
    let server = TestServer::start().await;
    let body = json!({"article": {"title": "t", "description": "d", "body": "b"}});
    let missing = server.post("/articles", None, body.clone()).await;
    assert_error(&missing, 401, "authorization token is missing");
    let bad = server.post("/articles", Some("bad"), body).await;
    assert_error(&bad, 401, "token is invalid or expired");
}

#[tokio::test]
async fn same_title_gets_own_slug() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = server.article(&alice, "Sunset", &[]).await;
    let second = server.article(&bob, "Sunset", &[]).await;
    assert_eq!(first, "sunset");
    assert_ne!(first, second);
    assert!(second.starts_with("sunset-"), "{second}");

    let one = server.get(&format!("/articles/{first}"), None).await;
    assert_eq!(one.body["article"]["author"]["username"], "alice");
    let two = server.get(&format!("/articles/{second}"), None).await;
    assert_eq!(two.body["article"]["author"]["username"], "bob");
    assert_eq!(two.body["article"]["title"], "Sunset");
}

#[tokio::test]
async fn titles_in_any_script() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let titles = ["Привет мир", "東京の写真", "مرحبا بالعالم", "🌅🌄", "🌅🌄"];
    let mut seen = Vec::new();
    for title in titles {
        let slug = server.article(&token, title, &[]).await;
        assert!(!slug.is_empty());
        assert!(
            slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{title:?} gave slug {slug:?}"
        );
        assert!(!seen.contains(&slug), "{slug} given twice");
        let read = server.get(&format!("/articles/{slug}"), None).await;
        assert_eq!(read.status, 200, "{slug}");
        assert_eq!(read.body["article"]["title"], title);
        seen.push(slug);
    }
    assert_eq!(seen[0], "privet-mir");
}

#[tokio::test]
async fn unknown_article_is_404() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let read = server.get("/articles/nothing-here", None).await;
    assert_error(&read, 404, "article not found");
    let update = server
        .put(
            "/articles/nothing-here",
            Some(&token),
            json!({"article": {"body": "x"}}),
        )
        .await;
    assert_error(&update, 404, "article not found");
    let delete = server.delete("/articles/nothing-here", Some(&token)).await;
    assert_error(&delete, 404, "article not found");
}

#[tokio::test]
async fn update_changes_values() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Rain", &["weather"]).await;
    let reply = server
        .put(
            &format!("/articles/{slug}"),
            Some(&token),
            json!({"article": {"description": "wet", "body": "new text", "tagList": ["clouds", "rain"]}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let article = &reply.body["article"];
    assert_eq!(article["slug"], slug.as_str());
    assert_eq!(article["title"], "Rain");
    assert_eq!(article["description"], "wet");
    assert_eq!(article["body"], "new text");
    assert_eq!(article["tagList"], json!(["clouds", "rain"]));
    assert_timestamp(&article["updatedAt"]);
    assert!(article["updatedAt"].as_str() >= article["createdAt"].as_str());

    let read = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(read.body["article"]["body"], "new text");
    assert_eq!(read.body["article"]["tagList"], json!(["clouds", "rain"]));
}

#[tokio::test]
async fn update_title_changes_slug() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let old = server.article(&token, "First Draft", &[]).await;
    server.get(&format!("/articles/{old}"), None).await;
    let reply = server
        .put(
            &format!("/articles/{old}"),
            Some(&token),
            json!({"article": {"title": "Final Cut"}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["article"]["slug"], "final-cut");
    assert_eq!(reply.body["article"]["title"], "Final Cut");

    let gone = server.get(&format!("/articles/{old}"), None).await;
    assert_error(&gone, 404, "article not found");
    let new = server.get("/articles/final-cut", None).await;
    assert_eq!(new.body["article"]["title"], "Final Cut");
    assert_eq!(new.body["article"]["body"], "the text");
}

#[tokio::test]
async fn update_rejects_invalid_input() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Keep", &[]).await;
    let path = format!("/articles/{slug}");
    let cases = [
        (
            json!({"article": {}}),
            "article must contain at least one of",
        ),
        (json!({"article": {"title": ""}}), "title can't be blank"),
        (json!({"article": {"body": " "}}), "body can't be blank"),
        (
            json!({"article": {"title": "a\u{2}"}}),
            "title must not contain control characters",
        ),
        (
            json!({"article": {"tagList": "x"}}),
            "article.tagList: invalid type",
        ),
        (
            json!({"article": {"title": false}}),
            "article.title: invalid type",
        ),
        (json!({}), "missing field `article`"),
    ];
    for (body, needle) in cases {
        let reply = server.put(&path, Some(&token), body).await;
        assert_error(&reply, 422, needle);
    }
    let read = server.get(&path, None).await;
    assert_eq!(read.body["article"]["title"], "Keep");
}

#[tokio::test]
async fn others_article_is_403() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Mine", &[]).await;
    let path = format!("/articles/{slug}");
    let update = server
        .put(&path, Some(&bob), json!({"article": {"body": "stolen"}}))
        .await;
    assert_error(&update, 403, "only the author may change this article");
    let delete = server.delete(&path, Some(&bob)).await;
    assert_error(&delete, 403, "only the author may change this article");
    let read = server.get(&path, None).await;
    assert_eq!(read.body["article"]["body"], "the text");
}

#[tokio::test]
async fn delete_removes_article() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Short Lived", &[]).await;
    let path = format!("/articles/{slug}");
    let anonymous = server.delete(&path, None).await;
    assert_error(&anonymous, 401, "authorization token is missing");

    let reply = server.delete(&path, Some(&token)).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_null());
    let gone = server.get(&path, None).await;
    assert_error(&gone, 404, "article not found");
    let again = server.delete(&path, Some(&token)).await;
    assert_error(&again, 404, "article not found");
    let list = server.get("/articles", None).await;
    assert_eq!(list.body["articlesCount"], 0);
}
