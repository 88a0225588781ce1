//! A small in-process RealWorld server with just the routes the load generator uses. It
//! counts every request by the operation name the load generator reports it under.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Period of 503 responses to GET /api/tags: every fifth call fails, to exercise error counting.
pub const TAGS_FAILURE_EVERY: u64 = 5;

#[derive(Default)]
pub struct Mock {
    /// Requests by operation name. Feeds are counted as `feed:<username>`.
    counts: Mutex<BTreeMap<String, u64>>,
    /// Username and password by email.
    accounts: Mutex<HashMap<String, (String, String)>>,
    /// Username by token.
    tokens: Mutex<HashMap<String, String>>,
    /// Followees by follower username.
    follows: Mutex<HashMap<String, HashSet<String>>>,
    slugs: Mutex<HashSet<String>>,
    next_id: AtomicU64,
    tags_calls: AtomicU64,
    /// When set, the next login is rejected with 429 and Retry-After: 1.
    pub limit_next_login: AtomicBool,
}

type Shared = Arc<Mock>;

impl Mock {
    pub fn count(&self, name: &str) -> u64 {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    pub fn reset_counts(&self) {
        self.counts.lock().unwrap().clear();
    }

    /// Forgets every token, as a restarted server with a new signing key would.
    pub fn revoke_tokens(&self) {
        self.tokens.lock().unwrap().clear();
    }

    pub fn followees(&self, username: &str) -> usize {
        self.follows
            .lock()
            .unwrap()
            .get(username)
            .map_or(0, HashSet::len)
    }

    fn bump(&self, name: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default() += 1;
    }

    fn issue_token(&self, username: &str) -> String {
        let token = format!("tok{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.tokens
            .lock()
            .unwrap()
            .insert(token.clone(), username.to_string());
        token
    }

    fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get("authorization")?.to_str().ok()?;
        let token = value.strip_prefix("Token ")?;
        self.tokens.lock().unwrap().get(token).cloned()
    }
}

/// Starts the mock on 127.0.0.1 port 0 and returns its base URL and state.
pub async fn start(with_uploads: bool) -> (String, Shared) {
    let mock: Shared = Arc::default();
    let mut router = Router::new()
        .route("/api/users", post(register))
        .route("/api/users/login", post(login))
        .route("/api/user", get(current_user))
        .route("/api/profiles/{username}", get(profile))
        .route(
            "/api/profiles/{username}/follow",
            post(follow).delete(unfollow),
        )
        .route("/api/articles", get(list_articles).post(create_article))
        .route("/api/articles/feed", get(feed))
        .route("/api/articles/{slug}", get(get_article))
        .route(
            "/api/articles/{slug}/comments",
            get(get_comments).post(create_comment),
        )
        .route(
            "/api/articles/{slug}/favorite",
            post(favorite).delete(unfavorite),
        )
        .route("/api/tags", get(tags));
    if with_uploads {
        router = router.route("/api/uploads", post(upload));
    }
    let router = router
        .fallback(|State(mock): State<Shared>| async move {
            mock.bump("not_found");
            StatusCode::NOT_FOUND
        })
        .with_state(Arc::clone(&mock));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{address}"), mock)
}

fn user_body(username: &str, email: &str, token: &str) -> Value {
    json!({"user": {"username": username, "email": email, "token": token, "bio": null, "image": null}})
}

async fn register(State(mock): State<Shared>, Json(body): Json<Value>) -> Response {
    mock.bump("register");
    let user = &body["user"];
    let (Some(username), Some(email), Some(password)) = (
        user["username"].as_str(),
        user["email"].as_str(),
        user["password"].as_str(),
    ) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let mut accounts = mock.accounts.lock().unwrap();
    if accounts.contains_key(email) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"errors": {"email": ["taken"]}})),
        )
            .into_response();
    }
    accounts.insert(
        email.to_string(),
        (username.to_string(), password.to_string()),
    );
    drop(accounts);
    let token = mock.issue_token(username);
    (
        StatusCode::CREATED,
        Json(user_body(username, email, &token)),
    )
        .into_response()
}

