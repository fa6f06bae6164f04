//! A fleet of real processes: Mosquitto, a fleet controller (SQLite, local anchor, anvil
//! when asked), and simulated agents, each a `heliostat-agent` process with its own data
//! directory, optionally behind its own network namespace. The fault injector
//! ([`crate::faults`]) acts on it; [`Fleet::finish`] heals it, drains every device and
//! counts both ends ([`crate::report`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use attest::DeviceId;
use fleet_controller::config::{AnchorBackend, BrokerConfig, ControllerConfig, EvmConfig};
use fleet_controller::store::Store;
use fleet_controller::store::sqlite::SqliteStore;
use heliostat_agent::config::{AgentConfig, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;
use hil_tests::{Anvil, Mosquitto, Proc, TempDir, free_port, workspace_binary};

pub use crate::hardware::Hardware;
use crate::netns::Netns;

/// The workspace binaries a fleet runs.
#[derive(Debug, Clone)]
pub struct Bins {
    pub controller: PathBuf,
    pub agent: PathBuf,
    pub attest: PathBuf,
}

impl Bins {
    /// Finds (building them if needed) the binaries beside `own` (a binary of this
    /// workspace's target directory).
    pub fn beside(own: &str) -> Bins {
        Bins {
            controller: workspace_binary(own, "fleet-controller", "fleet-controller"),
            agent: workspace_binary(own, "heliostat-agent", "heliostat-agent"),
            attest: workspace_binary(own, "attest", "attest"),
        }
    }
}

/// How a fleet is made.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Agents.
    pub agents: usize,
    /// The first this many agents get a network namespace of their own (partitions).
    pub netns_agents: usize,
    /// Milliseconds between an agent's signed records (its samples at a fifth of that).
    pub record_ms: u64,
    /// Milliseconds between epochs.
    pub epoch_ms: u64,
    /// The controller's `ingest.max_future_skew_ms`.
    pub max_future_skew_ms: u64,
    /// Anchor on anvil too (the anchor contract deployed by the controller's CLI).
    pub evm: bool,
    /// The agents' outbox bound, bytes (default: the agent's).
    pub outbox_max_bytes: Option<u64>,
    /// The first this many agents keep their data on a 2 MiB tmpfs of their own (a disk
    /// the injector can fill; needs root).
    pub tmpfs_agents: usize,
    /// The last this many agents (none of them in a namespace) read simulated hardware over
    /// the real interfaces (a charge controller on a pseudo-terminal, a SunSpec grid meter on
    /// Modbus TCP, an AGX Orin's INA3221 hwmon tree), all from one plant per device.
    pub hardware_agents: usize,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            agents: 3,
            netns_agents: 0,
            record_ms: 100,
            epoch_ms: 1_000,
            max_future_skew_ms: 120_000,
            evm: false,
            outbox_max_bytes: None,
            tmpfs_agents: 0,
            hardware_agents: 0,
        }
    }
}

/// One agent of the fleet.
pub struct Device {
    pub name: String,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
    pub id: DeviceId,
    pub netns: Option<Netns>,
    /// Clock offset, seconds, applied at the next start (libfaketime).
    pub skew_s: i64,
    /// Stopped with SIGSTOP.
    pub frozen: bool,
    /// Its link cut or degraded (netem).
    pub degraded: bool,
    /// Records destroyed by injected media damage (not counted as lost).
    pub destroyed: std::collections::BTreeSet<u64>,
    /// Its simulated hardware, when it reads some (dropped after the process).
    pub hardware: Option<Hardware>,
    /// Its own small disk (unmounted after the process is gone: fields drop in order).
    pub tmpfs: Option<hil_tests::Tmpfs>,
}

/// Where Debian's libfaketime is (the `faketime` package).
fn libfaketime() -> Result<PathBuf> {
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ] {
        let p = Path::new(dir).join("faketime/libfaketime.so.1");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("libfaketime.so.1 not found: install Debian's faketime package (scripts/setup does)")
}

