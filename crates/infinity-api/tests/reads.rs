//! Read-your-writes through the read-through caches: each test warms a
//! cache with a read, writes, and reads again at once.

mod common;

use common::{assert_error, slugs, TestServer};
use serde_json::json;

#[tokio::test]
async fn article_edit_visible_at_once() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Cached", &[]).await;
    let path = format!("/articles/{slug}");
    let before = server.get(&path, None).await;
    assert_eq!(before.body["article"]["body"], "the text");
    server.get("/articles", None).await;

    server
        .put(
            &path,
            Some(&token),
            json!({"article": {"body": "edited", "description": "new"}}),
        )
        .await;
    let writer = server.get(&path, Some(&token)).await;
    assert_eq!(writer.body["article"]["body"], "edited");
    let reader = server.get(&path, None).await;
    assert_eq!(reader.body["article"]["body"], "edited");
    let list = server.get("/articles", None).await;
    assert_eq!(list.body["articles"][0]["description"], "new");
}

#[tokio::test]
async fn rename_moves_profile_at_once() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Mine", &[]).await;
    assert_eq!(server.get("/profiles/alice", None).await.status, 200);
    let missing = server.get("/profiles/alicia", None).await;
    assert_error(&missing, 404, "profile not found");
    server.get(&format!("/articles/{slug}"), None).await;

    let reply = server
        .put(
            "/user",
            Some(&token),
            json!({"user": {"username": "alicia"}}),
        )
        .await;
    assert_eq!(reply.body["user"]["username"], "alicia");

    let old = server.get("/profiles/alice", None).await;
    assert_error(&old, 404, "profile not found");
    let new = server.get("/profiles/alicia", None).await;
    assert_eq!(new.status, 200);
    assert_eq!(new.body["profile"]["username"], "alicia");
    let article = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(article.body["article"]["author"]["username"], "alicia");
    let by_author = server.get("/articles?author=alicia", None).await;
    assert_eq!(by_author.body["articlesCount"], 1);
}

#[tokio::test]
async fn bio_change_visible_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let slug = server.article(&alice, "Mine", &[]).await;
    server.get("/profiles/alice", None).await;
    server.get(&format!("/articles/{slug}"), None).await;

    server
        .put(
            "/user",
            Some(&alice),
            json!({"user": {"bio": "new bio", "image": "http://example.com/i.png"}}),
        )
        .await;
    let profile = server.get("/profiles/alice", None).await;
    assert_eq!(profile.body["profile"]["bio"], "new bio");
    assert_eq!(profile.body["profile"]["image"], "http://example.com/i.png");
    let article = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(article.body["article"]["author"]["bio"], "new bio");
}

#[tokio::test]
async fn favorite_visible_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Liked", &[]).await;
    let path = format!("/articles/{slug}");
    server.get(&path, Some(&bob)).await;
    server.get(&path, None).await;
    server.get("/articles", Some(&bob)).await;

    server
        .post(&format!("{path}/favorite"), Some(&bob), json!({}))
        .await;
    let writer = server.get(&path, Some(&bob)).await;
    assert_eq!(writer.body["article"]["favorited"], true);
    assert_eq!(writer.body["article"]["favoritesCount"], 1);
    let reader = server.get(&path, None).await;
    assert_eq!(reader.body["article"]["favoritesCount"], 1);
    let list = server.get("/articles", Some(&bob)).await;
    assert_eq!(list.body["articles"][0]["favorited"], true);
    assert_eq!(list.body["articles"][0]["favoritesCount"], 1);

    server.delete(&format!("{path}/favorite"), Some(&bob)).await;
    let after = server.get("/articles", Some(&bob)).await;
    assert_eq!(after.body["articles"][0]["favorited"], false);
    assert_eq!(after.body["articles"][0]["favoritesCount"], 0);
}

#[tokio::test]
async fn follow_visible_at_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&bob, "Bob's", &[]).await;
    server.get("/profiles/bob", Some(&alice)).await;
    server.get(&format!("/articles/{slug}"), Some(&alice)).await;
    server.get("/articles/feed", Some(&alice)).await;

    server
        .post("/profiles/bob/follow", Some(&alice), json!({}))
        .await;
    let profile = server.get("/profiles/bob", Some(&alice)).await;
    assert_eq!(profile.body["profile"]["following"], true);
    let article = server.get(&format!("/articles/{slug}"), Some(&alice)).await;
    assert_eq!(article.body["article"]["author"]["following"], true);
    let feed = server.get("/articles/feed", Some(&alice)).await;
    assert_eq!(slugs(&feed), vec![slug.clone()]);

    server.delete("/profiles/bob/follow", Some(&alice)).await;
    let profile = server.get("/profiles/bob", Some(&alice)).await;
    assert_eq!(profile.body["profile"]["following"], false);
}

#[tokio::test]
async fn delete_visible_at_once() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let keep = server.article(&token, "Keep", &["t"]).await;
    let doomed = server.article(&token, "Doomed", &["t"]).await;
    server.get(&format!("/articles/{doomed}"), None).await;
    server.get("/articles", None).await;
    server.get("/tags", None).await;

    server
        .delete(&format!("/articles/{doomed}"), Some(&token))
        .await;
    let gone = server.get(&format!("/articles/{doomed}"), None).await;
    assert_error(&gone, 404, "article not found");
    let list = server.get("/articles", None).await;
    assert_eq!(slugs(&list), vec![keep]);
    assert_eq!(list.body["articlesCount"], 1);
}

#[tokio::test]
async fn cached_404_then_create() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let missing = server.get("/articles/fresh-news", None).await;
    assert_error(&missing, 404, "article not found");
    let slug = server.article(&token, "Fresh News", &[]).await;
    assert_eq!(slug, "fresh-news");
    let found = server.get("/articles/fresh-news", None).await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["article"]["title"], "Fresh News");

    let absent = server.get("/profiles/newcomer", None).await;
    assert_error(&absent, 404, "profile not found");
    server.register("newcomer").await;
    let present = server.get("/profiles/newcomer", None).await;
    assert_eq!(present.body["profile"]["username"], "newcomer");
}

#[tokio::test]
async fn retitle_frees_old_slug() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let old = server.article(&token, "Draft", &[]).await;
    server.get(&format!("/articles/{old}"), None).await;
    server
        .put(
            &format!("/articles/{old}"),
            Some(&token),
            json!({"article": {"title": "Done"}}),
        )
        .await;
    // The old slug is free, and a new article may take it.
    let again = server.article(&token, "Draft", &[]).await;
    assert_eq!(again, "draft");
    let read = server.get("/articles/draft", None).await;
    assert_eq!(read.body["article"]["body"], "the text");
    assert_eq!(read.body["article"]["title"], "Draft");
    let done = server.get("/articles/done", None).await;
    assert_eq!(done.body["article"]["title"], "Done");
}
