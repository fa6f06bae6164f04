//! The agent's optional Prometheus endpoint (`metrics_listen`, off by default): `GET
//! /metrics` in the text exposition format, for a rig owner's own Prometheus. Names carry
//! base units; labels are the few channel kinds. The text is made after every record (and
//! link change) and served as it was last made, so a scrape never waits on the meter.

use std::sync::{Arc, Mutex};

use attest::msg::MeterRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::status::Status;

/// The exposition for a status and the last record.
pub fn render(status: &Status, last: Option<&MeterRecord>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let one = |v: String| [(String::new(), v)];
    let o = &status.outbox;
    family(
        "heliostat_agent_outbox_records",
        "gauge",
        "Records in the outbox not yet acknowledged by the controller.",
        &one(o.depth.to_string()),
    );
    family(
        "heliostat_agent_outbox_bytes",
        "gauge",
        "Bytes of the outbox on disk.",
        &one(o.bytes.to_string()),
    );
    family(
        "heliostat_agent_outbox_blocked",
        "gauge",
        "1 while the outbox cannot store records (full or disk full).",
        &one(u8::from(o.blocked.is_some()).to_string()),
    );
    family(
        "heliostat_agent_link_connected",
        "gauge",
        "1 while connected to the broker.",
        &one(u8::from(status.link.connected).to_string()),
    );
    family(
        "heliostat_agent_link_connects_total",
        "counter",
        "Connections made to the broker.",
        &one(status.link.connects.to_string()),
    );
    if let Some(r) = last {
        family(
            "heliostat_agent_last_record_sequence",
            "gauge",
            "Sequence number of the last signed record.",
            &one(r.link.seq.0.to_string()),
        );
        let mut power = std::collections::BTreeMap::<String, f64>::new();
        let mut energy = std::collections::BTreeMap::<String, f64>::new();
        for c in &r.channels {
            let kind = serde_json::to_value(c.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            *power.entry(kind.clone()).or_default() += c.power.0 as f64 / 1000.0;
            *energy.entry(kind).or_default() += c.energy.0 as f64 / 1000.0;
        }
        let rows = |m: &std::collections::BTreeMap<String, f64>| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (format!("{{source=\"{k}\"}}"), format!("{v:.3}")))
                .collect()
        };
        family(
            "heliostat_agent_power_watts",
            "gauge",
            "Mean power over the last record, by source.",
            &rows(&power),
        );
        family(
            "heliostat_agent_energy_joules_total",
            "counter",
            "Cumulative energy of the chain's counters, by source.",
            &rows(&energy),
        );
        if let Some(soc) = r.channels.iter().find_map(|c| c.soc_permille) {
            family(
                "heliostat_agent_battery_ratio",
                "gauge",
                "Battery state of charge, 0 to 1.",
                &one(format!("{:.3}", f64::from(soc) / 1000.0)),
            );
        }
    }
    out
}

/// Serves the latest exposition on `listener` until the process ends: `GET /metrics`
/// answers it, anything else a 404.
pub async fn serve(listener: tokio::net::TcpListener, text: Arc<Mutex<String>>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let text = text.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut got = 0;
            // The request line and headers (a scrape sends no body).
            while got < buf.len() {
                match conn.read(&mut buf[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..got]);
            let path = head.split_whitespace().nth(1).unwrap_or_default();
            let (status, body) = if head.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                ("200 OK", text.lock().map(|t| t.clone()).unwrap_or_default())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        });
    }
}
