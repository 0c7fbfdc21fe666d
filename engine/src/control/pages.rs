//! The browser demo pages (`/`, `/publish`, `/watch`, `/room`) and the
//! browser SDK (`/sdk/corecast.js`, its types `/sdk/corecast.d.ts`),
//! embedded in the binary: plain HTML, CSS and ES modules, no build step and
//! nothing fetched from elsewhere. The page code lives in `pages/`.

use std::sync::Arc;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Control;

const INDEX: &str = include_str!("pages/index.html");
const PUBLISH: &str = include_str!("pages/publish.html");
const WATCH: &str = include_str!("pages/watch.html");
const ROOM: &str = include_str!("pages/room.html");
const ROOM_JS: &str = include_str!("pages/room.js");
const SDK_JS: &str = include_str!("pages/corecast.js");
const SDK_DTS: &str = include_str!("pages/corecast.d.ts");
const COMMON_JS: &str = include_str!("pages/common.js");
const STYLE_CSS: &str = include_str!("pages/style.css");

/// The demo pages' routes, merged into the control plane's router.
pub fn routes() -> Router<Arc<Control>> {
    pages()
}

fn pages<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| page(INDEX)))
        .route("/publish", get(|| page(PUBLISH)))
        .route("/watch", get(|| page(WATCH)))
        .route("/room", get(|| page(ROOM)))
        .route(
            "/common.js",
            get(|| asset("text/javascript; charset=utf-8", COMMON_JS)),
        )
        .route(
            "/room.js",
            get(|| asset("text/javascript; charset=utf-8", ROOM_JS)),
        )
        .route(
            "/sdk/corecast.js",
            get(|| asset("text/javascript; charset=utf-8", SDK_JS)),
        )
        .route(
            "/sdk/corecast.d.ts",
            get(|| asset("application/typescript; charset=utf-8", SDK_DTS)),
        )
        .route(
            "/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
}

// `no-cache`: a browser revalidates, so a new binary's pages show at once.
async fn page(html: &'static str) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(html)).into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn serves_each_page_with_its_content_type() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, pages::<()>()).await });
            for (path, ct, needle) in [
                ("/", "text/html", "/api/streams"),
                ("/publish", "text/html", "/whip/"),
                ("/watch", "text/html", "/whep/"),
                ("/room", "text/html", "/room.js"),
                ("/room.js", "text/javascript", "from '/sdk/corecast.js'"),
                (
                    "/sdk/corecast.js",
                    "text/javascript",
                    "export async function connect",
                ),
                (
                    "/sdk/corecast.d.ts",
                    "application/typescript",
                    "export declare function connect",
                ),
                (
                    "/common.js",
                    "text/javascript",
                    "export async function negotiate",
                ),
                ("/style.css", "text/css", ".stats"),
            ] {
                let r = get(addr, path).await.to_ascii_lowercase();
                assert!(r.starts_with("http/1.1 200"), "{path}: {r:.200}");
                assert!(
                    r.contains(&format!("content-type: {ct}")),
                    "{path}: {r:.300}"
                );
                assert!(
                    r.contains(&needle.to_ascii_lowercase()),
                    "{path}: no {needle}"
                );
            }
            assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        });
    }

    /// Everything the pages load comes from this server: no CDN, no
    /// absolute URLs in src, href, import or url().
    #[test]
    fn pages_fetch_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX),
            ("publish.html", PUBLISH),
            ("watch.html", WATCH),
            ("room.html", ROOM),
            ("room.js", ROOM_JS),
            ("corecast.js", SDK_JS),
            ("corecast.d.ts", SDK_DTS),
            ("common.js", COMMON_JS),
            ("style.css", STYLE_CSS),
        ] {
            for bad in [
                "src=\"http",
                "src=\"//",
                "href=\"http",
                "href=\"//",
                "from 'http",
                "from \"http",
                "from '//",
                "url(http",
                "url(//",
                "@import",
            ] {
                assert!(!text.contains(bad), "{name} contains {bad}");
            }
        }
    }
}
