//! A job as the scheduler sees it: what hardware it needs, how much work it is, when it is
//! due, what the buyer will pay and what carbon they accept; and the units those are in.

use attest::msg::JobId;
use attest::{Millijoules, Milliwatts, TimestampMs};

/// Credits in millionths: the unit prices are quoted in (a device's hello asks
/// `price_micro_per_gpu_hour`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MicroCredits(pub u64);

/// A share of a job's energy, in parts per million (attest's statements carry shares the
/// same way, `share_ppm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharePpm(pub u32);

impl SharePpm {
    /// All of it.
    pub const ALL: SharePpm = SharePpm(1_000_000);

    /// From a fraction, clamped to 0..=1 and rounded down to the ppm.
    pub fn from_fraction(f: f64) -> SharePpm {
        SharePpm((f.clamp(0.0, 1.0) * 1e6) as u32)
    }

    /// As a fraction 0..=1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 1e6
    }
}

/// Emissions in milligrams CO2e (the unit attest's carbon arithmetic uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Co2eMg(pub u64);

impl Co2eMg {
    /// In grams, for display.
    pub fn grams(self) -> f64 {
        self.0 as f64 / 1_000.0
    }
}

/// The kind of GPU a job was built for. A job that names one runs only there: energy and
/// run time estimates do not carry from a 15 W module to a 700 W accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GpuClass {
    /// A system-on-module with shared memory (Jetson-class).
    Embedded,
    /// A desktop card.
    Consumer,
    /// A data-centre accelerator.
    Datacenter,
}

/// A CUDA compute capability (`sm_87` is 8.7); ordered, so "at least" compares directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability {
    /// The major version.
    pub major: u8,
    /// The minor version.
    pub minor: u8,
}

impl ComputeCapability {
    /// `major.minor`.
    pub const fn new(major: u8, minor: u8) -> ComputeCapability {
        ComputeCapability { major, minor }
    }
}

/// What a device's GPU offers, compared with a job's [`JobNeeds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuOffer {
    /// Its class.
    pub class: GpuClass,
    /// Its memory, MiB.
    pub vram_mib: u32,
    /// Its compute capability.
    pub capability: ComputeCapability,
}

/// The hardware a job needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobNeeds {
    /// The GPU class it must run on; `None` for any.
    pub gpu_class: Option<GpuClass>,
    /// Least GPU memory, MiB.
    pub min_vram_mib: u32,
    /// Least compute capability.
    pub min_capability: ComputeCapability,
}

impl JobNeeds {
    /// Whether a GPU meets every need.
    pub fn met_by(&self, gpu: &GpuOffer) -> bool {
        self.gpu_class.is_none_or(|c| c == gpu.class)
            && gpu.vram_mib >= self.min_vram_mib
            && gpu.capability >= self.min_capability
    }
}

/// How much work a job is. The scheduler measures work as energy: on a device whose job
/// power is `P`, a job of energy `E` runs for `E / P` at full power (longer when the
/// device's budget holds it below `P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Estimated energy.
    Energy(Millijoules),
    /// Estimated run time at a power: the same as `ms x power` of energy.
    Duration {
        /// Run time, ms.
        ms: u64,
        /// At this power.
        at: Milliwatts,
    },
}

impl Work {
    /// The work as energy.
    pub fn energy(self) -> Millijoules {
        match self {
            Work::Energy(e) => e,
            // mW x ms = µJ.
            Work::Duration { ms, at } => Millijoules(ms.saturating_mul(u64::from(at.0)) / 1_000),
        }
    }

    /// The energy in watt-hours (the scheduler's internal unit).
    pub(crate) fn wh(self) -> f64 {
        self.energy().0 as f64 / 3_600_000.0
    }
}

/// The buyer's limit on a job's carbon, checked against the scheduler's expectation for
/// the placement (the measured figure is in the job's statement).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CarbonLimit {
    /// No limit.
    #[default]
    None,
    /// At least this share of the job's energy from on-site sun or battery.
    MinRenewable(SharePpm),
    /// At most this much CO2e for the job's grid energy.
    MaxEmissions(Co2eMg),
}

/// A job waiting to be placed.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// Its id.
    pub id: JobId,
    /// The hardware it needs.
    pub needs: JobNeeds,
    /// How much work it is.
    pub work: Work,
    /// When its result is due: it must have finished by then.
    pub deadline: TimestampMs,
    /// The most the buyer pays, micro-credits per GPU-hour (compared with each device's
    /// asking price).
    pub max_price_per_gpu_hour: MicroCredits,
    /// The buyer's carbon limit.
    pub carbon: CarbonLimit,
    /// Whether the job may be shifted in time (wait for sun before its deadline). An
    /// inflexible job starts as soon as a device can take it.
    pub flexible: bool,
    /// When it was submitted (ties in the queue go to the earlier).
    pub submitted: TimestampMs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_compare_class_memory_and_capability() {
        let gpu = GpuOffer {
            class: GpuClass::Embedded,
            vram_mib: 16_384,
            capability: ComputeCapability::new(8, 7),
        };
        let mut needs = JobNeeds {
            gpu_class: Some(GpuClass::Embedded),
            min_vram_mib: 16_384,
            min_capability: ComputeCapability::new(8, 7),
        };
        assert!(needs.met_by(&gpu));
        needs.min_capability = ComputeCapability::new(8, 9);
        assert!(!needs.met_by(&gpu), "8.7 is below 8.9");
        needs.min_capability = ComputeCapability::new(7, 2);
        needs.min_vram_mib = 16_385;
        assert!(!needs.met_by(&gpu), "one MiB short");
        needs.min_vram_mib = 0;
        needs.gpu_class = Some(GpuClass::Datacenter);
        assert!(!needs.met_by(&gpu));
        needs.gpu_class = None;
        assert!(needs.met_by(&gpu));
    }

    #[test]
    fn a_duration_at_a_power_is_that_much_energy() {
        // Two hours at 30 W is 60 Wh = 216 kJ.
        let w = Work::Duration {
            ms: 7_200_000,
            at: Milliwatts(30_000),
        };
        assert_eq!(w.energy(), Millijoules(216_000_000));
        assert!((w.wh() - 60.0).abs() < 1e-9);
        assert_eq!(SharePpm::from_fraction(1.5), SharePpm::ALL);
        assert_eq!(SharePpm::from_fraction(0.25), SharePpm(250_000));
    }
}
