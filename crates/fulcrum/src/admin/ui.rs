//! The dashboard at `/ui`: one page, its script and its style, compiled into the binary so
//! it works wherever fulcrum runs (no files to install, nothing fetched from the internet).
//! The page itself carries no data — its script reads the admin API like any other client —
//! so it is served without the token; the script asks for the token when the page says one
//! is required, and sends it on every call.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// Where the page tells its script whether the admin API needs a token.
const TOKEN_MARK: &str = "{{token}}";

/// Whether `path` is one of the dashboard's files.
pub fn is_asset(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/ui" | "/ui/app.js" | "/ui/style.css"
    )
}

/// The page and its assets; `None` for a path that is not one of them.
pub fn asset(path: &str, token_required: bool) -> Option<Response<Full<Bytes>>> {
    let (body, content_type) = match path.trim_end_matches('/') {
        "/ui" => {
            let mark = if token_required { "required" } else { "none" };
            (
                Bytes::from(PAGE.replace(TOKEN_MARK, mark)),
                "text/html; charset=utf-8",
            )
        }
        "/ui/app.js" => (
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "/ui/style.css" => (
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page runs only its own script and talks only to this admin API; no other site may
    // frame it (its buttons drain backends).
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_says_whether_a_token_is_needed() {
        for (required, mark) in [(true, "required"), (false, "none")] {
            let response = asset("/ui", required).unwrap();
            let page = String::from_utf8(
                futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                    response.into_body(),
                ))
                .unwrap()
                .unwrap()
                .to_bytes()
                .to_vec(),
            )
            .unwrap();
            assert!(
                page.contains(&format!(r#"<meta name="fulcrum-token" content="{mark}">"#)),
                "{page}"
            );
        }
    }

    #[test]
    fn only_the_dashboard_files_are_served() {
        for path in ["/ui", "/ui/", "/ui/app.js", "/ui/style.css"] {
            assert!(asset(path, false).is_some(), "{path}");
        }
        for path in ["/ui/index.html", "/ui/../metrics", "/uix", "/ui/app.js/x"] {
            assert!(asset(path, false).is_none(), "{path}");
        }
    }
}
