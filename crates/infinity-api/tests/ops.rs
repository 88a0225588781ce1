//! Operational endpoints, request ids and CORS.

mod common;

use common::{on_postgres, Reply, TestServer};
use serde_json::json;

async fn plain(server: &TestServer, path: &str) -> (Reply, String) {
    let response = server
        .client
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let reply = Reply {
        status,
        body: serde_json::Value::Null,
        headers,
    };
    (reply, text)
}

#[tokio::test]
async fn healthz_and_readyz_report_up() {
    let server = TestServer::start().await;
    let health = server
        .send(server.client.get(format!("{}/healthz", server.base)))
        .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body, json!({"status": "ok"}));

    let ready = server
        .send(server.client.get(format!("{}/readyz", server.base)))
        .await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["checks"]["database"]["status"], "up");
    let database = &ready.body["checks"]["database"];
    if on_postgres() {
        assert_eq!(database["engine"], "postgres");
        let servers = database["servers"].as_array().expect("a list of servers");
        assert_eq!(servers.len(), 2, "{servers:?}");
        assert_eq!(servers[0]["role"], "primary");
        assert_eq!(servers[1]["role"], "replica");
        assert_eq!(servers[1]["in_rotation"], true);
        assert!(servers[1]["lag_seconds"].as_f64().unwrap() < 5.0);
    } else {
        assert_eq!(database["engine"], "sqlite");
        assert!(database.get("servers").is_none());
    }
}

#[tokio::test]
async fn metrics_cover_requests_cache_pool() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let slug = server.article(&token, "Counted", &[]).await;
    for _ in 0..2 {
        server.get(&format!("/articles/{slug}"), None).await;
    }
    server.get("/articles/missing", None).await;

    let (reply, text) = plain(&server, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let lines: Vec<&str> = text.lines().collect();
    let has = |parts: &[&str]| {
        lines
            .iter()
            .any(|line| parts.iter().all(|p| line.contains(p)))
    };
    assert!(
        has(&[
            "infinity_http_requests_total{",
            "route=\"/api/articles/{slug}\"",
            "status=\"200\""
        ]),
        "{text}"
    );
    assert!(
        has(&["infinity_http_requests_total{", "status=\"404\""]),
        "{text}"
    );
    assert!(has(&[
        "infinity_http_requests_total{",
        "route=\"/api/users\"",
        "status=\"201\""
    ]));
    assert!(has(&[
        "infinity_http_request_duration_seconds_bucket{",
        "le=\"0.005\""
    ]));
    assert!(has(&["infinity_http_request_duration_seconds_count{"]));
    assert!(
        has(&["infinity_cache_requests_total{", "result=\"hit\""]),
        "{text}"
    );
    assert!(has(&["infinity_cache_requests_total{", "result=\"miss\""]));
    assert!(
        has(&["infinity_db_pool_connections{", "state=\"open\""]),
        "{text}"
    );
    assert!(has(&["infinity_db_pool_connections{", "state=\"idle\""]));
}

#[tokio::test]
async fn every_response_has_request_id() {
    let server = TestServer::start().await;
    let paths = [
        "/healthz",
        "/api/tags",
        "/api/articles/missing",
        "/api/articles?limit=0",
        "/nowhere",
    ];
    let mut seen = Vec::new();
    for path in paths {
        let (reply, _) = plain(&server, path).await;
        let id = reply.headers["x-request-id"].to_str().unwrap().to_string();
        assert!(!id.is_empty(), "{path}");
        assert!(!seen.contains(&id), "{path} reused {id}");
        seen.push(id);
    }
    let echoed = server
        .send(
            server
                .client
                .get(format!("{}/api/tags", server.base))
                .header("x-request-id", "trace-me-42"),
        )
        .await;
    assert_eq!(echoed.headers["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn openapi_document_is_served() {
    let server = TestServer::start().await;
    let reply = server
        .send(
            server
                .client
                .get(format!("{}/api/openapi.json", server.base)),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert!(reply.body["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(reply.body["servers"][0]["url"], "/api");
    assert!(reply.body["paths"]["/user/session"]["delete"].is_object());
    assert!(reply.body["paths"]["/articles/{slug}"]["put"].is_object());
}

#[tokio::test]
async fn cors_preflight_allows_api_calls() {
    let server = TestServer::start().await;
    let request = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/articles", server.base),
        )
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        );
    let (status, headers) = {
        let response = request.send().await.unwrap();
        (response.status(), response.headers().clone())
    };
    assert!(status.is_success(), "preflight answered {status}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for method in ["get", "post", "put", "delete"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(allowed.contains("content-type"), "{allowed}");
    assert_eq!(headers["access-control-max-age"], "3600");
}

#[tokio::test]
async fn cors_simple_get_allows_origin() {
    let server = TestServer::start().await;
    let reply = server
        .send(
            server
                .client
                .get(format!("{}/api/tags", server.base))
                .header("Origin", "https://app.example.com"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    let exposed = reply.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert!(exposed.contains("retry-after"), "{exposed}");
}
