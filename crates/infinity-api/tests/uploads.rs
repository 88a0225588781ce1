//! Photo uploads at the service level: real, unusual and hostile files sent
//! through `POST /api/uploads`, the variants an in-process worker makes from
//! them, the `/media` responses that serve those variants, and upload ids
//! in articles and user images.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{assert_error, Reply, TestServer};
use infinity_media::Limits;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

/// Hang guard for one upload request.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

/// Hang guard for an upload to leave the `processing` state.
const READY_BOUND: Duration = Duration::from_secs(300);

/// Hostile files that the decoders read to the end anyway: a PNG whose zlib
/// Adler-32 checksum is wrong, a JPEG with junk bytes after a scan, and a
/// JPEG with an unreadable EXIF block. Their variants are re-encoded from
/// pixels, so accepting them stores nothing of the damage.
const TOLERATED_HOSTILE: [&str; 3] = [
    "badadler.png",
    "extraneous-bytes-after-sos.jpg",
    "invalid-exif.jpg",
];

fn testdata(folder: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(PathBuf::from(TESTDATA).join(folder))
        .unwrap_or_else(|e| panic!("cannot list {TESTDATA}/{folder}: {e}"))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn read(folder: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(TESTDATA).join(folder).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Returns the content type a browser would send for `name`, from its
/// extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        _ => "application/octet-stream",
    }
}

/// Uploads `bytes` with a hang guard.
async fn upload(server: &TestServer, token: &str, name: &str, bytes: Vec<u8>) -> Reply {
    let sent = server.upload(Some(token), name, content_type(name), bytes);
    tokio::time::timeout(REQUEST_BOUND, sent)
        .await
        .unwrap_or_else(|_| panic!("uploading {name} took longer than {REQUEST_BOUND:?}"))
}

/// Uploads a file that must be accepted and returns its id.
async fn accepted(server: &TestServer, token: &str, name: &str, bytes: Vec<u8>) -> i64 {
    let reply = upload(server, token, name, bytes).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{name}: {}", reply.body);
    reply.body["upload"]["id"].as_i64().unwrap()
}

/// Polls `GET /api/uploads/{id}` until the upload leaves `processing`.
async fn settled(server: &TestServer, token: &str, id: i64) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        let reply = server.get(&format!("/uploads/{id}"), Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let upload = reply.body["upload"].clone();
        if upload["status"] != "processing" {
            return upload;
        }
        assert!(
            started.elapsed() < READY_BOUND,
            "upload {id} still processing after {READY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a GET or HEAD to a media path, with extra headers.
async fn media(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .await
        .expect("media request reaches the server");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap().to_vec();
    (status, headers, bytes)
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

/// What an upload leaves behind: rows in `uploads`, jobs of any state and
/// original objects.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    uploads: i64,
    jobs: u64,
    originals: usize,
}

async fn stored(server: &TestServer) -> Stored {
    let uploads = server.count_rows("uploads").await;
    let jobs = server
        .jobs
        .counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, count)| count)
        .sum();
    Stored {
        uploads,
        jobs,
        originals: count_files(&server.data_dir().join("objects/originals")),
    }
}

/// Counts the files below `folder`, temporary ones included; 0 when it
/// does not exist.
fn count_files(folder: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                count_files(&path)
            } else {
                1
            }
        })
        .sum()
}

/// Asserts that a rejection is a 413, 415 or 422 with at least one message.
fn assert_rejected(name: &str, reply: &Reply) {
    let status = reply.status.as_u16();
    assert!(
        matches!(status, 413 | 415 | 422),
        "{name}: status {status}, body {}",
        reply.body
    );
    let messages = reply.body["errors"]["body"]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no errors.body in {}", reply.body));
    assert!(!messages.is_empty(), "{name}: no message");
    assert!(
        messages[0].as_str().unwrap().starts_with("file: "),
        "{name}: {messages:?}"
    );
}

