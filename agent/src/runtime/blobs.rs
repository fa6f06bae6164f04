//! A job's inputs: read from the blob folder by their SHA-256, or fetched over HTTP(S) from
//! the controller's blob store and kept there; checked against their hash either way, then
//! the job prepared on its backend. Runs on a thread of its own, off the agent's task.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use crate::jobs::kernel::MAX_INPUT_BYTES;

/// What the blob folder may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlobLimits {
    /// Most bytes of blobs kept (least recently used go first).
    pub cache_max_bytes: u64,
    /// Bytes left free on the disk for the outbox: a download that would eat into them is
    /// refused (records are never starved by blobs).
    pub disk_reserve_bytes: u64,
}

impl BlobLimits {
    /// No limits (tests).
    #[cfg(test)]
    pub fn none() -> BlobLimits {
        BlobLimits {
            cache_max_bytes: u64::MAX,
            disk_reserve_bytes: 0,
        }
    }
}

/// Bytes free for an unprivileged writer on the disk that holds `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// How large a blob is, from what the job declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Declared(u64);

impl Declared {
    fn max(self) -> u64 {
        self.0
    }
}

/// The size of each input, from the job alone: checked before any byte is fetched, so a
/// job whose inputs disagree with its kernel, or that would not fit the agent's bound,
/// costs no download.
pub(super) fn declared_inputs(spec: &attest::msg::JobSpec) -> Result<Vec<Declared>, String> {
    if spec.input_sizes.len() != spec.inputs.len() {
        return Err(format!(
            "the job names {} inputs and {} input sizes",
            spec.inputs.len(),
            spec.input_sizes.len()
        ));
    }
    if let attest::msg::Workload::Builtin { kernel, params } = &spec.workload {
        let builtin =
            crate::jobs::kernel::Builtin::parse(kernel, params).map_err(|e| e.to_string())?;
        let sizes = builtin.input_sizes();
        if sizes.len() != spec.inputs.len() {
            return Err(format!(
                "the job names {} inputs, kernel {kernel} takes {}",
                spec.inputs.len(),
                sizes.len()
            ));
        }
        if sizes != spec.input_sizes {
            return Err(format!(
                "the job declares input sizes {:?}, kernel {kernel} with these parameters takes {sizes:?}",
                spec.input_sizes
            ));
        }
    }
    spec.input_sizes.iter().map(|&n| bounded(n)).collect()
}

/// A declared size within the agent's own bound for one blob.
fn bounded(n: u64) -> Result<Declared, String> {
    if n > MAX_INPUT_BYTES {
        return Err(format!(
            "the job declares a {n}-byte blob, more than the {MAX_INPUT_BYTES} bytes a job may fetch"
        ));
    }
    Ok(Declared(n))
}

/// Checks a blob's size against what was declared.
fn check_size(hash: &attest::Hash32, declared: Declared, len: u64) -> Result<(), String> {
    if len != declared.0 {
        return Err(format!(
            "input {hash}: the blob is {len} bytes, the job declares {}",
            declared.0
        ));
    }
    Ok(())
}

