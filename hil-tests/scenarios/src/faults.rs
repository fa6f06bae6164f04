//! The fault injector: one small vocabulary every scenario and the soak use, each fault a
//! real act on a real process, link, clock or file.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::fleet::Fleet;
use crate::netns::Impairment;

/// One fault (agents by index into the fleet).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// SIGKILL the broker (what it held in memory is gone), then start it again after `down`.
    BrokerRestart { down: Duration },
    /// SIGKILL the broker and leave it down.
    BrokerKill,
    /// Start a killed broker.
    BrokerStart,
    /// kill -9 an agent and start it again after `down`.
    AgentKill9 { agent: usize, down: Duration },
    /// SIGSTOP an agent.
    AgentFreeze(usize),
    /// SIGCONT a frozen agent.
    AgentThaw(usize),
    /// kill -9 the controller and start it again after `down`.
    ControllerKill9 { down: Duration },
    /// kill -9 the controller and start it with `HELIOSTAT_CRASH_AT=point`: it aborts
    /// there (fleet_controller::crash), and is started again normally.
    ControllerCrashAt(&'static str),
    /// Cut an agent's link (everything dropped, both directions).
    Partition(usize),
    /// Restore an agent's link.
    Heal(usize),
    /// Degrade an agent's link (loss, delay, reordering, rate: see `Netns::impair`).
    Impair {
        agent: usize,
        impairment: Impairment,
    },
    /// Restart an agent with its clock `seconds` off (libfaketime); 0 puts it right.
    ClockSkew { agent: usize, seconds: i64 },
    /// A power cut mid-append: the agent killed, the start of an entry whose body never
    /// reached the disk appended to its newest outbox segment, the agent started again.
    /// Nothing it had stored may be lost.
    TornOutboxTail(usize),
    /// Media damage: the agent killed, the last `cut` bytes of its newest outbox segment
    /// (fsynced records) destroyed, the agent started again. The records destroyed are
    /// counted apart ([`crate::fleet::Device::destroyed`]); the agent must declare the loss
    /// with a `ChainRestart` and go on.
    DamageOutbox { agent: usize, cut: u64 },
    /// Fill the filesystem under an agent's data directory (a filler file until ENOSPC).
    FillDisk(usize),
    /// Remove the filler.
    FreeDisk(usize),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The newest segment of an outbox directory.
pub fn newest_segment(outbox: &Path) -> Option<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(outbox)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop()
}

/// The sequence numbers an outbox holds (opened as the agent opens it: recovery included).
fn held(outbox: &Path) -> Result<std::collections::BTreeSet<u64>> {
    let ob = heliostat_agent::outbox::Outbox::open(outbox, Default::default())
        .map_err(|e| anyhow!("opening {}: {e}", outbox.display()))?;
    Ok(ob.pending().map(|s| s.0).collect())
}

fn filler(data: &Path) -> PathBuf {
    data.join("hil-filler")
}

impl Fleet {
    /// Does `fault` and notes it.
    pub fn inject(&mut self, fault: Fault) -> Result<()> {
        self.event(fault.to_string());
        let bins = self.bins.clone();
        match fault {
            Fault::BrokerRestart { down } => {
                self.broker.kill();
                std::thread::sleep(down);
                self.broker.restart();
            }
            Fault::BrokerKill => self.broker.kill(),
            Fault::BrokerStart => self.broker.restart(),
            Fault::AgentKill9 { agent, down } => {
                self.agents[agent].kill9();
                std::thread::sleep(down);
                self.agents[agent].start(&bins)?;
            }
            Fault::AgentFreeze(a) => self.agents[a].freeze(),
            Fault::AgentThaw(a) => self.agents[a].thaw(),
            Fault::ControllerKill9 { down } => {
                if let Some(mut c) = self.controller.take() {
                    c.kill9();
                }
                std::thread::sleep(down);
                self.start_controller(None)?;
            }
            Fault::ControllerCrashAt(point) => {
                if let Some(mut c) = self.controller.take() {
                    c.kill9();
                }
                self.start_controller(Some(point))?;
                let mut c = self.controller.take().expect("just started");
                let status = crate::report::wait_exit(&mut c, Duration::from_secs(60))
                    .with_context(|| format!("the controller never reached crash point {point}"))?;
                use std::os::unix::process::ExitStatusExt;
                anyhow::ensure!(
                    status.signal() == Some(6),
                    "the controller ended with {status}, not at crash point {point}"
                );
                self.event(format!("controller aborted at {point}"));
                self.start_controller(None)?;
            }
            Fault::Partition(a) => {
                self.netns_of(a)?.partition(true)?;
                self.agents[a].degraded = true;
            }
            Fault::Heal(a) => {
                self.netns_of(a)?.clear()?;
                self.agents[a].degraded = false;
            }
            Fault::Impair { agent, impairment } => {
                let applied = self.netns_of(agent)?.impair(&impairment)?;
                self.agents[agent].degraded = true;
                self.event(format!("  applied: {applied}"));
            }
            Fault::ClockSkew { agent, seconds } => {
                let a = &mut self.agents[agent];
                a.terminate(Duration::from_secs(10));
                a.skew_s = seconds;
                a.start(&bins)?;
            }
            Fault::TornOutboxTail(agent) => {
                let a = &mut self.agents[agent];
                a.kill9();
                if let Some(seg) = newest_segment(&a.data.join("outbox")) {
                    let mut f = std::fs::OpenOptions::new().append(true).open(&seg)?;
                    f.write_all(b"HSO1\x40\x00\x00\x00torn")?;
                    f.sync_all()?;
                }
                a.start(&bins)?;
            }
            Fault::DamageOutbox { agent, cut } => {
                let a = &mut self.agents[agent];
                a.kill9();
                let outbox = a.data.join("outbox");
                let before = held(&outbox)?;
                if let Some(seg) = newest_segment(&outbox) {
                    let f = std::fs::OpenOptions::new().write(true).open(&seg)?;
                    let len = f.metadata()?.len();
                    f.set_len(len.saturating_sub(cut))?;
                    f.sync_all()?;
                }
                let after = held(&outbox)?;
                let gone: Vec<u64> = before.difference(&after).copied().collect();
                self.event(format!("  destroyed records {gone:?}"));
                let a = &mut self.agents[agent];
                a.destroyed.extend(gone);
                a.start(&bins)?;
            }
            Fault::FillDisk(a) => {
                let path = filler(&self.agents[a].data);
                let mut f = std::fs::File::create(&path)?;
                let chunk = vec![0u8; 64 << 10];
                while f.write_all(&chunk).is_ok() {}
                let _ = f.sync_all();
            }
            Fault::FreeDisk(a) => {
                let _ = std::fs::remove_file(filler(&self.agents[a].data));
            }
        }
        Ok(())
    }

    fn netns_of(&self, a: usize) -> Result<&crate::netns::Netns> {
        self.agents[a].netns.as_ref().ok_or_else(|| {
            anyhow!(
                "{} has no network namespace (FleetOptions::netns_agents)",
                self.agents[a].name
            )
        })
    }
}
