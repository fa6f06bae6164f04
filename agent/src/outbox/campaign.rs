//! The outbox's storage-fault campaign (docs/hil.md, "Storage faults"): an outbox workload
//! on a [`PowerCutDisk`] with the power cut after every single disk operation, in several
//! ways each time; then every truncation of a segment and random bit flips in it. Counts
//! what recovery found; any record lost, invented or altered is a problem named in the
//! report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use attest::SeqNo;

use super::power_cut::{Cut, DiskImage, Mix, PowerCutDisk};
use super::{Outbox, OutboxConfig};
use crate::config::FsyncPolicy;

/// What a campaign tried and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CampaignReport {
    /// Disk operations the workload made (each a crash point).
    pub crash_points: u64,
    /// Power cuts tried (crash points x ways of cutting).
    pub power_cuts: u64,
    /// Records whose append returned, and appends refused for want of space.
    pub appended: u64,
    pub refused_enospc: u64,
    /// Acknowledgements written.
    pub acks: u64,
    /// Outbox restarts inside the workload (recovery itself is crashed into too).
    pub restarts: u64,
    /// Truncations of a segment tried (every byte offset), random bit flips tried, and the
    /// damaged entries recovery quarantined after them.
    pub truncations: u64,
    pub bit_flips: u64,
    pub quarantined: u64,
    /// Problems, each counted and the first few described.
    pub lost: u64,
    pub invented: u64,
    pub altered: u64,
    pub ack_invented: u64,
    pub unrecoverable: u64,
    pub stuck: u64,
    pub problems: Vec<String>,
}

impl CampaignReport {
    /// Whether nothing went wrong.
    pub fn clean(&self) -> bool {
        self.lost
            + self.invented
            + self.altered
            + self.ack_invented
            + self.unrecoverable
            + self.stuck
            == 0
    }

    fn problem(&mut self, what: String) {
        if self.problems.len() < 20 {
            self.problems.push(what);
        }
    }

    /// The counts, one per line.
    pub fn text(&self) -> String {
        format!(
            "crash points        {}\npower cuts          {}\nrecords appended    {}\nENOSPC refusals     {}\nacks written        {}\nrestarts            {}\ntruncations         {}\nbit flips           {}\nquarantined entries {}\nlost                {}\ninvented            {}\naltered             {}\nacks invented       {}\nunrecoverable       {}\nstuck after recovery {}\n",
            self.crash_points,
            self.power_cuts,
            self.appended,
            self.refused_enospc,
            self.acks,
            self.restarts,
            self.truncations,
            self.bit_flips,
            self.quarantined,
            self.lost,
            self.invented,
            self.altered,
            self.ack_invented,
            self.unrecoverable,
            self.stuck
        )
    }
}

/// What the workload has done so far, as the checks see it.
#[derive(Debug, Default)]
struct Ledger {
    /// Appends that returned Ok: they may have been offered to MQTT.
    stored: BTreeMap<u64, Vec<u8>>,
    /// Every payload an append was tried with (a crash may leave it, whole).
    tried: BTreeMap<u64, Vec<u8>>,
    /// The highest acknowledgement asked for so far.
    ack_asked: Option<u64>,
}

fn outbox_dir() -> PathBuf {
    PathBuf::from("/data/outbox")
}

fn cfg(segment_bytes: u64) -> OutboxConfig {
    OutboxConfig {
        max_bytes: 1 << 20,
        segment_bytes,
        fsync: FsyncPolicy::Always,
    }
}

/// What a campaign does.
#[derive(Debug, Clone, Copy)]
pub struct CampaignOptions {
    pub seed: u64,
    /// Records appended.
    pub appends: u64,
    /// Random partial power cuts per crash point (besides dropping all and keeping all).
    pub partial: u64,
    /// Random bit flips of a segment.
    pub flips: u64,
    /// The workload's fsync policy: `Never` shows the checks catch a missing fsync.
    pub fsync: FsyncPolicy,
}

impl Default for CampaignOptions {
    fn default() -> Self {
        CampaignOptions {
            seed: 1,
            appends: 1_200,
            partial: 2,
            flips: 2_000,
            fsync: FsyncPolicy::Always,
        }
    }
}

fn payload(rng: &mut Mix, seq: u64) -> Vec<u8> {
    let n = rng.range(8, 300) as usize;
    let mut p = format!("record {seq}:").into_bytes();
    p.extend((0..n).map(|i| (seq as usize * 31 + i * 7) as u8));
    p
}