/// Streams `body` into `tmp` while hashing it, reading at most one byte past
/// `declared`: a blob larger than declared is refused as soon as that byte arrives.
fn stream_to_file(
    hash: &attest::Hash32,
    body: &mut impl Read,
    tmp: &Path,
    declared: Declared,
) -> Result<(), String> {
    let mut file = std::fs::File::create(tmp)
        .map_err(|e| format!("input {hash}: creating {}: {e}", tmp.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut limited = body.take(declared.max() + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = limited
            .read(&mut buf)
            .map_err(|e| format!("input {hash}: reading: {e}"))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if len > declared.max() {
            return Err(format!(
                "input {hash}: larger than the {} bytes declared (refused while streaming)",
                declared.max()
            ));
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| format!("input {hash}: writing {}: {e}", tmp.display()))?;
    }
    check_size(hash, declared, len)?;
    let got = attest::Hash32(hasher.finalize().into());
    if got != *hash {
        return Err(format!("input {hash}: the blob hashes to {got}"));
    }
    file.sync_all()
        .map_err(|e| format!("input {hash}: syncing {}: {e}", tmp.display()))
}

/// Fetches a blob from `{base}{sha256}` into `dir`, streamed to disk and checked against
/// its size and hash on the way; kept (temporary file, fsync, rename, folder fsync) only
/// when both hold.
fn download(
    dir: &Path,
    base: &str,
    token: Option<&str>,
    hash: &attest::Hash32,
    declared: Declared,
    reserve: u64,
) -> Result<(), String> {
    let from = format!("{base}{}", hash.to_hex());
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if let Some(free) = free_bytes(dir)
        && free < declared.max().saturating_add(reserve)
    {
        return Err(format!(
            "input {hash}: {free} bytes free on the disk of {}, and the outbox keeps {reserve} \
             of them for records: no room for up to {} more",
            dir.display(),
            declared.max()
        ));
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .build(),
    );
    let mut request = agent.get(&from);
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = request
        .call()
        .map_err(|e| format!("input {hash}: fetching {from}: {e}"))?;
    if let Some(offered) = resp.body().content_length()
        && offered > declared.max()
    {
        return Err(format!(
            "input {hash}: {from} offers {offered} bytes, larger than the {} declared",
            declared.max()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", hash.to_hex()));
    let mut body = resp.body_mut().as_reader();
    let streamed = stream_to_file(hash, &mut body, &tmp, declared)
        .and_then(|()| {
            std::fs::rename(&tmp, dir.join(hash.to_hex()))
                .map_err(|e| format!("input {hash}: keeping it: {e}"))
        })
        .and_then(|()| {
            crate::outbox::sync_dir(dir).map_err(|e| format!("input {hash}: syncing: {e}"))
        });
    if streamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    streamed
}

/// Reads a blob from `dir`, or fetches it from `url` and keeps it there; checks its size
/// against `declared` before reading or fetching it, and its hash.
fn fetch_blob(
    dir: &Path,
    url: Option<&str>,
    token: Option<&str>,
    hash: &attest::Hash32,
    declared: Declared,
    reserve: u64,
) -> Result<Vec<u8>, String> {
    let path = dir.join(hash.to_hex());
    match std::fs::metadata(&path) {
        Ok(m) => check_size(hash, declared, m.len())?,
        Err(e) => {
            let Some(base) = url else {
                return Err(format!("input {hash}: {e} (and no jobs.blob_url)"));
            };
            download(dir, base, token, hash, declared, reserve)?;
        }
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("input {hash}: reading it: {e}"))?;
    check_size(hash, declared, bytes.len() as u64)?;
    let got = attest::Hash32::digest(&bytes);
    if got != *hash {
        return Err(format!("input {hash}: the blob hashes to {got}"));
    }
    // Used now: the last to go when the cache is over its size (mtime, not atime, which
    // many mounts do not keep).
    let _ = std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    Ok(bytes)
}

/// Keeps the blobs in `dir` within `max_bytes`: the least recently used go first (by
/// modification time, which a use sets), never one of `keep` (the job at hand). Returns
/// the names removed. Temporary files of downloads in flight are not counted or touched.
pub(super) fn evict(dir: &Path, max_bytes: u64, keep: &[attest::Hash32]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let keep: Vec<String> = keep.iter().map(|h| h.to_hex()).collect();
    let mut blobs: Vec<(std::time::SystemTime, u64, String)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), name))
        })
        .collect();
    let mut total: u64 = blobs.iter().map(|b| b.1).sum();
    blobs.sort();
    let mut removed = Vec::new();
    for (_, len, name) in blobs {
        if total <= max_bytes {
            break;
        }
        if keep.contains(&name) {
            continue;
        }
        if std::fs::remove_file(dir.join(&name)).is_ok() {
            total -= len;
            removed.push(name);
        }
    }
    removed
}

/// Reads an API token from `path` (surrounding white space dropped).
pub(super) fn read_token(path: &Path) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("reading jobs.blob_token_file {}: {e}", path.display()))?;
    Ok(t.trim().to_string())
}

