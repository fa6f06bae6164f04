//! The job runner thread: drives one [`Execution`] with the wall clock, reading the
//! governor's latest decision between chunks (the agent's task updates it on every meter
//! sample) and taking operator controls (pause, resume, cancel). Compute blocks; nothing
//! else in the agent waits for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use attest::Hash32;
use attest::msg::{Backend, JobOutcome};

use super::exec::{Execution, Step};
use crate::clock::now_ms;
use crate::governor::Decision;
use crate::power::JobLoad;

/// Between the agent's task and the runner thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// The governor's latest decision.
    pub decision: Mutex<Decision>,
    /// The job's energy so far (meter), millijoules: for its energy limit.
    pub energy_mj: AtomicU64,
    /// Milliseconds spent running chunks, cumulative: the governor's "ran fraction".
    pub busy_ms: AtomicU64,
    /// Full-speed seconds left, x1000.
    pub remaining_ms: AtomicU64,
    /// Chunks done.
    pub chunks_done: AtomicU64,
    /// 1 while paused.
    pub paused: AtomicU64,
    /// 1 while its worker is released (a long pause).
    pub released: AtomicU64,
}

/// Operator controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Pause between chunks.
    Pause,
    /// Resume.
    Resume,
    /// Stop; the receipt says `Cancelled`.
    Cancel,
}

/// How the job ended, for the receipt.
#[derive(Debug)]
pub struct Finished {
    /// The outcome.
    pub outcome: JobOutcome,
    /// Outputs (completed jobs).
    pub outputs: Vec<Vec<u8>>,
    /// SHA-256 over them.
    pub output_hash: Hash32,
    /// Chunks run.
    pub chunks: u32,
    /// Pauses.
    pub pauses: u32,
    /// Where it ran.
    pub backend: Backend,
}

/// A running job's handle.
pub struct Handle {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Controls to the thread.
    pub control: mpsc::Sender<Control>,
    /// Chunks in all.
    pub chunk_count: u32,
}

/// Saves a job's progress between chunks: `save(chunks_done, outputs)` at most every
/// `every`.
pub struct Checkpointer {
    /// How often.
    pub every: Duration,
    /// Where to (from the job's thread); an error says why it was not saved.
    pub save: SaveCheckpoint,
}

/// Saves `(chunks_done, outputs)` somewhere durable.
pub type SaveCheckpoint = Box<dyn FnMut(u32, Vec<Vec<u8>>) -> Result<(), String> + Send>;

/// Lets a job's worker go when it has been paused for `after` (a night without sun, an
/// operator's pause): checkpointed first, then its worker ends (and with it its GPU
/// context and memory); when it may run again, `take_over` prepares it anew from that
/// checkpoint.
pub struct Release {
    /// How long a pause lasts before the worker is let go.
    pub after: Duration,
    /// The job prepared again and restored from its last checkpoint.
    pub take_over: Box<dyn FnMut() -> Result<super::PreparedJob, String> + Send>,
}

