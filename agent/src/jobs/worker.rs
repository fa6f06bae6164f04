//! Jobs in a worker process: a buyer's kernel never runs in the process that holds the
//! device key. The agent starts `heliostat-agent worker` (the same binary, which then reads
//! no configuration and no key), as its own user when the agent runs as root, with resource
//! limits; it sends the job and its inputs over the worker's stdin and asks for one chunk
//! at a time. A kernel that faults, spins past its time or runs out of memory takes down
//! only the worker: the job fails with the reason and the agent goes on.
//!
//! The protocol on the pipes: frames of a 4-byte little-endian length and a JSON message;
//! inputs, the PTX module and outputs follow their message as blobs of an 8-byte length and
//! the bytes.

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use attest::msg::{Backend, Workload};
use serde::{Deserialize, Serialize};

use super::confine::{SandboxSpec, apply_limits, enter_sandbox};
use super::kernel::ChunkPlan;
use super::test_faults::TestFault;
use super::{ComputeBackend, JobError, PreparedJob, select_backend};

/// The most bytes one frame's JSON may have.
const MAX_FRAME: u32 = 1 << 20;
/// The most bytes one blob may have (the agent's own bound on inputs and outputs).
const MAX_BLOB: u64 = 1 << 30;

/// Limits the worker puts on itself before it reads the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerLimits {
    /// Address space, bytes (CPU jobs only: the CUDA driver maps device memory into the
    /// address space); 0 for none.
    pub memory_bytes: u64,
    /// Open files; 0 for no change.
    pub open_files: u64,
    /// CPU seconds (the kernel sends SIGXCPU, then SIGKILL); 0 for none.
    pub cpu_seconds: u64,
}

impl WorkerLimits {
    /// No limits (a worker served inside a test process).
    pub const NONE: WorkerLimits = WorkerLimits {
        memory_bytes: 0,
        open_files: 0,
        cpu_seconds: 0,
    };
}

/// How to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The agent's binary.
    pub program: std::path::PathBuf,
    /// The user and group to run it as (set when the agent runs as root).
    pub user: Option<(u32, u32)>,
    /// Its limits.
    pub limits: WorkerLimits,
    /// Longest one chunk may take before the worker is killed.
    pub chunk_timeout: Duration,
    /// The sandbox the worker enters (`jobs.sandbox`).
    pub sandbox: Option<SandboxSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ToWorker {
    /// The job; `inputs` blobs follow, then the module's when `module`.
    Init {
        workload: Workload,
        inputs: u32,
        module: bool,
        output_sizes: Vec<u64>,
        chunk_work: Option<u64>,
        prefer_gpu: bool,
        limits: WorkerLimits,
        /// The sandbox to enter before the job runs (none: a worker served in a test).
        #[serde(default)]
        sandbox: Option<SandboxSpec>,
    },
    /// Run chunk `chunk`.
    Run { chunk: u32 },
    /// Send the outputs so far (a checkpoint).
    Snapshot,
    /// Continue from a checkpoint: `done` chunks ran; `outputs` blobs follow.
    Restore { done: u32, outputs: u32 },
    /// Send the outputs and exit.
    Finish,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FromWorker {
    /// Prepared.
    Ready {
        backend: Backend,
        items: u64,
        chunks: u32,
        work: u64,
        /// What sandbox holds, in words (none asked: absent).
        #[serde(default)]
        sandbox: Option<String>,
    },
    /// Chunk `chunk` ran.
    Ran { chunk: u32 },
    /// The outputs follow, one blob each.
    Finished { outputs: u32 },
    /// The outputs so far follow, one blob each.
    Snapshot { outputs: u32 },
    /// The checkpoint was taken back.
    Restored,
    /// It could not.
    Failed { error: String },
}

fn write_frame(w: &mut impl Write, msg: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(msg)?;
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(&bytes)?;
    w.flush()
}

fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a {len}-byte frame")));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

fn write_blob(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u64).to_le_bytes())?;
    w.write_all(bytes)
}