/// Uploads a completed job's outputs to the controller (`PUT {api}/api/v1/jobs/{job}/
/// outputs/{i}`, the provider's token), off the agent's task: the controller takes them
/// once it has the job's receipt (until then it answers 409) and keeps them only if
/// together they hash to the receipt's `output_hash`. A 409, a 5xx or no answer is tried
/// again every 2 s for five minutes.
pub(super) fn upload_outputs(
    blob_url: &str,
    token_file: Option<&Path>,
    job: attest::msg::JobId,
    outputs: Vec<Vec<u8>>,
) {
    let api = blob_url
        .trim_end_matches('/')
        .trim_end_matches("/api/v1/blobs")
        .to_string();
    let token = match token_file.map(read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "outputs not uploaded");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("job-results".into())
        .spawn(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(120)))
                    .http_status_as_error(false)
                    .build(),
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            for (i, o) in outputs.iter().enumerate() {
                loop {
                    let mut r = agent.put(format!("{api}/api/v1/jobs/{job}/outputs/{i}"));
                    if let Some(t) = &token {
                        r = r.header("Authorization", &format!("Bearer {t}"));
                    }
                    let status = r.send(&o[..]).map(|resp| resp.status().as_u16());
                    // 409: the controller does not have the receipt yet; 5xx or no answer:
                    // it is busy or away. Both pass: tried again. Any other answer is final.
                    let again = match &status {
                        Ok(409) | Ok(500..=599) | Err(_) => std::time::Instant::now() < deadline,
                        _ => false,
                    };
                    match status {
                        Ok(200) => break,
                        _ if again => {
                            std::thread::sleep(Duration::from_secs(2));
                        }
                        other => {
                            tracing::warn!(job = %job, output = i, answer = ?other, "output not uploaded");
                            return;
                        }
                    }
                }
            }
            tracing::info!(job = %job, outputs = outputs.len(), "job outputs uploaded");
        });
    if let Err(e) = spawned {
        tracing::warn!(job = %job, error = %e, "outputs not uploaded");
    }
}

