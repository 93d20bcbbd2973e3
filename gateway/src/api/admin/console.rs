//! The operator console's static files, embedded in the binary (no separate server, nothing fetched at run time)
//! and served on the admin listener at `/console`. They hold no data, so they load without the token; the page asks
//! for it and sends it on every admin API call. A strict Content-Security-Policy allows only these same-origin
//! files: no inline script, no inline style, no other origin, no framing.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Sent with every console file.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console/", get(|| async { Redirect::permanent("/console") }))
        .route("/console/console.js", get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/console.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
}
