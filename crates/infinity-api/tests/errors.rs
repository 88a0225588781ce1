//! Unknown routes, wrong methods and oversized bodies: every 4xx carries
//! the RealWorld error body.

mod common;

use common::{assert_error, TestServer};
use infinity_api::ApiConfig;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn unknown_route_is_404() {
    let server = TestServer::start().await;
    for path in ["/api/nothing", "/api/articles/a/b/c", "/nothing", "/api"] {
        let reply = server
            .send(server.client.get(format!("{}{path}", server.base)))
            .await;
        assert_error(&reply, 404, "route not found");
    }
}

#[tokio::test]
async fn wrong_method_has_error_body() {
    let server = TestServer::start().await;
    let cases = [
        (Method::PATCH, "/api/user"),
        (Method::DELETE, "/api/articles"),
        (Method::PUT, "/api/tags"),
        (Method::GET, "/api/users/login"),
    ];
    for (method, path) in cases {
        let reply = server
            .send(
                server
                    .client
                    .request(method.clone(), format!("{}{path}", server.base)),
            )
            .await;
        assert_error(&reply, 405, "method");
        let allow = reply.headers["allow"].to_str().unwrap();
        assert!(
            !allow.is_empty(),
            "{method} {path} has an empty Allow header"
        );
    }
}

#[tokio::test]
async fn oversized_body_is_rejected() {
    let config = ApiConfig {
        max_body_bytes: 1024,
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let token = server.register("alice").await;
    let body = json!({"article": {"title": "Big", "description": "d", "body": "x".repeat(2048)}});
    let reply = server.post("/articles", Some(&token), body).await;
    assert_error(&reply, 413, "body");
    let list = server.get("/articles", None).await;
    assert_eq!(list.body["articlesCount"], 0);
}

#[tokio::test]
async fn body_without_content_type_is_read() {
    let server = TestServer::start().await;
    let request = server
        .client
        .post(format!("{}/api/users", server.base))
        .body(r#"{"user": {"username": "plain", "email": "plain@example.com", "password": "password-plain"}}"#);
    let reply = server.send(request).await;
    common::check_schema(&Method::POST, "/users", &reply);
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body["user"]["username"], "plain");
}

#[tokio::test]
async fn json_null_fields_are_422() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let cases = [
        (
            "/users",
            Method::POST,
            r#"{"user": {"username": null, "email": "a@x.org", "password": "password-a"}}"#,
            "user.username: invalid type: null",
        ),
        (
            "/articles",
            Method::POST,
            r#"{"article": null}"#,
            "article: invalid type: null",
        ),
        (
            "/user",
            Method::PUT,
            r#"{"user": null}"#,
            "user: invalid type: null",
        ),
    ];
    for (path, method, body, needle) in cases {
        let reply = server.call_raw(method, path, Some(&token), body).await;
        assert_error(&reply, 422, needle);
    }
}

#[tokio::test]
async fn nul_characters_are_client_errors() {
    let server = TestServer::start().await;
    let token = server.register("nina").await;
    let paths = [
        "/api/articles?tag=%00",
        "/api/articles?author=a%00",
        "/api/articles?favorited=a%00b",
        "/api/articles/a%00b",
        "/api/articles/a%00b/comments",
        "/api/profiles/a%00b",
    ];
    for path in paths {
        let reply = server
            .send(
                server
                    .client
                    .get(format!("{}{path}", server.base))
                    .header("Authorization", format!("Token {token}")),
            )
            .await;
        // SQLite stores NUL characters and finds nothing; PostgreSQL cannot
        // store them, and the request is rejected.
        match reply.status.as_u16() {
            200 | 404 => {}
            422 => assert_error(&reply, 422, "NUL characters"),
            other => panic!("{path}: status {other}: {}", reply.body),
        }
    }
    let login = json!({"user": {"email": "a\u{0}@b.c", "password": "secret-password"}});
    let reply = server.post("/users/login", None, login).await;
    let status = reply.status.as_u16();
    assert!(
        status == 401 || status == 422,
        "login: {status}: {}",
        reply.body
    );
}
