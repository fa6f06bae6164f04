//! What a worker does to itself before a buyer's job runs in it: resource limits, dying
//! with the agent, and a Landlock sandbox that keeps it off the filesystem (above all off
//! the device key, which a worker running as the agent's own user could otherwise read).
//!
//! The sandbox: a CPU job needs no file at all once its inputs came over stdin, so its
//! worker may open none; no worker may bind or connect a TCP socket (Landlock ABI 4, Linux
//! 6.7; UDP and other families are not covered). A GPU job's worker has loaded the CUDA driver and made its
//! context by then; it may still read (and open the device nodes for writing) under the
//! system folders the driver uses, except any that holds a secret path the agent names
//! (its data folder). Landlock needs Linux 5.13; where the kernel lacks it the job runs
//! unsandboxed and the worker says so, which the agent logs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::worker::WorkerLimits;

/// The sandbox a worker puts itself in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Paths the worker must not reach (the agent's data folder: its key, outbox, blobs).
    pub secret: Vec<PathBuf>,
}

/// The system folders a GPU worker may read after its CUDA context is made (libraries,
/// driver configuration, `/proc` and `/sys` for the driver's queries, `/dev` for the
/// device nodes).
const GPU_ROOTS: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/opt", "/etc", "/proc", "/sys", "/dev", "/run",
];

/// Sets resource limits on this process (the worker, before it reads the job's inputs).
pub fn apply_limits(limits: &WorkerLimits, cpu_backend: bool) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let set = |res: Resource, n: u64, what: &str| {
        setrlimit(
            res,
            Rlimit {
                current: Some(n),
                maximum: Some(n),
            },
        )
        .map_err(|e| format!("limiting {what} to {n}: {e}"))
    };
    if *limits == WorkerLimits::NONE {
        return Ok(());
    }
    set(Resource::Core, 0, "core dumps")?;
    if limits.open_files > 0 {
        set(Resource::Nofile, limits.open_files, "open files")?;
    }
    if limits.cpu_seconds > 0 {
        set(Resource::Cpu, limits.cpu_seconds, "CPU seconds")?;
    }
    if cpu_backend && limits.memory_bytes > 0 {
        set(Resource::As, limits.memory_bytes, "the address space")?;
    }
    Ok(())
}

/// Ends this process (the worker) within half a second of its parent's (the agent's)
/// death, even in the middle of a chunk: a worker never outlives an agent killed with
/// SIGKILL. (Not `PR_SET_PDEATHSIG`: that follows the thread that started the worker,
/// which ends once the job is prepared.)
pub fn die_with_parent() {
    let parent = rustix::process::getppid();
    let _ = std::thread::Builder::new()
        .name("watch-agent".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if rustix::process::getppid() != parent {
                    std::process::exit(3);
                }
            }
        });
}

/// The GPU roots a worker may read, without any that holds a secret path.
fn gpu_roots(secret: &[PathBuf]) -> Vec<&'static Path> {
    GPU_ROOTS
        .iter()
        .map(Path::new)
        .filter(|r| r.exists() && !secret.iter().any(|s| s.starts_with(r)))
        .collect()
}

/// Puts this process in the sandbox: no filesystem access at all for a CPU job, read
/// access (and device nodes) under [`GPU_ROOTS`] minus the secret ones for a GPU job.
/// Returns what holds, in words ("landlock: fully enforced", or why not).
pub fn enter_sandbox(spec: &SandboxSpec, gpu: bool) -> Result<String, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        path_beneath_rules,
    };
    let abi = ABI::V5;
    let fail = |e: landlock::RulesetError| format!("the Landlock sandbox: {e}");
    // No TCP either (binding or connecting): nothing a job needs, and the way out for a
    // job that found something to send.
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(fail)?
        .create()
        .map_err(fail)?;
    if gpu {
        let roots = gpu_roots(&spec.secret);
        let read = AccessFs::from_read(abi);
        ruleset = ruleset
            .add_rules(path_beneath_rules(&roots, read))
            .map_err(fail)?;
        if Path::new("/dev").exists() && !spec.secret.iter().any(|s| s.starts_with("/dev")) {
            ruleset = ruleset
                .add_rules(path_beneath_rules(
                    ["/dev"],
                    read | AccessFs::WriteFile | AccessFs::IoctlDev,
                ))
                .map_err(fail)?;
        }
    }
    let status = ruleset.restrict_self().map_err(fail)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "landlock: fully enforced".into(),
        RulesetStatus::PartiallyEnforced => {
            "landlock: partly enforced (an older kernel: some accesses stay open)".into()
        }
        RulesetStatus::NotEnforced => {
            "landlock: not enforced (the kernel lacks it): the worker is not sandboxed".into()
        }
    })
}
