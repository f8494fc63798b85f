//! The built web UI: static files with caching headers and compression, and index.html for
//! any other non-API path so client-side routes load the app.

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use std::path::Path;
use tower_http::{
    compression::CompressionLayer,
    services::{ServeDir, ServeFile},
};

pub type Service = Router;

pub fn service(dir: &Path) -> Service {
    let index = dir.join("index.html");
    if !index.is_file() {
        tracing::warn!(dir = %dir.display(), "web UI not built; `/` will answer 404");
        let reason = format!(
            "the web UI is not built: no {} (run `trunk build --release`)\n",
            index.display()
        );
        return Router::new().fallback(move || async move { (StatusCode::NOT_FOUND, reason) });
    }
    let files = ServeDir::new(dir).fallback(ServeFile::new(index));
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_headers))
        .layer(CompressionLayer::new())
}

/// trunk names assets with a content hash, so they never change: cache them for a year. The
/// page itself must be revalidated, or a deploy would keep serving old asset names.
async fn cache_headers(req: Request, next: Next) -> Response {
    let hashed = is_hashed(req.uri().path());
    let mut response = next.run(req).await.into_response();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    let policy = if hashed && !is_html {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    response
}

/// `name-0123456789abcdef.ext` or `name-0123456789abcdef_bg.wasm`, as trunk writes them.
fn is_hashed(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or_default();
    file.split(['-', '.', '_'])
        .any(|part| part.len() >= 16 && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashed_names() {
        assert!(super::is_hashed("/frontend-a1b2c3d4e5f60718_bg.wasm"));
        assert!(super::is_hashed("/styles-0123456789abcdef.css"));
        assert!(!super::is_hashed("/index.html"));
        assert!(!super::is_hashed("/favicon.svg"));
    }
}
