//! Alerts: rules over the fleet (a device offline, a battery low, a job failed) evaluated
//! every `alerts.every_ms` with a delay (`for_s`: the condition must hold that long, against
//! flapping) and hysteresis (`clear`: it resolves only past another level); each firing and
//! resolution is stored and POSTed as JSON to `alerts.webhook_url`, retried until taken,
//! unless a silence covers it (then it is shown, never sent). The console lists them and
//! makes silences.
//!
//! The webhook's body: `{"status": "firing"|"resolved", "rule", "kind", "subject", "value",
//! "threshold", "detail", "at_ms", "id"}` (`id` is stable: a receiver can drop repeats).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::alerts::{AlertKind, AlertRule, AlertsConfig};
use crate::store::StoreError;
use crate::store::alerts::{AlertChange, AlertEvent, AlertState, AlertStore, Silence};

/// Most delivery attempts of one event (then it stays undelivered, shown with its error).
pub const MAX_ATTEMPTS: u32 = 20;

/// What a rule saw of one subject now: the value, or nothing (unknown: no change).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The value (seconds offline, battery fraction).
    pub value: f64,
}

fn breached(rule: &AlertRule, v: f64) -> bool {
    match rule.kind {
        AlertKind::Offline => v >= rule.threshold,
        AlertKind::LowBattery => v <= rule.threshold,
        AlertKind::JobFailed => true,
    }
}

fn cleared(rule: &AlertRule, v: f64) -> bool {
    let clear = rule.clear.unwrap_or(rule.threshold);
    match rule.kind {
        AlertKind::Offline => v < clear,
        AlertKind::LowBattery => v >= clear && v > rule.threshold,
        AlertKind::JobFailed => false,
    }
}

fn detail(rule: &AlertRule, subject: &str, v: f64, firing: bool) -> String {
    match (rule.kind, firing) {
        (AlertKind::Offline, true) => format!("{subject} not heard from for {v:.0} s"),
        (AlertKind::Offline, false) => format!("{subject} heard from again"),
        (AlertKind::LowBattery, true) => format!("{subject} battery at {:.0} %", v * 100.0),
        (AlertKind::LowBattery, false) => format!("{subject} battery back to {:.0} %", v * 100.0),
        (AlertKind::JobFailed, _) => format!("{subject} failed"),
    }
}

/// One rule on one subject: the change its observation makes to its state, if any. Pure:
/// the whole state machine (clear → pending → firing → clear) with delay and hysteresis.
pub fn step(
    rule: &AlertRule,
    subject: &str,
    state: Option<&AlertState>,
    seen: Observation,
    now: u64,
    silenced: bool,
) -> Option<AlertChange> {
    let v = seen.value;
    let event = |status: &str, detail: String| AlertEvent {
        id: 0,
        rule: rule.name.clone(),
        kind: rule.kind.as_str().into(),
        subject: subject.into(),
        status: status.into(),
        value: v,
        threshold: rule.threshold,
        detail,
        at_ms: now,
        silenced,
        delivered_ms: None,
        attempts: 0,
        last_error: None,
    };
    let st = |firing: bool, since_ms: u64| AlertState {
        rule: rule.name.clone(),
        subject: subject.into(),
        firing,
        value: v,
        since_ms,
    };
    let change = |state: Option<AlertState>, event: Option<AlertEvent>| AlertChange {
        rule: rule.name.clone(),
        subject: subject.into(),
        state,
        event,
    };
    match state {
        None if breached(rule, v) => {
            if rule.for_s == 0 {
                Some(change(
                    Some(st(true, now)),
                    Some(event("firing", detail(rule, subject, v, true))),
                ))
            } else {
                Some(change(Some(st(false, now)), None))
            }
        }
        None => None,
        Some(s) if !s.firing => {
            if !breached(rule, v) {
                // It did not last: back to clear, nothing said.
                Some(change(None, None))
            } else if now.saturating_sub(s.since_ms) >= rule.for_s * 1000 {
                Some(change(
                    Some(st(true, now)),
                    Some(event("firing", detail(rule, subject, v, true))),
                ))
            } else {
                None
            }
        }
        Some(_) if cleared(rule, v) => Some(change(
            None,
            Some(event("resolved", detail(rule, subject, v, false))),
        )),
        Some(_) => None,
    }
}

/// What the rules look at, read from the store.
fn observe<
    S: crate::store::Store + crate::store::marks::MarkStore + crate::store::probes::ProbeStore,