impl Device {
    /// Starts the agent process (inside its namespace, with its clock skew, when it has them).
    pub fn start(&mut self, bins: &Bins) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut argv: Vec<String> = self
            .netns
            .as_ref()
            .map(Netns::exec_prefix)
            .unwrap_or_default();
        argv.push(bins.agent.display().to_string());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log);
        if self.skew_s != 0 {
            cmd.env("LD_PRELOAD", libfaketime()?)
                .env("FAKETIME", format!("{:+}", self.skew_s))
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_DONT_RESET", "1");
        }
        self.proc = Some(Proc(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.name))?,
        ));
        self.frozen = false;
        Ok(())
    }

    /// The agent's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.0.id())
    }

    /// Whether the process is alive.
    pub fn running(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| p.0.try_wait().ok().flatten().is_none())
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
        self.frozen = false;
    }

    /// SIGTERM and wait (SIGKILL after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) {
        self.thaw();
        if let Some(mut p) = self.proc.take() {
            p.terminate(timeout);
        }
    }

    /// SIGSTOP.
    pub fn freeze(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
            self.frozen = true;
        }
    }

    /// SIGCONT after [`Device::freeze`].
    pub fn thaw(&mut self) {
        if self.frozen
            && let Some(pid) = self.pid()
        {
            signal(pid, "CONT");
        }
        self.frozen = false;
    }
}

/// `kill -SIG pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The fleet.
pub struct Fleet {
    pub dir: TempDir,
    pub bins: Bins,
    pub opts: FleetOptions,
    pub broker: Mosquitto,
    pub anvil: Option<Anvil>,
    /// The anchor contract on anvil.
    pub evm_contract: Option<String>,
    pub controller: Option<Proc>,
    pub controller_config: PathBuf,
    pub controller_log: PathBuf,
    pub controller_key: String,
    pub agents: Vec<Device>,
    /// Rejections by reason over the controller runs before the current one.
    pub rejected_before: BTreeMap<String, u64>,
    /// Controller starts so far.
    pub controller_starts: u64,
    /// What the injector did, with the seconds since the fleet started.
    pub events: Vec<String>,
    pub started: Instant,
}

