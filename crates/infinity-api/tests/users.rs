//! Registration, login and the current user.

mod common;

use std::time::Duration;

use common::{assert_error, TestServer};
use infinity_api::ApiConfig;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn register_returns_user_and_token() {
    let server = TestServer::start().await;
    let reply = server
        .post(
            "/users",
            None,
            json!({"user": {"username": "alice", "email": "Alice@Example.COM", "password": "password-alice"}}),
        )
        .await;
    assert_eq!(reply.status, 201);
    let user = &reply.body["user"];
    assert_eq!(user["username"], "alice");
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["bio"], "");
    assert_eq!(user["image"], "");
    assert!(user["token"].as_str().unwrap().len() >= 40);

    let me = server.get("/user", user["token"].as_str()).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user"]["username"], "alice");
    assert_eq!(me.body["user"]["token"], user["token"]);
}

#[tokio::test]
async fn register_taken_name_or_email() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let same_name = server
        .post(
            "/users",
            None,
            json!({"user": {"username": "alice", "email": "other@example.com", "password": "password-x"}}),
        )
        .await;
    assert_error(&same_name, 422, "username has already been taken");
    let same_email = server
        .post(
            "/users",
            None,
            json!({"user": {"username": "bob", "email": "ALICE@example.com", "password": "password-x"}}),
        )
        .await;
    assert_error(&same_email, 422, "email has already been taken");
}

#[tokio::test]
async fn register_invalid_fields_name_field() {
    let server = TestServer::start().await;
    let user = |username: serde_json::Value, email: &str, password: &str| json!({"user": {"username": username, "email": email, "password": password}});
    let cases = [
        (
            user(json!("  "), "a@example.com", "password-a"),
            "username can't be blank",
        ),
        (
            user(json!("al\u{1}ice"), "a@example.com", "password-a"),
            "username must not contain control characters",
        ),
        (
            user(json!("al ice"), "a@example.com", "password-a"),
            "username may contain only",
        ),
        (
            user(json!("x".repeat(41)), "a@example.com", "password-a"),
            "username is too long",
        ),
        (
            user(json!(5), "a@example.com", "password-a"),
            "user.username: invalid type",
        ),
        (
            user(json!("alice"), "not-an-address", "password-a"),
            "email is invalid",
        ),
        (
            user(json!("alice"), "", "password-a"),
            "email can't be blank",
        ),
        (
            user(json!("alice"), "a@example.com", "short"),
            "password is too short",
        ),
        (
            user(json!("alice"), "a@example.com", "pass\u{0}word-a"),
            "password must not contain control characters",
        ),
        (
            json!({"user": {"email": "a@example.com", "password": "password-a"}}),
            "missing field `username`",
        ),
        (
            json!({"user": {"username": "alice", "password": "password-a"}}),
            "missing field `email`",
        ),
        (
            json!({"user": {"username": "alice", "email": "a@example.com"}}),
            "missing field `password`",
        ),
        (json!({"username": "alice"}), "missing field `user`"),
        (
            json!([1, 2]),
            "body is not valid JSON of the expected shape",
        ),
    ];
    for (body, needle) in cases {
        let reply = server.post("/users", None, body.clone()).await;
        assert_error(&reply, 422, needle);
    }
}

