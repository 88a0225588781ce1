//! Concurrent edits of one article or one user. Each update must return the
//! row it replaced, so that the caches drop every slug, tag and username the
//! row ever had, including those that only a concurrent edit saw.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{join_all, open_engine, TestServer};
use infinity_store::{ArticleChanges, NewArticle, NewUser, UserChanges};
use serde_json::json;

/// Rounds of two racing edits in each API test.
const ROUNDS: usize = 30;

/// Polls `paths` with anonymous GETs until `stop` is set, so that the caches
/// hold whatever the paths resolved to while the edits ran.
fn poll_until(
    server: &Arc<TestServer>,
    paths: Vec<String>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (server, stop) = (server.clone(), stop.clone());
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for path in &paths {
                let url = format!("{}/api{path}", server.base);
                server.send(server.client.get(url)).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_article_update_returns_replaced_row() {
    let data = tempfile::tempdir().unwrap();
    let store = open_engine(data.path()).await.store;
    let author = store
        .create_user(
            NewUser {
                username: "author".into(),
                email: "author@example.com".into(),
                password_hash: "not a hash".into(),
            },
            Vec::new(),
        )
        .await
        .unwrap();
    let article = store
        .create_article(
            author.id,
            NewArticle {
                title: "Start".into(),
                description: String::new(),
                body: "the text".into(),
                tags: vec!["start".into()],
                images: Vec::new(),
            },
        )
        .await
        .unwrap();

    let mut slug = article.slug.clone();
    for round in 0..10 {
        let edits = ["a", "b"].map(|side| {
            let store = store.clone();
            let changes = ArticleChanges {
                title: Some(format!("Round {round} {side}")),
                tags: Some(vec![format!("r{round}{side}")]),
                ..ArticleChanges::default()
            };
            async move { store.update_article(article.id, changes).await.unwrap() }
        });
        let [first, second]: [_; 2] = join_all(edits).await.try_into().unwrap();

        // One edit replaced the row as it was before the round, and the
        // other replaced the row the first one left.
        let (earlier, later) = if first.previous.slug == slug {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(earlier.previous.slug, slug, "round {round}");
        assert_eq!(later.previous.slug, earlier.current.slug, "round {round}");
        assert_eq!(later.previous.tags, earlier.current.tags, "round {round}");
        assert_eq!(later.previous.title, earlier.current.title, "round {round}");
        slug = later.current.slug;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_user_update_returns_replaced_row() {
    let data = tempfile::tempdir().unwrap();
    let store = open_engine(data.path()).await.store;
    let user = store
        .create_user(
            NewUser {
                username: "mover".into(),
                email: "mover@example.com".into(),
                password_hash: "not a hash".into(),
            },
            Vec::new(),
        )
        .await
        .unwrap();

    let mut username = user.username.clone();
    for round in 0..10 {
        let edits = ["a", "b"].map(|side| {
            let store = store.clone();
            let changes = UserChanges {
                username: Some(format!("mover-{round}-{side}")),
                ..UserChanges::default()
            };
            async move { store.update_user(user.id, changes).await.unwrap() }
        });
        let [first, second]: [_; 2] = join_all(edits).await.try_into().unwrap();

        let (earlier, later) = if first.previous.username == username {
            (first, second)
        } else {
            (second, first)
        };
        assert_eq!(earlier.previous.username, username, "round {round}");
        assert_eq!(
            later.previous.username, earlier.current.username,
            "round {round}"
        );
        username = later.current.username;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_title_edits_leave_no_stale_slug() {
    let server = Arc::new(TestServer::start().await);
    let token = server.register("racer").await;
    let mut slug = server.article(&token, "Round start", &["start"]).await;
    let mut slugs = vec![slug.clone()];
    let mut tags = vec!["start".to_string()];

    for round in 0..ROUNDS {
        let sides = ["a", "b"];
        let round_slugs = sides.map(|side| format!("round-{round}-{side}"));
        let round_tags = sides.map(|side| format!("r{round}{side}"));
        let mut paths: Vec<String> = round_slugs
            .iter()
            .map(|s| format!("/articles/{s}"))
            .collect();
        paths.extend(round_tags.iter().map(|t| format!("/articles?tag={t}")));
        let stop = Arc::new(AtomicBool::new(false));
        let readers = [
            poll_until(&server, paths.clone(), &stop),
            poll_until(&server, paths, &stop),
        ];

        let edits = sides.map(|side| {
            let (server, token) = (server.clone(), token.clone());
            let path = format!("/articles/{slug}");
            let body = json!({"article": {
                "title": format!("Round {round} {side}"),
                "tagList": [format!("r{round}{side}")],
            }});
            async move { server.put(&path, Some(&token), body).await }
        });
        let replies = join_all(edits).await;
        stop.store(true, Ordering::SeqCst);
        for reader in readers {
            reader.await.unwrap();
        }

        // The later edit may find the old slug already gone and return 404.
        for reply in &replies {
            assert!(
                reply.status == 200 || reply.status == 404,
                "round {round}: {} {}",
                reply.status,
                reply.body
            );
        }
        assert!(
            replies.iter().any(|r| r.status == 200),
            "round {round}: neither edit succeeded"
        );
        let listed = server.get("/articles?author=racer", Some(&token)).await;
        slug = listed.body["articles"][0]["slug"]
            .as_str()
            .unwrap()
            .to_string();
        slugs.extend(round_slugs);
        tags.extend(round_tags);
    }

    let current = server.get(&format!("/articles/{slug}"), Some(&token)).await;
    assert_eq!(current.status, 200, "{}", current.body);
    let side = slug.rsplit('-').next().unwrap();
    let title = format!("Round {} {side}", ROUNDS - 1);
    assert_eq!(current.body["article"]["title"], title.as_str());
    let tag = current.body["article"]["tagList"][0]
        .as_str()
        .unwrap()
        .to_string();
    for old in slugs.iter().filter(|s| **s != slug) {
        let reply = server.get(&format!("/articles/{old}"), Some(&token)).await;
        assert_eq!(reply.status, 404, "old slug {old} still resolves");
    }
    for old in tags.iter().filter(|t| **t != tag) {
        let reply = server
            .get(&format!("/articles?tag={old}"), Some(&token))
            .await;
        assert_eq!(
            reply.body["articlesCount"], 0,
            "old tag {old} still lists it"
        );
    }
    let tagged = server
        .get(&format!("/articles?tag={tag}"), Some(&token))
        .await;
    assert_eq!(tagged.body["articlesCount"], 1, "current tag {tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_username_edits_leave_no_stale_name() {
    let server = Arc::new(TestServer::start().await);
    let token = server.register("mover").await;
    let mut names = vec!["mover".to_string()];

    for round in 0..ROUNDS {
        let round_names = ["a", "b"].map(|side| format!("mover-{round}-{side}"));
        let paths: Vec<String> = round_names
            .iter()
            .map(|n| format!("/profiles/{n}"))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let readers = [
            poll_until(&server, paths.clone(), &stop),
            poll_until(&server, paths, &stop),
        ];

        let edits = round_names.clone().map(|name| {
            let (server, token) = (server.clone(), token.clone());
            let body = json!({"user": {"username": name}});
            async move { server.put("/user", Some(&token), body).await }
        });
        let replies = join_all(edits).await;
        stop.store(true, Ordering::SeqCst);
        for reader in readers {
            reader.await.unwrap();
        }
        for reply in &replies {
            assert_eq!(reply.status, 200, "round {round}: {}", reply.body);
        }
        names.extend(round_names);
    }

    let user = server.get("/user", Some(&token)).await;
    let name = user.body["user"]["username"].as_str().unwrap().to_string();
    let current = server.get(&format!("/profiles/{name}"), Some(&token)).await;
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.body["profile"]["username"], name.as_str());
    for old in names.iter().filter(|n| **n != name) {
        let reply = server.get(&format!("/profiles/{old}"), Some(&token)).await;
        assert_eq!(reply.status, 404, "old username {old} still resolves");
    }
}
