//! Test support shared by every crate's real-process tests: a private Mosquitto broker per
//! test, temporary directories and free ports, all cleaned up on drop.
//!
//! Services the machine may lack are found through [`require`], which fails with a clear
//! message naming the package (`scripts/setup` installs them, so CI skips nothing).

pub mod anvil;
pub mod browser;
pub mod collector;
pub mod otlp;
pub mod pki;
pub mod sim;
pub mod sink;

pub use anvil::{ANVIL_KEY, ANVIL_KEYS_MORE, Anvil, json_rpc};

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Finds an executable, or panics naming what to install.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(binary);
        if p.exists() {
            return p;
        }
    }
    panic!("{binary} not found: install the Debian package `{package}` (scripts/setup does)");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after the test.
    pub fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!(
            "heliostat-{name}-{}-{}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir_all(&d).expect("creating a temp dir");
        TempDir(d)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A private Mosquitto broker on a free port: no persistence, deliberate queue limits.
pub struct Mosquitto {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: TempDir,
    config: String,
}

impl Mosquitto {
    /// Starts a broker.
    pub fn start() -> Mosquitto {
        Self::start_with("")
    }

    /// Starts a broker with extra configuration lines after the default listener's.
    pub fn start_with(extra: &str) -> Mosquitto {
        let port = free_port();
        let config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 200000\nmax_inflight_messages 200\nmessage_size_limit 0\n\
             log_dest none\n{extra}\n"
        );
        Self::start_config(port, config)
    }

    /// Starts a broker with a whole configuration of the test's own (its main listener on
    /// `port`), for TLS and authentication tests.
    pub fn start_config(port: u16, config: String) -> Mosquitto {
        let mut m = Mosquitto {
            child: None,
            port,
            dir: TempDir::new("mosquitto"),
            config,
        };
        m.restart();
        m
    }

    /// The broker's config directory (for password files and such).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the broker process is alive.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills the broker at once (SIGKILL): whatever it held in memory is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        let bin = require("mosquitto", "mosquitto");
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(&conf, &self.config).expect("writing mosquitto.conf");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting mosquitto");
            self.child = Some(child);
            if wait_for_port(self.port, Duration::from_secs(2)) {
                return;
            }
            // The port may still be held by the killed instance: try again.
            self.kill();
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on port {}",
                self.port
            );
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Asks it to stop (SIGTERM) and waits up to `timeout`.
    pub fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The controller key the agent tests pin (seed `c0 x 32`, as in attest's test vectors).
pub fn test_controller() -> attest::KeyPair {
    attest::KeyPair::from_seed(&[0xc0; 32])
}

/// Starts an agent binary with `--config CONFIG run`, its log appended to `log`.
pub fn spawn_agent(binary: &str, config: &Path, log: &Path) -> Proc {
    spawn_agent_with_env(binary, config, log, &[])
}

/// [`spawn_agent`] with extra environment variables.
pub fn spawn_agent_with_env(binary: &str, config: &Path, log: &Path, env: &[(&str, &str)]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("opening the agent log");
    Proc(
        Command::new(binary)
            .arg("--config")
            .arg(config)
            .arg("run")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the agent"),
    )
}

/// The device key an agent created in its data directory.
pub fn agent_key(data_dir: &Path) -> attest::KeyPair {
    let seed =
        std::fs::read_to_string(data_dir.join("device.key")).expect("reading the agent's key");
    attest::KeyPair::from_seed(&attest::hex::decode_array(seed.trim()).expect("a hex seed"))
}

/// A binary of another workspace package, next to this test's own binaries (built with
/// `cargo build -p PACKAGE` when `cargo test` did not build it already).
pub fn workspace_binary(own_binary: &str, package: &str, name: &str) -> PathBuf {
    let dir = Path::new(own_binary).parent().expect("binary directory");
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && path.exists(), "could not build {name}");
    }
    path
}

