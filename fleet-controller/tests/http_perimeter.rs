//! The HTTP perimeter of a real controller process (docs/security.md, "HTTP"): security
//! headers on every answer, a token without the scope refused, operator actions in the
//! audit log (and nothing else), a token over its rate held back with `Retry-After`, and an
//! address that guesses tokens made to wait even with a good one.

use std::time::Duration;

use fleet_controller::config::{BrokerConfig, ControllerConfig};
use hil_tests::{Mosquitto, TempDir, create_account, free_port, http_with, spawn_controller};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_fleet-controller");

#[test]
fn headers_scopes_audit_and_rate_limits_hold_at_the_api() {
    let tmp = TempDir::new("http-perimeter");
    let broker = Mosquitto::start();
    let api = free_port();
    let mut cfg = ControllerConfig::new(
        tmp.path().join("data"),
        BrokerConfig {
            port: broker.port,
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.api.listen = format!("127.0.0.1:{api}");
    cfg.api.token_rate_per_s = 0.01;
    cfg.api.token_burst = 8;
    cfg.api.auth_failures_per_min = 5;
    let ccfg = tmp.path().join("controller.toml");
    cfg.write_toml(&ccfg).unwrap();
    let log = tmp.path().join("controller.log");
    let _controller = spawn_controller(CONTROLLER, &ccfg, &log);
    assert!(hil_tests::wait_for_port(api, Duration::from_secs(20)));
    let operator = create_account(CONTROLLER, &ccfg, "operator", "ops");
    let buyer = create_account(CONTROLLER, &ccfg, "buyer", "acme");
    let call = |token: &str, method: &str, path: &str, body: Option<&[u8]>| {
        let auth = format!("Bearer {token}");
        http_with(api, method, path, &[("Authorization", &auth)], body)
    };

    // Security headers, on an answer and on a refusal.
    for r in [
        call(&operator, "GET", "/api/v1/account", None),
        http_with(api, "GET", "/api/v1/no-such-route", &[], None),
    ] {
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{}",
            r.status_line
        );
        assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
        assert_eq!(r.header("Referrer-Policy"), Some("no-referrer"));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert!(
            r.header("Content-Security-Policy")
                .unwrap()
                .contains("default-src 'none'")
        );
    }

    // A token without the scope is refused, and its attempt is no operator action.
    let body = br#"{"label": "batch 9"}"#;
    let r = call(&buyer, "POST", "/api/v1/enrollment-tokens", Some(body));
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["reason"], "missing_scope");
    let r = call(&operator, "POST", "/api/v1/enrollment-tokens", Some(body));
    assert_eq!(r.status, 201);
    let secret = r.json()["secret"].as_str().unwrap().to_string();
    let r = call(&operator, "GET", "/api/v1/audit", None);
    assert_eq!(r.status, 200);
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "only the operator's action: {entries:?}");
    assert_eq!(entries[0]["method"], "POST");
    assert_eq!(entries[0]["path"], "/api/v1/enrollment-tokens");
    assert_eq!(entries[0]["status"], 201);
    let r = call(&buyer, "GET", "/api/v1/audit", None);
    assert_eq!(r.status, 403, "the audit log is the operators'");

    // Over its rate: the burst (8) less the 3 requests above, then 429 with Retry-After.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(call(&operator, "GET", "/api/v1/account", None).status);
    }
    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = call(&operator, "GET", "/api/v1/account", None);
    assert_eq!(r.json()["reason"], "rate_limited");
    assert!(r.header("Retry-After").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(
        call(&buyer, "GET", "/api/v1/account", None).status,
        200,
        "another token has its own rate"
    );

    // Guessing tokens: five bad ones, then even a good token waits out the minute.
    for i in 0..5 {
        let r = call(
            &format!("hst_{}", "0".repeat(63 - i)),
            "GET",
            "/api/v1/account",
            None,
        );
        assert_eq!(r.status, 401);
    }
    let r = call(&buyer, "GET", "/api/v1/account", None);
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["reason"], "too_many_failures");
    // A client cannot name another address: X-Forwarded-For counts only behind a proxy
    // the operator trusts (api.forwarded_for).
    let auth = format!("Bearer {buyer}");
    let r = http_with(
        api,
        "GET",
        "/api/v1/account",
        &[("Authorization", &auth), ("X-Forwarded-For", "203.0.113.9")],
        None,
    );
    assert_eq!(r.status, 429, "a spoofed address escaped the lock");

    let text = std::fs::read_to_string(&log).unwrap();
    for s in [&operator, &buyer, &secret] {
        assert!(
            !text.contains(s.as_str()),
            "a secret in the controller's log"
        );
    }
}
