//! The files the running agent keeps in its data directory, and how each is written: the
//! chain state, the command nonce window, the running-job marker, the status report and the
//! device key's path. Every replacement is a temporary file renamed into place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::jobs::desk::Marker;
use crate::meter::ChainState;
use crate::nonces::NonceWindow;

/// The device key.
pub fn key_path(data: &Path) -> PathBuf {
    data.join("device.key")
}
/// The chain state (next sequence number, last hash, counters).
pub fn state_path(data: &Path) -> PathBuf {
    data.join("chain-state.json")
}
/// The command nonce window.
pub fn nonces_path(data: &Path) -> PathBuf {
    data.join("command-nonces.json")
}
/// The controller's key rotations the agent followed (postcard, `attest::keys`).
pub fn key_links_path(data: &Path) -> PathBuf {
    data.join("controller-keys.bin")
}
/// Written when a job starts, removed when its receipt is stored: a restart finds it.
pub fn running_job_path(data: &Path) -> PathBuf {
    data.join("running-job.json")
}
/// Where the agent writes its status for `heliostat-agent status`.
pub fn status_path(data: &Path) -> PathBuf {
    data.join("status.json")
}

/// Replaces `path` with `bytes` durably: attest's one write-whole helper (a temporary file
/// beside it, fsynced, renamed into place, and the folder fsynced), so a power cut leaves
/// the old file or the new one.
pub use attest::durable::write_durable;

/// Replaces `path` with `bytes` through a renamed temporary file, without fsync.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Saves the chain state (durably: the next start resumes the chain from it).
pub fn save_state(data: &Path, state: &ChainState) -> Result<()> {
    let path = state_path(data);
    let bytes = serde_json::to_vec(state)?;
    write_durable(&path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// What the chain state file says.
pub enum SavedState {
    /// It was read.
    Found(ChainState),
    /// There is none.
    Missing,
    /// It did not parse.
    Corrupt,
}

/// Reads the chain state file.
pub fn load_state(data: &Path) -> SavedState {
    match std::fs::read(state_path(data)) {
        Ok(bytes) => match serde_json::from_slice::<ChainState>(&bytes) {
            Ok(s) => SavedState::Found(s),
            Err(_) => SavedState::Corrupt,
        },
        Err(_) => SavedState::Missing,
    }
}

/// The command nonce window saved in the data directory. A file from an agent before the
/// window kept expiries is a bare list of nonces, whose commands' expiries are unknown: each
/// is kept for an hour. No file: an empty window. A file that cannot be read or parsed is an
/// error (the caller fails closed: an empty window would let old commands replay).
pub fn load_nonces(data: &Path, now: u64) -> Result<NonceWindow, String> {
    let path = nonces_path(data);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NonceWindow::default()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if let Ok(w) = serde_json::from_slice(&bytes) {
        return Ok(w);
    }
    let legacy = serde_json::from_slice::<Vec<u64>>(&bytes)
        .map_err(|e| format!("{}: not a nonce window: {e}", path.display()))?;
    let mut w = NonceWindow::default();
    for n in legacy {
        w.remember(n, now + 3_600_000, now);
    }
    Ok(w)
}

/// Saves the command nonce window durably (before the command it admitted is acted on).
pub fn save_nonces(data: &Path, w: &NonceWindow) -> std::io::Result<()> {
    let b = serde_json::to_vec(w).map_err(std::io::Error::other)?;
    write_durable(&nonces_path(data), &b)
}

/// The controller's key now: `root` (the provisioned key) followed along the rotations
/// saved in `data` (`attest::keys`); `root` when there are none, or when they do not
/// check (said in the log).
pub fn controller_key(data: &Path, root: attest::PublicKey) -> attest::PublicKey {
    let Ok(bytes) = std::fs::read(key_links_path(data)) else {
        return root;
    };
    match attest::keys::decode_links(&bytes)
        .and_then(|links| attest::keys::KeyHistory::from_links(root, &links))
    {
        Ok(h) => h.newest(),
        Err(e) => {
            tracing::error!(error = %e, "the saved controller key rotations do not check: using the provisioned key");
            root
        }
    }
}

/// Writes the running-job marker durably.
pub fn write_marker(data: &Path, marker: &Marker) -> std::io::Result<()> {
    let b = serde_json::to_vec(marker).map_err(std::io::Error::other)?;
    write_durable(&running_job_path(data), &b)
}

/// The running-job marker: none, or what it says (or why it cannot be read).
pub fn read_marker(data: &Path) -> Option<Result<Marker, serde_json::Error>> {
    let bytes = std::fs::read(running_job_path(data)).ok()?;
    Some(serde_json::from_slice(&bytes))
}

/// Where a running job's checkpoint is kept.
pub fn checkpoint_path(data: &Path, job: attest::msg::JobId) -> PathBuf {
    data.join("jobs")
        .join(job.to_string())
        .join("checkpoint.bin")
}

/// Saves a job's checkpoint durably: `HCK1`, the chunks done (u32 LE), the outputs' count
/// (u32 LE), then each output as a length (u64 LE) and its bytes.
pub fn write_checkpoint(
    data: &Path,
    job: attest::msg::JobId,
    done: u32,
    outputs: &[Vec<u8>],
) -> std::io::Result<()> {
    let path = checkpoint_path(data, job);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut b = Vec::with_capacity(12 + outputs.iter().map(|o| o.len() + 8).sum::<usize>());
    b.extend_from_slice(b"HCK1");
    b.extend_from_slice(&done.to_le_bytes());
    b.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    for o in outputs {
        b.extend_from_slice(&(o.len() as u64).to_le_bytes());
        b.extend_from_slice(o);
    }
    write_durable(&path, &b)
}

/// A job's checkpoint: the chunks done and the outputs then; `None` when there is none or
/// it does not parse.
pub fn read_checkpoint(data: &Path, job: attest::msg::JobId) -> Option<(u32, Vec<Vec<u8>>)> {
    let b = std::fs::read(checkpoint_path(data, job)).ok()?;
    let rest = b.strip_prefix(b"HCK1")?;
    let u32_at =
        |s: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(s.get(..4)?.try_into().ok()?)) };
    let done = u32_at(rest)?;
    let n = u32_at(rest.get(4..)?)?;
    let mut at = &rest[8..];
    let mut outputs = Vec::new();
    for _ in 0..n {
        let len = u64::from_le_bytes(at.get(..8)?.try_into().ok()?) as usize;
        outputs.push(at.get(8..8 + len)?.to_vec());
        at = &at[8 + len..];
    }
    at.is_empty().then_some((done, outputs))
}