/// Starts the thread. `sim_load` (with the simulated GPU's watts) makes a simulated rig see
/// the job's draw. `done` is called once, from the thread, with how it ended.
pub fn spawn(
    mut exec: Execution,
    initial: Decision,
    sim_load: Option<(Arc<JobLoad>, f64)>,
    mut checkpoint: Option<Checkpointer>,
    mut release: Option<Release>,
    done: impl FnOnce(Finished) + Send + 'static,
) -> std::io::Result<Handle> {
    let shared = Arc::new(Shared::default());
    *shared.decision.lock().expect("fresh mutex") = initial;
    shared
        .remaining_ms
        .store((exec.remaining_s() * 1000.0) as u64, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    let chunk_count = exec.chunk_count();
    let sh = shared.clone();
    std::thread::Builder::new()
        .name("job".into())
        .spawn(move || {
            let mut last_checkpoint = std::time::Instant::now();
            let mut paused_since: Option<std::time::Instant> = None;
            let outcome = loop {
                while let Ok(c) = rx.try_recv() {
                    match c {
                        Control::Pause => exec.pause(),
                        Control::Resume => exec.resume(),
                        Control::Cancel => exec.cancel(),
                    }
                }
                let d = *sh.decision.lock().unwrap_or_else(|p| p.into_inner());
                let now = now_ms();
                match exec.next(now, &d, sh.energy_mj.load(Ordering::Relaxed)) {
                    Step::RunChunk(i) => {
                        paused_since = None;
                        if exec.is_released() {
                            let fresh = match release.as_mut() {
                                Some(r) => (r.take_over)(),
                                None => Err("no way to take it over".into()),
                            };
                            if let Err(e) = fresh.and_then(|j| exec.take_over(j).map_err(|e| e.to_string())) {
                                break JobOutcome::Failed(format!(
                                    "resuming after its worker was released in a long pause: {e}"
                                ));
                            }
                            sh.released.store(0, Ordering::Relaxed);
                            tracing::info!(chunk = i, "job taken over again from its checkpoint after a long pause");
                        }
                        let t0 = std::time::Instant::now();
                        if let Err(e) = exec.run_chunk(i) {
                            break JobOutcome::Failed(e.to_string());
                        }
                        let took = t0.elapsed();
                        let end = now + took.as_millis() as u64;
                        if let Some((load, watts)) = &sim_load {
                            load.drawn_uj.fetch_add(
                                (watts * took.as_micros() as f64) as u64,
                                Ordering::Relaxed,
                            );
                        }
                        sh.busy_ms
                            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
                        exec.chunk_ran(i, now, end.max(now + 1), d.duty);
                        sh.chunks_done
                            .store(exec.chunks_done() as u64, Ordering::Relaxed);
                        sh.remaining_ms
                            .store((exec.remaining_s() * 1000.0) as u64, Ordering::Relaxed);
                        if let Some(c) = checkpoint.as_mut()
                            && last_checkpoint.elapsed() >= c.every
                            && exec.chunks_done() < exec.chunk_count()
                        {
                            last_checkpoint = std::time::Instant::now();
                            let saved = exec
                                .checkpoint()
                                .map_err(|e| e.to_string())
                                .and_then(|(done, outputs)| (c.save)(done, outputs));
                            if let Err(e) = saved {
                                tracing::warn!(error = %e, "no checkpoint taken");
                            }
                        }
                    }
                    Step::WaitUntil(t) => {
                        sh.paused.store(exec.is_paused() as u64, Ordering::Relaxed);
                        if exec.is_paused() {
                            let since = *paused_since.get_or_insert_with(std::time::Instant::now);
                            if let (Some(r), Some(c)) = (release.as_ref(), checkpoint.as_mut())
                                && !exec.is_released()
                                && since.elapsed() >= r.after
                            {
                                let saved = exec
                                    .checkpoint()
                                    .map_err(|e| e.to_string())
                                    .and_then(|(done, outputs)| (c.save)(done, outputs));
                                match saved {
                                    Ok(()) => {
                                        exec.release();
                                        sh.released.store(1, Ordering::Relaxed);
                                        tracing::info!(
                                            paused_s = since.elapsed().as_secs(),
                                            "job paused for long: checkpointed and its worker released"
                                        );
                                    }
                                    // Kept as it is: without a checkpoint a release would lose it.
                                    Err(e) => tracing::warn!(error = %e, "paused job not released: no checkpoint"),
                                }
                            }
                        } else {
                            paused_since = None;
                        }
                        // Short sleeps: a control or a new decision is seen quickly.
                        let ms = t.saturating_sub(now).clamp(1, 50);
                        match rx.recv_timeout(Duration::from_millis(ms)) {
                            Ok(Control::Pause) => exec.pause(),
                            Ok(Control::Resume) => exec.resume(),
                            Ok(Control::Cancel) => exec.cancel(),
                            Err(_) => {}
                        }
                    }
                    Step::Finished(o) => break o,
                }
            };
            let (chunks, pauses, backend) = (exec.chunks_done(), exec.pauses, exec.backend());
            let (outcome, outputs, output_hash) = exec.finish(outcome);
            done(Finished {
                outcome,
                outputs,
                output_hash,
                chunks,
                pauses,
                backend,
            });
        })?;
    Ok(Handle {
        shared,
        control: tx,
        chunk_count,
    })
}