#[tokio::test]
async fn register_reports_every_bad_field() {
    let server = TestServer::start().await;
    let reply = server
        .post(
            "/users",
            None,
            json!({"user": {"username": "", "email": "x", "password": "x"}}),
        )
        .await;
    assert_error(&reply, 422, "username");
    assert_error(&reply, 422, "email");
    assert_error(&reply, 422, "password");
    assert_eq!(reply.body["errors"]["body"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn malformed_json_is_422() {
    let server = TestServer::start().await;
    let cases = [
        ("{\"user\": ", "body is not valid JSON"),
        ("not json", "body is not valid JSON"),
        ("", "body is not valid JSON"),
        (
            r#"{"user": {"username": "t", "email": "t@example.com", "password": "password-t"}} x"#,
            "body has data after the JSON value",
        ),
    ];
    for (body, needle) in cases {
        let reply = server.call_raw(Method::POST, "/users", None, body).await;
        assert_error(&reply, 422, needle);
    }
}

#[tokio::test]
async fn login_starts_new_session() {
    let server = TestServer::start().await;
    let first = server.register("alice").await;
    let reply = server.login("ALICE@example.com", "password-alice").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["user"]["username"], "alice");
    assert_eq!(reply.body["user"]["email"], "alice@example.com");
    let second = reply.body["user"]["token"].as_str().unwrap();
    assert_ne!(second, first);
    let me = server.get("/user", Some(second)).await;
    assert_eq!(me.body["user"]["username"], "alice");
}

#[tokio::test]
async fn login_wrong_password_is_401() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let wrong = server.login("alice@example.com", "password-bob").await;
    assert_error(&wrong, 401, "email or password is invalid");
    let unknown = server.login("nobody@example.com", "password-alice").await;
    assert_error(&unknown, 401, "email or password is invalid");
}

#[tokio::test]
async fn login_blank_fields_are_422() {
    let server = TestServer::start().await;
    let blank_email = server.login(" ", "password-alice").await;
    assert_error(&blank_email, 422, "email can't be blank");
    let blank_password = server.login("alice@example.com", "").await;
    assert_error(&blank_password, 422, "password can't be blank");
    let missing = server
        .post(
            "/users/login",
            None,
            json!({"user": {"email": "alice@example.com"}}),
        )
        .await;
    assert_error(&missing, 422, "missing field `password`");
}

#[tokio::test]
async fn current_user_needs_valid_token() {
    let server = TestServer::start().await;
    server.register("alice").await;
    let missing = server.get("/user", None).await;
    assert_error(&missing, 401, "authorization token is missing");
    assert_eq!(missing.headers["www-authenticate"], "Token");
    let unknown = server.get("/user", Some("not-a-real-token")).await;
    assert_error(&unknown, 401, "token is invalid or expired");

    let wrong_scheme = server
        .send(
            server
                .client
                .get(format!("{}/api/user", server.base))
                .header("Authorization", "Basic YWxpY2U6eA=="),
        )
        .await;
    common::check_schema(&Method::GET, "/user", &wrong_scheme);
    assert_error(
        &wrong_scheme,
        401,
        "authorization header must be 'Token <token>'",
    );
}

#[tokio::test]
async fn expired_token_is_401() {
    let config = ApiConfig {
        session_ttl: Duration::ZERO,
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let token = server.register("alice").await;
    let reply = server.get("/user", Some(&token)).await;
    assert_error(&reply, 401, "token is invalid or expired");
    // A token that names no live session is a 401 on optional-auth reads too.
    let articles = server.get("/articles", Some(&token)).await;
    assert_error(&articles, 401, "token is invalid or expired");
}

#[tokio::test]
async fn update_user_changes_fields() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let reply = server
        .put(
            "/user",
            Some(&token),
            json!({"user": {"bio": "I take photos\nof trees", "image": "https://example.com/a.png", "email": "New@Example.com"}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let user = &reply.body["user"];
    assert_eq!(user["bio"], "I take photos\nof trees");
    assert_eq!(user["image"], "https://example.com/a.png");
    assert_eq!(user["email"], "new@example.com");
    assert_eq!(user["username"], "alice");
    assert_eq!(user["token"], token.as_str());

    let me = server.get("/user", Some(&token)).await;
    assert_eq!(me.body["user"]["bio"], "I take photos\nof trees");
    assert_eq!(me.body["user"]["email"], "new@example.com");
    let login = server.login("new@example.com", "password-alice").await;
    assert_eq!(login.status, 200);

    let cleared = server
        .put("/user", Some(&token), json!({"user": {"image": ""}}))
        .await;
    assert_eq!(cleared.body["user"]["image"], "");
}

#[tokio::test]
async fn update_user_rejects_bad_values() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    server.register("bob").await;
    let cases = [
        (json!({"user": {}}), "user must contain at least one of"),
        (
            json!({"user": {"image": "ftp://example.com/a.png"}}),
            "image must be an http or https URL",
        ),
        (json!({"user": {"email": "nope"}}), "email is invalid"),
        (
            json!({"user": {"username": "bob"}}),
            "username has already been taken",
        ),
        (json!({"user": {"username": ""}}), "username can't be blank"),
        (
            json!({"user": {"bio": "a\u{7}b"}}),
            "bio must not contain control characters",
        ),
        (json!({"user": {"bio": 3}}), "user.bio: invalid type"),
        (
            json!({"user": {"password": "short"}}),
            "password is too short",
        ),
    ];
    for (body, needle) in cases {
        let reply = server.put("/user", Some(&token), body).await;
        assert_error(&reply, 422, needle);
    }
    let unchanged = server.get("/user", Some(&token)).await;
    assert_eq!(unchanged.body["user"]["username"], "alice");

    let anonymous = server
        .put("/user", None, json!({"user": {"bio": "x"}}))
        .await;
    assert_error(&anonymous, 401, "authorization token is missing");
}
