//! The console's routes through the whole router (as axum serves them): logins, sessions,
//! CSRF, the refusal of another site's forms, the login limit, headers, and what a page
//! shows to whom.

use std::sync::Arc;

use attest::KeyPair;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::session::hash_password;
use crate::accounts::{self, AccountKind, Token};
use crate::api::{ApiState, app};
use crate::intensity::IntensityResolver;
use crate::store::console::ConsoleStore;
use crate::store::pool::SqlitePool;
use crate::store::sqlite::SqliteStore;

const PASSWORD: &str = "a long enough password";

fn setup(name: &str) -> ApiState {
    let dir = std::env::temp_dir().join(format!("console-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("c.db");
    let mut st = SqliteStore::open(&db).unwrap();
    for (kind, name) in [
        (AccountKind::Buyer, "alice"),
        (AccountKind::Operator, "olga"),
    ] {
        let made = accounts::create(
            &mut st,
            kind,
            name,
            1 << 20,
            None,
            "t",
            Token::generate().unwrap(),
            1,
        )
        .unwrap();
        st.set_password(made.account.id, &hash_password(PASSWORD).unwrap(), 1)
            .unwrap();
    }
    ApiState::new(
        Arc::new(SqlitePool::new(db)),
        dir.join("status.json"),
        Arc::new(KeyPair::from_seed(&[0xc1; 32])),
        Arc::new(IntensityResolver::bundled(None).unwrap()),
        dir.join("blobs"),
    )
}

async fn send(s: &ApiState, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let r = app(s.clone()).oneshot(req).await.unwrap();
    let (parts, body) = r.into_parts();
    let body = to_bytes(body, 1 << 22).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn form(path: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "console.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

/// Logs in; the session cookie (`hst_session=...`).
async fn login(s: &ApiState, name: &str, password: &str) -> Result<String, StatusCode> {
    let (status, headers, _) = send(
        s,
        form(
            "/login",
            &format!("name={name}&password={password}&next=/jobs"),
            None,
        ),
    )
    .await;
    if status != StatusCode::SEE_OTHER {
        return Err(status);
    }
    assert_eq!(headers[header::LOCATION], "/jobs");
    let c = headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(c.contains(attr), "{c}");
    }
    Ok(c.split(';').next().unwrap().to_string())
}

fn csrf_of(page: &str) -> String {
    let at =
        page.find(r#"name="csrf" value=""#).expect("a csrf field") + r#"name="csrf" value=""#.len();
    page[at..at + 64].to_string()
}

#[tokio::test]
async fn a_page_needs_a_login_and_a_login_needs_the_password() {
    let s = setup("login");
    let (status, headers, _) = send(&s, get("/jobs?x=1", None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login?next=/jobs%3Fx%3D1");
    // The console's headers are on every answer, the login page's too.
    let (status, headers, page) = send(&s, get("/login", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(page.contains(r#"<label for="password">"#));

    assert_eq!(
        login(&s, "alice", "wrong password!").await,
        Err(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        login(&s, "nobody", PASSWORD).await,
        Err(StatusCode::UNAUTHORIZED)
    );
    let cookie = login(&s, "alice", &PASSWORD.replace(' ', "+"))
        .await
        .unwrap();
    let (status, _, page) = send(&s, get("/jobs", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("alice (buyer)") && page.contains("Submit a job"),
        "{page}"
    );
    // A forged cookie is no one.
    let (status, _, _) = send(
        &s,
        get("/jobs", Some(&format!("hst_session={}", "ab".repeat(32)))),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        s.console.logins(),
        [("ok", 1), ("refused", 2), ("limited", 0)]
    );
}

#[tokio::test]
async fn forms_need_the_sessions_csrf_token_and_this_sites_origin() {
    let s = setup("csrf");
    let cookie = login(&s, "alice", &PASSWORD.replace(' ', "+"))
        .await
        .unwrap();
    let (_, _, page) = send(&s, get("/jobs", Some(&cookie))).await;
    let csrf = csrf_of(&page);
    // Log out without the token, with another session's, from another site: refused.
    let (status, _, _) = send(&s, form("/logout", "csrf=", Some(&cookie))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send(
        &s,
        form(
            "/logout",
            &format!("csrf={}", "0".repeat(64)),
            Some(&cookie),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut other_site = form("/logout", &format!("csrf={csrf}"), Some(&cookie));
    other_site
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    let (status, _, _) = send(&s, other_site).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Still logged in; then out, for real, and the cookie is no good after.
    let (status, _, _) = send(&s, get("/ledger", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    let mut same_site = form("/logout", &format!("csrf={csrf}"), Some(&cookie));
    same_site
        .headers_mut()
        .insert(header::ORIGIN, "http://console.test".parse().unwrap());
    let (status, headers, _) = send(&s, same_site).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _, _) = send(&s, get("/ledger", Some(&cookie))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn failed_logins_are_limited_even_for_the_right_password() {
    let s = setup("limit");
    for _ in 0..5 {
        assert_eq!(
            login(&s, "alice", "wrong password!").await,
            Err(StatusCode::UNAUTHORIZED)
        );
    }
    let (status, headers, page) = send(
        &s,
        form(
            "/login",
            &format!("name=alice&password={}", PASSWORD.replace(' ', "+")),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 800
    );
    assert!(page.contains("Too many failed logins"), "{page}");
    // Another account is not held up by alice's guesser.
    assert!(login(&s, "olga", &PASSWORD.replace(' ', "+")).await.is_ok());
    assert_eq!(
        s.console.logins(),
        [("ok", 1), ("refused", 5), ("limited", 1)]
    );
}

#[tokio::test]
async fn operators_act_on_devices_buyers_do_not_and_nobody_sees_anothers_job() {
    let s = setup("roles");
    let alice = login(&s, "alice", &PASSWORD.replace(' ', "+"))
        .await
        .unwrap();
    let (_, _, page) = send(&s, get("/jobs", Some(&alice))).await;
    let csrf = csrf_of(&page);
    // A buyer's approve is refused by the API it goes through (no `operate` scope).
    let id = attest::sample::SampleDevice::new(3).key.device_id();
    let (status, _, page) = send(
        &s,
        form(
            &format!("/devices/{id}/approve"),
            &format!("csrf={csrf}"),
            Some(&alice),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("Not done") && page.contains("operate"),
        "{page}"
    );
    // A job id that is not the viewer's is "no such job", as in the API.
    let (status, _, page) =
        send(&s, get(&format!("/jobs/{}", "ab".repeat(16)), Some(&alice))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("No such job"));
    // Alerts are the operators': a buyer gets the API's 403, an operator the page and the
    // silence form.
    let (status, _, _) = send(&s, get("/alerts", Some(&alice))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let olga = login(&s, "olga", &PASSWORD.replace(' ', "+"))
        .await
        .unwrap();
    let (status, _, page) = send(&s, get("/alerts", Some(&olga))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("All clear.") && page.contains(r#"<label for="silence-reason">"#),
        "{page}"
    );
    assert!(
        page.contains(r#"href="/alerts""#),
        "the operator's navigation names alerts"
    );
    // Bulk actions are the operators': a buyer's are refused by the API they go through.
    let (status, _, _) = send(
        &s,
        form(
            "/fleet/bulk",
            &format!("csrf={csrf}&device={id}&action=tag&tag=x"),
            Some(&alice),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The market's search language: a term it does not know is named, on the page and by
    // the API (400 `bad_query`).
    let (status, _, page) = send(&s, get("/market?q=gpu%3Aorin+cheap", Some(&alice))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("is not a search term"), "{page}");
    let (status, _, body) = send(&s, get("/api/v1/market?q=cheap", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("bad_query"), "{body}");
    let (status, _, body) = send(&s, get("/api/v1/market?q=price%3C%3D0.5+online", None)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
    // Histories as CSV: the viewer's, with their header line.
    for (path, head) in [("/ledger.csv", "tx,at_ms,"), ("/jobs.csv", "job,workload,")] {
        let (status, headers, body) = send(&s, get(path, Some(&alice))).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(body.starts_with(head), "{path}: {body}");
    }
    let (status, _, _) = send(&s, get(&format!("/devices/{id}/hours.csv"), Some(&alice))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The fleet page and the evidence page render for an empty fleet.
    for path in ["/", "/evidence", "/market", "/ledger"] {
        let (status, _, page) = send(&s, get(path, Some(&alice))).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(page.contains("<main>"), "{path}: {page}");
    }
}
