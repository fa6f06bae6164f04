//! Preparing a job: its inputs fetched (or found in the blob cache) and the job loaded in
//! its worker, on a thread of its own when a `RunJob` arrives, and again from its
//! checkpoint when a long pause released its worker.

use std::path::{Path, PathBuf};

use attest::msg::JobSpec;

use super::blobs::{BlobLimits, fetch_and_prepare};
use super::files;
use crate::config::AgentConfig;
use crate::jobs::PreparedJob;
use crate::jobs::worker::WorkerCommand;

/// Everything a job needs to be prepared (again) from its inputs.
#[derive(Debug, Clone)]
pub(super) struct Preparer {
    pub spec: JobSpec,
    pub backend: crate::jobs::ComputeBackend,
    pub dir: PathBuf,
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub limits: BlobLimits,
    pub worker: Option<WorkerCommand>,
}

impl Preparer {
    /// Fetches the inputs and prepares the job (blocking: on a thread of its own).
    pub fn prepare(&self) -> Result<PreparedJob, String> {
        fetch_and_prepare(
            &self.spec,
            &self.backend,
            &self.dir,
            self.url.as_deref(),
            self.token_file.as_deref(),
            self.limits,
            self.worker.as_ref(),
        )
    }

    /// Prepares the job again and restores it from its checkpoint under `data`.
    pub fn prepare_from_checkpoint(&self, data: &Path) -> Result<PreparedJob, String> {
        let (done, outputs) = files::read_checkpoint(data, self.spec.id)
            .ok_or_else(|| format!("no checkpoint of job {}", self.spec.id))?;
        let mut job = self.prepare()?;
        job.restore(done, outputs)
            .map_err(|e| format!("restoring its checkpoint: {e}"))?;
        Ok(job)
    }
}

/// How to start workers for `cfg`: the agent's own binary, as `jobs.worker_user` when the
/// agent runs as root.
pub(super) fn worker_command(
    cfg: &AgentConfig,
) -> Result<crate::jobs::worker::WorkerCommand, String> {
    let program = std::env::current_exe().map_err(|e| format!("the agent's own binary: {e}"))?;
    let user = if rustix::process::geteuid().is_root() {
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| format!("reading /etc/passwd: {e}"))?;
        let ids = crate::jobs::worker::user_ids(&passwd, &cfg.jobs.worker_user).ok_or_else(|| {
            format!(
                "no user {:?} (jobs.worker_user) to run jobs as: jobs are refused rather than run as root",
                cfg.jobs.worker_user
            )
        })?;
        if ids.0 == 0 {
            return Err(
                "jobs.worker_user is root: jobs are refused rather than run as root".into(),
            );
        }
        Some(ids)
    } else {
        None
    };
    Ok(crate::jobs::worker::WorkerCommand {
        program,
        user,
        limits: crate::jobs::worker::WorkerLimits {
            memory_bytes: cfg.jobs.worker_memory_mib << 20,
            open_files: cfg.jobs.worker_open_files,
            cpu_seconds: 0,
        },
        chunk_timeout: std::time::Duration::from_millis(cfg.jobs.chunk_timeout_ms),
        sandbox: cfg.jobs.sandbox.then(|| {
            let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or(p.to_path_buf());
            crate::jobs::confine::SandboxSpec {
                secret: std::iter::once(absolute(&cfg.data_dir))
                    .chain(cfg.jobs.blob_token_file.as_deref().map(absolute))
                    .collect(),
            }
        }),
    })
}
