//! The HTTP perimeter (docs/security.md, "HTTP"): security headers on every answer, rate
//! limits on token use and on failed authentication, and the audit log of operator actions.
//!
//! - Headers: no sniffing, no framing, no referrer, no caching unless a route says so, and a
//!   content security policy that loads nothing (the console sets its own, stricter for its
//!   pages).
//! - Token use: a token bucket per API token (`api.token_rate_per_s`, `api.token_burst`);
//!   past it, 429 `rate_limited` with `Retry-After`. Uploads are requests like any other.
//! - Failed authentication: a client address that sent `api.auth_failures_per_min` missing
//!   or bad tokens within a minute gets 429 `too_many_failures` until the minute is over,
//!   even with a good token (guessing tokens costs a minute per handful of guesses). Behind
//!   a reverse proxy, `api.forwarded_for = true` takes the address the proxy saw.
//! - Audit: every state-changing request (POST, PUT, PATCH, DELETE) made with a token or a
//!   console session that holds the `operate` scope is recorded after it is answered:
//!   when, which account and token, method, path (never the query or the body) and status.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::ApiState;
use crate::accounts::{Caller, Scope, TokenId};

/// Most token buckets or failure windows kept; past it the oldest half is forgotten (a
/// flood of distinct tokens or addresses costs memory, never correctness of the limits of
/// the others).
const MAX_KEYS: usize = 100_000;

/// Why a request was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The token is over its rate; retry after this many seconds.
    RateLimited(u64),
    /// The address sent too many bad tokens; retry after this many seconds.
    TooManyFailures(u64),
}

/// Rate limits and their counts.
#[derive(Debug)]
pub struct Guard {
    /// Take the client's address from the last `X-Forwarded-For` entry (the reverse proxy's),
    /// not from the connection (`api.forwarded_for`).
    forwarded_for: bool,
    rate_per_s: f64,
    burst: f64,
    failures_per_min: u32,
    buckets: Mutex<HashMap<TokenId, (f64, Instant)>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Requests refused for a token's rate.
    pub rate_limited: AtomicU64,
    /// Requests refused for an address's failures.
    pub failure_limited: AtomicU64,
    /// Missing or bad tokens seen.
    pub auth_failures: AtomicU64,
}

impl Guard {
    /// Limits from `[api]`.
    pub fn new(rate_per_s: f64, burst: u32, failures_per_min: u32) -> Guard {
        Guard {
            forwarded_for: false,
            rate_per_s,
            burst: f64::from(burst.max(1)),
            failures_per_min,
            buckets: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            rate_limited: AtomicU64::new(0),
            failure_limited: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        }
    }

    /// The client's address: the connection's, or behind a trusted reverse proxy
    /// (`api.forwarded_for`), the last `X-Forwarded-For` entry, which that proxy appended
    /// (the earlier ones are whatever the client sent).
    pub fn client_ip(
        &self,
        ext: &axum::http::Extensions,
        headers: &axum::http::HeaderMap,
    ) -> Option<IpAddr> {
        if self.forwarded_for {
            return headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok());
        }
        ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())
    }

    /// Whether `ip` may try a token now.
    pub fn check_address(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Held> {
        let Some(ip) = ip else { return Ok(()) };
        let failures = self.failures.lock().unwrap();
        match failures.get(&ip) {
            Some(&(n, since)) if n >= self.failures_per_min => {
                let left = Duration::from_secs(60).saturating_sub(now.duration_since(since));
                if left.is_zero() {
                    Ok(())
                } else {
                    self.failure_limited.fetch_add(1, Ordering::Relaxed);
                    Err(Held::TooManyFailures(left.as_secs().max(1)))
                }
            }
            _ => Ok(()),
        }
    }

    /// A missing or bad token from `ip`.
    pub fn failed(&self, ip: Option<IpAddr>, now: Instant) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
        let Some(ip) = ip else { return };
        let mut failures = self.failures.lock().unwrap();
        forget_oldest(&mut failures, |v| v.1);
        let e = failures.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= Duration::from_secs(60) {
            *e = (0, now);
        }
        e.0 += 1;
    }

    /// Takes one request from `token`'s bucket.
    pub fn take(&self, token: TokenId, now: Instant) -> Result<(), Held> {
        let mut buckets = self.buckets.lock().unwrap();
        forget_oldest(&mut buckets, |v| v.1);
        let (level, at) = buckets.entry(token).or_insert((self.burst, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.rate_per_s).min(self.burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let wait = (1.0 - *level) / self.rate_per_s.max(f64::MIN_POSITIVE);
            Err(Held::RateLimited(wait.ceil().max(1.0) as u64))
        }
    }
}

