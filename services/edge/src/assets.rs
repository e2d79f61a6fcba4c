//! Static files compiled into the binary: the browser client (`/herald.js`
//! and its types, always served: they are the product's client) and the live
//! calendar demo (`/demo`, dev mode only).
//!
//! `Cache-Control: no-cache` everywhere: browsers revalidate, so a new edge
//! build is picked up on the next load, and the files are small.

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

use crate::state::AppState;

const CLIENT_JS: &str = include_str!("../assets/herald.js");
const CLIENT_TYPES: &str = include_str!("../assets/herald.d.ts");
const DEMO_HTML: &str = include_str!("../assets/demo.html");
const DEMO_CSS: &str = include_str!("../assets/demo.css");
const DEMO_JS: &str = include_str!("../assets/demo.js");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
/// What Deno and other TypeScript tooling expect for a `.d.ts` fetched by URL.
const TYPESCRIPT: &str = "application/typescript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// `GET /herald.js` and `GET /herald.d.ts`.
pub(crate) fn client_routes() -> Router<AppState> {
    Router::new().route("/herald.js", get(client_js)).route(
        "/herald.d.ts",
        get(|| async { asset(TYPESCRIPT, CLIENT_TYPES) }),
    )
}

/// `GET /demo` and the files it loads; dev mode only.
pub(crate) fn demo_routes() -> Router<AppState> {
    Router::new()
        .route("/demo", get(|| async { asset(HTML, DEMO_HTML) }))
        .route("/demo.css", get(|| async { asset(CSS, DEMO_CSS) }))
        .route("/demo.js", get(|| async { asset(JAVASCRIPT, DEMO_JS) }))
}

async fn client_js() -> Response {
    let mut response = asset(JAVASCRIPT, CLIENT_JS);
    // Deno (and editors that follow it) pick the types up from this header.
    response.headers_mut().insert(
        "x-typescript-types",
        header::HeaderValue::from_static("/herald.d.ts"),
    );
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}
