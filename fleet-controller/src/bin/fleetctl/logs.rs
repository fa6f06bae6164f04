//! Following a job: the API's long poll on `GET /api/v1/jobs/{id}/events`, resumed after
//! a lost connection from the last event seen, for `fleetctl logs` and `fleetctl submit`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use fleet_controller::intensity::civil::format_rfc3339_ms;
use serde_json::Value;

use crate::api::{Api, ApiError};

/// What a follower is told.
pub enum Item<'a> {
    /// An entry of the job's history (`seq`, `state`, `at_ms`, `reason`).
    Event(&'a Value),
    /// The device's latest progress report (`chunks_done`, `chunks`, `paused`, `at_ms`).
    Progress(&'a Value),
    /// The connection was lost and is being retried.
    Reconnecting(&'a str),
}

/// How long one long poll waits on the controller, ms.
const POLL_WAIT_MS: u64 = 20_000;

/// Streams a job's events to `sink`: every history entry once, in order, and each new
/// progress report; a lost connection is retried (backing off to 10 s) from the last
/// entry seen, an API error (unknown job, bad token) ends it. Without `follow` it returns
/// after what is there now; with it, when the job reaches a final state or `limit`
/// passes. Returns the last answer.
pub fn stream(
    api: &Api,
    id: &str,
    follow: bool,
    limit: Duration,
    mut sink: impl FnMut(Item<'_>),
) -> Result<Value> {
    let start = Instant::now();
    let mut after: Option<u64> = None;
    let mut progress_after: Option<u64> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut path = format!("/api/v1/jobs/{id}/events?");
        if let Some(a) = after {
            path.push_str(&format!("after={a}&"));
        }
        if let Some(p) = progress_after {
            path.push_str(&format!("progress_after={p}&"));
        }
        if follow {
            path.push_str(&format!("wait_ms={POLL_WAIT_MS}"));
        }
        let v = match api.json(path.trim_end_matches(['&', '?']), true) {
            Ok(v) => v,
            Err(e) if e.downcast_ref::<ApiError>().is_some() => return Err(e),
            Err(e) if follow && start.elapsed() < limit => {
                sink(Item::Reconnecting(&format!("{e:#}")));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        backoff = Duration::from_millis(500);
        for e in v["events"].as_array().into_iter().flatten() {
            sink(Item::Event(e));
            after = e["seq"].as_u64().or(after);
        }
        if let Some(at) = v["progress"]["at_ms"].as_u64()
            && progress_after.is_none_or(|p| at > p)
        {
            sink(Item::Progress(&v["progress"]));
            progress_after = Some(at);
        }
        if !follow || v["final"].as_bool() == Some(true) || start.elapsed() >= limit {
            return Ok(v);
        }
    }
}

/// A history entry as a line: `2026-06-21T13:00:05Z  running  started on ...`.
pub fn event_line(e: &Value) -> String {
    format!(
        "{}  {:<10}  {}",
        e["at_ms"]
            .as_i64()
            .map_or_else(|| "?".into(), format_rfc3339_ms),
        e["state"].as_str().unwrap_or("?"),
        e["reason"].as_str().unwrap_or("")
    )
}

/// A progress report as a bar: `[########------------]  12/30 chunks (paused)`.
pub fn progress_bar(p: &Value) -> String {
    let done = p["chunks_done"].as_u64().unwrap_or(0);
    let all = p["chunks"].as_u64().unwrap_or(0).max(1);
    let filled = (done.min(all) * 20 / all) as usize;
    format!(
        "[{}{}] {done:>4}/{all} chunks{}",
        "#".repeat(filled),
        "-".repeat(20 - filled),
        if p["paused"].as_bool() == Some(true) {
            " (paused)"
        } else {
            ""
        }
    )
}

/// Follows a job until it reaches a final state (or `limit` passes): its state changes
/// and a progress bar on stderr (redrawn in place on a terminal). Returns the job.
pub fn follow(api: &Api, id: &str, limit: Duration) -> Result<Value> {
    // Escape codes redraw the bar in place only for a person at a terminal that wants them.
    let tty = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    let mut bar = false;
    let last = stream(api, id, true, limit, |item| {
        let mut err = std::io::stderr().lock();
        if bar {
            let _ = write!(err, "\r\x1b[2K");
            bar = false;
        }
        match item {
            Item::Event(e) => {
                let _ = writeln!(err, "{}", event_line(e));
            }
            Item::Progress(p) if tty => {
                let _ = write!(err, "{}", progress_bar(p));
                bar = true;
            }
            Item::Progress(p) => {
                let _ = writeln!(err, "{}", progress_bar(p));
            }
            Item::Reconnecting(why) => {
                let _ = writeln!(err, "connection lost ({why}); resuming");
            }
        }
        let _ = err.flush();
    })?;
    if bar {
        eprintln!();
    }
    if last["final"].as_bool() != Some(true) {
        eprintln!(
            "still {} after {} s; the job goes on (fleetctl logs {id} --follow)",
            last["state"],
            limit.as_secs()
        );
    }
    api.json(&format!("/api/v1/jobs/{id}"), true)
}
