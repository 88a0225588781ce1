//! Article lists: paging, filters, order and the list item shape.

mod common;

use common::{assert_error, assert_timestamp, slugs, TestServer};
use serde_json::json;

/// Creates `count` articles titled `Post 0`, `Post 1`, … and returns their
/// slugs, oldest first.
async fn posts(server: &TestServer, token: &str, count: usize) -> Vec<String> {
    let mut created = Vec::with_capacity(count);
    for n in 0..count {
        created.push(server.article(token, &format!("Post {n}"), &[]).await);
    }
    created
}

#[tokio::test]
async fn list_defaults_to_twenty_newest() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let created = posts(&server, &token, 22).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let reply = server.get("/articles", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["articlesCount"], 22);
    assert_eq!(slugs(&reply), newest_first[..20].to_vec());

    let all = server.get("/articles?limit=100", None).await;
    assert_eq!(slugs(&all), newest_first);
    let tail = server.get("/articles?offset=20", None).await;
    assert_eq!(slugs(&tail), newest_first[20..].to_vec());
    assert_eq!(tail.body["articlesCount"], 22);
}

#[tokio::test]
async fn list_pages_with_limit_offset() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let created = posts(&server, &token, 5).await;

    let page = server.get("/articles?limit=2&offset=1", None).await;
    assert_eq!(slugs(&page), vec![created[3].clone(), created[2].clone()]);
    assert_eq!(page.body["articlesCount"], 5);
    let past_end = server.get("/articles?offset=10", None).await;
    assert!(slugs(&past_end).is_empty());
    assert_eq!(past_end.body["articlesCount"], 5);
}

#[tokio::test]
async fn bad_paging_values_are_422() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let cases = [
        (
            "limit=0",
            "limit must be an integer from 1 to 100, not \"0\"",
        ),
        (
            "limit=101",
            "limit must be an integer from 1 to 100, not \"101\"",
        ),
        (
            "limit=abc",
            "limit must be an integer from 1 to 100, not \"abc\"",
        ),
        ("limit=", "limit must be an integer from 1 to 100"),
        ("limit=1.5", "limit must be an integer from 1 to 100"),
        (
            "offset=-1",
            "offset must be an integer from 0 to 100000, not \"-1\"",
        ),
        (
            "offset=100001",
            "offset must be an integer from 0 to 100000",
        ),
    ];
    for (query, needle) in cases {
        let list = server.get(&format!("/articles?{query}"), None).await;
        assert_error(&list, 422, needle);
        let feed = server
            .get(&format!("/articles/feed?{query}"), Some(&token))
            .await;
        assert_error(&feed, 422, needle);
    }
    let both = server.get("/articles?limit=0&offset=-1", None).await;
    assert_error(&both, 422, "limit");
    assert_error(&both, 422, "offset");
}

#[tokio::test]
async fn list_items_omit_body() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    server.article(&token, "Shape", &["b", "a"]).await;
    let reply = server.get("/articles", None).await;
    let item = &reply.body["articles"][0];
    assert!(item.get("body").is_none(), "list item has a body: {item}");
    assert_eq!(item["title"], "Shape");
    assert_eq!(item["description"], "about it");
    assert_eq!(item["tagList"], json!(["a", "b"]));
    assert_eq!(item["favorited"], false);
    assert_eq!(item["favoritesCount"], 0);
    assert_eq!(item["author"]["username"], "alice");
    assert_eq!(item["author"]["image"], "");
    assert_timestamp(&item["createdAt"]);
    assert_timestamp(&item["updatedAt"]);
}

#[tokio::test]
async fn filters_by_tag_author_favorited() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let a1 = server.article(&alice, "A one", &["sky"]).await;
    let a2 = server.article(&alice, "A two", &["sea"]).await;
    let b1 = server.article(&bob, "B one", &["sky", "sea"]).await;
    server
        .post(&format!("/articles/{a1}/favorite"), Some(&bob), json!({}))
        .await;
    server
        .post(&format!("/articles/{b1}/favorite"), Some(&bob), json!({}))
        .await;

    let cases = [
        ("tag=sky", vec![b1.clone(), a1.clone()]),
        ("tag=sea", vec![b1.clone(), a2.clone()]),
        ("tag=nothing", vec![]),
        ("author=alice", vec![a2.clone(), a1.clone()]),
        ("author=nobody", vec![]),
        ("favorited=bob", vec![b1.clone(), a1.clone()]),
        ("favorited=alice", vec![]),
        ("tag=sky&author=alice", vec![a1.clone()]),
        ("tag=sea&favorited=bob", vec![b1.clone()]),
    ];
    for (query, mut expected) in cases {
        let reply = server.get(&format!("/articles?{query}"), None).await;
        // Articles by different authors minted in the same millisecond share
        // a createdAt, so only one author's articles have a fixed order.
        let mut found = slugs(&reply);
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "{query}");
        assert_eq!(reply.body["articlesCount"], expected.len(), "{query}");
    }

    let page = server.get("/articles?author=alice&limit=1", None).await;
    assert_eq!(slugs(&page), vec![a2]);
    assert_eq!(page.body["articlesCount"], 2);
}

#[tokio::test]
async fn list_shows_viewer_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let slug = server.article(&alice, "Seen", &[]).await;
    server
        .post(&format!("/articles/{slug}/favorite"), Some(&bob), json!({}))
        .await;
    server
        .post("/profiles/alice/follow", Some(&bob), json!({}))
        .await;

    let as_bob = server.get("/articles", Some(&bob)).await;
    assert_eq!(as_bob.body["articles"][0]["favorited"], true);
    assert_eq!(as_bob.body["articles"][0]["favoritesCount"], 1);
    assert_eq!(as_bob.body["articles"][0]["author"]["following"], true);
    let anonymous = server.get("/articles", None).await;
    assert_eq!(anonymous.body["articles"][0]["favorited"], false);
    assert_eq!(anonymous.body["articles"][0]["favoritesCount"], 1);
    assert_eq!(anonymous.body["articles"][0]["author"]["following"], false);
}
