//! The market's REST side over real HTTP: the controller's API served on a loopback socket
//! over a real SQLite file, the first operator made by the real `fleet-controller account
//! create` command, requests written by hand on a plain socket. Each test asserts status
//! codes, JSON `reason`s and what the database and the blob folder hold afterwards.

use std::path::PathBuf;
use std::sync::Arc;

use attest::Hash32;
use fleet_controller::api::{ApiLimits, ApiState, app};
use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::blobs::BlobStore;
use fleet_controller::store::pool::SqlitePool;
use hil_tests::{HttpResponse, TempDir, http_with};
use serde_json::{Value, json};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

/// Largest blob the tests' API takes.
const MAX_BLOB: u64 = 64 << 10;

/// A controller's API on a free loopback port, with its data folder; stopped when dropped.
/// Micro-credits each buyer gets.
const BUYER_CREDITS: u64 = 1_000_000_000;

struct Api {
    port: u16,
    cfg: ControllerConfig,
    config_file: PathBuf,
    operator: String,
    pool: Arc<SqlitePool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _tmp: TempDir,
}

impl Api {
    fn start(name: &str) -> Api {
        let tmp = TempDir::new(name);
        let mut cfg =
            ControllerConfig::new(tmp.path().join("data"), BrokerConfig::new("127.0.0.1"));
        cfg.api.max_blob_bytes = MAX_BLOB;
        cfg.api.default_quota_bytes = 1 << 20;
        let config_file = tmp.path().join("controller.toml");
        cfg.write_toml(&config_file).unwrap();
        // The first operator: made on the controller's machine, its token printed once.
        let out = std::process::Command::new(CONTROLLER)
            .args(["--config", config_file.to_str().unwrap()])
            .args(["account", "create", "--kind", "operator", "--name", "ops"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let operator = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(
            operator.starts_with("hst_") && operator.len() == 68,
            "{operator:?}"
        );

        let pool = Arc::new(SqlitePool::new(cfg.db_path()));
        let key = attest::keyfile::load_or_create(&cfg.key_path()).unwrap().0;
        let state = ApiState {
            limits: ApiLimits::from(&cfg.api),
            ..ApiState::new(
                pool.clone(),
                cfg.data_dir.join("status.json"),
                Arc::new(key),
                Arc::new(fleet_controller::intensity::IntensityResolver::bundled(None).unwrap()),
                cfg.data_dir.join("blobs"),
            )
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app(state))
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Api {
            port,
            cfg,
            config_file,
            operator,
            pool,
            stop: Some(stop),
            _tmp: tmp,
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> HttpResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        http_with(self.port, method, path, &headers, body)
    }

    fn get(&self, path: &str, token: Option<&str>) -> HttpResponse {
        self.call("GET", path, token, None)
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> HttpResponse {
        self.call("POST", path, Some(token), Some(body.to_string().as_bytes()))
    }

    fn put_blob(&self, token: &str, bytes: &[u8]) -> HttpResponse {
        let path = format!("/api/v1/blobs/{}", Hash32::digest(bytes).to_hex());
        self.call("PUT", &path, Some(token), Some(bytes))
    }

    /// An account made by the operator over the API; its token.
    fn account(&self, kind: &str, name: &str, extra: Value) -> String {
        let mut body = json!({"kind": kind, "name": name});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = self.post("/api/v1/accounts", &self.operator, &body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        // A buyer gets credits to escrow its jobs' ceilings with.
        if kind == "buyer" {
            let id = v["id"].as_u64().unwrap();
            let r = self.post(
                &format!("/api/v1/accounts/{id}/credits"),
                &self.operator,
                &json!({"amount": BUYER_CREDITS, "memo": "test"}),
            );
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        }
        v["token"]["secret"].as_str().unwrap().to_string()
    }

    /// Files in the blob folder and in its uploads-in-flight folder.
    fn files(&self) -> (usize, usize) {
        let count = |p: PathBuf| {
            std::fs::read_dir(p)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.path().is_file())
                        .count()
                })
                .unwrap_or(0)
        };
        let blobs = self.cfg.data_dir.join("blobs");
        (count(blobs.clone()), count(blobs.join(".incoming")))
    }

    fn used_bytes(&self, token: &str) -> u64 {
        let r = self.get("/api/v1/blobs", Some(token));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["usage"]["used_bytes"].as_u64().unwrap()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn reason(r: &HttpResponse) -> (u16, String) {
    (
        r.status,
        r.json()["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn now_ms() -> u64 {
    fleet_controller::runtime::now_ms()
}

/// A `sha256_batch` job over one input of `count` × 16 bytes.
fn sha_job(input: &[u8], count: i64) -> Value {
    json!({
        "workload": {"builtin": {"kernel": "sha256_batch",
            "params": [{"name": "count", "value": count}, {"name": "item_len", "value": 16}]}},
        "inputs": [Hash32::digest(input)],
        "deadline_ms": now_ms() + 3_600_000,
        "max_price_micro_per_gpu_hour": 300_000,
        "carbon": {"min_renewable_share_ppm": 900_000},
        "hardware": {"min_vram_mib": 4096, "min_cuda_capability": "8.7"},
        "flexible": true,
    })
}

#[test]
fn the_first_operator_comes_from_the_cli_and_manages_accounts_and_devices_over_the_api() {
    let api = Api::start("market-operator");
    let me = api.get("/api/v1/account", Some(&api.operator));
    assert_eq!(me.status, 200, "{}", String::from_utf8_lossy(&me.body));
    let me = me.json();
    assert_eq!(
        (
            me["kind"].clone(),
            me["name"].clone(),
            me["token"]["scopes"].clone()
        ),
        (
            json!("operator"),
            json!("ops"),
            json!(["read", "submit", "operate"])
        )
    );
    let buyer = api.account(
        "buyer",
        "alice",
        json!({"quota_bytes": 5000, "label": "laptop"}),
    );
    let me = api.get("/api/v1/account", Some(&buyer)).json();
    assert_eq!(
        (
            me["kind"].clone(),
            me["quota_bytes"].clone(),
            me["token"]["scopes"].clone()
        ),
        (json!("buyer"), json!(5000), json!(["read", "submit"]))
    );
    let list = api.get("/api/v1/accounts", Some(&api.operator));
    let names: Vec<Value> = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("ops"), json!("alice")]);
    assert!(
        !String::from_utf8_lossy(&list.body).contains("hst_"),
        "no secret in a listing"
    );

    for (body, want) in [
        (
            json!({"kind": "buyer", "name": "alice"}),
            (409, "name_taken"),
        ),
        (
            json!({"kind": "buyer", "name": "bob", "scopes": ["operate"]}),
            (422, "scope_not_allowed"),
        ),
        (
            json!({"kind": "wizard", "name": "bob"}),
            (422, "unknown_kind"),
        ),
        (json!({"kind": "buyer", "name": "b o b"}), (422, "bad_name")),
        (json!({"kind": "buyer"}), (400, "bad_json")),
    ] {
        let r = api.post("/api/v1/accounts", &api.operator, &body);
        assert_eq!(reason(&r), (want.0, want.1.to_string()), "{body}");
    }
    // A buyer is no operator.
    let r = api.post(
        "/api/v1/accounts",
        &buyer,
        &json!({"kind": "buyer", "name": "eve"}),
    );
    assert_eq!(reason(&r), (403, "missing_scope".into()));
    let device = attest::KeyPair::from_seed(&[5; 32]).device_id();
    let approve = format!("/api/v1/devices/{device}/approve");
    assert_eq!(
        reason(&api.post(&approve, &buyer, &json!({}))),
        (403, "missing_scope".into())
    );
    assert_eq!(
        reason(&api.post(&approve, &api.operator, &json!({}))),
        (404, "unknown_device".into())
    );

    // A second token for alice, read only; revoking it stops it at once and only it.
    let alice_id = me["id"].as_u64().unwrap();
    let r = api.post(
        &format!("/api/v1/accounts/{alice_id}/tokens"),
        &api.operator,
        &json!({"scopes": ["read"], "label": "ci"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let reader = r.json()["token"]["secret"].as_str().unwrap().to_string();
    let reader_id = r.json()["token"]["id"].as_u64().unwrap();
    assert_eq!(api.get("/api/v1/jobs", Some(&reader)).status, 200);
    let r = api.post(
        &format!("/api/v1/tokens/{reader_id}/revoke"),
        &api.operator,
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        reason(&api.get("/api/v1/jobs", Some(&reader))),
        (401, "bad_token".into())
    );
    assert_eq!(api.get("/api/v1/jobs", Some(&buyer)).status, 200);
    let r = api.post(
        &format!("/api/v1/tokens/{reader_id}/revoke"),
        &api.operator,
        &json!({}),
    );
    assert_eq!(reason(&r), (404, "unknown_token".into()));

    // The CLI lists what the API made, without secrets.
    let out = std::process::Command::new(CONTROLLER)
        .args([
            "--config",
            api.config_file.to_str().unwrap(),
            "account",
            "list",
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("\tbuyer\talice\tquota 5000 bytes"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!("{reader_id}:read revoked")),
        "{listing}"
    );
    assert!(!listing.contains("hst_"), "{listing}");
}

#[test]
fn routes_that_need_a_token_refuse_none_a_bad_one_and_a_wrong_scope_and_public_ones_stay_open() {
    let api = Api::start("market-auth");
    let job = "/api/v1/jobs";
    let r = api.get(job, None);
    assert_eq!(reason(&r), (401, "missing_token".into()));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let forged = format!("hst_{}", "ab".repeat(32));
    for bad in [forged.as_str(), "hst_short", "not-a-token"] {
        assert_eq!(
            reason(&api.get(job, Some(bad))),
            (401, "bad_token".into()),
            "{bad}"
        );
    }
    let r = api.call("GET", job, None, None);
    assert_eq!(r.status, 401);
    let basic = http_with(
        api.port,
        "GET",
        job,
        &[("Authorization", "Basic b3BzOm9wcw==")],
        None,
    );
    assert_eq!(reason(&basic), (401, "bad_token".into()));

    // A provider's token reads; it does not upload or submit.
    let provider = api.account("provider", "sunny-rigs", json!({}));
    let r = api.put_blob(&provider, b"input");
    assert_eq!(reason(&r), (403, "missing_scope".into()));
    assert!(
        r.json()["message"].as_str().unwrap().contains("submit"),
        "{}",
        r.json()
    );
    let r = api.post(job, &provider, &sha_job(b"input", 1));
    assert_eq!(reason(&r), (403, "missing_scope".into()));
    assert_eq!(api.files(), (0, 0), "nothing stored");
    // Public reads need no token.
    for path in [
        "/api/v1/status",
        "/api/v1/devices",
        "/api/v1/epochs",
        "/metrics",
    ] {
        assert_eq!(api.get(path, None).status, 200, "{path}");
    }
    let r = api.get("/api/v1/fleet/hours?from=0&to=3600000", None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn an_upload_is_stored_under_its_hash_charged_once_and_read_only_by_its_owner() {
    let api = Api::start("market-upload");
    let alice = api.account("buyer", "alice", json!({}));
    let bob = api.account("buyer", "bob", json!({}));
    let bytes: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let hex = Hash32::digest(&bytes).to_hex();
    let r = api.put_blob(&alice, &bytes);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        (
            r.json()["sha256"].clone(),
            r.json()["bytes"].clone(),
            r.json()["new"].clone()
        ),
        (json!(hex), json!(40_000), json!(true))
    );
    assert_eq!(api.used_bytes(&alice), 40_000);
    // Again: not charged twice.
    let r = api.put_blob(&alice, &bytes);
    assert_eq!((r.status, r.json()["new"].clone()), (200, json!(false)));
    assert_eq!(api.used_bytes(&alice), 40_000);
    let got = api.get(&format!("/api/v1/blobs/{hex}"), Some(&alice));
    assert_eq!(got.status, 200);
    assert_eq!(got.body, bytes);
    assert_eq!(got.header("content-length"), Some("40000"));
    // Bob knows the hash; he may not read it, and is told nothing more than "no blob".
    assert_eq!(
        reason(&api.get(&format!("/api/v1/blobs/{hex}"), Some(&bob))),
        (404, "no_such_blob".into())
    );
    assert_eq!(
        reason(&api.get("/api/v1/blobs/xyz", Some(&alice))),
        (400, "bad_hash".into())
    );
    // Bob uploads the same bytes: he owns them too, charged to him, one file on disk.
    assert_eq!(api.put_blob(&bob, &bytes).status, 200);
    assert_eq!((api.used_bytes(&bob), api.files()), (40_000, (1, 0)));
    // Given up by both, the file goes and the quotas get the bytes back.
    for t in [&alice, &bob] {
        let r = api.call("DELETE", &format!("/api/v1/blobs/{hex}"), Some(t), None);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["usage"]["used_bytes"], 0);
    }
    assert_eq!(api.files(), (0, 0));
}

#[test]
fn an_oversize_upload_is_a_413_and_leaves_nothing_stored_and_the_quota_unchanged() {
    let api = Api::start("market-oversize");
    let alice = api.account("buyer", "alice", json!({}));
    assert_eq!(api.put_blob(&alice, b"kept").status, 200);
    // Declared too large: refused before a byte is read.
    let big = vec![1u8; MAX_BLOB as usize + 1];
    let r = api.put_blob(&alice, &big);
    assert_eq!(
        reason(&r),
        (413, "too_large".into()),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let huge = format!("/api/v1/blobs/{}", "ab".repeat(32));
    let auth = format!("Bearer {alice}");
    let r = http_with(
        api.port,
        "PUT",
        &huge,
        &[("Authorization", &auth), ("Content-Length", "10000000000")],
        None,
    );
    assert_eq!(reason(&r), (413, "too_large".into()));
    assert_eq!(api.files(), (1, 0), "only the blob stored before");
    assert_eq!(api.used_bytes(&alice), 4);
    let st = api.pool.get().unwrap();
    assert_eq!(
        st.owned_blobs(fleet_controller::accounts::AccountId(2))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_body_that_does_not_hash_to_its_name_is_refused_and_leaves_nothing() {
    let api = Api::start("market-hash");
    let alice = api.account("buyer", "alice", json!({}));
    let named = Hash32::digest(b"what I said");
    let r = api.call(
        "PUT",
        &format!("/api/v1/blobs/{}", named.to_hex()),
        Some(&alice),
        Some(b"what I sent"),
    );
    assert_eq!(reason(&r), (422, "hash_mismatch".into()));
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&Hash32::digest(b"what I sent").to_hex()),
        "{msg}"
    );
    assert_eq!(api.files(), (0, 0));
    assert_eq!(api.used_bytes(&alice), 0);
    assert_eq!(
        reason(&api.get(&format!("/api/v1/blobs/{}", named.to_hex()), Some(&alice))),
        (404, "no_such_blob".into())
    );
}

#[test]
fn an_upload_past_the_quota_is_refused_and_charges_nothing() {
    let api = Api::start("market-quota");
    let alice = api.account("buyer", "alice", json!({"quota_bytes": 100}));
    assert_eq!(api.put_blob(&alice, &[1u8; 60]).status, 200);
    let r = api.put_blob(&alice, &[2u8; 50]);
    assert_eq!(reason(&r), (413, "quota_exceeded".into()));
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("60 of 100 bytes used"),
        "{}",
        r.json()
    );
    assert_eq!((api.used_bytes(&alice), api.files()), (60, (1, 0)));
    // What fits still goes in.
    assert_eq!(api.put_blob(&alice, &[3u8; 40]).status, 200);
    assert_eq!(api.used_bytes(&alice), 100);
}

#[test]
fn a_job_with_an_unknown_workload_a_missing_input_or_a_past_deadline_is_refused_with_its_reason() {
    let api = Api::start("market-submit");
    let alice = api.account("buyer", "alice", json!({}));
    let bob = api.account("buyer", "bob", json!({}));
    let input = [9u8; 64];
    // Bob's blob is not Alice's input, even though she names its hash.
    assert_eq!(api.put_blob(&bob, &input).status, 200);
    let mut unknown = sha_job(&input, 4);
    unknown["workload"] = json!({"builtin": {"kernel": "bitcoin_miner", "params": []}});
    let mut past = sha_job(&input, 4);
    past["deadline_ms"] = json!(now_ms() - 1);
    for (body, want) in [
        (unknown, (422, "unknown_workload")),
        (sha_job(&input, 4), (422, "missing_input_blob")),
    ] {
        let r = api.post("/api/v1/jobs", &alice, &body);
        assert_eq!(reason(&r), (want.0, want.1.to_string()), "{body}");
    }
    assert_eq!(api.put_blob(&alice, &input).status, 200);
    for (body, want) in [
        (past, (422, "deadline_in_past")),
        (sha_job(&input, 5), (422, "bad_sizes")),
        (json!({"workload": "nope"}), (400, "bad_json")),
    ] {
        let r = api.post("/api/v1/jobs", &alice, &body);
        assert_eq!(reason(&r), (want.0, want.1.to_string()), "{body}");
    }
    let r = api.call("POST", "/api/v1/jobs", Some(&alice), Some(b"{not json"));
    assert_eq!(reason(&r), (400, "bad_json".into()));
    assert_eq!(
        api.get("/api/v1/jobs", Some(&alice)).json(),
        json!([]),
        "nothing stored"
    );
    // And a good one is queued with its order as asked.
    let r = api.post("/api/v1/jobs", &alice, &sha_job(&input, 4));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["order"]["output_sizes"], json!([128]));
    assert_eq!(
        job["order"]["carbon"],
        json!({"min_renewable_share_ppm": 900_000})
    );
    assert_eq!(job["order"]["hardware"]["min_cuda_capability"], "8.7");
    assert_eq!(job["order"]["deadline_ms"], job["deadline_ms"]);
    assert_eq!(job["spec"]["id"], job["id"]);
    assert_eq!(
        api.get("/api/v1/jobs", Some(&alice))
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Its input is in use: it cannot be given up while the job is open.
    let r = api.call(
        "DELETE",
        &format!("/api/v1/blobs/{}", Hash32::digest(&input).to_hex()),
        Some(&alice),
        None,
    );
    assert_eq!(reason(&r), (409, "blob_in_use".into()));
}

#[test]
fn another_accounts_job_is_a_404_it_cannot_cancel_and_a_cancel_shows_in_the_history() {
    let api = Api::start("market-cancel");
    let alice = api.account("buyer", "alice", json!({}));
    let bob = api.account("buyer", "bob", json!({}));
    let provider = api.account("provider", "rigs", json!({}));
    let input = [7u8; 32];
    assert_eq!(api.put_blob(&alice, &input).status, 200);
    let job = api.post("/api/v1/jobs", &alice, &sha_job(&input, 2)).json();
    let id = job["id"].as_str().unwrap().to_string();
    let before = job["history"][0]["at_ms"].as_u64().unwrap();
    // Bob: the job does not exist for him, whatever he asks.
    for (method, path) in [
        ("GET", format!("/api/v1/jobs/{id}")),
        ("GET", format!("/api/v1/jobs/{id}/results")),
        ("POST", format!("/api/v1/jobs/{id}/cancel")),
    ] {
        let r = api.call(method, &path, Some(&bob), Some(b""));
        assert_eq!(reason(&r), (404, "unknown_job".into()), "{method} {path}");
    }
    assert_eq!(
        reason(&api.get("/api/v1/jobs/zz", Some(&bob))),
        (400, "bad_job_id".into())
    );
    let still = api.get(&format!("/api/v1/jobs/{id}"), Some(&alice)).json();
    assert_eq!(
        (
            still["state"].clone(),
            still["history"].as_array().unwrap().len()
        ),
        (json!("queued"), 1)
    );
    // A provider's agent fetches the input of an open job placed on one of its devices (or
    // on a device no provider is set for); not before it is placed, not another's.
    let input_path = format!("/api/v1/blobs/{}", Hash32::digest(&input).to_hex());
    assert_eq!(
        reason(&api.get(&input_path, Some(&provider))),
        (404, "no_such_blob".into()),
        "not placed yet"
    );
    let device = attest::KeyPair::from_seed(&[9; 32]).device_id();
    {
        use fleet_controller::store::jobs::{JobLease, JobStore};
        let job_id = fleet_controller::jobs::parse_job_id(&id).unwrap();
        let lease = JobLease {
            device,
            start_ms: now_ms(),
            expected_end_ms: now_ms() + 60_000,
            nonce: 1,
            progress: None,
        };
        api.pool
            .get()
            .unwrap()
            .put_job_lease(job_id, &lease)
            .unwrap();
    }
    let r = api.get(&input_path, Some(&provider));
    assert_eq!((r.status, r.body.as_slice()), (200, &input[..]));
    let other = api.account("provider", "other-rigs", json!({}));
    let assign = |name: serde_json::Value| {
        api.post(
            &format!("/api/v1/devices/{device}/provider"),
            &api.operator,
            &json!({ "provider": name }),
        )
    };
    let r = assign(json!("other-rigs"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        reason(&api.get(&input_path, Some(&provider))),
        (404, "no_such_blob".into()),
        "the device is another provider's"
    );
    assert_eq!(api.get(&input_path, Some(&other)).status, 200);
    // Only operators assign, and only to providers.
    assert_eq!(reason(&assign(json!("alice"))).0, 400);
    let r = api.post(
        &format!("/api/v1/devices/{device}/provider"),
        &provider,
        &json!({"provider": "rigs"}),
    );
    assert_eq!(reason(&r), (403, "missing_scope".into()));
    assert_eq!(assign(json!(null)).status, 200);
    assert_eq!(api.get(&input_path, Some(&provider)).status, 200);

    let r = api.call(
        "POST",
        &format!("/api/v1/jobs/{id}/cancel"),
        Some(&alice),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["state"], "cancelled");
    let history: Vec<(String, String)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state"].as_str().unwrap().into(),
                e["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            ("queued".into(), "accepted".into()),
            ("cancelled".into(), "cancelled by its buyer".into())
        ]
    );
    let at = v["history"][1]["at_ms"].as_u64().unwrap();
    assert!(at >= before && at <= now_ms(), "{before} {at}");
    assert_eq!(v["updated_ms"].as_u64(), Some(at));
    // Once cancelled: not again, and its input is closed to providers.
    let r = api.call(
        "POST",
        &format!("/api/v1/jobs/{id}/cancel"),
        Some(&alice),
        None,
    );
    assert_eq!(reason(&r), (409, "illegal_state".into()));
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("a cancelled job cannot become cancelled")
    );
    assert_eq!(
        reason(&api.get(&input_path, Some(&provider))),
        (404, "no_such_blob".into())
    );
    let res = api
        .get(&format!("/api/v1/jobs/{id}/results"), Some(&alice))
        .json();
    assert_eq!(
        (
            res["state"].clone(),
            res["outputs"].clone(),
            res["expected_sizes"].clone()
        ),
        (json!("cancelled"), json!([]), json!([64]))
    );
    let list = api.get("/api/v1/jobs", Some(&alice)).json();
    assert_eq!(
        (list[0]["id"].clone(), list[0]["state"].clone()),
        (json!(id), json!("cancelled"))
    );
}

/// `fleetctl` against the real API: the account, a submission with an uploaded input, its
/// status and cancellation, data on stdout (JSON with `--output json`), and an API error
/// naming its reason with exit status 1.
#[test]
fn fleetctl_submits_follows_and_cancels_a_job_and_names_api_errors() {
    let fleetctl = env!("CARGO_BIN_EXE_fleetctl");
    let api = Api::start("fleetctl");
    let buyer = api.account("buyer", "alice", json!({}));
    let tmp = TempDir::new("fleetctl-files");
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, &buyer).unwrap();
    let input = tmp.path().join("items.bin");
    std::fs::write(&input, vec![7u8; 100 * 64]).unwrap();
    let url = format!("http://127.0.0.1:{}", api.port);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(fleetctl)
            .args(["--url", &url, "--token-file", token_file.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, _) = run(&["--output", "json", "account"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["name"].as_str()),
        (Some("buyer"), Some("alice"))
    );

    let (code, stdout, stderr) = run(&[
        "--output",
        "json",
        "submit",
        "--kernel",
        "sha256_batch",
        "--param",
        "count=100",
        "--param",
        "item_len=64",
        "--input",
        input.to_str().unwrap(),
        "--flexible",
        "--min-renewable",
        "0.8",
        "--detach",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("uploaded"), "progress on stderr: {stderr}");
    let job: Value = serde_json::from_str(&stdout).unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["state"], "queued");
    assert_eq!(job["order"]["carbon"]["min_renewable_share_ppm"], 800_000);
    assert_eq!(
        job["spec"]["input_sizes"],
        json!([6400]),
        "the device is told each input's size"
    );

    let (code, stdout, _) = run(&["cancel", &id]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("cancelled"), "{stdout}");
    let (code, stdout, _) = run(&["--output", "json", "status", &id]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let states: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["queued", "cancelled"]);

    // Completions for a shell.
    let (code, stdout, _) = run(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("_fleetctl()") && stdout.contains("submit"),
        "{stdout}"
    );

    // The market is public; this controller has no device.
    let (code, stdout, _) = run(&["--output", "json", "market", "--sort", "runway"]);
    assert_eq!((code, stdout.trim()), (Some(0), "[]"));
    let (code, _, stderr) = run(&["market", "--sort", "colour"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("400 bad_query"), "{stderr}");

    // An error of the API: exit 1, its reason on stderr, nothing on stdout.
    let (code, stdout, stderr) = run(&["cancel", &id]);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("409 illegal_state"), "{stderr}");
    std::fs::write(&token_file, "hst_not_a_token").unwrap();
    let (code, _, stderr) = run(&["account"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("401 bad_token"), "{stderr}");
}

/// A job's ceiling is held from its buyer's credits when it is submitted (refused whole
/// when they do not cover it) and given back when it is cancelled; only operators issue
/// credits.
#[test]
fn a_job_escrows_its_ceiling_from_the_buyers_credits_and_a_cancel_refunds_it() {
    let api = Api::start("market-ledger");
    let r = api.post(
        "/api/v1/accounts",
        &api.operator,
        &json!({"kind": "buyer", "name": "poor"}),
    );
    assert_eq!(r.status, 201);
    let v = r.json();
    let (id, poor) = (
        v["id"].as_u64().unwrap(),
        v["token"]["secret"].as_str().unwrap().to_string(),
    );
    let input = [3u8; 16];
    assert_eq!(api.put_blob(&poor, &input).status, 200);
    // 300000 micro-credits per GPU-hour over the default minute: 5000 held.
    let balance = || api.get("/api/v1/account/balance", Some(&poor)).json();
    let credit = |token: &str, amount: u64| {
        api.post(
            &format!("/api/v1/accounts/{id}/credits"),
            token,
            &json!({"amount": amount, "memo": "wire 7"}),
        )
    };
    let r = api.post("/api/v1/jobs", &poor, &sha_job(&input, 1));
    assert_eq!(reason(&r), (402, "insufficient_credits".into()));
    assert_eq!(credit(&api.operator, 4_999).status, 201);
    let r = api.post("/api/v1/jobs", &poor, &sha_job(&input, 1));
    assert_eq!(reason(&r), (402, "insufficient_credits".into()));
    assert_eq!(api.get("/api/v1/jobs", Some(&poor)).json(), json!([]));
    assert_eq!(credit(&api.operator, 1).status, 201);
    let r = api.post("/api/v1/jobs", &poor, &sha_job(&input, 1));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json()["id"].as_str().unwrap().to_string();
    let b = balance();
    assert_eq!(
        (b["available"].clone(), b["escrowed"].clone()),
        (json!(0), json!(5_000))
    );
    // Only an operator issues credits, and only a positive amount, to an account that is.
    assert_eq!(reason(&credit(&poor, 1)), (403, "missing_scope".into()));
    assert_eq!(reason(&credit(&api.operator, 0)).0, 400);
    let r = api.post(
        "/api/v1/accounts/999/credits",
        &api.operator,
        &json!({"amount": 1}),
    );
    assert_eq!(reason(&r), (404, "unknown_account".into()));
    // Cancelled: the ceiling back, once.
    let r = api.call(
        "POST",
        &format!("/api/v1/jobs/{job}/cancel"),
        Some(&poor),
        None,
    );
    assert_eq!(r.status, 200);
    let b = balance();
    assert_eq!(
        (b["available"].clone(), b["escrowed"].clone()),
        (json!(5_000), json!(0))
    );
    let h = api.get("/api/v1/account/ledger", Some(&poor)).json();
    let kinds: Vec<&str> = h["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["refund", "escrow", "deposit", "deposit"]);
    assert_eq!(h["transactions"][3]["memo"], "wire 7");
}

/// A buyer's jobs come a page at a time, newest first: `X-Next-Cursor` names the next
/// page's `before` until the last page, which has none; every job comes once. Another
/// account's job id is no cursor (an empty page), and a bad one is a 400.
#[test]
fn job_listings_page_with_a_cursor_and_every_job_comes_once() {
    let api = Api::start("market-pages");
    let alice = api.account("buyer", "alice", json!({}));
    let bob = api.account("buyer", "bob", json!({}));
    let input = [5u8; 32];
    assert_eq!(api.put_blob(&alice, &input).status, 200);
    let mut made = Vec::new();
    for _ in 0..5 {
        let job = api.post("/api/v1/jobs", &alice, &sha_job(&input, 2)).json();
        made.push(job["id"].as_str().unwrap().to_string());
    }
    let cursor = |r: &hil_tests::HttpResponse| {
        r.headers.iter().find_map(|h| {
            h.to_ascii_lowercase()
                .strip_prefix("x-next-cursor:")
                .map(|v| v.trim().to_string())
        })
    };
    let mut seen = Vec::new();
    let mut path = "/api/v1/jobs?limit=2".to_string();
    let mut pages = 0;
    loop {
        let r = api.get(&path, Some(&alice));
        assert_eq!(r.status, 200);
        pages += 1;
        let ids: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect();
        seen.extend(ids);
        match cursor(&r) {
            Some(c) => path = format!("/api/v1/jobs?limit=2&before={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3, "2 + 2 + 1");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "{seen:?}");
    made.sort();
    assert_eq!(sorted, made);
    // Bob cannot page from Alice's job; a cursor that is no job id is refused.
    let r = api.get(&format!("/api/v1/jobs?before={}", seen[0]), Some(&bob));
    assert_eq!(r.json(), json!([]));
    assert_eq!(
        reason(&api.get("/api/v1/jobs?before=zz", Some(&alice))),
        (400, "bad_job_id".into())
    );
}

/// A buyer's own spend cap: a job whose ceiling would take its escrow over the last 24 h
/// past the cap is refused (402 `spend_cap`) and holds nothing; without the cap it goes.
#[test]
fn a_spend_cap_refuses_the_job_that_would_pass_it_and_holds_nothing() {
    let api = Api::start("market-cap");
    let r = api.post(
        "/api/v1/accounts",
        &api.operator,
        &json!({"kind": "buyer", "name": "capped"}),
    );
    assert_eq!(r.status, 201);
    let v = r.json();
    let (id, buyer) = (
        v["id"].as_u64().unwrap(),
        v["token"]["secret"].as_str().unwrap().to_string(),
    );
    let r = api.post(
        &format!("/api/v1/accounts/{id}/credits"),
        &api.operator,
        &json!({"amount": 1_000_000, "memo": "wire"}),
    );
    assert_eq!(r.status, 201);
    let input = [4u8; 16];
    assert_eq!(api.put_blob(&buyer, &input).status, 200);
    // Each job holds 5000 (its ceiling over the default minute); a cap of 8000 takes one.
    let r = api.call(
        "PUT",
        "/api/v1/account/spend-cap",
        Some(&buyer),
        Some(json!({"daily_micro": 8_000}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        api.get("/api/v1/account/balance", Some(&buyer)).json()["spend_cap_micro_per_day"],
        8_000
    );
    assert_eq!(
        api.post("/api/v1/jobs", &buyer, &sha_job(&input, 1)).status,
        201
    );
    let r = api.post("/api/v1/jobs", &buyer, &sha_job(&input, 1));
    assert_eq!(reason(&r), (402, "spend_cap".into()));
    let b = api.get("/api/v1/account/balance", Some(&buyer)).json();
    assert_eq!(
        (b["available"].clone(), b["escrowed"].clone()),
        (json!(995_000), json!(5_000))
    );
    assert_eq!(
        api.get("/api/v1/jobs", Some(&buyer))
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The cap lifted: the same job goes.
    let r = api.call(
        "PUT",
        "/api/v1/account/spend-cap",
        Some(&buyer),
        Some(json!({"daily_micro": null}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        api.post("/api/v1/jobs", &buyer, &sha_job(&input, 1)).status,
        201
    );
}
