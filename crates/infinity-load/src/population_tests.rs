use super::*;

fn config() -> PlanConfig {
    PlanConfig {
        users: 50,
        articles: 200,
        follows_per_user: 5.0,
        feed_user_follows: Some(20),
        comments_per_article: 1.5,
        favorites_per_user: 3.0,
        tags: 10,
        zipf_exponent: 1.0,
        prefix: "t".to_string(),
    }
}

#[test]
fn plan_is_reproducible_from_seed() {
    let first = plan(&config(), 9, "x").unwrap();
    let second = plan(&config(), 9, "x").unwrap();
    assert_eq!(first.users, second.users);
    assert_eq!(first.follows, second.follows);
    assert_eq!(first.articles, second.articles);
    assert_eq!(first.comments, second.comments);
    assert_eq!(first.favorites, second.favorites);
}

#[test]
fn plan_differs_between_seeds() {
    let first = plan(&config(), 1, "x").unwrap();
    let second = plan(&config(), 2, "x").unwrap();
    assert_ne!(first.follows, second.follows);
    assert_ne!(first.users[0].username, second.users[0].username);
}

#[test]
fn plan_has_requested_sizes() {
    let plan = plan(&config(), 3, "x").unwrap();
    assert_eq!(plan.users.len(), 50);
    assert_eq!(plan.articles.len(), 200);
    assert_eq!(plan.comments.len(), 300);
    assert_eq!(plan.tags.len(), 10);
    assert_eq!(plan.users[7].username, "t3u7");
    assert_eq!(plan.users[7].email, "t3u7@example.com");
    assert_eq!(plan.users[7].password.len(), 16);
}

#[test]
fn plan_feed_user_follows_exact_count() {
    let plan = plan(&config(), 4, "x").unwrap();
    assert_eq!(plan.feed_user, Some(49));
    assert_eq!(plan.follows[49].len(), 20);
}

#[test]
fn plan_articles_have_valid_tags_and_authors() {
    let plan = plan(&config(), 5, "run").unwrap();
    for (index, article) in plan.articles.iter().enumerate() {
        assert!((1..=3).contains(&article.tags.len()));
        assert!(article.tags.iter().all(|tag| plan.tags.contains(tag)));
        assert!(article.author < 50);
        assert!(article.title.ends_with(&format!(" run-{index}")));
    }
    assert!(plan
        .comments
        .iter()
        .all(|c| c.article < 200 && c.author < 50));
}

#[test]
fn plan_favorites_are_distinct_per_user() {
    let plan = plan(&config(), 6, "x").unwrap();
    let mut pairs = plan.favorites.clone();
    pairs.sort_unstable();
    pairs.dedup();
    assert_eq!(pairs.len(), plan.favorites.len());
    let mean = plan.favorites.len() as f64 / 50.0;
    assert!((1.5..4.5).contains(&mean), "mean favourites {mean}");
}

#[test]
fn plan_without_articles_has_no_comments() {
    let mut config = config();
    config.articles = 0;
    let plan = plan(&config, 1, "x").unwrap();
    assert!(plan.comments.is_empty());
    assert!(plan.favorites.is_empty());
}

#[test]
fn state_file_round_trips() {
    let population = Population {
        target: "http://127.0.0.1:1".to_string(),
        seed: 8,
        users: vec![
            User {
                username: "a".into(),
                email: "a@example.com".into(),
                password: "p".into(),
                token: "t1".into(),
            },
            User {
                username: "b".into(),
                email: "b@example.com".into(),
                password: "q".into(),
                token: "t2".into(),
            },
        ],
        articles: vec![Article {
            slug: "s".into(),
            author: 1,
        }],
        tags: vec!["tag0".into()],
        feed_user: Some(FeedUser {
            user: 1,
            follows: 1,
        }),
        uploads: vec!["42".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    population.save(&path).unwrap();
    assert_eq!(Population::load(&path).unwrap(), population);
}

#[test]
fn state_file_rejects_bad_author() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let json = r#"{"target":"http://x","seed":1,"users":[
        {"username":"a","email":"e","password":"p","token":"t"},
        {"username":"b","email":"e","password":"p","token":"t"}],
        "articles":[{"slug":"s","author":5}],"tags":[],"feed_user":null,"uploads":[]}"#;
    std::fs::write(&path, json).unwrap();
    let error = Population::load(&path).unwrap_err().to_string();
    assert!(error.contains("out of range"), "{error}");
}
