//! A job's inputs: read from the blob folder by their SHA-256, or fetched over HTTP(S) from
//! the controller's blob store and kept there; checked against their hash either way, then
//! the job prepared on its backend. Runs on a thread of its own, off the agent's task.

use std::path::Path;
use std::time::Duration;

/// Reads a blob from `dir`, or fetches it from `url` and keeps it there; checks its hash.
fn fetch_blob(dir: &Path, url: Option<&str>, hash: &attest::Hash32) -> Result<Vec<u8>, String> {
    let path = dir.join(hash.to_hex());
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            let Some(base) = url else {
                return Err(format!("input {hash}: {e} (and no jobs.blob_url)"));
            };
            let from = format!("{base}{}", hash.to_hex());
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build(),
            );
            let b = agent
                .get(&from)
                .call()
                .map_err(|e| format!("input {hash}: fetching {from}: {e}"))?
                .body_mut()
                .with_config()
                .limit(crate::jobs::kernel::MAX_INPUT_BYTES)
                .read_to_vec()
                .map_err(|e| format!("input {hash}: reading {from}: {e}"))?;
            if attest::Hash32::digest(&b) == *hash {
                let tmp = dir.join(format!(".{}.tmp", hash.to_hex()));
                let kept = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&tmp, &b))
                    .and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = kept {
                    tracing::warn!(error = %e, "could not keep a fetched blob");
                }
            }
            b
        }
    };
    let got = attest::Hash32::digest(&bytes);
    if got != *hash {
        return Err(format!("input {hash}: the blob hashes to {got}"));
    }
    Ok(bytes)
}

/// Fetches a job's inputs and prepares it (uploads to the GPU): off the agent's task.
pub(super) fn fetch_and_prepare(
    spec: &attest::msg::JobSpec,
    backend: &crate::jobs::ComputeBackend,
    dir: &Path,
    url: Option<&str>,
) -> Result<crate::jobs::PreparedJob, String> {
    let inputs = spec
        .inputs
        .iter()
        .map(|h| fetch_blob(dir, url, h))
        .collect::<Result<Vec<_>, _>>()?;
    let module = match &spec.workload {
        attest::msg::Workload::Ptx { module, .. } => Some(fetch_blob(dir, url, module)?),
        attest::msg::Workload::Builtin { .. } => None,
    };
    let prepared = backend.prepare(
        &spec.workload,
        module.as_deref(),
        inputs.clone(),
        &spec.output_sizes,
        backend.default_chunk_work(),
    );
    match prepared {
        Err(crate::jobs::JobError::Cuda(crate::jobs::CudaError::NvrtcMissing)) => {
            // PTX runs without NVRTC; built-ins need it: run those on the CPU.
            tracing::warn!(job = %spec.id, "NVRTC missing: this built-in runs on the CPU");
            let cpu = crate::jobs::ComputeBackend::Cpu(crate::jobs::CpuBackend::new());
            cpu.prepare(
                &spec.workload,
                module.as_deref(),
                inputs,
                &spec.output_sizes,
                cpu.default_chunk_work(),
            )
        }
        other => other,
    }
    .map_err(|e| e.to_string())
}
