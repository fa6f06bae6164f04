//! Deterministic sample devices, chains and bundles for tests, benchmarks, the shipped
//! test vectors and demos. Everything is derived from small seeds, so the same call gives
//! the same bytes on every machine (ed25519 signatures are deterministic).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::account::{StatementInput, compute_statement};
use crate::bundle::{AnchorRef, BUNDLE_FORMAT, Blob, EpochProof, Evidence, ProofBundle};
use crate::envelope::Envelope;
use crate::hash::Hash32;
use crate::id::KeyPair;
use crate::intensity::{Figure, RegionTable, bundled_digest};
use crate::merkle::MerkleTree;
use crate::msg::{
    AnchorEntry, Backend, ChainMessage, ChannelInfo, ChannelKind, ChannelReading, CounterSnapshot,
    Gpu, Hardware, Hello, JobId, JobOutcome, JobReceipt, Link, MeterRecord, Site, Statement,
    Subject, TrustTier,
};
use crate::units::{ChannelId, EpochId, Millijoules, Milliwatts, SeqNo, TimestampMs};
use crate::writer::{ChainHead, Chained};

/// 2026-06-21T00:00:00Z, the start of every sample chain.
pub const SAMPLE_START: TimestampMs = TimestampMs(1_782_000_000_000);

/// The channels of a sample device, in channel-id order.
pub const SAMPLE_CHANNELS: [ChannelKind; 6] = [
    ChannelKind::Solar,
    ChannelKind::BatteryCharge,
    ChannelKind::BatteryDischarge,
    ChannelKind::GridImport,
    ChannelKind::Load,
    ChannelKind::Gpu,
];

/// A simulated solar rig with a battery, a grid connection and a GPU, producing a signed
/// hash chain of meter records.
#[derive(Clone, Debug)]
pub struct SampleDevice {
    /// The device key.
    pub key: KeyPair,
    head: ChainHead,
    counters: [u64; 6],
    battery_mj: u64,
    capacity_mj: u64,
    last_t: Option<u64>,
    unmetered: Vec<crate::msg::Unmetered>,
}

impl SampleDevice {
    /// A device whose key is derived from `seed`.
    pub fn new(seed: u8) -> SampleDevice {
        SampleDevice {
            key: KeyPair::from_seed(&[seed; 32]),
            head: ChainHead::GENESIS,
            counters: [0; 6],
            // 1 kWh battery at 30 %, 20 % reserve: the first night needs some grid energy.
            battery_mj: 1_080_000_000,
            capacity_mj: 3_600_000_000,
            last_t: None,
            unmetered: Vec::new(),
        }
    }

    /// The same device with its battery at its reserve: it draws from the grid at night.
    pub fn at_reserve(mut self) -> SampleDevice {
        self.battery_mj = self.capacity_mj / 5;
        self
    }

    /// The device's signed hello.
    pub fn hello(&self) -> Envelope {
        let hello = Hello {
            device: self.key.device_id(),
            public_key: self.key.public(),
            timestamp: SAMPLE_START,
            agent_version: "sample".to_string(),
            hardware: Hardware {
                board: "Jetson AGX Orin 64GB".to_string(),
                gpus: alloc::vec![Gpu {
                    model: "Orin (nvgpu)".to_string(),
                    vram_mib: 65_536,
                    arch: "sm_87".to_string()
                }],
                // About what published life-cycle figures give a Jetson-class board with
                // its carrier, supply and enclosure; five years of life.
                embodied_g_co2e: 150_000,
                expected_life_hours: 5 * 8_766,
                max_draw_w: 400,
                cpu_model: "ARM Cortex-A78AE".to_string(),
                cpu_cores: 12,
            },
            site: Site {
                lat_microdeg: 52_520_000,
                lon_microdeg: 13_405_000,
                panel_watts_peak: 400,
                battery_wh: 1_000,
                battery_reserve_wh: 200,
                grid_region: "DE".to_string(),
            },
            channels: SAMPLE_CHANNELS
                .iter()
                .enumerate()
                .map(|(i, &kind)| ChannelInfo {
                    channel: ChannelId(i as u8),
                    kind,
                    source: String::from(match kind {
                        ChannelKind::Gpu => "ina3221:VDD_GPU_SOC",
                        ChannelKind::GridImport => "sunspec:203",
                        _ => "vedirect:/dev/ttyUSB0",
                    }),
                    tier: TrustTier::HardwareMeter,
                })
                .collect(),
            price_micro_per_gpu_hour: 250_000,
        };
        Envelope::seal(&hello, &self.key)
    }

