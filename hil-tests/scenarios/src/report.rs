//! The end of every scenario: heal the fleet, stop every agent and note what it produced
//! (its chain state: next sequence number and energy counters), run the agents again so
//! that whatever they still held drains, then count both ends: produced, stored, lost,
//! duplicated, rejected by reason, epochs and anchors, bundles verified, energy totals.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use attest::chain::{ChainPolicy, ChainVerifier, Outcome};
use attest::msg::ChainMessage;
use attest::units::{EpochId, SeqNo, TimestampMs};
use fleet_controller::store::Store;

use crate::fleet::{Fleet, tail};

/// What a scenario or the soak ends with.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub agents: usize,
    /// Chain messages the agents signed (sum of their next sequence numbers).
    pub produced: u64,
    /// Of those, stored at the controller (distinct sequence numbers).
    pub stored: u64,
    /// Produced and not stored (records destroyed by injected media damage apart).
    pub lost: u64,
    /// Records destroyed on a device's disk by an injected fault (`DamageOutbox`): gone by
    /// construction; the device must declare them with a `ChainRestart`.
    pub destroyed: u64,
    /// Stored more than once (rows beyond one per sequence number).
    pub duplicated: u64,
    /// Rejections by reason over every controller run.
    pub rejected: BTreeMap<String, u64>,
    /// Closed epochs; epochs missing from the run of epoch numbers.
    pub epochs: u64,
    pub epoch_gaps: u64,
    /// On anvil: epochs anchored, and anchors beyond one per epoch.
    pub evm_anchored: Option<u64>,
    pub evm_double: u64,
    /// Per-device proof bundles that verified with `attest verify`, and the failures.
    pub bundles_verified: u64,
    pub bundle_failures: Vec<String>,
    /// Devices whose last stored meter record's energy is their own counter, and those whose
    /// is not (channel by channel).
    pub energy_checked: u64,
    pub energy_mismatches: Vec<String>,
    /// Energy over the fleet, millijoules, by channel kind: the devices' counters, and the
    /// controller's last stored records.
    pub energy_devices_mj: BTreeMap<String, u64>,
    pub energy_controller_mj: BTreeMap<String, u64>,
    /// Chains that did not verify from genesis.
    pub chain_failures: Vec<String>,
    pub controller_starts: u64,
    pub events: Vec<String>,
    pub seconds: f64,
}

impl Report {
    /// Whether every property holds: nothing lost, nothing duplicated, every epoch anchored
    /// once, every bundle and chain verifying, energy equal at both ends.
    pub fn check(&self) -> Result<()> {
        let mut wrong = Vec::new();
        if self.lost > 0 {
            wrong.push(format!("{} records lost", self.lost));
        }
        if self.duplicated > 0 {
            wrong.push(format!("{} records duplicated", self.duplicated));
        }
        if self.epoch_gaps > 0 {
            wrong.push(format!("{} epoch numbers missing", self.epoch_gaps));
        }
        if self.evm_double > 0 {
            wrong.push(format!(
                "{} epochs anchored more than once on chain",
                self.evm_double
            ));
        }
        if self.evm_anchored.is_some_and(|n| n != self.epochs) {
            wrong.push(format!(
                "{} epochs closed, {} anchored on chain",
                self.epochs,
                self.evm_anchored.unwrap_or(0)
            ));
        }
        wrong.extend(self.bundle_failures.iter().map(|f| format!("bundle: {f}")));
        wrong.extend(self.chain_failures.iter().map(|f| format!("chain: {f}")));
        wrong.extend(
            self.energy_mismatches
                .iter()
                .map(|f| format!("energy: {f}")),
        );
        if self.energy_devices_mj != self.energy_controller_mj {
            wrong.push("fleet energy totals differ between the devices and the controller".into());
        }
        ensure!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), self.text());
        Ok(())
    }

    /// The report as people read it.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "scenario      {} (seed {})", self.scenario, self.seed);
        let _ = writeln!(s, "agents        {}", self.agents);
        let _ = writeln!(s, "produced      {}", self.produced);
        let _ = writeln!(s, "stored        {}", self.stored);
        let _ = writeln!(s, "lost          {}", self.lost);
        if self.destroyed > 0 {
            let _ = writeln!(
                s,
                "destroyed     {} (by injected media damage, declared by ChainRestart)",
                self.destroyed
            );
        }
        let _ = writeln!(s, "duplicated    {}", self.duplicated);
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "rejected      {}",
            if rejected.is_empty() {
                "none".into()
            } else {
                rejected.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "epochs        {} closed, {} numbers missing",
            self.epochs, self.epoch_gaps
        );
        if let Some(n) = self.evm_anchored {
            let _ = writeln!(
                s,
                "anvil         {n} epochs anchored, {} twice",
                self.evm_double
            );
        }
        let _ = writeln!(
            s,
            "bundles       {} verified, {} failed",
            self.bundles_verified,
            self.bundle_failures.len()
        );
        let _ = writeln!(
            s,
            "chains        {} devices verified from genesis, {} failed",
            self.agents - self.chain_failures.len(),
            self.chain_failures.len()
        );
        let _ = writeln!(
            s,
            "energy        {} devices equal at both ends, {} differ",
            self.energy_checked - self.energy_mismatches.len() as u64,
            self.energy_mismatches.len()
        );
        for (kind, mj) in &self.energy_devices_mj {
            let c = self.energy_controller_mj.get(kind).copied().unwrap_or(0);
            let _ = writeln!(
                s,
                "  {kind:<18} devices {:>14.3} Wh  controller {:>14.3} Wh",
                *mj as f64 / 3.6e6,
                c as f64 / 3.6e6
            );
        }
        let _ = writeln!(s, "controller    {} starts", self.controller_starts);
        let _ = writeln!(s, "took          {:.1} s", self.seconds);
        if !self.events.is_empty() {
            let _ = writeln!(s, "faults injected:");
            for e in &self.events {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }
}

