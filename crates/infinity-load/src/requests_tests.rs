use super::*;
use crate::population::{Article, FeedUser, User};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn population() -> Population {
    let user = |index: usize| User {
        username: format!("u{index}"),
        email: format!("u{index}@example.com"),
        password: "secret".into(),
        token: format!("token{index}"),
    };
    Population {
        target: "http://127.0.0.1:1".into(),
        seed: 1,
        users: (0..5).map(user).collect(),
        articles: (0..3)
            .map(|index| Article {
                slug: format!("a{index}"),
                author: index,
            })
            .collect(),
        tags: vec!["tag0".into(), "tag1".into()],
        feed_user: Some(FeedUser {
            user: 4,
            follows: 3,
        }),
        uploads: Vec::new(),
    }
}

fn build(op: Op) -> RequestSpec {
    let targets = Targets::new(population(), 1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    targets.build_request(op, &mut rng, "x-1")
}

#[test]
fn fixed_feed_uses_feed_user() {
    let spec = build(Op::FixedFeed);
    assert_eq!(spec.operation, "feed_3");
    assert_eq!(spec.path, "/api/articles/feed");
    assert_eq!(spec.user, Some(4));
    assert_eq!(spec.query[0], ("limit", "20".to_string()));
}

#[test]
fn feed_never_uses_feed_user() {
    let targets = Targets::new(population(), 1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..200 {
        let spec = targets.build_request(Op::Feed, &mut rng, "x");
        assert_eq!(spec.operation, "feed");
        assert!(matches!(spec.user, Some(user) if user < 4));
    }
}

#[test]
fn reads_target_population_paths() {
    assert!(build(Op::GetArticle).path.starts_with("/api/articles/a"));
    assert!(build(Op::GetComments).path.ends_with("/comments"));
    assert!(build(Op::GetProfile).path.starts_with("/api/profiles/u"));
    assert_eq!(build(Op::GetTags).path, "/api/tags");
    assert_eq!(build(Op::GetTags).method, Method::GET);
}

#[test]
fn list_filters_set_query() {
    let keys = |op| {
        build(op)
            .query
            .into_iter()
            .map(|(key, _)| key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(Op::ListArticles), ["limit", "offset"]);
    assert_eq!(keys(Op::ListByTag), ["limit", "offset", "tag"]);
    assert_eq!(keys(Op::ListByAuthor), ["limit", "offset", "author"]);
    assert_eq!(keys(Op::ListByFavorited), ["limit", "offset", "favorited"]);
}

#[test]
fn writes_send_token_and_method() {
    let create = build(Op::CreateArticle);
    assert_eq!(create.method, Method::POST);
    assert!(create.user.is_some());
    let body = create.body.unwrap();
    assert!(body["article"]["title"].as_str().unwrap().ends_with(" x-1"));
    assert_eq!(body["article"]["tagList"].as_array().unwrap().len(), 1);

    assert_eq!(build(Op::Unfavorite).method, Method::DELETE);
    assert_eq!(build(Op::Unfollow).method, Method::DELETE);
    assert_eq!(build(Op::Follow).method, Method::POST);
    assert!(build(Op::Follow).path.ends_with("/follow"));
    let comment = build(Op::CreateComment);
    assert!(comment.body.unwrap()["comment"]["body"].is_string());
}

#[test]
fn follow_never_targets_actor() {
    let targets = Targets::new(population(), 1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..200 {
        let spec = targets.build_request(Op::Follow, &mut rng, "x");
        let actor = spec.user.unwrap();
        assert_ne!(spec.path, format!("/api/profiles/u{actor}/follow"));
    }
}
