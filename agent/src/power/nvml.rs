//! NVIDIA discrete GPUs through NVML, loaded at run time (`libnvidia-ml.so.1`): the binary
//! runs on machines without a driver, and this source then says so and is skipped.
//!
//! `nvmlDeviceGetPowerUsage` gives milliwatts (a one-second average on Ampere and later);
//! `nvmlDeviceGetTotalEnergyConsumption` gives millijoules since the driver loaded (Volta
//! and later), which the meter uses as the channel's counter. On Jetson both answer
//! NOT_SUPPORTED: use the `hwmon` source there.

use attest::msg::{ChannelKind, TrustTier};
use nvml_wrapper::Nvml;
use serde::{Deserialize, Serialize};

use super::{ChannelSpec, PowerSource, Sample, SourceError};

/// `[[source]] type = "nvml"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
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

    /// Where NVML cannot load (CI: no NVIDIA driver), opening fails with a message that
    /// names NVML, not a crash. On a GPU machine `gpu_nvml_reads_a_plausible_power_draw`
    /// is the test that counts; this one then only checks that opening works.
    #[test]
    fn nvml_without_a_driver_says_clearly_why_not() {
        if let Err(e) = NvmlSource::open(&NvmlConfig { index: 0 }) {
            assert!(e.to_string().contains("NVML"), "{e}");
        }
    }

    /// On a GPU machine (`scripts/test-gpu`; `scripts/test` skips `gpu_*`): GPU 0 opens,
    /// names itself, and reads a power draw an idle or busy datacenter or desktop GPU can
    /// have (above 1 W, below 2 kW), and where the energy counter is supported it does not
    /// run backwards. Fails, saying why, without a GPU.
    #[test]
    fn gpu_nvml_reads_a_plausible_power_draw() {
        let mut s = NvmlSource::open(&NvmlConfig { index: 0 })
            .unwrap_or_else(|e| panic!("this test needs an NVIDIA GPU and driver: {e}"));
        assert!(s.describe().starts_with("nvml:0 ("), "{}", s.describe());
        assert_eq!(s.channels().len(), 1);
        assert_eq!(s.channels()[0].kind, ChannelKind::Gpu);
        let first = s.sample(0).expect("a first reading")[0].expect("a GPU sample");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let second = s.sample(200).expect("a second reading")[0].expect("a GPU sample");
        for r in [&first, &second] {
            assert!(
                (1_000..2_000_000).contains(&r.power_mw),
                "implausible GPU power: {} mW",
                r.power_mw
            );
        }
        eprintln!(
            "{}: {} mW, energy counter {:?} mJ",
            s.describe(),
            second.power_mw,
            second.energy_mj
        );
        if let (Some(a), Some(b)) = (first.energy_mj, second.energy_mj) {
            assert!(b >= a, "the energy counter ran backwards: {a} -> {b} mJ");
        }
    }
}