/// What an agent had produced when it was stopped.
struct Produced {
    next_seq: u64,
    counters_uj: BTreeMap<u8, u64>,
}

fn produced(data: &std::path::Path) -> Result<Produced> {
    let bytes = std::fs::read(data.join("chain-state.json"))
        .with_context(|| format!("reading {}/chain-state.json", data.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    let next_seq = v["next_seq"]
        .as_u64()
        .ok_or_else(|| anyhow!("no next_seq"))?;
    let counters_uj = v["counters_uj"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_u64()? as u8, p[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Produced {
        next_seq,
        counters_uj,
    })
}

impl Fleet {
    /// Heals every fault, stops and drains every agent, waits for the epochs to close over
    /// everything stored, and counts.
    pub fn finish(&mut self, scenario: &str, seed: u64) -> Result<Report> {
        self.finish_with(scenario, seed, None)
    }

    /// [`Fleet::finish`], breaking a property on purpose first when asked (to show the
    /// counting catches it).
    pub fn finish_with(
        &mut self,
        scenario: &str,
        seed: u64,
        brk: Option<crate::scenarios::Break>,
    ) -> Result<Report> {
        // Heal.
        if !self.broker_running() {
            self.broker.restart();
            self.event("broker restarted (healing)");
        }
        if !self.controller_running() {
            self.start_controller(None)?;
            self.event("controller started (healing)");
        }
        for a in &mut self.agents {
            a.thaw();
            if a.degraded
                && let Some(ns) = &a.netns
            {
                ns.clear()?;
                a.degraded = false;
            }
        }
        // Stop every agent and note what it produced.
        let mut made = Vec::new();
        for a in &mut self.agents {
            a.terminate(Duration::from_secs(10));
            made.push(produced(&a.data)?);
        }
        // Run them again (true clocks) until everything they produced is stored.
        for i in 0..self.agents.len() {
            self.agents[i].skew_s = 0;
            let bins = self.bins.clone();
            self.agents[i].start(&bins)?;
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            // Done when each device's last produced message is stored (the controller
            // stores a chain in order; the count checks the rest).
            let last = self.last_stored();
            let behind: Vec<String> = self
                .agents
                .iter()
                .zip(&last)
                .zip(&made)
                .filter(|((_, l), p)| p.next_seq > 0 && l.is_none_or(|l| l + 1 < p.next_seq))
                .map(|((a, l), p)| format!("{} at {l:?} of {}", a.name, p.next_seq - 1))
                .collect();
            if behind.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let a = &self.agents[0];
                anyhow::bail!(
                    "the drain did not finish: {behind:?}\ncontroller:\n{}\n{}:\n{}",
                    tail(&self.controller_log),
                    a.name,
                    tail(&a.log)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for a in &mut self.agents {
            a.terminate(Duration::from_secs(10));
        }
        self.wait_epochs_closed()?;
        if brk == Some(crate::scenarios::Break::DeleteStoredRecord) {
            let db = rusqlite::Connection::open(self.controller_data().join("controller.db"))?;
            // Seq 3 of the first agent (not of a device the scenario made up on the side).
            let device = self.agents[0].id.0.to_vec();
            let gone = db.execute(
                "DELETE FROM chain_items WHERE seq = 3 AND device = ?1",
                [device],
            )?;
            self.event(format!("BREAK: deleted {gone} stored record"));
        }
        self.count(scenario, seed, &made)
    }

    /// Waits until every stored message is in a closed epoch (and, with anvil, every epoch is
    /// anchored there).
    fn wait_epochs_closed(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let store = self.store()?;
            let unplaced = store.unplaced().map_err(|e| anyhow!("{e}"))?.len();
            let off_chain = if self.anvil.is_some() {
                store
                    .count_epochs_not_on_chain()
                    .map_err(|e| anyhow!("{e}"))?
            } else {
                0
            };
            if unplaced == 0 && off_chain == 0 {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{unplaced} messages never placed in an epoch, {off_chain} epochs not on chain\n{}",
                tail(&self.controller_log)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn count(&mut self, scenario: &str, seed: u64, made: &[Produced]) -> Result<Report> {
        let store = self.store()?;
        let mut r = Report {
            scenario: scenario.into(),
            seed,
            agents: self.agents.len(),
            rejected: self.rejected(),
            controller_starts: self.controller_starts,
            events: self.events.clone(),
            seconds: self.started.elapsed().as_secs_f64(),
            ..Report::default()
        };
        for (a, p) in self.agents.iter().zip(made) {
            if p.next_seq == 0 {
                continue;
            }
            let items = store
                .items(a.id, SeqNo(0), SeqNo(p.next_seq - 1))
                .map_err(|e| anyhow!("{e}"))?;
            let distinct: BTreeSet<u64> = items.iter().map(|(s, _)| s.0).collect();
            // A ChainRestart jumps ahead: the numbers between the last one used before it
            // (stored, or destroyed by injected damage) and it were never produced.
            let used: BTreeSet<u64> = distinct.union(&a.destroyed).copied().collect();
            let mut skipped = 0u64;
            for (seq, bytes) in &items {
                let restart = attest::Envelope::decode(bytes)
                    .is_ok_and(|e| e.open::<attest::msg::ChainRestart>().is_ok());
                if restart {
                    let floor = used.range(..seq.0).next_back().map_or(0, |u| u + 1);
                    skipped += seq.0 - floor;
                }
            }
            let produced = p.next_seq - skipped;
            let destroyed = a.destroyed.difference(&distinct).count() as u64;
            r.produced += produced;
            r.destroyed += destroyed;
            r.stored += distinct.len() as u64;
            r.lost += produced.saturating_sub(distinct.len() as u64 + destroyed);
            r.duplicated += items.len() as u64 - distinct.len() as u64;
            // The chain verifies from genesis under the device's key.
            let key = hil_tests::agent_key(&a.data).public();
            let mut v =
                ChainVerifier::new(&key, ChainPolicy::default()).map_err(|e| anyhow!("{e:?}"))?;
            let mut last_record = None;
            let mut whole = true;
            for (seq, bytes) in &items {
                let env = attest::Envelope::decode(bytes).map_err(|e| anyhow!("{e}"))?;
                match v.feed(&env, TimestampMs(u64::MAX / 2)) {
                    Ok(Outcome::Accepted(_)) => {}
                    other => {
                        r.chain_failures
                            .push(format!("{} seq {}: {other:?}", a.name, seq.0));
                        whole = false;
                        break;
                    }
                }
                if let Ok(ChainMessage::MeterRecord(m)) = ChainMessage::open(&env) {
                    last_record = Some(m);
                }
            }
            // Energy: the last stored record carries the device's counters.
            if let Some(m) = last_record.filter(|_| whole) {
                r.energy_checked += 1;
                let mut differ = Vec::new();
                for c in &m.channels {
                    let kind = format!("{:?}", c.kind);
                    let device_mj = p.counters_uj.get(&c.channel.0).copied().unwrap_or(0) / 1000;
                    *r.energy_devices_mj.entry(kind.clone()).or_default() += device_mj;
                    *r.energy_controller_mj.entry(kind.clone()).or_default() += c.energy.0;
                    if device_mj != c.energy.0 {
                        differ.push(format!(
                            "{kind}: device {device_mj} mJ, controller {} mJ",
                            c.energy.0
                        ));
                    }
                }
                if !differ.is_empty() {
                    r.energy_mismatches
                        .push(format!("{}: {}", a.name, differ.join("; ")));
                }
            }
        }
        // Epochs: numbered without a gap.
        if let Some(last) = store.last_epoch().map_err(|e| anyhow!("{e}"))? {
            r.epochs = last.epoch.0 + 1;
            for e in 0..=last.epoch.0 {
                if store
                    .epoch(EpochId(e))
                    .map_err(|e| anyhow!("{e}"))?
                    .is_none()
                {
                    r.epoch_gaps += 1;
                }
            }
        }
        if let (Some(anvil), Some(contract)) = (&self.anvil, &self.evm_contract) {
            let (anchored, double) = evm_anchors(&anvil.url(), contract)?;
            r.evm_anchored = Some(anchored);
            r.evm_double = double;
        }
        drop(store);
        self.verify_bundles(&mut r)?;
        Ok(r)
    }

    /// `fleet-controller bundle` for every device, checked by `attest verify` pinned at the
    /// controller's key.
    fn verify_bundles(&self, r: &mut Report) -> Result<()> {
        let dir = self.dir.path().join("bundles");
        std::fs::create_dir_all(&dir)?;
        for a in &self.agents {
            let out = dir.join(format!("{}.json", a.name));
            let id = a.id.to_string();
            let made = self.controller_cli(&[
                "bundle",
                "--device",
                &id,
                "--json",
                "--out",
                out.to_str().unwrap(),
            ])?;
            if !made.status.success() {
                r.bundle_failures.push(format!(
                    "{}: bundle: {}",
                    a.name,
                    String::from_utf8_lossy(&made.stderr).trim()
                ));
                continue;
            }
            let v = self.verify(&out, false)?;
            if v.status.success() {
                r.bundles_verified += 1;
            } else {
                r.bundle_failures.push(format!(
                    "{}: {}{}",
                    a.name,
                    String::from_utf8_lossy(&v.stdout).trim(),
                    String::from_utf8_lossy(&v.stderr).trim()
                ));
            }
        }
        Ok(())
    }
}

impl Fleet {
    /// `attest verify` of a bundle pinned at the controller's key (and, on anvil, at the
    /// chain and contract, each root looked up on the node); `--json` when asked.
    pub fn verify(&self, bundle: &std::path::Path, json: bool) -> Result<std::process::Output> {
        let mut verify = std::process::Command::new(&self.bins.attest);
        verify.args(["verify", "--controller-key", &self.controller_key]);
        if json {
            verify.arg("--json");
        }
        if let (Some(anvil), Some(contract)) = (&self.anvil, &self.evm_contract) {
            verify.args([
                "--chain-id",
                "31337",
                "--contract",
                contract,
                "--rpc",
                &anvil.url(),
            ]);
        }
        Ok(verify.arg(bundle).output()?)
    }
}

/// The anchor contract's `Anchored(uint64 indexed epoch, ...)` logs on the chain at `url`:
/// epochs anchored, and logs beyond one per epoch.
fn evm_anchors(url: &str, contract: &str) -> Result<(u64, u64)> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
        "params": [{"address": contract, "fromBlock": "0x0", "toBlock": "latest"}]
    });
    let v = hil_tests::json_rpc(url, &body).map_err(|e| anyhow!(e))?;
    let logs = v["result"]
        .as_array()
        .ok_or_else(|| anyhow!("eth_getLogs: {v}"))?;
    let mut per_epoch: BTreeMap<String, u64> = BTreeMap::new();
    for log in logs {
        let epoch = log["topics"][1].as_str().unwrap_or_default().to_string();
        *per_epoch.entry(epoch).or_default() += 1;
    }
    let double = per_epoch.values().map(|n| n - 1).sum();
    Ok((per_epoch.len() as u64, double))
}

/// Waits for `f` to hold, up to `timeout`.
pub fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !f() {
        ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits for a process to end, up to `timeout`.
pub fn wait_exit(p: &mut hil_tests::Proc, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = p.0.try_wait()? {
            return Ok(s);
        }
        ensure!(Instant::now() < deadline, "still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