    /// Solar, load and GPU power (mW) at `t`: a clear-sky bell from 04:00 to 20:00 UTC
    /// peaking at 320 W, a 45 W base load and a 35 W GPU job from 08:00 to 22:00.
    pub fn powers_at(t: u64) -> (u64, u64, u64) {
        let day_ms = t % 86_400_000;
        let hour_x1000 = day_ms / 3_600;
        let solar = if (4_000..20_000).contains(&hour_x1000) {
            // Parabola 0 at 4h and 20h, 1 at 12h.
            let x = hour_x1000 as i64 - 12_000;
            let shape = 64_000_000 - x * x; // scaled by 64e6
            (320_000 * shape.max(0) as u64) / 64_000_000
        } else {
            0
        };
        let gpu = if (8_000..22_000).contains(&hour_x1000) {
            35_000
        } else {
            0
        };
        (solar, 45_000 + gpu, gpu)
    }

    /// Makes the next signed record at time `t` (ms), integrating power since the last one.
    pub fn record_at(&mut self, t: u64) -> Envelope {
        let dt = self.last_t.map_or(0, |l| t.saturating_sub(l));
        self.last_t = Some(t);
        let (solar_mw, load_mw, gpu_mw) = Self::powers_at(t);
        let e = |mw: u64| mw * dt / 1000; // mW x ms / 1000 = mJ
        let (solar, load) = (e(solar_mw), e(load_mw));
        let (mut charge, mut discharge, mut grid) = (0, 0, 0);
        if solar >= load {
            charge = (solar - load).min(self.capacity_mj - self.battery_mj);
            self.battery_mj += charge;
        } else {
            let deficit = load - solar;
            let reserve = self.capacity_mj / 5;
            discharge = deficit.min(self.battery_mj.saturating_sub(reserve));
            self.battery_mj -= discharge;
            grid = deficit - discharge;
        }
        for (c, add) in
            self.counters
                .iter_mut()
                .zip([solar, charge, discharge, grid, load, e(gpu_mw)])
        {
            *c += add;
        }
        let mw = |mj: u64| (mj * 1000).checked_div(dt).unwrap_or(0) as u32;
        let soc = (self.battery_mj * 1000 / self.capacity_mj) as u16;
        let channels = SAMPLE_CHANNELS
            .iter()
            .enumerate()
            .map(|(i, &kind)| ChannelReading {
                channel: ChannelId(i as u8),
                kind,
                energy: Millijoules(self.counters[i]),
                power: Milliwatts(match kind {
                    ChannelKind::Solar => mw(solar),
                    ChannelKind::BatteryCharge => mw(charge),
                    ChannelKind::BatteryDischarge => mw(discharge),
                    ChannelKind::GridImport => mw(grid),
                    ChannelKind::Load => mw(load),
                    _ => gpu_mw as u32,
                }),
                voltage_mv: matches!(
                    kind,
                    ChannelKind::BatteryCharge | ChannelKind::BatteryDischarge
                )
                .then_some(25_600),
                soc_permille: matches!(kind, ChannelKind::BatteryCharge).then_some(soc),
            })
            .collect();
        let rec = MeterRecord {
            link: self.next_link(t),
            channels,
            unmetered: core::mem::take(&mut self.unmetered),
        };
        self.seal_chained(&rec)
    }

    /// Seals any chain message with this device's key and advances the chain.
    pub fn seal_chained<M: Chained>(&mut self, msg: &M) -> Envelope {
        let env = Envelope::seal(msg, &self.key);
        self.head.advance(msg.link(), env.hash());
        env
    }

    /// The link the next chain message must carry at time `t`.
    pub fn next_link(&self, t: u64) -> Link {
        self.head.link(self.key.device_id(), TimestampMs(t))
    }