fn read_blob(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_BLOB {
        return Err(std::io::Error::other(format!("a {len}-byte blob")));
    }
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// The worker's side (`heliostat-agent worker`): reads one job from `input`, answers on
/// `output`, returns the exit code. Holds no key and reads no configuration.
pub fn serve(input: impl Read, output: impl Write) -> i32 {
    let mut r = BufReader::new(input);
    let mut w = BufWriter::new(output);
    match serve_inner(&mut r, &mut w) {
        Ok(()) => 0,
        Err(e) => {
            let _ = write_frame(&mut w, &FromWorker::Failed { error: e });
            1
        }
    }
}

fn serve_inner(r: &mut impl Read, w: &mut impl Write) -> Result<(), String> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    let ToWorker::Init {
        workload,
        inputs,
        module,
        output_sizes,
        chunk_work,
        prefer_gpu,
        limits,
        sandbox,
    } = read_frame(r).map_err(io("reading the job"))?
    else {
        return Err("the first message was not the job".into());
    };
    let fault = TestFault::arm();
    let (backend, _) = select_backend(prefer_gpu);
    let cpu = matches!(backend, ComputeBackend::Cpu(_));
    apply_limits(&limits, cpu)?;
    // A CPU job needs no file from here on: sandboxed before its inputs are even read. A
    // GPU job's worker first makes its CUDA context (below).
    let mut confined = match &sandbox {
        Some(spec) if cpu => Some(enter_sandbox(spec, false)?),
        _ => None,
    };
    let blobs = (0..inputs)
        .map(|_| read_blob(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io("reading the inputs"))?;
    let module = if module {
        Some(read_blob(r).map_err(io("reading the module"))?)
    } else {
        None
    };
    let chunk_work = chunk_work.unwrap_or_else(|| backend.default_chunk_work());
    // Kept for the CPU fallback only when the GPU may refuse.
    let spare = matches!(backend, ComputeBackend::Cuda(_)).then(|| blobs.clone());
    let prepared = backend.prepare(
        &workload,
        module.as_deref(),
        blobs,
        &output_sizes,
        chunk_work,
    );
    let mut job = match (prepared, spare) {
        (Err(JobError::Cuda(super::CudaError::NvrtcMissing)), Some(blobs)) => {
            // PTX runs without NVRTC; built-ins need it: run those on the CPU.
            let cpu = ComputeBackend::Cpu(super::CpuBackend::new());
            let work = cpu.default_chunk_work();
            cpu.prepare(&workload, module.as_deref(), blobs, &output_sizes, work)
        }
        (other, _) => other,
    }
    .map_err(|e| e.to_string())?;
    if let Some(spec) = &sandbox
        && confined.is_none()
    {
        confined = Some(enter_sandbox(spec, true)?);
    }
    write_frame(
        w,
        &FromWorker::Ready {
            backend: job.backend().clone(),
            items: job.plan.items(),
            chunks: job.chunk_count(),
            work: job.work_units(),
            sandbox: confined,
        },
    )
    .map_err(io("answering"))?;
    loop {
        match read_frame::<ToWorker>(r).map_err(io("reading a request"))? {
            ToWorker::Run { chunk } => {
                TestFault::fire(&fault)?;
                job.run_chunk(chunk).map_err(|e| e.to_string())?;
                write_frame(w, &FromWorker::Ran { chunk }).map_err(io("answering"))?;
            }
            ToWorker::Snapshot => {
                let (_, outputs) = job.snapshot().map_err(|e| e.to_string())?;
                write_frame(
                    w,
                    &FromWorker::Snapshot {
                        outputs: outputs.len() as u32,
                    },
                )
                .map_err(io("answering"))?;
                for o in &outputs {
                    write_blob(w, o).map_err(io("sending a checkpoint"))?;
                }
                w.flush().map_err(io("sending a checkpoint"))?;
            }
            ToWorker::Restore { done, outputs } => {
                let outputs = (0..outputs)
                    .map(|_| read_blob(r))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(io("reading a checkpoint"))?;
                job.restore(done, outputs).map_err(|e| e.to_string())?;
                write_frame(w, &FromWorker::Restored).map_err(io("answering"))?;
            }
            ToWorker::Finish => {
                let mut outputs = job.finish().map_err(|e| e.to_string())?;
                if fault.contains(&TestFault::Corrupt)
                    && let Some(v) = outputs.first_mut().and_then(|o| o.get_mut(..4))
                {
                    let x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    let wrong = if x.is_finite() {
                        x + 1.0 + x.abs()
                    } else {
                        1.0
                    };
                    v.copy_from_slice(&wrong.to_le_bytes());
                }
                write_frame(
                    w,
                    &FromWorker::Finished {
                        outputs: outputs.len() as u32,
                    },
                )
                .map_err(io("answering"))?;
                for o in &outputs {
                    write_blob(w, o).map_err(io("sending an output"))?;
                }
                w.flush().map_err(io("sending the outputs"))?;
                return Ok(());
            }
            ToWorker::Init { .. } => return Err("a second job".into()),
        }
    }
}

/// The agent's side of a running worker.
pub struct WorkerJob {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    replies: mpsc::Receiver<std::io::Result<Reply>>,
    chunk_timeout: Duration,
}

enum Reply {
    Message(FromWorker),
    Outputs(Vec<Vec<u8>>),
}

impl std::fmt::Debug for WorkerJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerJob")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Drop for WorkerJob {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WorkerJob {
    /// What became of the worker, for an error: its exit status once it is gone.
    fn died(&mut self, what: &str) -> JobError {
        let _ = self.child.kill();
        let status = self.child.wait().map_or_else(|e| e.to_string(), describe);
        JobError::Worker(format!("{what}: the worker {status}"))
    }

    fn reply(&mut self, timeout: Duration, what: &str) -> Result<Reply, JobError> {
        match self.replies.recv_timeout(timeout) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => Err(self.died(what)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(JobError::Worker(format!(
                    "{what}: no answer within {} s; the worker was killed",
                    timeout.as_secs()
                )))
            }
        }
    }

    /// Runs chunk `i` in the worker.
    pub(super) fn run(&mut self, i: u32) -> Result<(), JobError> {
        if write_frame(&mut self.stdin, &ToWorker::Run { chunk: i }).is_err() {
            return Err(self.died(&format!("chunk {i}")));
        }
        match self.reply(self.chunk_timeout, &format!("chunk {i}"))? {
            Reply::Message(FromWorker::Ran { chunk }) if chunk == i => Ok(()),
            Reply::Message(FromWorker::Failed { error }) => Err(JobError::Worker(error)),
            _ => Err(self.died(&format!("chunk {i}: an answer out of turn"))),
        }
    }

    /// The outputs so far.
    pub(super) fn snapshot(&mut self) -> Result<Vec<Vec<u8>>, JobError> {
        if write_frame(&mut self.stdin, &ToWorker::Snapshot).is_err() {
            return Err(self.died("a checkpoint"));
        }
        match self.reply(self.chunk_timeout, "a checkpoint")? {
            Reply::Outputs(o) => Ok(o),
            Reply::Message(FromWorker::Failed { error }) => Err(JobError::Worker(error)),
            _ => Err(self.died("a checkpoint: an answer out of turn")),
        }
    }

    /// Continues from a checkpoint.
    pub(super) fn restore(&mut self, done: u32, outputs: Vec<Vec<u8>>) -> Result<bool, JobError> {
        let sent = (|| {
            write_frame(
                &mut self.stdin,
                &ToWorker::Restore {
                    done,
                    outputs: outputs.len() as u32,
                },
            )?;
            for o in &outputs {
                write_blob(&mut self.stdin, o)?;
            }
            self.stdin.flush()
        })();
        if sent.is_err() {
            return Err(self.died("restoring a checkpoint"));
        }
        match self.reply(self.chunk_timeout, "restoring a checkpoint")? {
            Reply::Message(FromWorker::Restored) => Ok(true),
            Reply::Message(FromWorker::Failed { error }) => Err(JobError::BadCheckpoint(error)),
            _ => Err(self.died("restoring a checkpoint: an answer out of turn")),
        }
    }

    /// The outputs; the worker exits.
    pub(super) fn finish(mut self) -> Result<Vec<Vec<u8>>, JobError> {
        if write_frame(&mut self.stdin, &ToWorker::Finish).is_err() {
            return Err(self.died("finishing"));
        }
        match self.reply(self.chunk_timeout, "finishing")? {
            Reply::Outputs(o) => Ok(o),
            Reply::Message(FromWorker::Failed { error }) => Err(JobError::Worker(error)),
            _ => Err(self.died("finishing: an answer out of turn")),
        }
    }
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!(
            "was killed by signal {sig}{}",
            match sig {
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                24 => " (SIGXCPU: its CPU time limit)",
                _ => "",
            }
        ),
        _ => "ended".into(),
    }
}