/// Removes the running-job marker.
pub fn remove_marker(data: &Path) {
    let _ = std::fs::remove_file(running_job_path(data));
}

/// Writes the status report (best effort: it is a report, not state).
pub fn write_status(data: &Path, status: &crate::status::Status) {
    if let Ok(bytes) = serde_json::to_vec_pretty(status) {
        let _ = replace(&status_path(data), &bytes);
    }
}
/// Keeps the `keep` most recently modified folders in `dir` and removes the others (job
/// outputs); returns the names removed.
pub fn prune_oldest(dir: &Path, keep: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<(std::time::SystemTime, String)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let m = e.metadata().ok()?;
            m.is_dir()
                .then(|| Some((m.modified().ok()?, e.file_name().into_string().ok()?)))
                .flatten()
        })
        .collect();
    folders.sort();
    let excess = folders.len().saturating_sub(keep);
    folders
        .into_iter()
        .take(excess)
        .filter(|(_, name)| std::fs::remove_dir_all(dir.join(name)).is_ok())
        .map(|(_, name)| name)
        .collect()
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn only_the_most_recent_job_outputs_are_kept() {
        let dir = std::env::temp_dir().join(format!("outputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("out0.bin"), b"x").unwrap();
            std::fs::File::open(&d)
                .unwrap()
                .set_modified(t0 + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        assert!(prune_oldest(&dir, 3).is_empty());
        assert_eq!(
            prune_oldest(&dir, 1),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(dir.join("c").exists() && !dir.join("a").exists());
        assert!(prune_oldest(&dir.join("missing"), 0).is_empty());
    }
}