    /// Where the device's chain stands.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The agent was down for `ms` with its chain state kept, and no source counter covered
    /// the grid channel (3): the next record says so (and the energy of that time is not in
    /// its counters).
    pub fn unmetered_grid(&mut self, ms: u32) {
        self.unmetered.push(crate::msg::Unmetered {
            channel: ChannelId(3),
            ms,
        });
    }

    /// Adds `mj` to counter `channel` (0 solar .. 5 GPU) without the power to explain it:
    /// the next record shows an implausible jump (a plausibility flag).
    pub fn bump_counter(&mut self, channel: usize, mj: u64) {
        self.counters[channel] += mj;
    }

    /// The agent restarted at `t` without its chain state: a signed `ChainRestart` that
    /// skips 1,000 sequence numbers, then records continue from it. The interval before it
    /// is not metered: the next record is the new baseline.
    pub fn restart(&mut self, t: u64) -> Envelope {
        let seq = SeqNo(self.head.next_seq.0 + 1_000);
        let restart = self.head.restart(
            self.key.device_id(),
            seq,
            TimestampMs(t),
            crate::msg::RestartReason::StateLost,
        );
        self.last_t = None;
        self.seal_chained(&restart)
    }

    /// `n` records every `interval_ms` from [`SAMPLE_START`].
    pub fn chain(&mut self, n: usize, interval_ms: u64) -> Vec<Envelope> {
        (0..n as u64)
            .map(|i| self.record_at(SAMPLE_START.0 + i * interval_ms))
            .collect()
    }
}

/// The figure of the bundled table for the sample's region (DE) in `hour`: what sample
/// statements charge grid energy at.
pub fn bundled_figure(region: &str, hour: u64) -> Figure {
    let table = RegionTable::bundled().expect("the bundled table parses");
    Figure {
        mg_per_kwh: table.figure(region, hour),
        dataset: bundled_digest(),
    }
}

/// A complete, valid bundle: `n` records of sample device `seed` every `interval_ms`, in
/// one epoch anchored in a local log signed by `controller`.
pub fn bundle(seed: u8, n: usize, interval_ms: u64, controller: &KeyPair) -> ProofBundle {
    let mut dev = SampleDevice::new(seed);
    let hello = dev.hello();
    let chain = dev.chain(n, interval_ms);
    bundle_from_chain(&hello, &chain, controller, EpochId(0))
}

/// The statement over sample chain messages (from the chain's start), for `subject`, over
/// the records from `from` on, with the bundled table's figures.
pub fn statement(
    hello: &Hello,
    messages: &[ChainMessage],
    subject: Subject,
    from: TimestampMs,
) -> Statement {
    let region = hello.site.grid_region.clone();
    compute_statement(&StatementInput {
        subject,
        hellos: core::slice::from_ref(hello),
        chain: messages,
        from,
        intensity: &|h| bundled_figure(&region, h),
    })
    .expect("sample statement computes")
}

/// A bundle over given chain envelopes (all in one epoch, local anchor), its device-period
/// statement signed by `controller`.
pub fn bundle_from_chain(
    hello: &Envelope,
    chain: &[Envelope],
    controller: &KeyPair,
    epoch: EpochId,
) -> ProofBundle {
    let hello_msg: Hello = hello.open().expect("sample hello decodes");
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).expect("sample decodes"))
        .collect();
    let statement = statement(
        &hello_msg,
        &messages,
        Subject::DevicePeriod {
            device: hello_msg.device,
        },
        TimestampMs(0),
    );
    bundle_with_statement(hello, chain, controller, epoch, &statement)
}

/// A bundle over given chain envelopes (all in one epoch, local anchor) carrying
/// `statement`, signed by `controller`.
pub fn bundle_with_statement(
    hello: &Envelope,
    chain: &[Envelope],
    controller: &KeyPair,
    epoch: EpochId,
    statement: &Statement,
) -> ProofBundle {
    bundle_with_retirements(hello, chain, controller, epoch, statement, &[])
}

