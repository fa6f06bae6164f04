//! "Verify in this browser": a page that checks a proof bundle with `attest`'s verifier
//! compiled to WebAssembly (`attest/wasm`, built by `build.rs`), so a buyer need not trust
//! the server that served the page any more than the file it verifies: the controller key
//! is the one the buyer pins (the field is filled with this controller's, to compare), and
//! EVM anchors are checked against a JSON-RPC node the buyer names, which the browser asks
//! directly. Public, like the evidence it checks.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::page;
use crate::api::ApiState;

/// The verifier module, or nothing when it could not be built.
const WASM: &[u8] = include_bytes!(env!("HELIOSTAT_VERIFIER_WASM"));

/// `GET /console/verifier.wasm`.
pub async fn wasm() -> Response {
    if WASM.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "this controller was built without the in-browser verifier (rustup target add wasm32-unknown-unknown, then rebuild)",
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/wasm"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        WASM,
    )
        .into_response()
}

/// What the page is opened with.
#[derive(Debug, Default, Deserialize)]
pub struct VerifyQuery {
    /// A bundle on this server to load (a path, such as a job's bundle link).
    bundle: Option<String>,
}

/// `GET /verify`.
pub async fn page(State(s): State<ApiState>, Query(q): Query<VerifyQuery>) -> Response {
    let key = attest::hex::encode(&s.controller.public().0);
    let bundle = q
        .bundle
        .filter(|b| b.starts_with("/api/v1/") && !b.contains("//"));
    let body = html! {
        main.verify {
            p { a href="/" { "← Heliostat" } }
            h1 { "Verify a proof bundle in this browser" }
            p {
                "The check runs here, in WebAssembly compiled from the same code as the "
                code { "attest verify" } " command: this server only sent the page. Pin the controller key you got from the operator (the field holds this controller's, "
                "for you to compare), and name a JSON-RPC node you trust to check anchors written on an EVM chain."
            }
            @if WASM.is_empty() {
                p.error role="alert" { "This controller was built without the in-browser verifier. Use " code { "attest verify" } " instead." }
            }
            form #verify-form {
                div.grid {
                    label for="bundle-file" { "Bundle file" }
                    input #bundle-file type="file" accept=".json,.bundle,application/json";
                    label for="bundle-url" { "or a bundle on this server" }
                    input #bundle-url type="text" value=(bundle.clone().unwrap_or_default()) placeholder="/api/v1/devices/hs-.../jobs/.../bundle";
                    label for="controller-key" { "Controller key (hex)" }
                    input #controller-key type="text" value=(key) size="70" spellcheck="false";
                    label for="rpc-url" { "JSON-RPC node (for EVM anchors)" }
                    input #rpc-url type="url" placeholder="http://127.0.0.1:8545";
                    label for="chain-id" { "Chain id (pinned)" }
                    input #chain-id type="number" min="0";
                    label for="contract" { "Anchor contract (pinned)" }
                    input #contract type="text" placeholder="0x...";
                }
                button #verify-button type="submit" { "Verify" }
            }
            section #verify-result aria-live="polite" {}
            noscript { p { "This page needs JavaScript and WebAssembly; without them, use " code { "attest verify" } "." } }
        }
    };
    let mut r = page::bare_with("Verify", body, &["/console/verify.js"]).into_response();
    // The verifier needs WebAssembly compiled in the page, and the node the buyer names is
    // on another origin.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self' http: https:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r
}