impl Fleet {
    /// Starts the broker, the controller and the agents, and waits until every agent's
    /// records are being stored.
    pub fn start(name: &str, bins: Bins, opts: FleetOptions) -> Result<Fleet> {
        let dir = TempDir::new(name);
        let mut namespaces = Vec::new();
        for _ in 0..opts.netns_agents.min(opts.agents) {
            namespaces.push(Some(Netns::create()?));
        }
        // The broker: on loopback, and on the host end of every namespace's link.
        let port = free_port();
        let mut conf =
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
        for ns in namespaces.iter().flatten() {
            conf.push_str(&format!("listener {port} {}\n", ns.host_ip));
        }
        let broker = Mosquitto::start_config(port, conf);
        let anvil = opts.evm.then(Anvil::start);
        let cdir = dir.path().join("controller");
        std::fs::create_dir_all(&cdir)?;
        let mut cfg = ControllerConfig::new(
            cdir.join("data"),
            BrokerConfig {
                port: broker.port,
                ..BrokerConfig::new("127.0.0.1")
            },
        );
        cfg.enrollment.auto_approve = true;
        cfg.epochs.interval_ms = opts.epoch_ms;
        cfg.ingest.max_future_skew_ms = opts.max_future_skew_ms;
        cfg.ingest.resend_after_ms = 2_000;
        cfg.api.listen = format!("127.0.0.1:{}", free_port());
        if let Some(anvil) = &anvil {
            let key_file = Anvil::key_file(&cdir);
            let out = Command::new(&bins.controller)
                .args(["deploy-anchor", "--rpc", &anvil.url(), "--key-file"])
                .arg(&key_file)
                .output()?;
            ensure!(
                out.status.success(),
                "deploy-anchor: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let contract = String::from_utf8(out.stdout)?.trim().to_string();
            cfg.epochs.anchor = AnchorBackend::Evm;
            cfg.epochs.evm = Some(EvmConfig {
                poll_ms: 100,
                receipt_timeout_ms: 5_000,
                ..EvmConfig::new(anvil.url(), contract, key_file, 31337)
            });
        }
        let evm_contract = cfg.epochs.evm.as_ref().map(|e| e.contract.clone());
        let controller_config = cdir.join("controller.toml");
        cfg.write_toml(&controller_config)?;
        let out = Command::new(&bins.controller)
            .arg("--config")
            .arg(&controller_config)
            .arg("key")
            .output()?;
        ensure!(
            out.status.success(),
            "fleet-controller key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let controller_key = String::from_utf8(out.stdout)?.trim().to_string();
        let mut fleet = Fleet {
            bins,
            opts: opts.clone(),
            broker,
            anvil,
            evm_contract,
            controller: None,
            controller_log: cdir.join("controller.log"),
            controller_config,
            controller_key,
            agents: Vec::new(),
            rejected_before: BTreeMap::new(),
            controller_starts: 0,
            events: Vec::new(),
            started: Instant::now(),
            dir,
        };
        fleet.start_controller(None)?;
        namespaces.resize_with(opts.agents, || None);
        for (i, ns) in namespaces.into_iter().enumerate() {
            let dev = fleet.make_agent(i, ns)?;
            fleet.agents.push(dev);
        }
        fleet.wait_all_storing(Duration::from_secs(60))?;
        Ok(fleet)
    }

    fn make_agent(&mut self, i: usize, netns: Option<Netns>) -> Result<Device> {
        let name = format!("agent-{i:03}");
        let dir = self.dir.path().join(&name);
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let host = netns
            .as_ref()
            .map_or("127.0.0.1".to_string(), |n| n.host_ip.clone());
        let key = attest::PublicKey(
            attest::hex::decode_array(&self.controller_key)
                .map_err(|e| anyhow!("controller key: {e:?}"))?,
        );
        let mut cfg = AgentConfig::new(
            data.clone(),
            // Nairobi-ish sites with panels and a battery, so the simulator has sun to report.
            SiteConfig {
                panel_watts_peak: 300,
                battery_wh: 1_000,
                battery_reserve_wh: 200,
                ..SiteConfig::new(-1.29 + i as f64 * 0.01, 36.82)
            },
            LinkConfig {
                port: self.broker.port,
                backoff_max_ms: 500,
                resend_after_ms: 1_000,
                keepalive_s: 5,
                ..LinkConfig::new(host, &key)
            },
            vec![],
        );
        // The last `hardware_agents` read simulated hardware over the real interfaces; the
        // others the agent's own simulator (cheaper for large fleets).
        let hardware = (i + self.opts.hardware_agents >= self.opts.agents && netns.is_none())
            .then(|| Hardware::start(&dir, i as u64));
        cfg.sources = match &hardware {
            Some(h) => h.sources(),
            None => vec![SourceConfig::Simulator(SimulatorConfig {
                seed: i as u64,
                ..SimulatorConfig::default()
            })],
        };
        cfg.meter = MeterConfig {
            sample_interval_ms: (self.opts.record_ms / 5).max(10),
            record_interval_ms: self.opts.record_ms,
        };
        if let Some(max) = self.opts.outbox_max_bytes {
            cfg.outbox.max_bytes = max;
            cfg.outbox.segment_bytes = (max / 4).max(4096);
        }
        let config = dir.join("agent.toml");
        cfg.write_toml(&config)?;
        let tmpfs = (i < self.opts.tmpfs_agents).then(|| hil_tests::Tmpfs::mount(&data, "2m"));
        let mut dev = Device {
            hardware,
            tmpfs,
            log: dir.join("agent.log"),
            name,
            dir,
            data: data.clone(),
            config,
            proc: None,
            id: DeviceId([0; 16]),
            netns,
            skew_s: 0,
            frozen: false,
            degraded: false,
            destroyed: Default::default(),
        };
        dev.start(&self.bins)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !data.join("device.key").exists() {
            ensure!(
                Instant::now() < deadline,
                "{} made no key:\n{}",
                dev.name,
                read(&dev.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        dev.id = hil_tests::agent_key(&data).device_id();
        Ok(dev)
    }

    /// The controller's data directory.
    pub fn controller_data(&self) -> PathBuf {
        self.dir.path().join("controller/data")
    }

    /// Starts the controller (with `HELIOSTAT_CRASH_AT=crash_at` when given), first adding
    /// the last run's rejection counts to [`Fleet::rejected_before`].
    pub fn start_controller(&mut self, crash_at: Option<&str>) -> Result<()> {
        let status = self.controller_data().join("status.json");
        for (reason, n) in rejected_in(&status) {
            *self.rejected_before.entry(reason).or_default() += n;
        }
        let _ = std::fs::remove_file(&status);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.controller_log)?;
        let mut cmd = Command::new(&self.bins.controller);
        cmd.arg("--config")
            .arg(&self.controller_config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log);
        match crash_at {
            Some(p) => cmd.env("HELIOSTAT_CRASH_AT", p),
            None => cmd.env_remove("HELIOSTAT_CRASH_AT"),
        };
        self.controller = Some(Proc(cmd.spawn().context("starting the controller")?));
        self.controller_starts += 1;
        Ok(())
    }

    /// Whether the controller process is alive.
    pub fn controller_running(&mut self) -> bool {
        self.controller
            .as_mut()
            .is_some_and(|p| p.0.try_wait().ok().flatten().is_none())
    }

    /// Rejections by reason over every controller run so far.
    pub fn rejected(&self) -> BTreeMap<String, u64> {
        let mut all = self.rejected_before.clone();
        for (reason, n) in rejected_in(&self.controller_data().join("status.json")) {
            *all.entry(reason).or_default() += n;
        }
        all
    }

    /// Whether the broker runs.
    pub fn broker_running(&mut self) -> bool {
        self.broker.running()
    }

    /// Notes what the injector did.
    pub fn event(&mut self, what: impl Into<String>) {
        let line = format!(
            "{:7.1}s {}",
            self.started.elapsed().as_secs_f64(),
            what.into()
        );
        self.events.push(line);
    }

    /// Opens the controller's database (read beside the running controller).
    pub fn store(&self) -> Result<SqliteStore> {
        let db = self.controller_data().join("controller.db");
        SqliteStore::open(&db).map_err(|e| anyhow!("opening {}: {e}", db.display()))
    }

    /// Messages stored for each agent.
    pub fn stored_counts(&self) -> Vec<u64> {
        let Ok(store) = self.store() else {
            return vec![0; self.agents.len()];
        };
        self.agents
            .iter()
            .map(|a| store.count_items(a.id).unwrap_or(0))
            .collect()
    }

    /// The highest sequence number stored for each agent.
    pub fn last_stored(&self) -> Vec<Option<u64>> {
        let Ok(store) = self.store() else {
            return vec![None; self.agents.len()];
        };
        self.agents
            .iter()
            .map(|a| store.last_item(a.id).ok().flatten().map(|(s, _)| s.0))
            .collect()
    }

    /// Waits until every agent has records stored (the fleet is up).
    pub fn wait_all_storing(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.stored_counts();
            if counts.iter().all(|&c| c >= 3) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "not every agent's records are stored after {timeout:?}: {counts:?}\ncontroller log:\n{}",
                    tail(&self.controller_log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `fleet-controller CMD...` against this fleet's configuration.
    pub fn controller_cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(&self.bins.controller)
            .arg("--config")
            .arg(&self.controller_config)
            .args(args)
            .output()?)
    }
}

/// A controller status file's rejections by reason (none when absent).
fn rejected_in(status: &Path) -> BTreeMap<String, u64> {
    std::fs::read(status)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("rejected").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// A file's text (empty when unreadable).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A log's last 40 lines.
pub fn tail(path: &Path) -> String {
    let text = read(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
