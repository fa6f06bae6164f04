//! Energy attribute certificates from a shell: a buyer's holding, an operator's import, a
//! retirement for one hour of a done job, and a job's emissions measured and covered apart.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::api::Api;
use crate::{Output, print};

fn grams(mg: &Value) -> String {
    format!("{:.3} g", mg.as_u64().unwrap_or(0) as f64 / 1000.0)
}

/// `fleetctl certificates`.
pub fn list(api: &Api, out: Output, account: Option<u64>) -> Result<()> {
    let path = match account {
        Some(a) => format!("/api/v1/certificates?account={a}"),
        None => "/api/v1/certificates".into(),
    };
    let v = api.json(&path, true)?;
    print(out, &v, |v| {
        let all = v["certificates"]
            .as_array()
            .map_or(&[][..], |a| a.as_slice());
        if all.is_empty() {
            return "no certificates".into();
        }
        all.iter()
            .map(|h| {
                let c = &h["certificate"];
                let state = match h["retired"].as_object() {
                    Some(r) => format!(
                        "retired for job {} hour {} ({} covered)",
                        r["job"].as_str().unwrap_or("?"),
                        r["hour"],
                        grams(&r["covered_mg"])
                    ),
                    None => "held".into(),
                };
                format!(
                    "{}  {} {} Wh {} {} ({}), {}..{} ms, issuer {}: {state}",
                    c["id"].as_str().unwrap_or("?"),
                    c["scheme"].as_str().unwrap_or("?"),
                    c["volume_wh"],
                    c["source"].as_str().unwrap_or("?"),
                    c["region"].as_str().unwrap_or("?"),
                    c["producer"].as_str().unwrap_or("?"),
                    c["start"],
                    c["end"],
                    c["issuer"].as_str().unwrap_or("?"),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// `fleetctl import-certificates FILE --account N` (an operator).
pub fn import(api: &Api, out: Output, file: &Path, account: u64) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let certificates: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
    anyhow::ensure!(
        certificates.is_array(),
        "{}: a JSON array of certificates is expected",
        file.display()
    );
    let body = json!({"account": account, "certificates": certificates});
    let v = api.send(
        "POST",
        "/api/v1/certificates",
        body.to_string().into_bytes(),
    )?;
    print(out, &v, |v| {
        format!(
            "{} certificates imported for account {}",
            v["imported"], v["account"]
        )
    });
    Ok(())
}

/// `fleetctl retire JOB CERTIFICATE --hour H`.
pub fn retire(
    api: &Api,
    out: Output,
    job: &str,
    certificate: &str,
    hour: u64,
    device: Option<&str>,
) -> Result<()> {
    let mut body = json!({"certificate": certificate, "hour": hour});
    if let Some(d) = device {
        body["device"] = json!(d);
    }
    let v = api.send(
        "POST",
        &format!("/api/v1/jobs/{job}/retirements"),
        body.to_string().into_bytes(),
    )?;
    print(out, &v, |v| {
        format!(
            "certificate {} retired for job {job} hour {}: it covers {} (retirement {})",
            v["certificate"]["id"].as_str().unwrap_or("?"),
            v["hour"],
            grams(&v["covered_mg"]),
            v["id"]
        )
    });
    Ok(())
}

/// `fleetctl emissions JOB`.
pub fn emissions(api: &Api, out: Output, job: &str, device: Option<&str>) -> Result<()> {
    let path = match device {
        Some(d) => format!("/api/v1/jobs/{job}/emissions?device={d}"),
        None => format!("/api/v1/jobs/{job}/emissions"),
    };
    let v = api.json(&path, true)?;
    print(out, &v, |v| {
        let c = &v["coverage"];
        let mut t = format!(
            "job {job} on {}: {} CO2e measured; covered by granular certificates {}, by yearly RECs {} (never netted: SCI {} per unit)",
            v["device"].as_str().unwrap_or("?"),
            grams(&c["measured_mg"]),
            grams(&c["granular_mg"]),
            grams(&c["rec_mg"]),
            grams(&v["sci_per_unit_mg"]),
        );
        for h in c["hours"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "\nhour {}: {} measured at {} mg/kWh, {} granular, {} REC",
                h["hour"],
                grams(&h["measured_mg"]),
                h["intensity_mg_per_kwh"],
                grams(&h["granular_mg"]),
                grams(&h["rec_mg"])
            ));
        }
        t
    });
    Ok(())
}
