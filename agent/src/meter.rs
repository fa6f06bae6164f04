//! The meter: integrates power samples into cumulative per-channel energy counters and
//! seals signed, hash-chained `MeterRecord`s. Sans-IO: time and samples are inputs.
//!
//! Counters are kept in microjoules (trapezoid rule over samples, or the source's own
//! cumulative counter where it has one) and published in millijoules, floor. A record's
//! power is the mean of the sampled power over the interval, kept apart from the energy: a
//! meter's watt-hour counter steps in whole units, and power derived from it would swing
//! between zero and a multiple of the real figure. They never go
//! down, and they keep accumulating while records cannot be stored (full outbox, full disk),
//! so a later record carries all the energy: a lost record costs resolution, never energy.
//!
//! Sealing is separate from committing: [`Meter::seal`] makes the next record without
//! changing anything; the caller stores it durably, then calls [`Meter::commit`]. A crash in
//! between re-seals the same sequence number with newer counters, which the controller sees
//! as one record (it never received the other).

use attest::msg::{
    ChainRestart, ChannelKind, ChannelReading, CounterSnapshot, JobReceipt, Link, MeterRecord,
    RestartReason, TrustTier, Unmetered,
};
use attest::writer::ChainHead;
use attest::{ChannelId, Envelope, KeyPair, Millijoules, Milliwatts, SeqNo, TimestampMs};
use serde::{Deserialize, Serialize};

use crate::power::Sample;

/// A channel the meter keeps.
#[derive(Debug, Clone)]
struct Channel {
    id: ChannelId,
    kind: ChannelKind,
    energy_uj: u64,
    last: Option<(u64, u64)>,
    device_counter_mj: Option<u64>,
    /// After a restart, the time of the last stored record until the first sample says
    /// whether the source's own counter covered the down time.
    unmetered_since: Option<u64>,
    /// Milliseconds not metered since the last stored record (reported in the next one).
    unmetered_ms: u64,
    voltage_mv: Option<u32>,
    soc_permille: Option<u16>,
    at_last_record_mj: u64,
    /// The sampled power integrated over time (uJ) and the time that covers (ms), whether
    /// or not a source counter carries the energy: a record's mean power comes from these.
    power_uj: u64,
    power_ms: u64,
    /// `(power_uj, power_ms)` at the last record.
    at_last_record_power: (u64, u64),
}

/// What must survive a restart for the chain to continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// Where the chain stands: the next sequence number, the hash and time of the last
    /// stored message (written as `next_seq`, `prev`, `last_timestamp`).
    #[serde(flatten)]
    pub head: ChainHead,
    /// Each channel's counter in microjoules, by channel id.
    pub counters_uj: Vec<(u8, u64)>,
    /// Each channel's source counter (mJ) as of the same moment, where its source keeps
    /// one (SunSpec `TotWh`, a charger's yield, NVML's energy): after a restart the first
    /// sample adds what the source counted while the agent was down, so that interval is
    /// metered too. Absent in state files from before it was kept.
    #[serde(default)]
    pub device_counters_mj: Vec<(u8, u64)>,
}

/// The meter for one device.
#[derive(Debug)]
pub struct Meter {
    channels: Vec<Channel>,
    state: ChainState,
}

