//! NVIDIA discrete GPUs through NVML, loaded at run time (`libnvidia-ml.so.1`): the binary
//! runs on machines without a driver, and this source then says so and is skipped.
//!
//! `nvmlDeviceGetPowerUsage` gives milliwatts (a one-second average on Ampere and later);
//! `nvmlDeviceGetTotalEnergyConsumption` gives millijoules since the driver loaded (Volta
//! and later), which the meter uses as the channel's counter. On Jetson both answer
//! NOT_SUPPORTED: use the `hwmon` source there.

use attest::msg::{ChannelKind, TrustTier};
use nvml_wrapper::Nvml;
use serde::Deserialize;

use super::{ChannelSpec, PowerSource, Sample, SourceError};

/// `[[source]] type = "nvml"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmlConfig {
    /// The GPU's NVML index.
    #[serde(default)]
    pub index: u32,
}

/// An NVML-measured GPU.
pub struct NvmlSource {
    nvml: Nvml,
    index: u32,
    name: String,
    channels: Vec<ChannelSpec>,
    energy_supported: bool,
}

impl NvmlSource {
    /// Loads NVML and finds the GPU; a missing driver is a clear error, not a crash.
    pub fn open(cfg: &NvmlConfig) -> Result<NvmlSource, SourceError> {
        let nvml = Nvml::init().map_err(|e| {
            SourceError::Format(format!(
                "NVML unavailable (no NVIDIA driver or libnvidia-ml.so.1?): {e}"
            ))
        })?;
        let (name, energy_supported) = {
            let dev = nvml
                .device_by_index(cfg.index)
                .map_err(|e| SourceError::Format(format!("NVML GPU {}: {e}", cfg.index)))?;
            dev.power_usage().map_err(|e| {
                SourceError::Format(format!(
                    "NVML GPU {} gives no power reading: {e}",
                    cfg.index
                ))
            })?;
            (
                dev.name().unwrap_or_else(|_| format!("GPU {}", cfg.index)),
                dev.total_energy_consumption().is_ok(),
            )
        };
        Ok(NvmlSource {
            nvml,
            index: cfg.index,
            channels: vec![ChannelSpec {
                name: name.clone(),
                kind: ChannelKind::Gpu,
                tier: TrustTier::HardwareMeter,
            }],
            name,
            energy_supported,
        })
    }
}

impl PowerSource for NvmlSource {
    fn describe(&self) -> String {
        format!("nvml:{} ({})", self.index, self.name)
    }

    fn channels(&self) -> &[ChannelSpec] {
        &self.channels
    }

    fn sample(&mut self, _now_ms: u64) -> Result<Vec<Option<Sample>>, SourceError> {
        let dev = self
            .nvml
            .device_by_index(self.index)
            .map_err(|e| SourceError::Format(format!("NVML GPU {}: {e}", self.index)))?;
        let power = dev
            .power_usage()
            .map_err(|e| SourceError::Format(format!("NVML power: {e}")))?;
        let energy = if self.energy_supported {
            dev.total_energy_consumption().ok()
        } else {
            None
        };
        Ok(vec![Some(Sample {
            power_mw: power as u64,
            energy_mj: energy,
            ..Sample::default()
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On machines without an NVIDIA driver (CI), opening fails with a message that says so.
    /// Where a GPU is present this test checks a real reading instead.
    #[test]
    fn nvml_opens_or_says_clearly_why_not() {
        match NvmlSource::open(&NvmlConfig { index: 0 }) {
            Ok(mut s) => {
                let r = s.sample(0).unwrap();
                assert!(r[0].unwrap().power_mw > 0, "a GPU draws some power");
            }
            Err(e) => assert!(e.to_string().contains("NVML"), "{e}"),
        }
    }
}