>(
    store: &S,
    rule: &AlertRule,
    now: u64,
) -> Result<Vec<(String, Observation)>, StoreError> {
    let mut out = Vec::new();
    match rule.kind {
        AlertKind::Offline => {
            for d in store.devices()? {
                if d.state == crate::store::DeviceState::Approved {
                    let secs = now.saturating_sub(d.last_seen_ms) as f64 / 1000.0;
                    out.push((format!("device:{}", d.id), Observation { value: secs }));
                }
            }
        }
        AlertKind::LowBattery => {
            let listings = crate::market_view::view(
                store,
                &crate::market_view::Search::default(),
                now,
                u64::MAX / 4,
            )?;
            for l in listings {
                if let Some(b) = l.battery {
                    out.push((format!("device:{}", l.device), Observation { value: b }));
                }
            }
        }
        AlertKind::JobFailed => {}
    }
    Ok(out)
}

/// One evaluation of every rule: the changes it wrote, in order.
pub fn evaluate<S>(
    store: &mut S,
    cfg: &AlertsConfig,
    now: u64,
) -> Result<Vec<AlertChange>, StoreError>
where
    S: AlertStore
        + crate::store::Store
        + crate::store::marks::MarkStore
        + crate::store::probes::ProbeStore,
{
    let states: HashMap<(String, String), AlertState> = store
        .alert_states()?
        .into_iter()
        .map(|s| ((s.rule.clone(), s.subject.clone()), s))
        .collect();
    let silences = store.silences(now)?;
    let silenced = |rule: &str, subject: &str| {
        silences
            .iter()
            .any(|s: &Silence| s.covers(rule, subject, now))
    };
    let mut changes = Vec::new();
    for rule in &cfg.rules {
        if rule.kind == AlertKind::JobFailed {
            // Once per failed job, from where the last evaluation stopped (the first one
            // starts now: history is not re-announced).
            let mark = format!("job_failed:{}", rule.name);
            let Some(after) = store.alert_mark(&mark)? else {
                store.set_alert_mark(&mark, now)?;
                continue;
            };
            let mut last = after;
            for f in store.failed_jobs_since(after)? {
                let (job, device, reason, at) = (f.job, f.device, f.reason, f.at_ms);
                let subject = format!("job:{job}");
                let mut e = AlertEvent {
                    id: 0,
                    rule: rule.name.clone(),
                    kind: rule.kind.as_str().into(),
                    subject: subject.clone(),
                    status: "firing".into(),
                    value: 1.0,
                    threshold: rule.threshold,
                    detail: format!(
                        "job {job} failed{}: {reason}",
                        device.map(|d| format!(" on {d}")).unwrap_or_default()
                    ),
                    at_ms: at,
                    silenced: silenced(&rule.name, &subject),
                    delivered_ms: None,
                    attempts: 0,
                    last_error: None,
                };
                e.at_ms = at;
                changes.push(AlertChange {
                    rule: rule.name.clone(),
                    subject,
                    state: None,
                    event: Some(e),
                });
                last = last.max(at);
            }
            store.set_alert_mark(&mark, last)?;
            continue;
        }
        let seen = observe(store, rule, now)?;
        for (subject, o) in &seen {
            let state = states.get(&(rule.name.clone(), subject.clone()));
            if let Some(c) = step(rule, subject, state, *o, now, silenced(&rule.name, subject)) {
                changes.push(c);
            }
        }
        // A subject that is gone (a device revoked) resolves what it had.
        for ((r, subject), s) in &states {
            if r == &rule.name && s.firing && !seen.iter().any(|(x, _)| x == subject) {
                changes.push(AlertChange {
                    rule: r.clone(),
                    subject: subject.clone(),
                    state: None,
                    event: Some(AlertEvent {
                        id: 0,
                        rule: r.clone(),
                        kind: rule.kind.as_str().into(),
                        subject: subject.clone(),
                        status: "resolved".into(),
                        value: s.value,
                        threshold: rule.threshold,
                        detail: format!("{subject} is no longer watched"),
                        at_ms: now,
                        silenced: silenced(r, subject),
                        delivered_ms: None,
                        attempts: 0,
                        last_error: None,
                    }),
                });
            }
        }
    }
    store.apply_alert_changes(&changes)?;
    for c in &changes {
        if let Some(e) = &c.event {
            tracing::warn!(rule = %e.rule, subject = %e.subject, status = %e.status, detail = %e.detail, "alert");
        }
    }
    Ok(changes)
}