/// [`bundle_with_statement`] with `retirements` (controller-signed `Retirement` envelopes)
/// as leaves of the same epoch after the chain, and carried.
pub fn bundle_with_retirements(
    hello: &Envelope,
    chain: &[Envelope],
    controller: &KeyPair,
    epoch: EpochId,
    statement: &Statement,
    retirements: &[Envelope],
) -> ProofBundle {
    let tree = MerkleTree::from_leaves(
        &chain
            .iter()
            .chain(retirements)
            .map(|e| e.as_bytes())
            .collect::<Vec<_>>(),
    );
    let head = tree.head();
    let entry = AnchorEntry {
        index: epoch.0,
        prev: Hash32::ZERO,
        epoch,
        tree_size: head.size,
        root: head.root,
        timestamp: TimestampMs(SAMPLE_START.0 + 86_400_000),
    };
    ProofBundle {
        format: BUNDLE_FORMAT,
        statement: ProofBundle::sign_statement(statement, controller),
        devices: alloc::vec![Blob(hello.as_bytes().to_vec())],
        datasets: Vec::new(),
        evidence: chain
            .iter()
            .enumerate()
            .map(|(i, e)| Evidence {
                envelope: Blob(e.as_bytes().to_vec()),
                epoch,
                proof: tree.inclusion_proof(i as u64).expect("index in range"),
            })
            .collect(),
        retirements: retirements
            .iter()
            .enumerate()
            .map(|(i, e)| Evidence {
                envelope: Blob(e.as_bytes().to_vec()),
                epoch,
                proof: tree
                    .inclusion_proof((chain.len() + i) as u64)
                    .expect("index in range"),
            })
            .collect(),
        epochs: alloc::vec![EpochProof {
            epoch,
            head,
            anchor: AnchorRef::Local {
                entry: Blob(Envelope::seal(&entry, controller).into_bytes()),
                controller_key: controller.public(),
            },
        }],
        key_rotations: Vec::new(),
    }
}

/// A job's chain: an hour of sample records with a job from record 2 to record 12 (its
/// receipt's GPU counters taken from those records, `inflate` mJ added to the end counter),
/// then one more record. The device's battery is at its reserve: the night runs on the grid.
pub fn job_chain(inflate: u64) -> (Envelope, Vec<Envelope>, MeterRecord, MeterRecord) {
    job_chain_on(inflate, 5)
}

/// [`job_chain`] with the receipt's counters those of sample channel `channel` (4: the
/// device's whole load, which draws from the grid at night; 5: the GPU).
pub fn job_chain_on(
    inflate: u64,
    channel: usize,
) -> (Envelope, Vec<Envelope>, MeterRecord, MeterRecord) {
    let mut dev = SampleDevice::new(1).at_reserve();
    let hello = dev.hello();
    let mut chain: Vec<Envelope> = dev.chain(13, 300_000);
    let first: MeterRecord = chain[2].open().expect("sample record");
    let last: MeterRecord = chain[12].open().expect("sample record");
    let snap = |r: &MeterRecord, add: u64| {
        alloc::vec![CounterSnapshot {
            channel: ChannelId(channel as u8),
            kind: SAMPLE_CHANNELS[channel],
            energy: Millijoules(r.channels[channel].energy.0 + add),
        }]
    };
    let receipt = JobReceipt {
        link: dev.next_link(last.link.timestamp.0),
        job: JobId([7; 16]),
        outcome: JobOutcome::Completed,
        output_hash: Hash32::digest(b"output"),
        started: first.link.timestamp,
        ended: last.link.timestamp,
        start_counters: snap(&first, 0),
        end_counters: snap(&last, inflate),
        chunks: 40,
        pauses: 0,
        backend: Backend::Cpu,
        tier: TrustTier::HardwareMeter,
    };
    chain.push(dev.seal_chained(&receipt));
    chain.push(dev.record_at(SAMPLE_START.0 + 13 * 300_000));
    (hello, chain, first, last)
}

/// The subject of [`job_chain`]'s job.
pub fn job_subject() -> Subject {
    Subject::Job {
        device: SampleDevice::new(1).key.device_id(),
        job: JobId([7; 16]),
    }
}
