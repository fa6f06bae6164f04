//! The demo's buyer: every so often it uploads a fresh input and submits a `sha256_batch`
//! job over the controller's HTTP API with the buyer's token, as a customer's script
//! would, alternating flexible jobs (which may wait for the sun) and urgent ones. The
//! controller's scheduler places them on the simulated fleet.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Items of 64 bytes per job.
const ITEMS: usize = 2_000;

/// Submits one job at `now_ms`; returns its id.
pub fn submit_one(api: &str, token: &str, n: u64, now_ms: u64) -> Result<String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build(),
    );
    let input: Vec<u8> = (0..ITEMS * 64)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(n * 7919) as u8)
        .collect();
    let hash = attest::Hash32::digest(&input);
    let auth = format!("Bearer {token}");
    let put = agent
        .put(format!("{api}/api/v1/blobs/{}", hash.to_hex()))
        .header("Authorization", &auth)
        .send(&input[..])
        .context("uploading the input")?;
    if !put.status().is_success() {
        bail!("uploading the input: HTTP {}", put.status());
    }
    let flexible = n.is_multiple_of(2);
    let job = serde_json::json!({
        "workload": {"builtin": {"kernel": "sha256_batch", "params": [
            {"name": "count", "value": ITEMS}, {"name": "item_len", "value": 64}]}},
        "inputs": [hash.to_hex()],
        "deadline_ms": now_ms + if flexible { 12 } else { 1 } * 3_600_000,
        "max_price_micro_per_gpu_hour": 1_000_000,
        "flexible": flexible,
    });
    let mut resp = agent
        .post(format!("{api}/api/v1/jobs"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(job.to_string())
        .context("submitting the job")?;
    let status = resp.status();
    let body: serde_json::Value =
        serde_json::from_reader(resp.body_mut().as_reader()).context("the API's answer")?;
    if !status.is_success() {
        bail!("submitting the job: HTTP {status}: {body}");
    }
    body["id"]
        .as_str()
        .map(str::to_string)
        .context("the answer names no job id")
}
