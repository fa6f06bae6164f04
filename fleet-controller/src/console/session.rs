//! Who is looking at the console: a login (account name and password, argon2id) makes a
//! session; its secret lives only in an `HttpOnly`, `SameSite=Strict` cookie (and
//! `Secure`, by default), the store keeps its SHA-256. Every form a session posts carries
//! its CSRF token, and a request whose `Origin` is another site's is refused. Failed logins
//! are counted per account name and per client address and refused past a limit without a
//! password check (so a guesser learns nothing and spends nothing of ours).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Console, page};
use crate::accounts::{AccountId, AccountKind, Caller, Token, TokenId};
use crate::api::{ApiState, AppError};
use crate::store::console::ConsoleStore;

/// The session cookie's name.
pub const COOKIE: &str = "hst_session";

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (argon2 takes any length; this bounds the work a request asks).
pub const MAX_PASSWORD: usize = 1024;

/// Why a password was not set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password is {MIN_PASSWORD} to {MAX_PASSWORD} bytes")]
    Length,
    /// The hash could not be made (the random source failed).
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// An argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len()) {
        return Err(PasswordError::Length);
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches a stored PHC string (false for an unreadable one).
pub fn check_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, checked for unknown accounts so that they take as long to
/// refuse as a wrong password.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("no account has this password").unwrap_or_default())
}

/// Failed logins per key (an account name, a client address) within a sliding window.
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    per_name: usize,
    per_addr: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `per_name` failures per account name and four times as many per address, per
    /// `window`.
    pub fn new(per_name: u32, window: Duration) -> LoginLimiter {
        LoginLimiter {
            window,
            per_name: per_name as usize,
            per_addr: per_name as usize * 4,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(name: &str, addr: Option<SocketAddr>) -> [(String, bool); 2] {
        [
            (format!("name:{}", name.to_ascii_lowercase()), true),
            (
                format!(
                    "addr:{}",
                    addr.map(|a| a.ip().to_string()).unwrap_or_default()
                ),
                false,
            ),
        ]
    }

    /// How long until `name` from `addr` may try again; `None` when it may now.
    pub fn blocked(&self, name: &str, addr: Option<SocketAddr>, now: Instant) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut wait = None;
        for (key, is_name) in Self::keys(name, addr) {
            let Some(q) = map.get_mut(&key) else { continue };
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                q.pop_front();
            }
            let limit = if is_name {
                self.per_name
            } else {
                self.per_addr
            };
            if q.len() >= limit
                && let Some(first) = q.front()
            {
                let left = self.window.saturating_sub(now.duration_since(*first));
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        map.retain(|_, q| !q.is_empty());
        wait
    }

    /// Counts a failed login.
    pub fn failed(&self, name: &str, addr: Option<SocketAddr>, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in Self::keys(name, addr) {
            map.entry(key).or_default().push_back(now);
        }
    }

    /// Forgets an account name's failures (it logged in).
    pub fn succeeded(&self, name: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("name:{}", name.to_ascii_lowercase()));
    }
}

/// A logged-in viewer of the console.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// As the API's handlers see a caller: the account with every scope its kind allows.
    pub caller: Caller,
    /// The account's name.
    pub name: String,
    /// The CSRF token this session's forms carry, hex.
    pub csrf: String,
}

impl Viewer {
    /// Whether a posted CSRF token is this session's (constant time).
    pub fn csrf_ok(&self, posted: &str) -> bool {
        posted.len() == self.csrf.len() && bool::from(posted.as_bytes().ct_eq(self.csrf.as_bytes()))
    }

    /// A 403 unless `posted` is this session's CSRF token.
    pub fn check_csrf(&self, posted: &str) -> Result<(), Refused> {
        if self.csrf_ok(posted) {
            Ok(())
        } else {
            Err(Refused(
                "The form is out of date or was not sent by this console. Go back, reload and try again.",
            ))
        }
    }

    /// A form post's two checks: it comes from this site (`Origin`) and carries this
    /// session's CSRF token.
    pub fn check_form(&self, headers: &HeaderMap, posted: &str) -> Result<(), Refused> {
        same_origin(headers).and_then(|()| self.check_csrf(posted))
    }

    /// Whether this is an operator.
    pub fn operator(&self) -> bool {
        self.caller.kind == AccountKind::Operator
    }
}

/// A request refused before it did anything (another site's, a stale form): a 403 page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            page::bare("Refused", html! { h1 { "Refused" } p { (self.0) } }),
        )
            .into_response()
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<Token> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| attest::hex::decode_array::<32>(v).ok())
        .map(Token::from_secret)
}

/// Refuses a request whose `Origin` names another site than the one it was sent to (a
/// browser sends `Origin` with every POST; a form on another site cannot post here).
pub fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if host.is_some() && origin_host == host {
        Ok(())
    } else {
        Err(Refused("This request came from another site."))
    }
}

impl FromRequestParts<ApiState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, Response> {
        let to_login = || {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            Redirect::to(&format!("/login?next={}", super::url_encode(&next))).into_response()
        };
        let Some(token) = cookie_value(&parts.headers) else {
            return Err(to_login());
        };
        let hash = token.hash();
        let pool = s.store.clone();
        let now = crate::runtime::now_ms();
        let row = tokio::task::spawn_blocking(move || pool.get().map(|st| st.session(&hash, now)))
            .await
            .map_err(|e| AppError::Internal(e.to_string()).into_response())?
            .map_err(|e| AppError::from(e).into_response())?
            .map_err(|e| AppError::from(e).into_response())?;
        let Some(row) = row else {
            return Err(to_login());
        };
        let caller = Caller {
            account: row.account,
            kind: row.kind,
            scopes: row.kind.allowed(),
            token: TokenId(0),
        };
        if let Some(slot) = parts.extensions.get::<crate::api::guard::AuditSlot>() {
            slot.set(caller);
        }
        Ok(Viewer {
            caller,
            name: row.name,
            csrf: attest::hex::encode(&row.csrf),
        })
    }
}

