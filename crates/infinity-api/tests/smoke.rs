mod common;

use common::TestServer;
use serde_json::json;

#[tokio::test]
async fn register_then_read_current_user() {
    let server = TestServer::start().await;
    let token = server.register("alice").await;
    let me = server.get("/user", Some(&token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user"]["username"], "alice");
    assert_eq!(me.body["user"]["email"], "alice@example.com");
    assert_eq!(me.body["user"]["image"], "");
    let slug = server.article(&token, "Hello", &["a"]).await;
    let article = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(article.body["article"]["title"], json!("Hello"));
}