/// The webhook's JSON for an event.
pub fn webhook_body(e: &AlertEvent) -> serde_json::Value {
    serde_json::json!({
        "id": e.id,
        "status": e.status,
        "rule": e.rule,
        "kind": e.kind,
        "subject": e.subject,
        "value": e.value,
        "threshold": e.threshold,
        "detail": e.detail,
        "at_ms": e.at_ms,
    })
}

/// Sends what the webhook has not taken yet (oldest first, each until a 2xx answer); how
/// many were delivered.
pub fn deliver<S: AlertStore>(
    store: &mut S,
    http: &ureq::Agent,
    url: &str,
    now: u64,
) -> Result<usize, StoreError> {
    let mut delivered = 0;
    for e in store.undelivered_alerts(100)? {
        if e.attempts >= MAX_ATTEMPTS {
            continue;
        }
        let r = http
            .post(url)
            .header("content-type", "application/json")
            .send(webhook_body(&e).to_string());
        match r {
            Ok(resp) if resp.status().is_success() => {
                store.mark_alert_delivery(e.id, now, None)?;
                delivered += 1;
            }
            Ok(resp) => {
                store.mark_alert_delivery(e.id, now, Some(&format!("HTTP {}", resp.status())))?;
                break;
            }
            Err(err) => {
                store.mark_alert_delivery(e.id, now, Some(&err.to_string()))?;
                // The receiver is down: try the rest next time, in order.
                break;
            }
        }
    }
    Ok(delivered)
}

