//! `GET /api/v1/openapi.json`: the API described as OpenAPI 3.1, generated from one table of
//! the routes below (method, path, scope, parameters, what goes in and out). The table is
//! checked against the router by tests: every route it names answers (no `no_such_route`,
//! no `method_not_allowed`), and every path the router serves is in it, so the document
//! cannot drift from the handlers. Bodies are described in words and as JSON objects (the
//! handlers build their JSON with `serde_json`, not typed schemas): a gap recorded in the
//! notes.

use axum::Json;
use serde_json::{Map, Value, json};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A token with this scope.
    Scope(&'static str),
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// `get`, `post`, `put`, `delete`.
    pub method: &'static str,
    /// The path, with `{name}` parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does.
    pub summary: &'static str,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// The request body, in words (`None`: none).
    pub body: Option<&'static str>,
}

use Access::{Public, Scope};

const fn op(method: &'static str, path: &'static str, access: Access, summary: &'static str) -> Op {
    Op {
        method,
        path,
        access,
        summary,
        query: &[],
        body: None,
    }
}

const PERIOD: &[(&str, &str)] = &[
    ("from", "start, ms since the Unix epoch"),
    ("to", "end, ms since the Unix epoch"),
];

/// Every operation of the API.
pub const OPS: &[Op] = &[
    op(
        "get",
        "/api/v1/status",
        Public,
        "Messages stored and rejected by reason since the controller started",
    ),
    op(
        "get",
        "/api/v1/devices",
        Public,
        "Every device: state, last seen, messages, site, channels, hardware, tags",
    ),
    op("get", "/api/v1/devices/{id}", Public, "One device"),
    Op {
        query: &[
            ("from", "start, ms"),
            ("to", "end, ms"),
            ("format", "json or postcard"),
        ],
        ..op(
            "get",
            "/api/v1/devices/{id}/bundle",
            Public,
            "A proof bundle of the device's anchored records over a period",
        )
    },
    Op {
        query: &[("format", "json or postcard")],
        ..op(
            "get",
            "/api/v1/devices/{id}/jobs/{job}/bundle",
            Public,
            "A job's proof bundle: its receipt and the records over its hours",
        )
    },
    Op {
        query: PERIOD,
        ..op(
            "get",
            "/api/v1/devices/{id}/hours",
            Public,
            "Hour-by-hour energy by source, renewable share and emissions of a device",
        )
    },
    Op {
        body: Some("{devices: [id], action: approve|revoke|tag|untag, tag?}"),
        ..op(
            "post",
            "/api/v1/devices/bulk",
            Scope("operate"),
            "One action on many devices",
        )
    },
    op(
        "post",
        "/api/v1/devices/{id}/approve",
        Scope("operate"),
        "Approve a device",
    ),
    op(
        "post",
        "/api/v1/devices/{id}/revoke",
        Scope("operate"),
        "Revoke a device",
    ),
    Op {
        body: Some("{provider: account id or null}"),
        ..op(
            "post",
            "/api/v1/devices/{id}/provider",
            Scope("operate"),
            "Say which provider runs a device",
        )
    },
    Op {
        query: PERIOD,
        ..op(
            "get",
            "/api/v1/fleet/hours",
            Public,
            "The approved devices' hours summed per hour (at most 31 days)",
        )
    },
    Op {
        query: &[
            (
                "after",
                "cursor: epochs numbered above this (the X-Next-Cursor of the previous page)",
            ),
            ("limit", "most epochs (default and at most 1000)"),
            ("newest", "true: the newest `limit` epochs"),
        ],
        ..op(
            "get",
            "/api/v1/epochs",
            Public,
            "Closed epochs, oldest first, with their roots, local anchors and EVM anchors",
        )
    },
    op("get", "/metrics", Public, "Prometheus text exposition"),
    op("get", "/api/v1/openapi.json", Public, "This document"),
    op(
        "get",
        "/api/v1/account",
        Scope("read"),
        "The caller's account, token scopes and blob usage",
    ),
    op(
        "get",
        "/api/v1/account/balance",
        Scope("read"),
        "Available, escrowed and staked credits",
    ),
    Op {
        query: &[
            ("limit", "most transactions (default 100, at most 1000)"),
            (
                "before",
                "cursor: only transactions older than this id (the X-Next-Cursor of the previous page)",
            ),
        ],
        ..op(
            "get",
            "/api/v1/account/ledger",
            Scope("read"),
            "Transactions touching the caller's wallet or its jobs' escrow, newest first",
        )
    },
    op(
        "get",
        "/api/v1/account/statement",
        Scope("read"),
        "The caller's statement of account with proofs (attest verify-account)",
    ),
    Op {
        body: Some("{amount}"),
        ..op(
            "post",
            "/api/v1/account/stake",
            Scope("submit"),
            "Stake credits (providers)",
        )
    },
    Op {
        body: Some("{daily_micro: n or null}"),
        ..op(
            "put",
            "/api/v1/account/spend-cap",
            Scope("submit"),
            "The caller's spend cap: the most its jobs may escrow over 24 h",
        )
    },
    Op {
        body: Some("{address: 0x...}"),
        ..op(
            "put",
            "/api/v1/account/payout-address",
            Scope("submit"),
            "The EVM address settlements pay",
        )
    },
    op(
        "get",
        "/api/v1/account/settlements",
        Scope("read"),
        "The caller's settlement payouts",
    ),
    op(
        "get",
        "/api/v1/settlements",
        Scope("operate"),
        "Settlement rounds",
    ),
    op(
        "post",
        "/api/v1/settlements",
        Scope("operate"),
        "Make a settlement round now",
    ),
    Op {
        body: Some("{amount, memo}"),
        ..op(
            "post",
            "/api/v1/accounts/{id}/credits",
            Scope("operate"),
            "Deposit credits into an account",
        )
    },
    op("get", "/api/v1/accounts", Scope("operate"), "Every account"),
    Op {
        body: Some("{kind, name, quota_bytes?, scopes?, label?}"),
        ..op(
            "post",
            "/api/v1/accounts",
            Scope("operate"),
            "Make an account and its first token",
        )
    },
    Op {
        body: Some("{scopes?, label?}"),
        ..op(
            "post",
            "/api/v1/accounts/{id}/tokens",
            Scope("operate"),
            "Another token for an account",
        )
    },
    op(
        "post",
        "/api/v1/tokens/{id}/revoke",
        Scope("operate"),
        "Revoke a token",
    ),
    op(
        "get",
        "/api/v1/enrollment-tokens",
        Scope("operate"),
        "Enrollment tokens (never their secrets)",
    ),
    Op {
        body: Some("{label, uses, expires_in_s}"),
        ..op(
            "post",
            "/api/v1/enrollment-tokens",
            Scope("operate"),
            "Make an enrollment token",
        )
    },
    op(
        "post",
        "/api/v1/enrollment-tokens/{id}/revoke",
        Scope("operate"),
        "Revoke an enrollment token",
    ),
    Op {
        body: Some("{token, hello: signed hello envelope, hex}"),
        ..op(
            "post",
            "/api/v1/enrollments",
            Public,
            "A device redeems an enrollment token (the token is the credential)",
        )
    },
    op(
        "get",
        "/api/v1/blobs",
        Scope("read"),
        "The caller's blobs and quota",
    ),
    Op {
        body: Some("the blob's bytes (streamed; must hash to the path's SHA-256)"),
        ..op(
            "put",
            "/api/v1/blobs/{sha256}",
            Scope("submit"),
            "Upload a blob",
        )
    },
    op(
        "get",
        "/api/v1/blobs/{sha256}",
        Scope("read"),
        "Download a blob the caller may read",
    ),
    op(
        "delete",
        "/api/v1/blobs/{sha256}",
        Scope("submit"),
        "Give a blob up",
    ),
    Op {
        query: &[
            ("gpu", "GPU model contains"),
            ("vram_min_mib", "least GPU memory"),
            ("renewable_now_min", "least renewable share now, 0..1"),
            ("online", "true: online only"),
            ("sort", "price, renewable or runway"),
            ("load_w", "the job's draw for the runway"),
            (
                "q",
                "the search language: gpu:orin vram>=8000 cuda>=8.7 price<=0.5 renewable>=80 runway>=4 reputation>=0.6 region:DE online sort:price (the other fields then unread)",
            ),
        ],
        ..op(
            "get",
            "/api/v1/market",
            Public,
            "The approved devices' offers with live power, runway, reputation",
        )
    },
    Op {
        query: &[
            (
                "before",
                "entries numbered below this one (the next of the page before)",
            ),
            ("limit", "most entries (default 100, at most 1000)"),
        ],
        ..op(
            "get",
            "/api/v1/audit",
            Scope("operate"),
            "The audit log of operator actions, newest first",
        )
    },
    op(
        "get",
        "/api/v1/alerts",
        Scope("operate"),
        "Alert states, latest events with delivery, silences",
    ),
    Op {
        body: Some("{rule?, subject?, hours, reason}"),
        ..op(
            "post",
            "/api/v1/alerts/silences",
            Scope("operate"),
            "Silence alerts",
        )
    },
    op(
        "post",
        "/api/v1/alerts/silences/{id}/end",
        Scope("operate"),
        "End a silence",
    ),
    Op {
        query: &[
            ("limit", "most jobs (default 100, at most 1000)"),
            (
                "before",
                "cursor: jobs older than this one (the X-Next-Cursor of the previous page)",
            ),
        ],
        ..op(
            "get",
            "/api/v1/jobs",
            Scope("read"),
            "The caller's jobs, newest first",
        )
    },
    Op {
        body: Some(
            "{workload, inputs, deadline_ms, max_price_micro_per_gpu_hour, carbon?, flexible?, redundancy?, hardware?, max_energy_mj?, max_duration_ms?, output_sizes?}",
        ),
        ..op("post", "/api/v1/jobs", Scope("submit"), "Submit a job")
    },
    Op {
        body: Some(
            "{max_price_micro_per_gpu_hour, max_duration_ms?, hardware?} (a job request as submitted is accepted)",
        ),
        ..op(
            "post",
            "/api/v1/jobs/estimate",
            Scope("read"),
            "Price and carbon at each fitting online offer, before submitting",
        )
    },
    op(
        "get",
        "/api/v1/jobs/{id}",
        Scope("read"),
        "A job with its order, device spec and history",
    ),
    op(
        "post",
        "/api/v1/jobs/{id}/cancel",
        Scope("submit"),
        "Cancel a job",
    ),
    Op {
        query: &[
            ("after", "events after this seq"),
            ("wait_ms", "long poll, at most 30000"),
            ("progress_after", "progress newer than this at_ms"),
        ],
        ..op(
            "get",
            "/api/v1/jobs/{id}/events",
            Scope("read"),
            "A job's events and progress (long poll)",
        )
    },
    op(
        "get",
        "/api/v1/jobs/{id}/results",
        Scope("read"),
        "A job's outputs by hash",
    ),
    Op {
        body: Some("the output's bytes"),
        ..op(
            "put",
            "/api/v1/jobs/{id}/outputs/{index}",
            Scope("read"),
            "A provider's device uploads an output",
        )
    },
    Op {
        body: Some("{certificate, hour, device?}"),
        ..op(
            "post",
            "/api/v1/jobs/{id}/retirements",
            Scope("submit"),
            "Retire a certificate for a job's hour",
        )
    },
    Op {
        query: &[("device", "which run's device")],
        ..op(
            "get",
            "/api/v1/jobs/{id}/emissions",
            Scope("read"),
            "A done job's measured and covered emissions",
        )
    },
    op(
        "get",
        "/api/v1/certificates",
        Scope("read"),
        "The caller's energy attribute certificates",
    ),
    Op {
        body: Some("{account, certificates: [...]}"),
        ..op(
            "post",
            "/api/v1/certificates",
            Scope("operate"),
            "Import certificates for an account",
        )
    },
];

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in OPS {
        let mut params: Vec<Value> = o
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(o.query.iter().map(|(name, d)| json!({"name": name, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})));
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '-', '.'], "_")),
            "tags": [o.path.split('/').nth(3).unwrap_or("metrics")],
            "parameters": params,
            "responses": {
                "200": {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Scope(scope) = o.access {
            operation["security"] = json!([{"token": [scope]}]);
            operation["description"] = json!(format!("Needs a token with the `{scope}` scope."));
        } else {
            operation["security"] = json!([]);
        }
        if let Some(b) = o.body {
            let binary = b.starts_with("the ");
            let media = if binary {
                "application/octet-stream"
            } else {
                "application/json"
            };
            operation["requestBody"] = json!({"required": true, "description": b, "content": {media: {"schema": {"type": if binary { "string" } else { "object" }}}}});
        }
        paths
            .entry(o.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(o.method.to_string(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Heliostat fleet controller",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Signed solar power evidence, carbon accounting, jobs and credits. Errors are JSON {reason, message} with a stable reason.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "description": "an API token, hst_..."}},
            "schemas": {"Error": {"type": "object", "required": ["reason", "message"], "properties": {"reason": {"type": "string"}, "message": {"type": "string"}}}},
        },
    })
}

/// `GET /api/v1/openapi.json`.
pub(super) async fn openapi() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    /// The paths `api/mod.rs` gives the router, read from its source.
    fn routed_paths() -> Vec<String> {
        let src = include_str!("mod.rs");
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + 7..];
            let q = rest.find('"').unwrap();
            let end = rest[q + 1..].find('"').unwrap();
            out.push(rest[q + 1..q + 1 + end].to_string());
        }
        out
    }

    #[test]
    fn every_routed_path_is_documented_and_every_documented_one_is_routed() {
        let routed = routed_paths();
        assert!(routed.len() > 40, "{routed:?}");
        for p in &routed {
            assert!(
                OPS.iter().any(|o| o.path == p),
                "{p} is routed but not in the OpenAPI table"
            );
        }
        for o in OPS {
            assert!(
                routed.iter().any(|p| p == o.path),
                "{} is documented but not routed",
                o.path
            );
        }
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(
            doc["paths"]["/api/v1/jobs"]["post"]["security"][0]["token"][0],
            "submit"
        );
        assert_eq!(
            doc["paths"]["/api/v1/jobs/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
    }

    #[tokio::test]
    async fn every_documented_operation_reaches_a_handler() {
        let dir = std::env::temp_dir().join(format!("openapi-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = super::super::ApiState::new(
            std::sync::Arc::new(crate::store::pool::SqlitePool::new(dir.join("c.db"))),
            dir.join("status.json"),
            std::sync::Arc::new(attest::KeyPair::from_seed(&[1; 32])),
            std::sync::Arc::new(crate::intensity::IntensityResolver::bundled(None).unwrap()),
            dir.join("blobs"),
        );
        let app = super::super::app(state);
        for o in OPS {
            let path = o
                .path
                .replace("{id}", "hs-0000000000000000000000000")
                .replace("{job}", "00000000000000000000000000000000")
                .replace("{sha256}", &"0".repeat(64))
                .replace("{index}", "0");
            let req = Request::builder()
                .method(o.method.to_uppercase().as_str())
                .uri(&path)
                .body(Body::empty())
                .unwrap();
            let r = app.clone().oneshot(req).await.unwrap();
            let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("no_such_route") && !text.contains("method_not_allowed"),
                "{} {}: {text}",
                o.method,
                o.path
            );
        }
    }
}