/// The next sequence number an agent will use, from its saved chain state: how many chain
/// messages it has produced on a fresh chain.
pub fn agent_next_seq(data_dir: &Path) -> u64 {
    let bytes =
        std::fs::read(data_dir.join("chain-state.json")).expect("reading the agent's chain state");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("chain state is JSON");
    v["next_seq"].as_u64().expect("next_seq is a number")
}

/// Asserts that `(seq, envelope)` pairs, in order, form a device's chain from its genesis
/// under `key` (every message accepted by `attest`'s chain checker).
pub fn assert_chain_from_genesis<'a>(
    key: &attest::PublicKey,
    items: impl IntoIterator<Item = (attest::SeqNo, &'a [u8])>,
) {
    use attest::chain::{ChainPolicy, ChainVerifier, Outcome};
    let mut v = ChainVerifier::new(key, ChainPolicy::default()).expect("a valid key");
    for (seq, bytes) in items {
        let env = attest::Envelope::decode(bytes).unwrap_or_else(|e| panic!("seq {seq}: {e}"));
        match v.feed(&env, attest::TimestampMs(u64::MAX / 2)) {
            Ok(Outcome::Accepted(_)) => {}
            other => panic!("seq {seq}: {other:?}"),
        }
    }
}

/// A small tmpfs mounted for a test (root only, as CI runs), unmounted when dropped: a
/// disk the test can fill.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`512k`, `4m`) at `at` (made if missing).
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("making the mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a tmpfs at {} needs root (CI runs as root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Whether something on `port` answers an HTTP request with an HTTP status line.
pub(crate) fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 8];
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
}

/// One HTTP/1.1 request to `127.0.0.1:port` over a plain socket (no client library between
/// the test and the server): (status line, body).
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (String, Vec<u8>) {
    let r = http_with(port, method, path, &[], Some(body));
    (r.status_line, r.body)
}

/// What [`http_with`] got back.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status line (`HTTP/1.1 200 OK`).
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// The header lines, as sent (names in the server's case).
    pub headers: Vec<String>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON (a panic naming the status and body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {:?}",
                self.status_line,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value (name compared in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Waits up to `timeout` for `f` to give a value (polling every 100 ms); the test fails
/// naming `what` otherwise.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An API request with `Authorization: Bearer {token}`: the status and the body as JSON
/// (`Null` when it is not JSON).
pub fn api_call(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let r = http_with(port, method, path, &[("Authorization", &auth)], Some(body));
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

/// Starts `CONTROLLER --config CONFIG run`, its log (stderr) in `log`.
pub fn spawn_controller(controller: &str, config: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(controller)
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("creating the controller log"))
            .spawn()
            .expect("starting the controller"),
    )
}

/// `CONTROLLER --config CONFIG account create --kind KIND --name NAME`: the account's
/// first API token.
pub fn create_account(controller: &str, config: &Path, kind: &str, name: &str) -> String {
    let out = Command::new(controller)
        .arg("--config")
        .arg(config)
        .args(["account", "create", "--kind", kind, "--name", name])
        .output()
        .expect("running the controller's account command");
    assert!(
        out.status.success(),
        "account create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a token is text")
        .trim()
        .to_string()
}

/// One HTTP/1.1 request with extra header lines (`("Authorization", "Bearer ...")`). With
/// `body` the request carries it and its `Content-Length` (unless `headers` names one: a
/// test may declare a length and send no body, to see what a server does before reading
/// it); `None` sends no body. A server that answers without reading the whole body may
/// close early: a failed body write is ignored and the response read all the same.
pub fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the API");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let declares = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if let Some(b) = body
        && !declares
    {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("request head");
    if let Some(b) = body {
        let _ = s.write_all(b);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the response (the server closed with the body unread): keep
            // what came.
            Err(_) if !out.is_empty() => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut body = out[(split + 4).min(out.len())..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default().to_string();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    HttpResponse {
        status_line,
        status,
        headers: lines.map(str::to_string).collect(),
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}