/// Reads the worker's answers on a thread of its own, so that waiting for one can time out.
fn read_replies(
    stdout: std::process::ChildStdout,
    outputs: usize,
) -> mpsc::Receiver<std::io::Result<Reply>> {
    let (tx, rx) = mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("job-worker-io".into())
        .spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let msg = match read_frame::<FromWorker>(&mut r) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let reply = match msg {
                    FromWorker::Finished { outputs: n } | FromWorker::Snapshot { outputs: n }
                        if n as usize == outputs =>
                    {
                        match (0..n).map(|_| read_blob(&mut r)).collect() {
                            Ok(o) => Reply::Outputs(o),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    other => Reply::Message(other),
                };
                if tx.send(Ok(reply)).is_err() {
                    return;
                }
            }
        });
    rx
}

/// Starts a worker for a job and prepares it there; the job then runs chunk by chunk in
/// the worker through [`PreparedJob::run_chunk`] and [`PreparedJob::finish`].
pub fn prepare(
    cmd: &WorkerCommand,
    prefer_gpu: bool,
    workload: &Workload,
    module: Option<&[u8]>,
    inputs: &[Vec<u8>],
    output_sizes: &[u64],
) -> Result<PreparedJob, JobError> {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(&cmd.program);
    c.arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .current_dir("/")
        .env_remove("RUST_LOG");
    if let Some((uid, gid)) = cmd.user {
        c.uid(uid).gid(gid);
    }
    let mut child = c
        .spawn()
        .map_err(|e| JobError::Worker(format!("starting {}: {e}", cmd.program.display())))?;
    let stdin = BufWriter::new(child.stdin.take().expect("piped"));
    let stdout = child.stdout.take().expect("piped");
    let mut job = WorkerJob {
        replies: read_replies(stdout, output_sizes.len()),
        child,
        stdin,
        chunk_timeout: cmd.chunk_timeout,
    };
    let sent = (|| {
        write_frame(
            &mut job.stdin,
            &ToWorker::Init {
                workload: workload.clone(),
                inputs: inputs.len() as u32,
                module: module.is_some(),
                output_sizes: output_sizes.to_vec(),
                chunk_work: None,
                prefer_gpu,
                limits: cmd.limits,
                sandbox: cmd.sandbox.clone(),
            },
        )?;
        for i in inputs {
            write_blob(&mut job.stdin, i)?;
        }
        if let Some(m) = module {
            write_blob(&mut job.stdin, m)?;
        }
        job.stdin.flush()
    })();
    if sent.is_err() {
        return Err(job.died("sending the job"));
    }
    match job.reply(cmd.chunk_timeout, "preparing")? {
        Reply::Message(FromWorker::Ready {
            backend,
            items,
            chunks,
            work,
            sandbox,
        }) => {
            match sandbox {
                Some(s) if s.contains("fully enforced") => {
                    tracing::debug!(sandbox = %s, "worker ready")
                }
                Some(s) => tracing::warn!(sandbox = %s, "worker ready, not fully sandboxed"),
                None => {}
            }
            let plan = ChunkPlan::from_parts(items, chunks).ok_or_else(|| {
                JobError::Worker(format!("a plan of {chunks} chunks over {items} items"))
            })?;
            Ok(PreparedJob::new(
                backend,
                plan,
                work,
                super::State::Worker(job),
            ))
        }
        Reply::Message(FromWorker::Failed { error }) => Err(JobError::Worker(error)),
        _ => Err(job.died("preparing: an answer out of turn")),
    }
}