/// Recovers an image and checks it against what the workload had done.
fn check(img: &DiskImage, cut: Cut, ledger: &Ledger, r: &mut CampaignReport, segment_bytes: u64) {
    r.power_cuts += 1;
    let disk = Arc::new(PowerCutDisk::new(img.power_cut(cut)));
    let mut ob = match Outbox::open_on(disk, &outbox_dir(), cfg(segment_bytes)) {
        Ok(ob) => ob,
        Err(e) => {
            r.unrecoverable += 1;
            r.problem(format!("op {} {cut:?}: recovery failed: {e}", img.ops));
            return;
        }
    };
    let acked = ob.acked().map(|a| a.0);
    if acked.is_some_and(|a| ledger.ack_asked.is_none_or(|asked| a > asked)) {
        r.ack_invented += 1;
        r.problem(format!(
            "op {} {cut:?}: ack {acked:?} never asked for",
            img.ops
        ));
    }
    for (seq, bytes) in &ledger.stored {
        if acked.is_some_and(|a| *seq <= a) {
            continue;
        }
        match ob.read(SeqNo(*seq)) {
            Ok(Some(b)) if &b == bytes => {}
            Ok(Some(_)) => {
                r.altered += 1;
                r.problem(format!("op {} {cut:?}: seq {seq} altered", img.ops));
            }
            _ => {
                r.lost += 1;
                r.problem(format!(
                    "op {} {cut:?}: seq {seq} lost (acked {acked:?})",
                    img.ops
                ));
            }
        }
    }
    let pending: Vec<SeqNo> = ob.pending().collect();
    for seq in pending {
        let got = ob.read(seq).ok().flatten();
        match ledger.tried.get(&seq.0) {
            Some(b) if got.as_ref() == Some(b) => {}
            Some(_) => {
                r.altered += 1;
                r.problem(format!(
                    "op {} {cut:?}: seq {} read back different",
                    img.ops, seq.0
                ));
            }
            None => {
                r.invented += 1;
                r.problem(format!(
                    "op {} {cut:?}: seq {} never appended",
                    img.ops, seq.0
                ));
            }
        }
    }
    let next = ledger.tried.keys().last().map_or(0, |s| s + 1);
    if let Err(e) = ob.append(SeqNo(next), b"after the power cut") {
        r.stuck += 1;
        r.problem(format!(
            "op {} {cut:?}: no append after recovery: {e}",
            img.ops
        ));
    }
}

