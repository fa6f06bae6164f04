//! `Hello`: a device introduces itself on every connect.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{ChannelKind, MAX_CHANNELS, TrustTier, check_len, check_text};
use crate::envelope::{DecodeError, Kind, Message};
use crate::id::{DeviceId, PublicKey};
use crate::units::{ChannelId, TimestampMs};

/// At most this many GPUs in one hello.
pub const MAX_GPUS: usize = 16;

/// A device's self-description, signed by its own key (whose id it must carry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The device id; must derive from `public_key`.
    pub device: DeviceId,
    /// The device's ed25519 public key.
    pub public_key: PublicKey,
    /// When the hello was made.
    pub timestamp: TimestampMs,
    /// The agent's version string.
    pub agent_version: String,
    /// What compute the device offers.
    pub hardware: Hardware,
    /// Where it is and what powers it.
    pub site: Site,
    /// Its meter channels, with where each number comes from and how far it is trusted.
    pub channels: Vec<ChannelInfo>,
    /// Asking price, micro-credits per GPU-hour.
    pub price_micro_per_gpu_hour: u64,
}

/// Compute hardware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    /// Board or host model (e.g. "Jetson AGX Orin 64GB").
    pub board: String,
    /// GPUs offered.
    pub gpus: Vec<Gpu>,
    /// Embodied emissions of the whole device (manufacture, transport, end of life), grams
    /// CO2e, as its operator states them: SCI's `TE`. 0 when not stated (a job's `M` is
    /// then 0, and the statement shows it).
    pub embodied_g_co2e: u64,
    /// The device's expected life in hours: SCI's `EL`. 0 when not stated.
    pub expected_life_hours: u32,
    /// The most the whole rig can draw, watts (its supply's rating): an interval nobody
    /// metered is counted as this much, all from the grid. 0 when not stated (such an
    /// interval then adds no emissions, and its flag says why).
    pub max_draw_w: u32,
    /// The CPU's model name (e.g. "ARM Cortex-A78AE", "AMD EPYC 7763").
    pub cpu_model: String,
    /// Its logical cores.
    pub cpu_cores: u16,
}

/// One GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    /// Model name.
    pub model: String,
    /// Memory in MiB.
    pub vram_mib: u32,
    /// CUDA compute capability as an architecture name (e.g. "sm_87" for 8.7).
    pub arch: String,
}

impl Gpu {
    /// The compute capability `(major, minor)` its `arch` names, when it names one.
    pub fn compute_capability(&self) -> Option<(u8, u8)> {
        let digits = self.arch.strip_prefix("sm_")?;
        let (major, minor) = digits.split_at(digits.len().checked_sub(1)?);
        Some((major.parse().ok()?, minor.parse().ok()?))
    }
}

/// Where a device is and what powers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// Latitude in microdegrees (north positive), -90e6..=90e6.
    pub lat_microdeg: i32,
    /// Longitude in microdegrees (east positive), -180e6..=180e6.
    pub lon_microdeg: i32,
    /// Solar array rating, watts-peak.
    pub panel_watts_peak: u32,
    /// Battery capacity, watt-hours.
    pub battery_wh: u32,
    /// Battery reserve kept for the device itself, watt-hours.
    pub battery_reserve_wh: u32,
    /// Grid region code for carbon intensity (e.g. "DE", "US-CAL-CISO").
    pub grid_region: String,
}

/// One meter channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// The channel's id in records.
    pub channel: ChannelId,
    /// What it measures.
    pub kind: ChannelKind,
    /// The source that measures it (e.g. "vedirect:/dev/ttyUSB0", "ina3221:VDD_GPU_SOC").
    pub source: String,
    /// How far its numbers can be trusted.
    pub tier: TrustTier,
}

impl Message for Hello {
    const KIND: Kind = Kind::Hello;

    fn validate(&self) -> Result<(), DecodeError> {
        check_text("agent_version", &self.agent_version)?;
        check_text("board", &self.hardware.board)?;
        check_text("cpu_model", &self.hardware.cpu_model)?;
        check_len("gpus", &self.hardware.gpus, MAX_GPUS)?;
        for g in &self.hardware.gpus {
            check_text("gpu model", &g.model)?;
            check_text("gpu arch", &g.arch)?;
        }
        check_text("grid_region", &self.site.grid_region)?;
        check_len("channels", &self.channels, MAX_CHANNELS)?;
        for c in &self.channels {
            check_text("channel source", &c.source)?;
        }
        if !(-90_000_000..=90_000_000).contains(&self.site.lat_microdeg) {
            return Err(DecodeError::Invalid { what: "latitude" });
        }
        if !(-180_000_000..=180_000_000).contains(&self.site.lon_microdeg) {
            return Err(DecodeError::Invalid { what: "longitude" });
        }
        if self.device != self.public_key.device_id() {
            return Err(DecodeError::Invalid {
                what: "device id (does not derive from public_key)",
            });
        }
        Ok(())
    }
}

/// The hello valid at `t` among a device's hellos in ascending `timestamp` (its versions):
/// the latest not after `t`, else the first (a record before any hello is judged by the
/// first). `None` only for an empty list.
pub fn hello_at(hellos: &[Hello], t: crate::units::TimestampMs) -> Option<&Hello> {
    hellos
        .iter()
        .rev()
        .find(|h| h.timestamp <= t)
        .or_else(|| hellos.first())
}

impl Hello {
    /// The agent's version and, on a device image, the image's build: `agent_version` split
    /// at its semver build metadata (`0.1.0+heliostat-arm64.20261130.1`).
    pub fn version_parts(&self) -> (&str, Option<&str>) {
        match self.agent_version.split_once('+') {
            Some((version, build)) => (version, Some(build)),
            None => (&self.agent_version, None),
        }
    }

    /// The trust tier of a channel, if the hello declares it.
    pub fn channel_tier(&self, channel: ChannelId) -> Option<TrustTier> {
        self.channels
            .iter()
            .find(|c| c.channel == channel)
            .map(|c| c.tier)
    }
}