async fn login(State(mock): State<Shared>, Json(body): Json<Value>) -> Response {
    mock.bump("login");
    if mock.limit_next_login.swap(false, Ordering::Relaxed) {
        mock.bump("login_429");
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    let email = body["user"]["email"].as_str().unwrap_or_default();
    let password = body["user"]["password"].as_str().unwrap_or_default();
    let account = mock.accounts.lock().unwrap().get(email).cloned();
    match account {
        Some((username, stored)) if stored == password => {
            let token = mock.issue_token(&username);
            Json(user_body(&username, email, &token)).into_response()
        }
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn current_user(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    mock.bump("current_user");
    match mock.user_of(&headers) {
        Some(username) => Json(json!({"user": {"username": username}})).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn profile(State(mock): State<Shared>, Path(username): Path<String>) -> Response {
    mock.bump("get_profile");
    Json(json!({"profile": {"username": username, "bio": null, "image": null, "following": false}}))
        .into_response()
}

async fn follow(state: State<Shared>, headers: HeaderMap, path: Path<String>) -> Response {
    change_follow(state, headers, path, true)
}

async fn unfollow(state: State<Shared>, headers: HeaderMap, path: Path<String>) -> Response {
    change_follow(state, headers, path, false)
}

fn change_follow(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Path(username): Path<String>,
    add: bool,
) -> Response {
    mock.bump(if add { "follow" } else { "unfollow" });
    let Some(follower) = mock.user_of(&headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut follows = mock.follows.lock().unwrap();
    let followees = follows.entry(follower).or_default();
    if add {
        followees.insert(username.clone());
    } else {
        followees.remove(&username);
    }
    Json(json!({"profile": {"username": username, "following": add}})).into_response()
}

async fn list_articles(
    State(mock): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let name = if query.contains_key("tag") {
        "list_by_tag"
    } else if query.contains_key("author") {
        "list_by_author"
    } else if query.contains_key("favorited") {
        "list_by_favorited"
    } else {
        "list_articles"
    };
    mock.bump(name);
    Json(json!({"articles": [], "articlesCount": 0})).into_response()
}

async fn feed(State(mock): State<Shared>, headers: HeaderMap) -> Response {
    let Some(username) = mock.user_of(&headers) else {
        mock.bump("feed_unauthorized");
        return StatusCode::UNAUTHORIZED.into_response();
    };
    mock.bump(&format!("feed:{username}"));
    Json(json!({"articles": [], "articlesCount": 0})).into_response()
}

async fn create_article(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    mock.bump("create_article");
    if mock.user_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let title = body["article"]["title"].as_str().unwrap_or_default();
    let slug = title.to_lowercase().replace(' ', "-");
    mock.slugs.lock().unwrap().insert(slug.clone());
    (
        StatusCode::CREATED,
        Json(json!({"article": {"slug": slug, "title": title}})),
    )
        .into_response()
}

/// Responds with `body` for an article that exists, or with 404.
fn known_article(mock: &Mock, slug: &str, body: Value) -> Response {
    if mock.slugs.lock().unwrap().contains(slug) {
        Json(body).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

async fn get_article(State(mock): State<Shared>, Path(slug): Path<String>) -> Response {
    mock.bump("get_article");
    known_article(&mock, &slug, json!({"article": {"slug": slug}}))
}

async fn get_comments(State(mock): State<Shared>, Path(slug): Path<String>) -> Response {
    mock.bump("get_comments");
    known_article(&mock, &slug, json!({"comments": []}))
}

async fn create_comment(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Response {
    mock.bump("create_comment");
    if mock.user_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    known_article(&mock, &slug, json!({"comment": {"id": 1, "body": "b"}}))
}

async fn favorite(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Response {
    mock.bump("favorite");
    if mock.user_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    known_article(
        &mock,
        &slug,
        json!({"article": {"slug": slug, "favorited": true}}),
    )
}

async fn unfavorite(
    State(mock): State<Shared>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Response {
    mock.bump("unfavorite");
    if mock.user_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    known_article(
        &mock,
        &slug,
        json!({"article": {"slug": slug, "favorited": false}}),
    )
}

async fn tags(State(mock): State<Shared>) -> Response {
    mock.bump("get_tags");
    let call = mock.tags_calls.fetch_add(1, Ordering::Relaxed) + 1;
    if call % TAGS_FAILURE_EVERY == 0 {
        mock.bump("get_tags_503");
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({"tags": ["tag0"]})).into_response()
}

async fn upload(State(mock): State<Shared>, headers: HeaderMap, mut form: Multipart) -> Response {
    mock.bump("upload");
    if mock.user_of(&headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    while let Ok(Some(field)) = form.next_field().await {
        if field.name() == Some("file") && !field.bytes().await.unwrap_or_default().is_empty() {
            let id = mock.next_id.fetch_add(1, Ordering::Relaxed);
            let body = json!({"upload": {"id": id, "status": "pending"}});
            return (StatusCode::ACCEPTED, Json(body)).into_response();
        }
    }
    StatusCode::UNPROCESSABLE_ENTITY.into_response()
}