impl From<&crate::config::ApiConfig> for Guard {
    fn from(c: &crate::config::ApiConfig) -> Self {
        Guard {
            forwarded_for: c.forwarded_for,
            ..Guard::new(c.token_rate_per_s, c.token_burst, c.auth_failures_per_min)
        }
    }
}

fn forget_oldest<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    at: impl Fn(&V) -> Instant,
) {
    if map.len() < MAX_KEYS {
        return;
    }
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (at(v), k.clone())).collect();
    ages.sort_by_key(|(t, _)| *t);
    for (_, k) in ages.into_iter().take(MAX_KEYS / 2) {
        map.remove(&k);
    }
}

/// Headers on every answer (module documentation); a route's own value wins.
pub async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let mut set = |name, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CACHE_CONTROL, "no-store");
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    );
    r
}

/// Who made a state-changing request, filled in by the extractor that authenticated it.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Caller>>>);

impl AuditSlot {
    /// The request was made by `caller`.
    pub fn set(&self, caller: Caller) {
        *self.0.lock().unwrap() = Some(caller);
    }
}

/// Records operator actions (module documentation).
pub async fn audit(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let changes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !changes {
        return next.run(req).await;
    }
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let response = next.run(req).await;
    let caller = *slot.0.lock().unwrap();
    if let Some(c) = caller.filter(|c| c.scopes.has(Scope::Operate)) {
        let entry = crate::store::audit::AuditEntry {
            at_ms: crate::runtime::now_ms(),
            account: c.account,
            token: c.token,
            method,
            path,
            status: response.status().as_u16(),
        };
        let store = s.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            use crate::store::audit::AuditStore;
            store
                .get()
                .map_err(|e| e.to_string())?
                .append_audit(&entry)
                .map_err(|e| e.to_string())
        })
        .await;
        if !matches!(written, Ok(Ok(_))) {
            tracing::error!(
                ?written,
                "an operator action could not be written to the audit log"
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_burst_then_its_rate() {
        let g = Guard::new(2.0, 3, 5);
        let t0 = Instant::now();
        let tok = TokenId(1);
        for _ in 0..3 {
            assert_eq!(g.take(tok, t0), Ok(()));
        }
        assert_eq!(g.take(tok, t0), Err(Held::RateLimited(1)));
        assert_eq!(
            g.take(TokenId(2), t0),
            Ok(()),
            "another token has its own bucket"
        );
        assert_eq!(g.take(tok, t0 + Duration::from_millis(500)), Ok(()));
        assert_eq!(
            g.take(tok, t0 + Duration::from_millis(500)),
            Err(Held::RateLimited(1))
        );
        assert_eq!(g.rate_limited.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_it_is_trusted() {
        let mut ext = axum::http::Extensions::new();
        ext.insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            5000,
        ))));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.9".parse().unwrap(),
        );
        let direct = Guard::new(1.0, 1, 1);
        assert_eq!(
            direct.client_ip(&ext, &headers),
            Some("127.0.0.1".parse().unwrap())
        );
        let proxied = Guard {
            forwarded_for: true,
            ..Guard::new(1.0, 1, 1)
        };
        assert_eq!(
            proxied.client_ip(&ext, &headers),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(proxied.client_ip(&ext, &axum::http::HeaderMap::new()), None);
    }

    #[test]
    fn an_address_with_too_many_failures_waits_out_the_minute() {
        let g = Guard::new(10.0, 10, 3);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.check_address(Some(ip), t0), Ok(()));
            g.failed(Some(ip), t0);
        }
        assert_eq!(
            g.check_address(Some(ip), t0 + Duration::from_secs(10)),
            Err(Held::TooManyFailures(50))
        );
        assert_eq!(g.check_address(Some(other), t0), Ok(()));
        assert_eq!(
            g.check_address(Some(ip), t0 + Duration::from_secs(61)),
            Ok(())
        );
        g.failed(Some(ip), t0 + Duration::from_secs(61));
        assert_eq!(
            g.check_address(Some(ip), t0 + Duration::from_secs(62)),
            Ok(()),
            "a new minute starts the count again"
        );
    }
}