/// The uid and gid of `user` from `/etc/passwd`-formatted `passwd`.
pub fn user_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != user {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(user_ids(passwd, "nobody"), Some((65534, 65534)));
        assert_eq!(user_ids(passwd, "heliostat"), None);
    }

    #[test]
    fn a_job_served_over_pipes_gives_the_in_process_outputs() {
        use crate::jobs::kernel::{Builtin, Sha256Batch};
        let b = Builtin::Sha256Batch(Sha256Batch::new(100, 32).unwrap());
        let input: Vec<u8> = (0..3_200u32).map(|i| (i % 251) as u8).collect();
        let mut request = Vec::new();
        write_frame(
            &mut request,
            &ToWorker::Init {
                workload: b.to_workload(),
                inputs: 1,
                module: false,
                output_sizes: vec![b.output_size()],
                chunk_work: Some(1),
                prefer_gpu: false,
                limits: WorkerLimits::NONE,
                sandbox: None,
            },
        )
        .unwrap();
        write_blob(&mut request, &input).unwrap();
        // Chunk work 1: one item a chunk, 100 chunks.
        for chunk in 0..100 {
            write_frame(&mut request, &ToWorker::Run { chunk }).unwrap();
        }
        write_frame(&mut request, &ToWorker::Finish).unwrap();
        let mut answer = Vec::new();
        assert_eq!(serve(&request[..], &mut answer), 0);
        let mut r = &answer[..];
        assert!(matches!(
            read_frame::<FromWorker>(&mut r).unwrap(),
            FromWorker::Ready { chunks: 100, .. }
        ));
        for chunk in 0..100 {
            assert!(matches!(
                read_frame::<FromWorker>(&mut r).unwrap(),
                FromWorker::Ran { chunk: c } if c == chunk
            ));
        }
        assert!(matches!(
            read_frame::<FromWorker>(&mut r).unwrap(),
            FromWorker::Finished { outputs: 1 }
        ));
        let out = read_blob(&mut r).unwrap();
        let cpu = ComputeBackend::Cpu(crate::jobs::CpuBackend::new());
        let mut direct = cpu
            .prepare(&b.to_workload(), None, vec![input], &[b.output_size()], 1)
            .unwrap();
        for i in 0..direct.chunk_count() {
            direct.run_chunk(i).unwrap();
        }
        assert_eq!(out, direct.finish().unwrap()[0]);
    }

    #[test]
    fn a_job_the_worker_cannot_prepare_is_answered_with_the_reason() {
        let mut request = Vec::new();
        write_frame(
            &mut request,
            &ToWorker::Init {
                workload: Workload::Builtin {
                    kernel: "no_such_kernel".into(),
                    params: vec![],
                },
                inputs: 0,
                module: false,
                output_sizes: vec![],
                chunk_work: None,
                prefer_gpu: false,
                limits: WorkerLimits::NONE,
                sandbox: None,
            },
        )
        .unwrap();
        let mut answer = Vec::new();
        assert_eq!(serve(&request[..], &mut answer), 1);
        match read_frame::<FromWorker>(&mut &answer[..]).unwrap() {
            FromWorker::Failed { error } => assert!(error.contains("no_such_kernel"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
