//! The built web UI: static files with caching headers, compression and a strict content
//! security policy, and index.html for any other non-API path so client-side routes load the
//! app.

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use tower_http::{
    compression::CompressionLayer,
    services::{ServeDir, ServeFile},
    set_header::SetResponseHeaderLayer,
};

pub type Service = Router;

/// The body of every answer while `dist/` has no index.html. The path stays in the log.
pub const NOT_BUILT: &str = "the web UI is not built on this server\n";

pub fn service(dir: &Path) -> Service {
    let index = dir.join("index.html");
    let html = if index.is_file() {
        std::fs::read_to_string(&index)
            .inspect_err(
                |e| tracing::warn!(path = %index.display(), error = %e, "cannot read the web UI"),
            )
            .ok()
    } else {
        None
    };
    let Some(html) = html else {
        tracing::warn!(
            path = %index.display(),
            "web UI not built (run `trunk build --release`); `/` will answer 404"
        );
        let router = Router::new().fallback(|| async { (StatusCode::NOT_FOUND, NOT_BUILT) });
        return with_security_headers(router, &content_security_policy(""));
    };
    let csp = content_security_policy(&html);
    tracing::debug!(%csp, "content security policy of the web UI");
    let files = ServeDir::new(dir).fallback(ServeFile::new(index));
    let router = Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_headers))
        .layer(CompressionLayer::new());
    with_security_headers(router, &csp)
}

/// The web UI's responses (not the API's) must not be sniffed into another type, framed, or
/// run scripts from anywhere but this server.
fn with_security_headers(router: Router, csp: &str) -> Router {
    let csp = HeaderValue::from_str(csp).expect("the policy is ASCII without control characters");
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
}

/// A policy the wasm UI works under, and nothing more:
/// - `script-src`: the JS glue from this server, `'wasm-unsafe-eval'` to compile the wasm, and
///   the SHA-256 of each inline script in `index_html`. trunk loads the app with an inline
///   `<script type="module">` (import the glue, call `init`) that `'self'` alone would block;
///   its text names the hashed asset files, so it changes with every build, and the hashes
///   are taken when the server starts: restart it after rebuilding `dist/`.
/// - `style-src 'self'`: the page has one stylesheet file; neither index.html nor the Leptos
///   components use `<style>` or `style=`.
/// - `connect-src 'self'`: the event streams and the POSTs go to this server.
fn content_security_policy(index_html: &str) -> String {
    let mut script_src = String::from("'self' 'wasm-unsafe-eval'");
    for script in inline_scripts(index_html) {
        // Browsers hash the text after normalising line ends, as the HTML parser does.
        let text = script.replace("\r\n", "\n").replace('\r', "\n");
        let digest = Sha256::digest(text.as_bytes());
        script_src.push_str(&format!(" 'sha256-{}'", BASE64.encode(digest)));
    }
    format!(
        "default-src 'self'; script-src {script_src}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
}

/// The text of each `<script>` element without a `src` attribute, in order. A scanner, not a
/// parser: enough for trunk's output, which has no `>` inside attribute values and no
/// `</script` inside a script.
fn inline_scripts(html: &str) -> Vec<&str> {
    let lower = html.to_ascii_lowercase();
    let mut scripts = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<script") {
        let tag_start = at + found;
        let after_name = tag_start + "<script".len();
        at = after_name;
        // `<scripts>` or `<script-x>` is another element.
        if !lower[after_name..].starts_with(|c: char| c == '>' || c.is_ascii_whitespace()) {
            continue;
        }
        let Some(tag_len) = lower[after_name..].find('>') else {
            break;
        };
        let attributes = &lower[after_name..after_name + tag_len];
        let body_start = after_name + tag_len + 1;
        let Some(body_len) = lower[body_start..].find("</script") else {
            break;
        };
        let has_src = attributes
            .split(|c: char| c.is_ascii_whitespace() || c == '/')
            .any(|a| a == "src" || a.starts_with("src="));
        if !has_src {
            scripts.push(&html[body_start..body_start + body_len]);
        }
        at = body_start + body_len;
    }
    scripts
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
    use super::*;

    #[test]
    fn inline_scripts_are_found_and_external_ones_skipped() {
        let html = "<head><script src=\"/a.js\"></script><SCRIPT type=\"module\">\nimport init from '/x.js';\nawait init();\n</SCRIPT>\
                    <scripts>no</scripts><script>one()</script ><script\tdefer src='/b.js'>ignored</script></head>";
        assert_eq!(
            inline_scripts(html),
            ["\nimport init from '/x.js';\nawait init();\n", "one()"]
        );
        assert!(inline_scripts("<script>unterminated").is_empty());
        assert!(inline_scripts("no scripts").is_empty());
    }

    #[test]
    fn policy_lists_each_inline_script_hash() {
        // `printf 'alert(1)' | sha256sum | xxd -r -p | base64`
        let csp = content_security_policy("<body><script>alert(1)</script></body>");
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval' 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=';"),
            "{csp}"
        );
        // CRLF line ends are hashed as the browser sees them, with LF.
        assert_eq!(
            content_security_policy("<script>a\r\nb</script>"),
            content_security_policy("<script>a\nb</script>")
        );
        let bare = content_security_policy("");
        assert_eq!(
            bare,
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'self'"
        );
    }

    #[test]
    fn hashed_names() {
        assert!(super::is_hashed("/frontend-a1b2c3d4e5f60718_bg.wasm"));
        assert!(super::is_hashed("/styles-0123456789abcdef.css"));
        assert!(!super::is_hashed("/index.html"));
        assert!(!super::is_hashed("/favicon.svg"));
    }
}
