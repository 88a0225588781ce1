//! `GET /media/{digest}/{variant}`: public photo variants. Their URLs are
//! content-addressed and versioned, so every response may be cached forever.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use infinity_jobs::objects::variant_key;

use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::AppState;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub fn router() -> Router<AppState> {
    Router::new().route("/media/{digest}/{variant}", get(serve))
}

/// Parses a variant name such as `v1-640` into its size. Anything else is
/// rejected, so no request can name a path outside the media objects.
fn parse_request(digest: &str, variant: &str) -> Option<u32> {
    let hex = digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let size = variant.strip_prefix(infinity_jobs::objects::PIPELINE_VERSION)?;
    let size = size.strip_prefix('-')?;
    // One spelling per size, so each variant has exactly one URL.
    let canonical = !size.starts_with('0');
    if !hex
        || !canonical
        || size.is_empty()
        || !size.bytes().all(|b| b.is_ascii_digit())
        || size.len() > 5
    {
        return None;
    }
    size.parse().ok()
}

/// Detects the content type from the first bytes (variants are JPEG, PNG or
/// GIF).
fn sniff(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

/// True when an `If-None-Match` list names `etag` (or is `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

async fn serve(
    State(state): State<AppState>,
    Path((digest, variant)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let settings = state.uploads()?;
    let size = parse_request(&digest, &variant).ok_or(ApiError::NotFound("media"))?;
    let bytes = settings
        .objects
        .get(&variant_key(&digest, size))
        .await
        .map_err(|e| ApiError::Internal(format!("reading media failed: {e}")))?
        .ok_or(ApiError::NotFound("media"))?;

    let etag = format!("\"{digest}-{variant}\"");
    let mut response = if none_match(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ranged(&headers, bytes)
    };
    let out = response.headers_mut();
    out.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(response)
}

/// Builds a response with the whole object, or with the one byte range the
/// request names. A range header that does not parse is ignored, as RFC 9110
/// allows, and one that starts past the end is a 416.
fn ranged(headers: &HeaderMap, bytes: Vec<u8>) -> Response {
    let length = bytes.len() as u64;
    let content_type = HeaderValue::from_static(sniff(&bytes));
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http_range_header::parse_range_header(v).ok());
    let Some(range) = range else {
        return ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    };
    match range.validate(length) {
        Ok(ranges) if ranges.len() == 1 => {
            let (start, end) = (*ranges[0].start(), *ranges[0].end());
            let part = bytes[start as usize..=end as usize].to_vec();
            let content_range = format!("bytes {start}-{end}/{length}");
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, content_type),
                    (
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&content_range).expect("ascii"),
                    ),
                ],
                Body::from(part),
            )
                .into_response()
        }
        // Several ranges: the whole object is a valid response, and simpler
        // for every client than a multipart/byteranges body.
        Ok(_) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => {
            let error = ApiError::RangeNotSatisfiable(format!(
                "range: the requested range starts past the end of the {length} bytes"
            ));
            let mut response = error.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{length}")).expect("ascii"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versioned_variant_names_parse() {
        let digest = "ab".repeat(32);
        assert_eq!(parse_request(&digest, "v1-640"), Some(640));
        for bad in [
            "v1-",
            "v2-640",
            "640",
            "v1-64a",
            "v1-../x",
            "v1-1234567",
            "v1-0640",
        ] {
            assert_eq!(parse_request(&digest, bad), None, "{bad:?} accepted");
        }
        assert_eq!(parse_request("../../etc", "v1-640"), None);
        assert_eq!(parse_request(&"AB".repeat(32), "v1-640"), None);
    }

    #[test]
    fn if_none_match_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", \"y\""),
        );
        assert!(none_match(&headers, "\"y\""));
        assert!(!none_match(&headers, "\"z\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(none_match(&headers, "\"z\""));
    }
}
