//! A real local EVM node (Foundry's anvil, installed by `scripts/setup` into `tools/`) and
//! JSON-RPC calls to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{answers_http, free_port};

/// One JSON-RPC call over HTTP (an EVM node's): the whole answer, or why there is none.
pub fn json_rpc(url: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
    ureq::post(url)
        .send_json(body)
        .map_err(|e| format!("{url}: {e}"))?
        .body_mut()
        .read_json()
        .map_err(|e| format!("{url}: {e}"))
}

/// The first of anvil's default development accounts (its well-known key, funded with
/// 10,000 ETH on every fresh anvil): only ever for local test chains.
pub const ANVIL_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Anvil's second and third development accounts' well-known keys (funded the same way):
/// a settlement treasury and a claimant beside the anchor's [`ANVIL_KEY`].
pub const ANVIL_KEYS_MORE: [&str; 2] = [
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
];

/// A real local EVM node: Foundry's anvil, from the npm package
/// `@foundry-rs/anvil-linux-amd64` that `scripts/setup` installs into `tools/`. Each
/// transaction is mined at once (automine); killed on drop.
pub struct Anvil {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Anvil {
    /// The anvil binary, or a panic naming what installs it.
    pub fn binary() -> PathBuf {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/node_modules/.bin/anvil");
        assert!(
            p.exists(),
            "{} not found: run scripts/setup (it installs tools/package.json with npm)",
            p.display()
        );
        p
    }

    /// Starts a fresh chain (id 31337) on a free port, and returns once it has said that it
    /// listens and answers HTTP. An anvil that exits at start (its port taken between
    /// [`free_port`] and its bind, by a test running beside this one) is started again on
    /// another port; another test's anvil answering on that port is never taken for ours.
    pub fn start() -> Anvil {
        use std::io::BufRead;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let port = free_port();
            let mut child = Command::new(Self::binary())
                .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting anvil");
            // Ours listens once it prints "Listening on 127.0.0.1:PORT"; the rest of its
            // output is drained so that it never blocks on a full pipe.
            let (tx, listening) = std::sync::mpsc::channel::<()>();
            let stdout = child.stdout.take().expect("piped stdout");
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("Listening on") {
                        let _ = tx.send(());
                    }
                }
            });
            let mut ours = false;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                ours |= listening.try_recv().is_ok();
                if ours && answers_http(port) {
                    return Anvil {
                        child: Some(child),
                        port,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "anvil did not answer on {port}");
        }
    }

    /// Its JSON-RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes [`ANVIL_KEY`] to a key file (mode 0600) and returns its path.
    pub fn key_file(dir: &Path) -> PathBuf {
        Self::write_key(dir, "evm.key", ANVIL_KEY)
    }

    /// Writes development key `key` to `dir/name` (mode 0600) and returns its path.
    pub fn write_key(dir: &Path, name: &str, key: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, key).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
