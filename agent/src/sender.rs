//! What to publish next: the outbox's sent/acknowledged bookkeeping as a sans-IO struct.
//!
//! Every stored, unacknowledged record is either unsent, or sent at some instant. Each tick
//! [`SendQueue::plan`] picks, in this order: the newest unsent records one by one (fresh
//! data first, never starved by a backlog), then one batch of the oldest unsent records
//! (draining the backlog), and marks them sent. A sent record that stays unacknowledged for
//! `resend_after_ms` becomes unsent again, and so does one whose send time lies in the future
//! (the wall clock stepped back); a reconnect makes every sent record unsent, and a planned
//! message the client refused is unsent at once ([`SendQueue::unsend`]).

use std::collections::BTreeMap;

use attest::SeqNo;

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct SendPolicy {
    /// Re-offer a sent record after this long without an ack.
    pub resend_after_ms: u64,
    /// Most records in one batch message.
    pub batch_max: usize,
    /// Newest records sent one per message each tick, ahead of the backlog.
    pub fresh_per_tick: usize,
}

/// One message to publish: a single record or a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// One record alone.
    Single(SeqNo),
    /// Many records in one batch payload.
    Batch(Vec<SeqNo>),
}

/// Sent/acknowledged bookkeeping.
#[derive(Debug)]
pub struct SendQueue {
    policy: SendPolicy,
    /// When each sent record went (wall clock, ms).
    sent: BTreeMap<SeqNo, u64>,
}

impl SendQueue {
    /// An empty queue.
    pub fn new(policy: SendPolicy) -> SendQueue {
        SendQueue {
            policy,
            sent: BTreeMap::new(),
        }
    }

    /// The controller stored everything up to `up_to`.
    pub fn on_ack(&mut self, up_to: SeqNo) {
        self.sent.retain(|s, _| *s > up_to);
    }

    /// The connection dropped: nothing sent is known to have arrived.
    pub fn on_disconnect(&mut self) {
        self.sent.clear();
    }

    /// The controller asked for `from..=to` again.
    pub fn resend(&mut self, from: SeqNo, to: SeqNo) {
        self.sent.retain(|s, _| *s < from || *s > to);
    }

    /// Records sent and awaiting an ack.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }

    /// Picks what to publish now from `pending` (stored, unacknowledged, ascending).
    pub fn plan(&mut self, now_ms: u64, pending: &[SeqNo]) -> Vec<Plan> {
        // A send time after `now_ms` means the wall clock stepped back: how long the record
        // has waited is unknown, so it is due (a resend is harmless; waiting out the step,
        // possibly hours, is not).
        let due = |s: &SeqNo, sent: &BTreeMap<SeqNo, u64>| {
            sent.get(s)
                .is_none_or(|at| now_ms < *at || now_ms - *at >= self.policy.resend_after_ms)
        };
        let mut out = Vec::new();
        let mut taken = Vec::new();
        for s in pending.iter().rev().take(self.policy.fresh_per_tick) {
            if due(s, &self.sent) {
                out.push(Plan::Single(*s));
                taken.push(*s);
            }
        }
        let backlog: Vec<SeqNo> = pending
            .iter()
            .filter(|s| !taken.contains(s) && due(s, &self.sent))
            .take(self.policy.batch_max)
            .copied()
            .collect();
        match backlog.len() {
            0 => {}
            1 => out.push(Plan::Single(backlog[0])),
            _ => out.push(Plan::Batch(backlog.clone())),
        }
        for s in taken.into_iter().chain(backlog) {
            self.sent.insert(s, now_ms);
        }
        out
    }

    /// Forgets that a planned message was sent (the client refused it): it goes again.
    pub fn unsend(&mut self, plan: &Plan) {
        match plan {
            Plan::Single(s) => {
                self.sent.remove(s);
            }
            Plan::Batch(v) => {
                for s in v {
                    self.sent.remove(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: impl IntoIterator<Item = u64>) -> Vec<SeqNo> {
        v.into_iter().map(SeqNo).collect()
    }

    fn q() -> SendQueue {
        SendQueue::new(SendPolicy {
            resend_after_ms: 1_000,
            batch_max: 100,
            fresh_per_tick: 1,
        })
    }

    #[test]
    fn fresh_records_go_first_and_the_backlog_drains_in_batches() {
        let mut q = q();
        let pending = seqs(0..250);
        let p = q.plan(0, &pending);
        assert_eq!(p[0], Plan::Single(SeqNo(249)), "the newest first");
        assert_eq!(p[1], Plan::Batch(seqs(0..100)));
        let p = q.plan(10, &pending);
        assert_eq!(p, vec![Plan::Batch(seqs(100..200))]);
        // A new record arrives while the backlog drains: it goes out at once.
        let mut pending = pending;
        pending.push(SeqNo(250));
        let p = q.plan(20, &pending);
        assert_eq!(p[0], Plan::Single(SeqNo(250)));
        assert_eq!(p[1], Plan::Batch(seqs(200..249)));
        assert!(q.plan(30, &pending).is_empty());
    }

    #[test]
    fn unacknowledged_records_are_resent_after_the_timeout_and_on_reconnect() {
        let mut q = q();
        let pending = seqs([1, 2, 3]);
        assert_eq!(q.plan(0, &pending).len(), 2);
        assert!(q.plan(500, &pending).is_empty());
        q.on_ack(SeqNo(1));
        let p = q.plan(1_000, &seqs([2, 3]));
        assert_eq!(p, vec![Plan::Single(SeqNo(3)), Plan::Single(SeqNo(2))]);
        q.on_disconnect();
        assert_eq!(q.plan(1_001, &seqs([2, 3])).len(), 2);
        q.resend(SeqNo(2), SeqNo(2));
        assert_eq!(q.plan(1_002, &seqs([2, 3])), vec![Plan::Single(SeqNo(2))]);
        assert_eq!(q.in_flight(), 2);
    }

    #[test]
    fn a_publish_the_client_refused_goes_again_on_the_next_tick_not_after_the_timeout() {
        let mut q = q();
        let pending = seqs(0..5);
        let plans = q.plan(0, &pending);
        assert_eq!(
            plans,
            vec![Plan::Single(SeqNo(4)), Plan::Batch(seqs([0, 1, 2, 3]))]
        );
        // The client refused the first message; the runtime gives back it and every later
        // plan of that tick, none of which went out.
        for p in &plans {
            q.unsend(p);
        }
        assert_eq!(q.in_flight(), 0);
        assert_eq!(
            q.plan(10, &pending),
            plans,
            "everything again at the next tick"
        );
        assert!(
            q.plan(20, &pending).is_empty(),
            "and then it waits for an ack"
        );
        assert_eq!(q.plan(1_010, &pending), plans, "or the resend timeout");
    }

    #[test]
    fn a_clock_stepping_backwards_does_not_hold_back_resends() {
        let mut q = q();
        let pending = seqs([7, 8]);
        let noon = 43_200_000;
        assert_eq!(q.plan(noon, &pending).len(), 2);
        assert!(q.plan(noon + 999, &pending).is_empty());
        // NTP steps the clock back an hour while both await an ack: they are not held back
        // for an hour and a second.
        let stepped = noon - 3_600_000;
        assert_eq!(
            q.plan(stepped, &pending),
            vec![Plan::Single(SeqNo(8)), Plan::Single(SeqNo(7))]
        );
        // Re-sent at the stepped time, they then wait the usual timeout from there.
        assert!(q.plan(stepped + 999, &pending).is_empty());
        assert_eq!(q.plan(stepped + 1_000, &pending).len(), 2);
    }
}