impl Meter {
    /// A meter over `channels` (id = position), continuing from `state` when given.
    pub fn new(channels: &[(ChannelKind, TrustTier)], state: Option<ChainState>) -> Meter {
        let state = state.unwrap_or(ChainState {
            head: ChainHead::GENESIS,
            counters_uj: vec![],
            device_counters_mj: vec![],
        });
        let channels = channels
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| {
                let uj = state
                    .counters_uj
                    .iter()
                    .find(|(id, _)| *id as usize == i)
                    .map_or(0, |(_, e)| *e);
                let device_counter_mj = state
                    .device_counters_mj
                    .iter()
                    .find(|(id, _)| *id as usize == i)
                    .map(|(_, e)| *e);
                Channel {
                    id: ChannelId(i as u8),
                    kind: *kind,
                    energy_uj: uj,
                    last: None,
                    device_counter_mj,
                    // A continued chain: from its last record to the first sample, only a
                    // source's own counter knows what happened.
                    unmetered_since: (state.head.last_timestamp.0 > 0)
                        .then_some(state.head.last_timestamp.0),
                    unmetered_ms: 0,
                    voltage_mv: None,
                    soc_permille: None,
                    at_last_record_mj: uj / 1000,
                    power_uj: 0,
                    power_ms: 0,
                    at_last_record_power: (0, 0),
                }
            })
            .collect();
        Meter { channels, state }
    }

    /// The chain state (to persist after each commit).
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// Feeds one channel's sample taken at `t_ms`; `None` (no reading) holds the last power.
    pub fn feed(&mut self, channel: usize, t_ms: u64, sample: Option<Sample>) {
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        let Some(s) = sample else {
            // Keep integrating at the last known power across a missed sample.
            if let Some((t0, p0)) = c.last {
                let dt = t_ms.saturating_sub(t0);
                c.energy_uj += p0 * dt;
                c.power_uj += p0 * dt;
                c.power_ms += dt;
                c.last = Some((t_ms, p0));
            }
            return;
        };
        let counted_by_device = match (s.energy_mj, c.device_counter_mj) {
            (Some(now), Some(before)) if now >= before => {
                c.energy_uj += (now - before) * 1000;
                true
            }
            _ => false,
        };
        // The first sample after a restart settles the down time: counted by the source's
        // own counter, or not metered at all.
        if let Some(since) = c.unmetered_since.take()
            && !counted_by_device
        {
            c.unmetered_ms += t_ms.saturating_sub(since);
        }
        if let Some((t0, p0)) = c.last {
            // Trapezoid: mW x ms = uJ.
            let dt = t_ms.saturating_sub(t0);
            let uj = (p0 + s.power_mw) * dt / 2;
            c.power_uj += uj;
            c.power_ms += dt;
            if !counted_by_device {
                c.energy_uj += uj;
            }
        }
        c.device_counter_mj = s.energy_mj;
        c.last = Some((t_ms, s.power_mw));
        c.voltage_mv = s.voltage_mv.or(c.voltage_mv);
        c.soc_permille = s.soc_permille.or(c.soc_permille);
    }

    /// The next record at `t_ms`, signed; nothing changes until [`Meter::commit`].
    pub fn seal(&self, t_ms: u64, key: &KeyPair) -> (MeterRecord, Envelope) {
        let rec = MeterRecord {
            link: self.state.head.link(key.device_id(), TimestampMs(t_ms)),
            channels: self
                .channels
                .iter()
                .map(|c| {
                    let mj = c.energy_uj / 1000;
                    let (uj0, ms0) = c.at_last_record_power;
                    let covered_ms = c.power_ms - ms0;
                    // The mean of what was sampled since the last record; with nothing
                    // covered yet (a first record), the last sample.
                    let mean = (c.power_uj - uj0)
                        .checked_div(covered_ms)
                        .unwrap_or_else(|| c.last.map_or(0, |(_, p)| p));
                    ChannelReading {
                        channel: c.id,
                        kind: c.kind,
                        energy: Millijoules(mj),
                        power: Milliwatts(mean.min(u32::MAX as u64) as u32),
                        voltage_mv: c.voltage_mv,
                        soc_permille: c.soc_permille,
                    }
                })
                .collect(),
            unmetered: self
                .channels
                .iter()
                .filter(|c| c.unmetered_ms > 0)
                .map(|c| Unmetered {
                    channel: c.id,
                    ms: c.unmetered_ms.min(u64::from(u32::MAX)) as u32,
                })
                .collect(),
        };
        let env = Envelope::seal(&rec, key);
        (rec, env)
    }

    /// Marks a sealed record as durably stored: the chain moves on.
    pub fn commit(&mut self, rec: &MeterRecord, env: &Envelope) {
        self.state.head.advance(&rec.link, env.hash());
        for (c, r) in self.channels.iter_mut().zip(&rec.channels) {
            c.at_last_record_mj = r.energy.0;
            c.at_last_record_power = (c.power_uj, c.power_ms);
            if rec.unmetered.iter().any(|u| u.channel == c.id) {
                c.unmetered_ms = 0;
            }
        }
        self.state.counters_uj = self
            .channels
            .iter()
            .map(|c| (c.id.0, c.energy_uj))
            .collect();
        self.state.device_counters_mj = self
            .channels
            .iter()
            .filter_map(|c| c.device_counter_mj.map(|e| (c.id.0, e)))
            .collect();
    }

    /// After lost or corrupt chain state: a signed `ChainRestart` whose sequence number is
    /// above anything the device can have used (`max(first_seq_floor, now in ms)`: records
    /// advance by one per interval, far slower than the clock), and counters from zero.
    pub fn restart(
        &mut self,
        reason: RestartReason,
        t_ms: u64,
        first_seq_floor: SeqNo,
        key: &KeyPair,
    ) -> Envelope {
        let seq = first_seq_floor.max(SeqNo(t_ms));
        let msg = self
            .state
            .head
            .restart(key.device_id(), seq, TimestampMs(t_ms), reason);
        Envelope::seal(&msg, key)
    }

    /// Marks a stored `ChainRestart` as the chain's new start.
    pub fn commit_restart(&mut self, env: &Envelope) {
        if let Ok(r) = env.open::<ChainRestart>() {
            self.state.head.advance(&r.link, env.hash());
            for c in &mut self.channels {
                c.energy_uj = 0;
                c.at_last_record_mj = 0;
            }
            self.state.counters_uj = self.channels.iter().map(|c| (c.id.0, 0)).collect();
            // The sources' counters still run; the next sample sets the baseline again. A
            // new chain starts with no interval behind it.
            for c in &mut self.channels {
                c.device_counter_mj = None;
                c.unmetered_since = None;
                c.unmetered_ms = 0;
            }
            self.state.device_counters_mj.clear();
        }
    }

    /// Counters of the channels of `kinds`, as of the last committed record (so a
    /// receipt's counters are the same numbers a signed record carries).
    pub fn snapshot(&self, kinds: &[ChannelKind]) -> Vec<CounterSnapshot> {
        self.channels
            .iter()
            .filter(|c| kinds.contains(&c.kind))
            .map(|c| CounterSnapshot {
                channel: c.id,
                kind: c.kind,
                energy: Millijoules(c.at_last_record_mj),
            })
            .collect()
    }

    /// The power last sampled on every channel of `kind`, summed, watts.
    pub fn power_w(&self, kind: ChannelKind) -> f64 {
        self.channels
            .iter()
            .filter(|c| c.kind == kind)
            .filter_map(|c| c.last.map(|(_, p)| p as f64 / 1000.0))
            .sum()
    }

    /// The cumulative counter of every channel of `kind` right now (not only at the last
    /// record), summed, millijoules.
    pub fn energy_mj(&self, kind: ChannelKind) -> u64 {
        self.channels
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.energy_uj / 1000)
            .sum()
    }

    /// The battery's state of charge last reported by any channel, per mille.
    pub fn soc_permille(&self) -> Option<u16> {
        self.channels.iter().find_map(|c| c.soc_permille)
    }

    /// Seals `receipt` as the next chain message (its link is filled in here); nothing
    /// changes until [`Meter::commit_link`].
    pub fn seal_receipt(&self, mut receipt: JobReceipt, t_ms: u64, key: &KeyPair) -> Envelope {
        receipt.link = self.state.head.link(key.device_id(), TimestampMs(t_ms));
        Envelope::seal(&receipt, key)
    }

    /// Marks a stored chain message that is not a record (a job receipt) as the chain's
    /// latest.
    pub fn commit_link(&mut self, link: &Link, env: &Envelope) {
        self.state.head.advance(link, env.hash());
    }

    /// Continues the chain after a record found in the outbox that the saved state had not
    /// caught up with (a crash between storing a record and saving the state).
    pub fn catch_up(&mut self, env: &Envelope) {
        if let Ok(r) = env.open::<JobReceipt>() {
            if self.state.head.is_ahead(&r.link) {
                self.commit_link(&r.link, env);
            }
            return;
        }
        let Ok(rec) = env.open::<MeterRecord>() else {
            if env.open::<ChainRestart>().is_ok() {
                self.commit_restart(env);
            }
            return;
        };
        if !self.state.head.is_ahead(&rec.link) {
            return;
        }
        for (c, r) in self.channels.iter_mut().zip(&rec.channels) {
            c.energy_uj = c.energy_uj.max(r.energy.0 * 1000);
        }
        self.commit(&rec, env);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attest::chain::{ChainPolicy, ChainVerifier, Outcome};

    fn meter() -> Meter {
        Meter::new(
            &[
                (ChannelKind::Solar, TrustTier::SoftwareEstimate),
                (ChannelKind::Load, TrustTier::SoftwareEstimate),
            ],
            None,
        )
    }

    fn s(mw: u64) -> Option<Sample> {
        Some(Sample {
            power_mw: mw,
            ..Sample::default()
        })
    }

    #[test]
    fn power_integrates_into_counters_and_records_chain() {
        let key = KeyPair::from_seed(&[3; 32]);
        let mut m = meter();
        let mut v = ChainVerifier::new(&key.public(), ChainPolicy::default()).unwrap();
        let t0 = 1_782_000_000_000;
        for i in 0..=30u64 {
            let t = t0 + i * 1000;
            m.feed(0, t, s(100_000)); // 100 W
            m.feed(1, t, s(40_000));
            if i % 10 == 0 {
                let (rec, env) = m.seal(t, &key);
                assert!(matches!(
                    v.feed(&env, TimestampMs(t)),
                    Ok(Outcome::Accepted(_))
                ));
                m.commit(&rec, &env);
            }
        }
        // 30 s at 100 W = 3000 J.
        let (rec, _) = m.seal(t0 + 30_000, &key);
        assert_eq!(rec.channels[0].energy, Millijoules(3_000_000));
        assert_eq!(rec.channels[1].energy, Millijoules(1_200_000));
        assert_eq!(m.state().head.next_seq, SeqNo(4));
    }

    #[test]
    fn the_mean_power_of_a_record_is_its_sampled_power_over_the_interval() {
        let key = KeyPair::from_seed(&[3; 32]);
        let mut m = meter();
        let t0 = 1_782_000_000_000;
        m.feed(0, t0, s(0));
        let (r, e) = m.seal(t0, &key);
        m.commit(&r, &e);
        m.feed(0, t0 + 10_000, s(200_000)); // ramp 0 -> 200 W over 10 s: 1000 J
        let (r, _) = m.seal(t0 + 10_000, &key);
        assert_eq!(r.channels[0].energy, Millijoules(1_000_000));
        assert_eq!(r.channels[0].power, Milliwatts(100_000));
    }

    #[test]
    fn a_clock_stepping_back_seals_no_record_the_controller_would_refuse_for_good() {
        let key = KeyPair::from_seed(&[3; 32]);
        let mut m = meter();
        let mut check = ChainVerifier::new(&key.public(), ChainPolicy::default()).unwrap();
        let t0 = 1_782_000_000_000;
        // NTP steps the clock back a minute between the second and third record.
        for t in [t0, t0 + 10_000, t0 - 50_000, t0 + 20_000] {
            m.feed(0, t, s(1_000));
            let (r, e) = m.seal(t, &key);
            m.commit(&r, &e);
            assert!(
                matches!(
                    check.feed(&e, TimestampMs(t0 + 60_000)),
                    Ok(Outcome::Accepted(_))
                ),
                "record at {t}"
            );
        }
        assert_eq!(m.state().head.last_timestamp, TimestampMs(t0 + 20_000));
    }

    #[test]
    fn a_sources_own_counter_carries_the_energy_used_while_the_agent_was_down() {
        let key = KeyPair::from_seed(&[3; 32]);
        let mut m = meter();
        let t0 = 1_782_000_000_000;
        let counted = |mw, mj| {
            Some(Sample {
                power_mw: mw,
                energy_mj: Some(mj),
                ..Sample::default()
            })
        };
        // Solar from a meter with its own counter, load from one without.
        m.feed(0, t0, counted(100_000, 5_000_000));
        m.feed(1, t0, s(40_000));
        m.feed(0, t0 + 10_000, counted(100_000, 6_000_000));
        m.feed(1, t0 + 10_000, s(40_000));
        let (r, e) = m.seal(t0 + 10_000, &key);
        m.commit(&r, &e);
        assert_eq!(r.channels[0].energy, Millijoules(1_000_000));
        // Killed; back 60 s later. The meter's counter ran on (6,000 J more).
        let mut m2 = Meter::new(
            &[
                (ChannelKind::Solar, TrustTier::SoftwareEstimate),
                (ChannelKind::Load, TrustTier::SoftwareEstimate),
            ],
            Some(m.state().clone()),
        );
        m2.feed(0, t0 + 70_000, counted(100_000, 12_000_000));
        m2.feed(1, t0 + 70_000, s(40_000));
        let (r2, e2) = m2.seal(t0 + 70_000, &key);
        assert_eq!(
            r2.channels[0].energy,
            Millijoules(7_000_000),
            "the down time is metered by the source's counter"
        );
        assert_eq!(
            r2.channels[1].energy, r.channels[1].energy,
            "no counter: the down time is not metered here"
        );
        // ... and the record says so: 60 s of the load channel, none of the solar one.
        assert_eq!(
            r2.unmetered,
            vec![Unmetered {
                channel: ChannelId(1),
                ms: 60_000
            }]
        );
        m2.commit(&r2, &e2);
        m2.feed(1, t0 + 80_000, s(40_000));
        let (r3, _) = m2.seal(t0 + 80_000, &key);
        assert!(r3.unmetered.is_empty(), "reported once");
        // A state file from before device counters were kept still loads.
        let mut old = serde_json::to_value(m.state()).unwrap();
        old.as_object_mut().unwrap().remove("device_counters_mj");
        let back: ChainState = serde_json::from_value(old).unwrap();
        assert!(back.device_counters_mj.is_empty());
        assert_eq!(back.counters_uj, m.state().counters_uj);
    }

    #[test]
    fn state_survives_a_restart_and_a_restart_message_starts_fresh() {
        let key = KeyPair::from_seed(&[3; 32]);
        let mut m = meter();
        let t0 = 1_782_000_000_000;
        m.feed(0, t0, s(50_000));
        m.feed(0, t0 + 10_000, s(50_000));
        let (r, e) = m.seal(t0 + 10_000, &key);
        m.commit(&r, &e);
        let saved = m.state().clone();
        let m2 = Meter::new(
            &[
                (ChannelKind::Solar, TrustTier::SoftwareEstimate),
                (ChannelKind::Load, TrustTier::SoftwareEstimate),
            ],
            Some(saved),
        );
        let (r2, _) = m2.seal(t0 + 20_000, &key);
        assert_eq!(r2.link.seq, SeqNo(1));
        assert_eq!(r2.link.prev, e.hash());
        assert_eq!(r2.channels[0].energy, Millijoules(500_000));
        let mut m3 = meter();
        let restart = m3.restart(RestartReason::StateLost, t0 + 30_000, SeqNo(0), &key);
        m3.commit_restart(&restart);
        let (r3, _) = m3.seal(t0 + 40_000, &key);
        assert_eq!(r3.link.seq, SeqNo(t0 + 30_000 + 1));
        assert_eq!(r3.link.prev, restart.hash());
    }
}