/// Checks a ready upload's variants by fetching and decoding each one.
async fn check_variants(server: &TestServer, name: &str, upload: &Value) {
    let (width, height) = (
        upload["width"].as_u64().unwrap() as u32,
        upload["height"].as_u64().unwrap() as u32,
    );
    let variants = upload["variants"].as_array().unwrap();
    let sizes: Vec<u64> = variants
        .iter()
        .map(|v| v["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1280, 640, 160], "{name}");
    for variant in variants {
        let size = variant["size"].as_u64().unwrap() as u32;
        let url = variant["url"].as_str().unwrap();
        let (status, headers, bytes) = media(server, Method::GET, url, &[]).await;
        assert_eq!(status, StatusCode::OK, "{name} {url}");
        let mime = variant["mime"].as_str().unwrap();
        assert_eq!(
            header_text(&headers, header::CONTENT_TYPE),
            mime,
            "{name} {url}"
        );

        let decoded = image::load_from_memory(&bytes)
            .unwrap_or_else(|e| panic!("{name} {url} does not decode: {e}"));
        let reported = (
            variant["width"].as_u64().unwrap() as u32,
            variant["height"].as_u64().unwrap() as u32,
        );
        assert_eq!(
            (decoded.width(), decoded.height()),
            reported,
            "{name} {url}"
        );
        let longest = reported.0.max(reported.1);
        assert!(longest <= size, "{name} {url}: {reported:?} is over {size}");
        assert!(
            longest <= width.max(height),
            "{name} {url}: {reported:?} enlarges {width}x{height}"
        );
        // Orientation is applied, so a variant keeps the displayed aspect.
        assert_eq!(
            reported.0 >= reported.1,
            width >= height,
            "{name} {url}: {reported:?} turned {width}x{height}"
        );
        if mime == "image/jpeg" {
            assert!(
                !bytes.windows(6).any(|w| w == b"Exif\0\0"),
                "{name} {url} keeps an EXIF block"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_photos_become_clean_variants() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let _worker = server.start_media_worker();
    let token = server.register("ada").await;

    let mut ids = Vec::new();
    for (name, bytes) in testdata("images") {
        let reply = upload(&server, &token, &name, bytes).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{name}: {}", reply.body);
        let upload = &reply.body["upload"];
        assert_eq!(upload["status"], "processing", "{name}");
        assert!(upload["width"].as_u64().unwrap() > 0, "{name}");
        assert!(upload["height"].as_u64().unwrap() > 0, "{name}");
        assert_eq!(upload["error"], "", "{name}");
        common::assert_timestamp(&upload["createdAt"]);
        for variant in upload["variants"].as_array().unwrap() {
            assert!(
                variant["url"].as_str().unwrap().starts_with("/media/"),
                "{name}"
            );
            assert!(variant.get("width").is_none(), "{name}: {variant}");
        }
        ids.push((name, upload["id"].as_i64().unwrap()));
    }

    for (name, id) in &ids {
        let upload = settled(&server, &token, *id).await;
        assert_eq!(upload["status"], "ready", "{name}: {upload}");
        check_variants(&server, name, &upload).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animated_gif_stays_animated() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let _worker = server.start_media_worker();
    let token = server.register("ada").await;

    let id = accepted(&server, &token, "iss634.gif", read("images", "iss634.gif")).await;
    let upload = settled(&server, &token, id).await;
    assert_eq!(upload["status"], "ready");
    assert_eq!(upload["format"], "GIF");
    assert_eq!(upload["animated"], true);
    assert_eq!(upload["note"], "", "the variants keep every frame");
    for variant in upload["variants"].as_array().unwrap() {
        assert_eq!(variant["mime"], "image/gif", "{variant}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_files_ready_or_named() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let _worker = server.start_media_worker();
    let token = server.register("ada").await;

    let mut seen = 0;
    for (name, bytes) in testdata("unusual") {
        seen += 1;
        let reply = upload(&server, &token, &name, bytes).await;
        if name == "testimgari.jpg" {
            assert_error(&reply, 422, "arithmetic JPEG coding");
            continue;
        }
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{name}: {}", reply.body);
        let upload = settled(
            &server,
            &token,
            reply.body["upload"]["id"].as_i64().unwrap(),
        )
        .await;
        assert_eq!(upload["status"], "ready", "{name}: {upload}");
        check_variants(&server, &name, &upload).await;
    }
    assert_eq!(seen, 6, "a file in unusual/ has no expected outcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_rejected_storing_nothing() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let token = server.register("ada").await;
    let before = stored(&server).await;

    let mut rejected = 0;
    for (name, bytes) in testdata("hostile") {
        if TOLERATED_HOSTILE.contains(&name.as_str()) {
            continue;
        }
        let reply = upload(&server, &token, &name, bytes).await;
        assert_rejected(&name, &reply);
        rejected += 1;
    }
    assert_eq!(rejected, 38);
    assert_eq!(stored(&server).await, before);

    let tags = server.get("/tags", None).await;
    assert_eq!(tags.status, StatusCode::OK, "the server still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerated_hostile_files_become_clean() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let _worker = server.start_media_worker();
    let token = server.register("ada").await;

    for name in TOLERATED_HOSTILE {
        let id = accepted(&server, &token, name, read("hostile", name)).await;
        let upload = settled(&server, &token, id).await;
        assert_eq!(upload["status"], "ready", "{name}: {upload}");
        check_variants(&server, name, &upload).await;
    }
}

#[tokio::test]
async fn generated_rejections_store_nothing() {
    let limits = Limits {
        max_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start_with_uploads(limits).await;
    let token = server.register("ada").await;
    let before = stored(&server).await;

    let empty = upload(&server, &token, "empty.jpg", Vec::new()).await;
    assert_error(&empty, 422, "the file is empty");

    let mut heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    heic.resize(4096, 0);
    let heic = upload(&server, &token, "photo.heic", heic).await;
    assert_error(&heic, 415, "HEIC images are not supported");

    // Just over the limit: the image check rejects the file.
    let mut over = read("images", "flower.jpg");
    over.resize(64 * 1024 + 1, 0);
    let over = upload(&server, &token, "over.jpg", over).await;
    assert_error(&over, 413, "more than the limit of 65536 bytes");

    // Far over the limit: the request body limit stops the upload.
    let far_over = upload(&server, &token, "far.jpg", read("images", "rocket.jpg")).await;
    assert_eq!(
        far_over.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        far_over.body
    );
    assert_rejected("rocket.jpg", &far_over);

    let text = reqwest::multipart::Form::new().text("caption", "no file here");
    let missing = server.upload_form(Some(&token), text).await;
    assert_error(&missing, 422, "no field named file");

    let not_multipart = server
        .call(
            Method::POST,
            "/uploads",
            Some(&token),
            Some(json!({"file": "x"})),
        )
        .await;
    assert_error(&not_multipart, 422, "body: ");

    assert_eq!(stored(&server).await, before);
}

#[tokio::test]
async fn content_decides_the_format() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let token = server.register("ada").await;

    let png = read("images", "chelsea.png");
    let reply = server
        .upload(Some(&token), "x.jpg", "image/jpeg", png)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["upload"]["format"], "PNG");
    assert_eq!(reply.body["upload"]["width"], 451);
    assert_eq!(reply.body["upload"]["height"], 300);
}

#[tokio::test]
async fn uploads_need_a_token_and_the_owner() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let ada = server.register("ada").await;
    let bob = server.register("bob").await;
    let before = stored(&server).await;

    let anonymous = server
        .upload(
            None,
            "flower.jpg",
            "image/jpeg",
            read("images", "flower.jpg"),
        )
        .await;
    assert_error(&anonymous, 401, "");
    assert_eq!(stored(&server).await, before);

    let id = accepted(&server, &ada, "flower.jpg", read("images", "flower.jpg")).await;
    let own = server.get(&format!("/uploads/{id}"), Some(&ada)).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["upload"]["id"], id);

    let other = server.get(&format!("/uploads/{id}"), Some(&bob)).await;
    assert_error(&other, 404, "upload not found");
    let unknown = server
        .get(&format!("/uploads/{}", id + 1), Some(&ada))
        .await;
    assert_error(&unknown, 404, "upload not found");
    let no_token = server.get(&format!("/uploads/{id}"), None).await;
    assert_error(&no_token, 401, "");
    let not_an_id = server.get("/uploads/abc", Some(&ada)).await;
    assert_eq!(not_an_id.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn same_bytes_twice_share_one_original() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let token = server.register("ada").await;

    let first = accepted(&server, &token, "flower.jpg", read("images", "flower.jpg")).await;
    let second = accepted(&server, &token, "flower.jpg", read("images", "flower.jpg")).await;
    assert_ne!(first, second);
    let now = stored(&server).await;
    assert_eq!(now.originals, 1);
    assert_eq!(now.uploads, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_responses_cache_and_range() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let _worker = server.start_media_worker();
    let token = server.register("ada").await;
    let id = accepted(&server, &token, "flower.jpg", read("images", "flower.jpg")).await;
    let upload = settled(&server, &token, id).await;
    assert_eq!(upload["status"], "ready", "{upload}");
    let url = upload["variants"][2]["url"].as_str().unwrap().to_string();
    assert!(url.ends_with("/v1-160"), "{url}");

    let (status, headers, bytes) = media(&server, Method::GET, &url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let length = bytes.len();
    assert!(length > 10);
    assert_eq!(
        header_text(&headers, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header_text(&headers, header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(header_text(&headers, header::ACCEPT_RANGES), "bytes");
    let etag = header_text(&headers, header::ETAG).to_string();
    assert!(etag.starts_with('"'), "{etag} is not a strong ETag");
    assert!(etag.ends_with('"'), "{etag} is not a strong ETag");

    let (status, cached, body) = media(
        &server,
        Method::GET,
        &url,
        &[("If-None-Match", etag.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(header_text(&cached, header::ETAG), etag);
    assert!(body.is_empty());
    let (status, _, _) = media(
        &server,
        Method::GET,
        &url,
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, head, body) = media(&server, Method::HEAD, &url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(header_text(&head, header::ETAG), etag);
    assert_eq!(
        header_text(&head, header::CONTENT_LENGTH),
        length.to_string()
    );
    assert_eq!(
        header_text(&head, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );

    let (status, ranged, part) = media(&server, Method::GET, &url, &[("Range", "bytes=0-9")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header_text(&ranged, header::CONTENT_RANGE),
        format!("bytes 0-9/{length}")
    );
    assert_eq!(part, bytes[..10]);

    let past_end = format!("bytes={length}-");
    let (status, unsatisfiable, _) =
        media(&server, Method::GET, &url, &[("Range", past_end.as_str())]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header_text(&unsatisfiable, header::CONTENT_RANGE),
        format!("bytes */{length}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_paths_cannot_escape() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let token = server.register("ada").await;
    let reply = upload(&server, &token, "flower.jpg", read("images", "flower.jpg")).await;
    let url = reply.body["upload"]["variants"][0]["url"].as_str().unwrap();
    let digest = url.split('/').nth(2).unwrap().to_string();
    assert_eq!(digest.len(), 64);
    let prefix = &digest[..2];

    let attempts = [
        format!("/media/{}/v1-160", "0".repeat(64)),
        "/media/..%2f..%2fetc/v1-160".to_string(),
        "/media/..%2F..%2F..%2Fetc%2Fpasswd/v1-160".to_string(),
        format!("/media/{}/v1-160", digest.to_uppercase()),
        format!("/media/{digest}/v1-../"),
        format!("/media/{digest}/v1-..%2f..%2f..%2foriginals%2f{prefix}%2f{digest}"),
        format!("/media/..%2foriginals%2f{prefix}/{digest}"),
        // No worker runs here, so only the private original exists.
        format!("/media/{digest}/v1-1280"),
    ];
    for path in attempts {
        let (status, headers, body) = media(&server, Method::GET, &path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            header_text(&headers, header::CONTENT_TYPE),
            "application/json",
            "{path}"
        );
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(error["errors"]["body"].is_array(), "{path}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_images_answer_with_urls() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let ada = server.register("ada").await;
    let bob = server.register("bob").await;
    let reply = upload(&server, &ada, "flower.jpg", read("images", "flower.jpg")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let upload = reply.body["upload"].clone();
    let id = upload["id"].as_i64().unwrap();
    let url_of = |index: usize| upload["variants"][index]["url"].clone();

    let created = server
        .post(
            "/articles",
            Some(&ada),
            json!({"article": {"title": "Flowers", "description": "d", "body": "b", "images": [id, id]}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let images = created.body["article"]["images"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(images.len(), 1, "a repeated id shows once: {images:?}");
    assert_eq!(images[0]["id"], id);
    assert_eq!(images[0]["width"], upload["width"]);
    assert_eq!(images[0]["height"], upload["height"]);
    assert_eq!(images[0]["urls"]["1280"], url_of(0));
    assert_eq!(images[0]["urls"]["640"], url_of(1));
    assert_eq!(images[0]["urls"]["160"], url_of(2));

    let slug = created.body["article"]["slug"]
        .as_str()
        .unwrap()
        .to_string();
    let fetched = server.get(&format!("/articles/{slug}"), None).await;
    assert_eq!(fetched.body["article"]["images"], json!(images));

    let cleared = server
        .put(
            &format!("/articles/{slug}"),
            Some(&ada),
            json!({"article": {"images": []}}),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    assert!(
        cleared.body["article"].get("images").is_none(),
        "{}",
        cleared.body
    );

    let restored = server
        .put(
            &format!("/articles/{slug}"),
            Some(&ada),
            json!({"article": {"images": [id]}}),
        )
        .await;
    assert_eq!(restored.body["article"]["images"], json!(images));

    let stolen = server
        .post(
            "/articles",
            Some(&bob),
            json!({"article": {"title": "Mine", "description": "d", "body": "b", "images": [id]}}),
        )
        .await;
    assert_error(
        &stolen,
        422,
        &format!("upload {id} not found among your uploads"),
    );
}

#[tokio::test]
async fn user_image_from_an_upload() {
    let server = TestServer::start_with_uploads(Limits::default()).await;
    let ada = server.register("ada").await;
    let bob = server.register("bob").await;
    let id = accepted(&server, &ada, "flower.jpg", read("images", "flower.jpg")).await;
    let status = server.get(&format!("/uploads/{id}"), Some(&ada)).await;
    let avatar = status.body["upload"]["variants"][1]["url"].clone();
    assert!(avatar.as_str().unwrap().ends_with("/v1-640"), "{avatar}");

    let updated = server
        .put(
            "/user",
            Some(&ada),
            json!({"user": {"image": id.to_string()}}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["user"]["image"], avatar);
    let profile = server.get("/profiles/ada", None).await;
    assert_eq!(profile.body["profile"]["image"], avatar);

    let stolen = server
        .put(
            "/user",
            Some(&bob),
            json!({"user": {"image": id.to_string()}}),
        )
        .await;
    assert_error(
        &stolen,
        422,
        &format!("upload {id} not found among your uploads"),
    );
}
