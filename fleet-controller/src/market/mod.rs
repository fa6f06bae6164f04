//! The compute market's scheduler: which device runs which job, and when (sans-IO).
//!
//! Map:
//! - [`job`]: a job as the scheduler sees it ([`JobRequest`]: needs, work, deadline, price
//!   ceiling, carbon limit, flexibility) and the units it is in.
//! - [`offer`]: a device's offer and state on one tick ([`DeviceOffer`]).
//! - [`decision`]: what comes out ([`Decision`]: place, wait, refuse, revoke) and the
//!   typed reasons.
//! - [`forecast`]: each device's power over the coming hours (clear-sky curve or the
//!   operator's [`SolarForecast`], battery, grid intensity) and the walk of a job through
//!   it.
//! - `planner.rs`: choosing one job's device and start time over those outlooks, and the
//!   decision that follows.
//! - [`config`]: its settings ([`SchedulerConfig`], [`Strategy`]) and their defaults.
//! - [`scheduler`]: the state (queue, leases, silences) and the tick.
//!
//! How the caller (the API and job table) drives it: [`Scheduler::submit`] each accepted
//! job; call [`Scheduler::tick`] every few minutes with `now` and one [`DeviceOffer`] per
//! known device, and act on the decisions (send `RunJob` for a placement, show a wait,
//! refund a refusal, cancel a revoked lease); report what devices say with
//! [`Scheduler::job_finished`], [`Scheduler::admission_refused`],
//! [`Scheduler::progress_missed`], [`Scheduler::device_silent`] and
//! [`Scheduler::device_heard`]. Nothing here reads a clock, a file or a socket, so the
//! same calls drive the tests and the 7-day simulation
//! (`cargo run --release -p fleet-controller --example scheduler_sim`).

pub mod config;
pub mod decision;
pub mod forecast;
pub mod job;
pub mod offer;
mod planner;
pub mod scheduler;

#[cfg(test)]
mod tests;

pub use decision::{Decision, Placement, RefuseReason, RevokeReason, WaitReason};
pub use forecast::{GridIntensity, SolarForecast};
pub use job::{
    CarbonLimit, Co2eMg, ComputeCapability, GpuClass, GpuOffer, JobNeeds, JobRequest, MicroCredits,
    SharePpm, Work,
};
pub use offer::{DeviceOffer, LeasedJob};
pub use scheduler::{Lease, Scheduler, SchedulerConfig, Strategy, SubmitError, Weights};
