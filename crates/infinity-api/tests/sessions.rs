//! Logout, password changes and login rate limits.

mod common;

use common::{assert_error, Reply, TestServer};
use infinity_api::ratelimit::LoginQuota;
use infinity_api::ApiConfig;
use serde_json::json;

fn token(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "login: {}", reply.body);
    reply.body["user"]["token"].as_str().unwrap().to_string()
}

/// Asserts a 429 with a positive whole `Retry-After` and the error body.
fn assert_too_many(reply: &Reply) {
    assert_error(reply, 429, "too many login attempts");
    let retry_after = reply.headers["retry-after"].to_str().unwrap();
    let seconds: u64 = retry_after.parse().expect("Retry-After is whole seconds");
    assert!(seconds > 0, "Retry-After is {seconds}");
}

#[tokio::test]
async fn logout_ends_only_that_session() {
    let server = TestServer::start().await;
    let first = server.register("alice").await;
    let second = token(&server.login("alice@example.com", "password-alice").await);
    // Warm the session cache so that logout must invalidate it.
    assert_eq!(server.get("/user", Some(&first)).await.status, 200);

    let reply = server.delete("/user/session", Some(&first)).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_null());

    let ended = server.get("/user", Some(&first)).await;
    assert_error(&ended, 401, "token is invalid or expired");
    let again = server.delete("/user/session", Some(&first)).await;
    assert_error(&again, 401, "token is invalid or expired");
    let other = server.get("/user", Some(&second)).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body["user"]["username"], "alice");
}

#[tokio::test]
async fn logout_without_token_is_401() {
    let server = TestServer::start().await;
    let reply = server.delete("/user/session", None).await;
    assert_error(&reply, 401, "authorization token is missing");
}

#[tokio::test]
async fn password_change_ends_other_sessions() {
    let server = TestServer::start().await;
    let current = server.register("alice").await;
    let other = token(&server.login("alice@example.com", "password-alice").await);
    let bob = server.register("bob").await;
    assert_eq!(server.get("/user", Some(&other)).await.status, 200);

    let reply = server
        .put(
            "/user",
            Some(&current),
            json!({"user": {"password": "a-new-password"}}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["user"]["token"], current.as_str());

    let kept = server.get("/user", Some(&current)).await;
    assert_eq!(kept.status, 200);
    let ended = server.get("/user", Some(&other)).await;
    assert_error(&ended, 401, "token is invalid or expired");
    let bystander = server.get("/user", Some(&bob)).await;
    assert_eq!(bystander.body["user"]["username"], "bob");

    let old = server.login("alice@example.com", "password-alice").await;
    assert_error(&old, 401, "email or password is invalid");
    let new = server.login("alice@example.com", "a-new-password").await;
    assert_eq!(new.status, 200);
    assert_eq!(new.body["user"]["username"], "alice");
}

#[tokio::test]
async fn login_limited_per_account() {
    let config = ApiConfig {
        login_per_account: LoginQuota {
            burst: 3,
            per_minute: 1,
        },
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(config).await;
    server.register("alice").await;
    server.register("bob").await;
    for _ in 0..3 {
        let wrong = server.login("alice@example.com", "wrong-password").await;
        assert_error(&wrong, 401, "email or password is invalid");
    }
    let limited = server.login("alice@example.com", "password-alice").await;
    assert_too_many(&limited);
    // The account key ignores case, so another spelling shares the bucket.
    let upper = server.login("ALICE@example.com", "password-alice").await;
    assert_too_many(&upper);

    let other = server.login("bob@example.com", "password-bob").await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn login_limited_per_address() {
    let config = ApiConfig {
        login_per_address: LoginQuota {
            burst: 4,
            per_minute: 1,
        },
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(config).await;
    for n in 0..4 {
        let reply = server
            .login(&format!("user{n}@example.com"), "password-x")
            .await;
        assert_error(&reply, 401, "email or password is invalid");
    }
    let limited = server.login("user9@example.com", "password-x").await;
    assert_too_many(&limited);
}

#[tokio::test]
async fn login_limited_per_forwarded_client() {
    let config = ApiConfig {
        login_per_address: LoginQuota {
            burst: 2,
            per_minute: 1,
        },
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let login_from = |client: &'static str, n: usize| {
        let body =
            json!({"user": {"email": format!("user{n}@example.com"), "password": "password-x"}});
        server.send(
            server
                .client
                .post(format!("{}/api/users/login", server.base))
                .header("x-forwarded-for", client)
                .json(&body),
        )
    };
    // The test client is a loopback peer, trusted as a proxy by default,
    // so each forwarded client has a bucket of its own.
    for n in 0..2 {
        let reply = login_from("203.0.113.1", n).await;
        assert_error(&reply, 401, "email or password is invalid");
    }
    assert_too_many(&login_from("203.0.113.1", 2).await);
    let other = login_from("203.0.113.2", 3).await;
    assert_error(&other, 401, "email or password is invalid");
}