/// Runs the campaign: `opts.appends` records through an outbox with small segments, acks
/// lagging behind, a few restarts and full disks, the power cut after every operation in
/// `2 + opts.partial` ways; then truncations and `opts.flips` bit flips of one segment.
pub fn campaign(opts: CampaignOptions) -> CampaignReport {
    let CampaignOptions {
        seed,
        appends,
        partial,
        flips,
        fsync,
    } = opts;
    let segment_bytes = 1_024;
    let workload_cfg = OutboxConfig {
        fsync,
        ..cfg(segment_bytes)
    };
    let report = Arc::new(Mutex::new(CampaignReport::default()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let disk = Arc::new(PowerCutDisk::new(DiskImage::default()));
    {
        let (report, ledger) = (report.clone(), ledger.clone());
        let mut cuts_rng = Mix(seed ^ 0x5eed);
        disk.observe(Box::new(move |img| {
            let ledger = ledger.lock().unwrap();
            let mut r = report.lock().unwrap();
            r.crash_points += 1;
            check(img, Cut::DropUnsynced, &ledger, &mut r, segment_bytes);
            check(img, Cut::KeepAll, &ledger, &mut r, segment_bytes);
            for _ in 0..partial {
                let seed = cuts_rng.next_u64();
                check(img, Cut::Partial { seed }, &ledger, &mut r, segment_bytes);
            }
        }));
    }
    let mut rng = Mix(seed);
    let dir = outbox_dir();
    let mut ob = Outbox::open_on(disk.clone(), &dir, workload_cfg.clone()).expect("a fresh outbox");
    let mut seq = 0u64;
    while seq < appends {
        let p = payload(&mut rng, seq);
        let full = rng.range(0, 100) < 3;
        if full {
            disk.set_capacity(Some(disk.used() + rng.range(0, 200)));
        }
        ledger.lock().unwrap().tried.insert(seq, p.clone());
        match ob.append(SeqNo(seq), &p) {
            Ok(()) => {
                ledger.lock().unwrap().stored.insert(seq, p);
                report.lock().unwrap().appended += 1;
                seq += 1;
            }
            Err(_) => report.lock().unwrap().refused_enospc += 1,
        }
        if full {
            disk.set_capacity(None);
        }
        if rng.range(0, 100) < 15 && seq > 0 {
            let up_to = seq - 1 - rng.range(0, 20).min(seq - 1);
            {
                let mut l = ledger.lock().unwrap();
                l.ack_asked = Some(l.ack_asked.map_or(up_to, |a| a.max(up_to)));
            }
            if ob.ack(SeqNo(up_to)).is_ok() {
                report.lock().unwrap().acks += 1;
            }
        }
        if rng.range(0, 1000) < 8 {
            drop(ob);
            ob = Outbox::open_on(disk.clone(), &dir, workload_cfg.clone()).expect("reopening");
            report.lock().unwrap().restarts += 1;
        }
    }
    drop(ob);
    let mut r = report.lock().unwrap().clone();
    damage(seed, flips, &mut r);
    r
}

/// Truncates a segment of 40 entries at every byte offset, and flips random bits in it:
/// recovery keeps exactly the whole entries before a cut, and after a flip loses at most the
/// entry it hit, invents nothing and alters nothing.
fn damage(seed: u64, flips: u64, r: &mut CampaignReport) {
    let dir = outbox_dir();
    let disk = Arc::new(PowerCutDisk::new(DiskImage::default()));
    let mut ob = Outbox::open_on(disk.clone(), &dir, cfg(1 << 20)).expect("outbox");
    let mut rng = Mix(seed ^ 0xf11b);
    let mut entries = Vec::new();
    for seq in 0..40 {
        let p = payload(&mut rng, seq);
        ob.append(SeqNo(seq), &p).expect("append");
        entries.push(p);
    }
    drop(ob);
    let base = disk.image();
    let seg = base
        .files_in(&dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment");
    let bytes = base.get(&seg).expect("segment bytes");
    // Where each entry ends.
    let mut ends = Vec::new();
    let mut at = 0usize;
    for p in &entries {
        at += super::HEADER + p.len();
        ends.push(at);
    }
    let recover = |img: DiskImage| -> Option<Outbox> {
        Outbox::open_on(Arc::new(PowerCutDisk::new(img)), &dir, cfg(1 << 20)).ok()
    };
    for cut in 0..=bytes.len() {
        r.truncations += 1;
        let mut img = base.clone();
        img.put(&seg, bytes[..cut].to_vec());
        let Some(ob) = recover(img) else {
            r.unrecoverable += 1;
            r.problem(format!("truncation at {cut}: recovery failed"));
            continue;
        };
        let whole = ends.iter().filter(|e| **e <= cut).count() as u64;
        let got: Vec<u64> = ob.pending().map(|s| s.0).collect();
        if got != (0..whole).collect::<Vec<_>>() {
            r.lost += 1;
            r.problem(format!(
                "truncation at {cut}: kept {got:?}, expected 0..{whole}"
            ));
        }
    }
    for _ in 0..flips {
        r.bit_flips += 1;
        let mut damaged = bytes.clone();
        let bit = rng.range(0, bytes.len() as u64 * 8);
        damaged[(bit / 8) as usize] ^= 1 << (bit % 8);
        let mut img = base.clone();
        img.put(&seg, damaged);
        let Some(ob) = recover(img) else {
            r.unrecoverable += 1;
            r.problem(format!("flip of bit {bit}: recovery failed"));
            continue;
        };
        r.quarantined += ob.stats.quarantined;
        let got: Vec<SeqNo> = ob.pending().collect();
        for s in &got {
            if ob.read(*s).ok().flatten().as_ref() != entries.get(s.0 as usize) {
                r.altered += 1;
                r.problem(format!(
                    "flip of bit {bit}: seq {} altered or invented",
                    s.0
                ));
            }
        }
        if got.len() + 1 < entries.len() {
            r.lost += 1;
            r.problem(format!(
                "flip of bit {bit}: {} entries lost",
                entries.len() - got.len()
            ));
        }
    }
}