/// The alerts thread: evaluates and delivers every `every_ms` until `stop`.
pub fn spawn(
    cfg: AlertsConfig,
    db: std::path::PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut store = crate::store::sqlite::SqliteStore::open(&db)?;
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    Ok(std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || {
            while !*stop.borrow() {
                let now = crate::runtime::now_ms();
                if let Err(e) = evaluate(&mut store, &cfg, now) {
                    tracing::error!(error = %e, "alert evaluation failed; retried next time");
                }
                if let Some(url) = &cfg.webhook_url
                    && let Err(e) = deliver(&mut store, &http, url, now)
                {
                    tracing::error!(error = %e, "alert delivery failed; retried next time");
                }
                let end = std::time::Instant::now() + Duration::from_millis(cfg.every_ms);
                while std::time::Instant::now() < end && !*stop.borrow() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battery() -> AlertRule {
        AlertRule {
            name: "battery low".into(),
            kind: AlertKind::LowBattery,
            threshold: 0.2,
            clear: Some(0.3),
            for_s: 60,
        }
    }

    /// Runs observations through the state machine; the events' statuses.
    fn run(rule: &AlertRule, seen: &[(u64, f64)]) -> Vec<(u64, String)> {
        let mut state: Option<AlertState> = None;
        let mut out = Vec::new();
        for &(t, v) in seen {
            if let Some(c) = step(
                rule,
                "device:x",
                state.as_ref(),
                Observation { value: v },
                t * 1000,
                false,
            ) {
                if let Some(e) = c.event {
                    out.push((t, e.status));
                }
                state = c.state;
            }
        }
        out
    }

    #[test]
    fn a_low_battery_fires_after_its_delay_and_resolves_past_its_hysteresis() {
        let r = battery();
        // Dips for 30 s only: nothing. Stays low for 60 s: fires once. Rises to 25 %: still
        // firing (hysteresis). Back to 30 %: resolved once.
        let ev = run(
            &r,
            &[
                (0, 0.5),
                (10, 0.15),
                (40, 0.25),
                (50, 0.18),
                (80, 0.19),
                (110, 0.17),
                (120, 0.25),
                (130, 0.29),
                (140, 0.31),
                (150, 0.5),
            ],
        );
        assert_eq!(
            ev,
            [(110, "firing".to_string()), (140, "resolved".to_string())]
        );
    }

    #[test]
    fn offline_fires_at_once_without_a_delay_and_clears_below_its_clear_level() {
        let r = AlertRule {
            name: "offline".into(),
            kind: AlertKind::Offline,
            threshold: 300.0,
            clear: Some(60.0),
            for_s: 0,
        };
        let ev = run(
            &r,
            &[
                (0, 10.0),
                (1, 299.0),
                (2, 300.0),
                (3, 400.0),
                (4, 100.0),
                (5, 59.0),
            ],
        );
        assert_eq!(ev, [(2, "firing".to_string()), (5, "resolved".to_string())]);
    }

    #[test]
    fn silences_cover_by_rule_subject_and_time() {
        let s = Silence {
            id: 1,
            rule: Some("battery low".into()),
            subject: None,
            until_ms: 100,
            reason: "maintenance".into(),
        };
        assert!(s.covers("battery low", "device:a", 99));
        assert!(!s.covers("battery low", "device:a", 100));
        assert!(!s.covers("offline", "device:a", 50));
    }

    /// A failed job fires its rule once, from the first evaluation on (history before it is
    /// not re-announced), into the webhook's outbox; a silence on it keeps it from delivery.
    #[test]
    fn a_failed_job_fires_once_and_a_silenced_one_is_kept_from_the_webhook() {
        use crate::store::blobs::BlobStore;
        use crate::store::jobs::{JobStore, NewJob};
        use crate::store::sqlite::SqliteStore;
        let mut st = SqliteStore::in_memory().unwrap();
        let owner = crate::accounts::create(
            &mut st,
            crate::accounts::AccountKind::Buyer,
            "alice",
            1 << 20,
            None,
            "",
            crate::accounts::Token::from_secret([1; 32]),
            1,
        )
        .unwrap()
        .account
        .id;
        let input = attest::Hash32::digest(b"abc");
        st.grant_blob(owner, input, 3, 50).unwrap();
        let req = serde_json::from_value(serde_json::json!({
            "workload": {"builtin": {"kernel": "sha256_batch",
                "params": [{"name": "count", "value": 1}, {"name": "item_len", "value": 3}]}},
            "inputs": [input], "deadline_ms": 10_000_000, "max_price_micro_per_gpu_hour": 1,
        }))
        .unwrap();
        let order = crate::jobs::validate(req, 100, &HashMap::from([(input, 3)])).unwrap();
        let fail = |st: &mut SqliteStore, id: attest::msg::JobId, at: u64| {
            st.insert_job(
                &NewJob {
                    id,
                    owner,
                    order: order.clone(),
                    created_ms: at - 10,
                    escrow: 0,
                },
                "accepted",
            )
            .unwrap();
            let rec = st.job_of(owner, id).unwrap().unwrap();
            let t = rec
                .state
                .transition(crate::jobs::JobState::Failed, at, "wrong output")
                .unwrap();
            assert!(st.apply_transition(id, &t).unwrap());
        };
        let cfg = AlertsConfig {
            rules: vec![AlertRule {
                name: "job failed".into(),
                kind: AlertKind::JobFailed,
                threshold: 0.0,
                clear: None,
                for_s: 0,
            }],
            ..AlertsConfig::default()
        };
        fail(&mut st, attest::msg::JobId([1; 16]), 1_000);
        // The first evaluation marks where it starts: the old failure is history.
        assert!(evaluate(&mut st, &cfg, 2_000).unwrap().is_empty());
        fail(&mut st, attest::msg::JobId([2; 16]), 3_000);
        let c = evaluate(&mut st, &cfg, 4_000).unwrap();
        assert_eq!(c.len(), 1);
        let e = c[0].event.as_ref().unwrap();
        assert_eq!(
            (e.status.as_str(), e.subject.as_str()),
            ("firing", "job:02020202020202020202020202020202")
        );
        assert!(e.detail.contains("wrong output"), "{}", e.detail);
        // Once only.
        assert!(evaluate(&mut st, &cfg, 5_000).unwrap().is_empty());
        assert_eq!(st.undelivered_alerts(10).unwrap().len(), 1);
        // A silenced failure is recorded, not queued for the webhook.
        st.add_silence(
            &Silence {
                id: 0,
                rule: Some("job failed".into()),
                subject: None,
                until_ms: 100_000,
                reason: "drill".into(),
            },
            None,
            5_000,
        )
        .unwrap();
        fail(&mut st, attest::msg::JobId([3; 16]), 6_000);
        let c = evaluate(&mut st, &cfg, 7_000).unwrap();
        assert!(c[0].event.as_ref().unwrap().silenced);
        assert_eq!(st.undelivered_alerts(10).unwrap().len(), 1);
        assert_eq!(st.alert_events(10).unwrap().len(), 2);
    }

    #[test]
    fn rules_are_checked() {
        let mut c = AlertsConfig::default();
        assert!(c.validate().is_ok());
        c.rules.push(battery());
        assert!(c.validate().unwrap_err().contains("unique"));
        c.rules.pop();
        c.rules[1].clear = Some(0.1);
        assert!(c.validate().is_err());
        c.rules[1].clear = None;
        c.webhook_url = Some("ftp://x".into());
        assert!(c.validate().is_err());
    }
}