/// Fetches a job's inputs and prepares it (uploads to the GPU): off the agent's task.
/// Downloads from `url` carry the token in `token_file`, read once per job.
pub(super) fn fetch_and_prepare(
    spec: &attest::msg::JobSpec,
    backend: &crate::jobs::ComputeBackend,
    dir: &Path,
    url: Option<&str>,
    token_file: Option<&Path>,
    limits: BlobLimits,
    worker: Option<&crate::jobs::worker::WorkerCommand>,
) -> Result<crate::jobs::PreparedJob, String> {
    let reserve = limits.disk_reserve_bytes;
    let declared = declared_inputs(spec)?;
    let module_declared = match &spec.workload {
        attest::msg::Workload::Ptx { module_size, .. } => Some(bounded(*module_size)?),
        attest::msg::Workload::Builtin { .. } => None,
    };
    let token = match (url, token_file) {
        (Some(_), Some(p)) => Some(read_token(p)?),
        _ => None,
    };
    let token = token.as_deref();
    let inputs = spec
        .inputs
        .iter()
        .zip(declared)
        .map(|(h, d)| fetch_blob(dir, url, token, h, d, reserve))
        .collect::<Result<Vec<_>, _>>()?;
    let module = match &spec.workload {
        attest::msg::Workload::Ptx { module, .. } => Some(fetch_blob(
            dir,
            url,
            token,
            module,
            module_declared.expect("declared above"),
            reserve,
        )?),
        attest::msg::Workload::Builtin { .. } => None,
    };
    let mut keep = spec.inputs.clone();
    if let attest::msg::Workload::Ptx { module, .. } = &spec.workload {
        keep.push(*module);
    }
    for gone in evict(dir, limits.cache_max_bytes, &keep) {
        tracing::info!(blob = %gone, "blob cache over its size: least recently used removed");
    }
    if let Some(cmd) = worker {
        // The job's CPU time, bounded from its own run-time limit (all cores, twice over).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let cpu_seconds = match spec.limits.max_duration_ms {
            0 => 0,
            ms => (ms / 1000 + 1) * cores * 2 + 60,
        };
        let cmd = crate::jobs::worker::WorkerCommand {
            limits: crate::jobs::worker::WorkerLimits {
                cpu_seconds,
                ..cmd.limits
            },
            ..cmd.clone()
        };
        let gpu = matches!(backend, crate::jobs::ComputeBackend::Cuda(_));
        return crate::jobs::worker::prepare(
            &cmd,
            gpu,
            &spec.workload,
            module.as_deref(),
            &inputs,
            &spec.output_sizes,
        )
        .map_err(|e| e.to_string());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::kernel::{Builtin, Sha256Batch};
    use std::io::BufRead;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A blob store over real HTTP/1.1 on a free loopback port: answers every GET with
    /// `body`, with or without a `Content-Length`, and counts the requests.
    fn blob_server(body: Vec<u8>, with_length: bool) -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/blobs/", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let length = if with_length {
                    format!("Content-Length: {}\r\n", body.len())
                } else {
                    String::new()
                };
                let head = format!("HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n");
                // The client may hang up part way (that is the point): ignore it.
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&body));
            }
        });
        (url, requests)
    }

    fn job(count: i64, item_len: i64, inputs: Vec<attest::Hash32>) -> attest::msg::JobSpec {
        let b = Builtin::Sha256Batch(Sha256Batch::new(count, item_len).unwrap());
        attest::msg::JobSpec {
            id: attest::msg::JobId([9; 16]),
            workload: b.to_workload(),
            input_sizes: (0..inputs.len())
                .map(|i| b.input_sizes().get(i).copied().unwrap_or(0))
                .collect(),
            inputs,
            output_sizes: vec![b.output_size()],
            limits: attest::msg::JobLimits {
                max_energy: attest::Millijoules(1_000_000),
                max_duration_ms: 60_000,
                deadline: attest::TimestampMs(u64::MAX),
            },
        }
    }

    fn refused(r: Result<crate::jobs::PreparedJob, String>) -> String {
        match r {
            Ok(_) => panic!("the job was prepared, not refused"),
            Err(e) => e,
        }
    }

    fn cpu() -> crate::jobs::ComputeBackend {
        crate::jobs::ComputeBackend::Cpu(crate::jobs::CpuBackend::new())
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("blobs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn files_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn an_input_larger_than_declared_is_refused_while_streaming_and_not_kept() {
        // The blob really has the hash the job names, but it is 4 MiB where the kernel's
        // parameters declare 40 bytes, and the server gives no length up front.
        let body = vec![b'x'; 4 << 20];
        let hash = attest::Hash32::digest(&body);
        let (url, _) = blob_server(body, false);
        let dir = tmp("oversize");
        let e = refused(fetch_and_prepare(
            &job(1, 40, vec![hash]),
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        ));
        assert!(
            e.contains("larger than the 40 bytes declared (refused while streaming)"),
            "{e}"
        );
        assert_eq!(files_in(&dir), Vec::<String>::new(), "nothing kept");
    }

    #[test]
    fn a_length_offered_above_the_declared_size_is_refused_before_the_body_is_read() {
        let body = vec![b'y'; 41];
        let hash = attest::Hash32::digest(&body);
        let (url, _) = blob_server(body, true);
        let dir = tmp("offered");
        let e = refused(fetch_and_prepare(
            &job(1, 40, vec![hash]),
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        ));
        assert!(
            e.contains("offers 41 bytes, larger than the 40 declared"),
            "{e}"
        );
        assert_eq!(files_in(&dir), Vec::<String>::new());
    }

    #[test]
    fn a_download_that_would_eat_into_the_outboxs_room_is_refused_before_any_byte() {
        let body = vec![b'w'; 40];
        let hash = attest::Hash32::digest(&body);
        let (url, requests) = blob_server(body, true);
        let dir = tmp("reserve");
        // The outbox keeps more than any disk has: no blob may come.
        let limits = BlobLimits {
            disk_reserve_bytes: u64::MAX / 2,
            ..BlobLimits::none()
        };
        let e = refused(fetch_and_prepare(
            &job(1, 40, vec![hash]),
            &cpu(),
            &dir,
            Some(&url),
            None,
            limits,
            None,
        ));
        assert!(e.contains("the outbox keeps"), "{e}");
        assert_eq!(requests.load(Ordering::SeqCst), 0, "nothing was fetched");
        // With the usual reserve it comes.
        fetch_and_prepare(
            &job(1, 40, vec![hash]),
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits {
                disk_reserve_bytes: 64 << 20,
                ..BlobLimits::none()
            },
            None,
        )
        .unwrap();
    }

    #[test]
    fn inputs_that_disagree_with_their_kernel_are_refused_before_any_byte_is_fetched() {
        let body = vec![b'z'; 40];
        let hash = attest::Hash32::digest(&body);
        let (url, requests) = blob_server(body, true);
        let dir = tmp("count");
        let e = refused(fetch_and_prepare(
            &job(1, 40, vec![hash, hash]),
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        ));
        assert!(
            e.contains("names 2 inputs, kernel sha256_batch takes 1"),
            "{e}"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 0, "no download");
    }

    #[test]
    fn declared_sizes_that_disagree_with_the_kernel_or_exceed_the_bound_are_refused_before_any_byte()
     {
        let body = vec![b'z'; 40];
        let hash = attest::Hash32::digest(&body);
        let (url, requests) = blob_server(body, true);
        let dir = tmp("declared");
        let mut wrong = job(1, 40, vec![hash]);
        wrong.input_sizes = vec![41];
        let e = refused(fetch_and_prepare(
            &wrong,
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        ));
        assert!(e.contains("declares input sizes [41]"), "{e}");
        // A PTX module (whose size only the job can say) above the bound.
        let mut ptx = job(1, 40, vec![]);
        ptx.input_sizes = vec![];
        ptx.workload = attest::msg::Workload::Ptx {
            module: hash,
            module_size: MAX_INPUT_BYTES + 1,
            kernel: "k".into(),
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem_bytes: 0,
        };
        let e = refused(fetch_and_prepare(
            &ptx,
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        ));
        assert!(e.contains("more than the"), "{e}");
        assert_eq!(requests.load(Ordering::SeqCst), 0, "no download");
    }

    #[test]
    fn a_declared_input_is_streamed_checked_kept_and_then_served_from_the_folder() {
        let body: Vec<u8> = (0..80u8).collect();
        let hash = attest::Hash32::digest(&body);
        let (url, requests) = blob_server(body, false);
        let dir = tmp("kept");
        let spec = job(2, 40, vec![hash]);
        fetch_and_prepare(
            &spec,
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        )
        .unwrap();
        assert_eq!(files_in(&dir), vec![hash.to_hex()]);
        fetch_and_prepare(
            &spec,
            &cpu(),
            &dir,
            Some(&url),
            None,
            BlobLimits::none(),
            None,
        )
        .unwrap();
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "the second run reads it here"
        );
        // A different blob under that name (a damaged disk) is refused, not run.
        std::fs::write(dir.join(hash.to_hex()), [0u8; 80]).unwrap();
        let e = refused(fetch_and_prepare(
            &spec,
            &cpu(),
            &dir,
            None,
            None,
            BlobLimits::none(),
            None,
        ));
        assert!(e.contains("hashes to"), "{e}");
    }

    #[test]
    fn the_blob_cache_stays_within_its_size_removing_the_least_recently_used_first() {
        let dir = std::env::temp_dir().join(format!("blob-lru-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = std::time::SystemTime::now() - Duration::from_secs(1_000);
        let blob = |i: u8, age_s: u64| {
            let h = attest::Hash32([i; 32]);
            let p = dir.join(h.to_hex());
            std::fs::write(&p, vec![i; 40]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t0 + Duration::from_secs(age_s))
                .unwrap();
            h
        };
        let (oldest, middle, newest) = (blob(1, 10), blob(2, 20), blob(3, 30));
        std::fs::write(dir.join(".in-flight.tmp"), vec![0; 500]).unwrap();
        // 120 bytes of blobs, 100 allowed: the oldest goes, unless the job needs it.
        assert!(
            evict(&dir, 1_000, &[]).is_empty(),
            "within its size: nothing goes"
        );
        assert_eq!(evict(&dir, 100, &[oldest]), vec![middle.to_hex()]);
        assert!(dir.join(oldest.to_hex()).exists());
        assert!(dir.join(newest.to_hex()).exists());
        assert!(
            dir.join(".in-flight.tmp").exists(),
            "downloads in flight are not touched"
        );
        assert_eq!(evict(&dir, 40, &[]), vec![oldest.to_hex()]);
    }
}
