//! What the scheduler decides about a job, and why.

use attest::msg::JobId;
use attest::{DeviceId, TimestampMs};

use super::job::{Co2eMg, MicroCredits, SharePpm};

/// One decision about one job. A tick usually returns at most one per job; a
/// [`Decision::Revoke`] is followed by the job's new decision, and a waiting job may be
/// decided again when a job ahead of it took the device it held: the later decision about
/// a job replaces the earlier.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Run it there, now: send the device its signed `RunJob`.
    Place(Placement),
    /// Not yet: the job stays queued and is decided again at `until` (earlier only if an
    /// event frees it). A flexible job waiting for sun keeps a hold on the device it
    /// expects to run on, so that other jobs plan around it.
    Wait {
        /// The job.
        job: JobId,
        /// When it is decided again.
        until: TimestampMs,
        /// Why it waits.
        why: WaitReason,
    },
    /// It cannot be run as asked; it leaves the queue.
    Refuse {
        /// The job.
        job: JobId,
        /// Why.
        reason: RefuseReason,
    },
    /// A lease is taken back (the device was silent past the grace period): cancel the job
    /// there. The job is queued again, never on that device.
    Revoke {
        /// The job.
        job: JobId,
        /// The device it was leased to.
        device: DeviceId,
        /// Why.
        why: RevokeReason,
    },
}

impl Decision {
    /// The job it is about.
    pub fn job(&self) -> JobId {
        match self {
            Decision::Place(p) => p.job,
            Decision::Wait { job, .. }
            | Decision::Refuse { job, .. }
            | Decision::Revoke { job, .. } => *job,
        }
    }
}

/// A placement and what the scheduler expects of it (the measured figures come later, in
/// the job's receipt and statement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The job.
    pub job: JobId,
    /// The device.
    pub device: DeviceId,
    /// When it starts (the tick's `now`).
    pub start_at: TimestampMs,
    /// When it is expected to end, with the device's forecast budget.
    pub expected_end: TimestampMs,
    /// Expected share of its energy from on-site sun or battery (planned with the
    /// forecast margin, so usually an underestimate).
    pub renewable: SharePpm,
    /// Expected emissions of its grid energy.
    pub co2e: Co2eMg,
    /// What it costs at the device's price and the expected run time.
    pub price: MicroCredits,
}

/// Why a job waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitReason {
    /// A flexible job waits for forecast sun (or cleaner power) on this device, which it
    /// holds from `until`.
    Sun {
        /// The device it expects to run on.
        device: DeviceId,
    },
    /// Every device that could run it is busy; this one is expected to be free first.
    Busy {
        /// The device it expects to run on, when one is known.
        device: Option<DeviceId>,
    },
    /// Devices that meet its needs exist but none is online (or all were excluded after
    /// failing it): try again later.
    NoDeviceOnline,
    /// Its carbon limit cannot be met within the forecast horizon, but its deadline lies
    /// beyond it: try again when the horizon has moved.
    BeyondHorizon,
}

/// Why a job is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// Its deadline had passed when it was decided.
    DeadlinePassed,
    /// No device known to the scheduler meets its hardware needs.
    NoDeviceMeetsNeeds,
    /// Devices meet its needs, but every one asks more than its price ceiling.
    AbovePriceCeiling {
        /// The cheapest asking price among them.
        cheapest: MicroCredits,
    },
    /// No device's forecast budget can finish it before its deadline.
    DeadlineCannotBeMet,
    /// It can finish in time, but not within its carbon limit.
    CarbonLimit {
        /// The best expected renewable share among placements that finish in time.
        best_renewable: SharePpm,
        /// The least expected emissions among them.
        best_co2e: Co2eMg,
    },
}

/// Why a lease is taken back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The device has been silent since `since`, longer than the lease grace period.
    SilentPastGrace {
        /// When it went silent.
        since: TimestampMs,
    },
}