/// The login form's query.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a path on this site is a place to go after logging in (never `//host` or a URL).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

fn login_page(next: &str, error: Option<&str>, name: &str) -> maud::Markup {
    page::bare(
        "Log in",
        html! {
            main.login {
                h1 { "Heliostat" }
                p.lede { "Solar-powered compute whose carbon claims anyone can check." }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label for="name" { "Account" }
                    input #name type="text" name="name" value=(name) autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Log in" }
                }
            }
        },
    )
}

/// `GET /login`.
pub async fn login_form(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    login_page(&safe_next(q.next.as_deref()), None, "").into_response()
}

/// The login form as posted.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
}

/// `POST /login`: a session and its cookie, or the form again with a reason.
pub async fn login(
    State(s): State<ApiState>,
    ext: axum::http::Extensions,
    headers: HeaderMap,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    if let Err(r) = same_origin(&headers) {
        return r.into_response();
    }
    let console: &Console = &s.console;
    let addr = s
        .guard
        .client_ip(&ext, &headers)
        .map(|ip| SocketAddr::new(ip, 0));
    let next = safe_next(f.next.as_deref());
    if let Some(wait) = console.limiter.blocked(&f.name, addr, Instant::now()) {
        console.count_login("limited");
        let mins = wait.as_secs().div_ceil(60).max(1);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            login_page(
                &next,
                Some(&format!(
                    "Too many failed logins. Try again in {mins} minute{}.",
                    if mins == 1 { "" } else { "s" }
                )),
                &f.name,
            ),
        )
            .into_response();
    }
    let pool = s.store.clone();
    let name = f.name.clone();
    let password = f.password;
    let hours = console.session_hours;
    let checked =
        tokio::task::spawn_blocking(move || -> Result<Option<(AccountId, Token)>, AppError> {
            let mut st = pool.get()?;
            let found = if password.len() > MAX_PASSWORD {
                None
            } else {
                st.password_by_name(&name)?
            };
            let ok = match &found {
                Some((_, phc)) => check_password(&password, phc),
                None => {
                    check_password(&password, decoy());
                    false
                }
            };
            let (true, Some((account, _))) = (ok, found) else {
                return Ok(None);
            };
            let token =
                Token::generate().map_err(|e| AppError::Internal(format!("random source: {e}")))?;
            let mut csrf = [0u8; 32];
            getrandom::fill(&mut csrf)
                .map_err(|e| AppError::Internal(format!("random source: {e}")))?;
            let now = crate::runtime::now_ms();
            st.purge_sessions(now)?;
            st.create_session(token.hash(), account, csrf, now, now + hours * 3_600_000)?;
            Ok(Some((account, token)))
        })
        .await;
    match checked {
        Ok(Ok(Some((account, token)))) => {
            console.limiter.succeeded(&f.name);
            console.count_login("ok");
            tracing::info!(account = account.0, "console login");
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                attest::hex::encode(token.secret()),
                hours * 3600,
                if console.secure_cookies {
                    "; Secure"
                } else {
                    ""
                }
            );
            let mut r = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Ok(None)) => {
            console.limiter.failed(&f.name, addr, Instant::now());
            console.count_login("refused");
            tracing::info!("console login refused");
            (
                StatusCode::UNAUTHORIZED,
                login_page(&next, Some("Wrong account name or password."), &f.name),
            )
                .into_response()
        }
        Ok(Err(e)) => e.into_response(),
        Err(e) => AppError::Internal(e.to_string()).into_response(),
    }
}

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    pub csrf: String,
}

/// `POST /logout`: ends the session and clears the cookie.
pub async fn logout(
    State(s): State<ApiState>,
    viewer: Viewer,
    headers: HeaderMap,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Err(r) = viewer.check_form(&headers, &f.csrf) {
        return r.into_response();
    }
    if let Some(token) = cookie_value(&headers) {
        let hash = token.hash();
        let pool = s.store.clone();
        let _ = tokio::task::spawn_blocking(move || pool.get().map(|mut st| st.end_session(&hash)))
            .await;
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("hst_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_check() {
        assert!(matches!(hash_password("short"), Err(PasswordError::Length)));
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(check_password("correct horse battery", &phc));
        assert!(!check_password("correct horse batterY", &phc));
        assert!(!check_password("correct horse battery", "not a hash"));
        // A fresh salt every time.
        assert_ne!(phc, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn the_limiter_blocks_a_name_then_forgets_it() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        for i in 0..3 {
            assert_eq!(l.blocked("alice", Some(a), t0), None, "attempt {i}");
            l.failed("Alice", Some(a), t0 + Duration::from_secs(i));
        }
        // The name is blocked from any address, until its first failure leaves the window.
        let w = l
            .blocked("alice", Some(b), t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(w, Duration::from_secs(50));
        assert_eq!(l.blocked("bob", Some(b), t0), None);
        assert_eq!(
            l.blocked("alice", Some(b), t0 + Duration::from_secs(60)),
            None
        );
        // An address trying many names is blocked after four times the per-name limit.
        for i in 0..12 {
            l.failed(&format!("user{i}"), Some(b), t0);
        }
        assert!(l.blocked("carol", Some(b), t0).is_some());
        assert_eq!(l.blocked("carol", Some(a), t0), None);
        l.succeeded("carol");
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/jobs?x=1")), "/jobs?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&h).is_err());
    }
}
