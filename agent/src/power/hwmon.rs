//! Jetson INA3221 power monitor through the kernel's hwmon files (JetPack 5+, L4T >= 34.1).
//!
//! The mainline `ina3221` driver exposes, under `/sys/class/hwmon/hwmonN/` (with `name`
//! reading `ina3221`): `inX_label` (the rail name), `inX_input` (bus voltage, mV) and
//! `currX_input` (current, mA) for X in 1..=3; power is V x I (there is no power file).
//! Channel 7 ("sum of shunt voltages") is not a rail and is ignored.
//!
//! JetPack 4 (L4T < 34) used the `ina3221x` IIO driver instead:
//! `/sys/bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N` with `in_power{N}_input` (mW),
//! `in_voltage{N}_input` (mV) and `in_current{N}_input` (mA); it is read when no hwmon
//! INA3221 is found.
//!
//! Reported channels: `Load`, the sum of the configured rails (the module's consumption;
//! the carrier board is not on these rails), and `Gpu`, the GPU rail alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attest::msg::{ChannelKind, TrustTier};
use serde::{Deserialize, Serialize};

use super::{ChannelSpec, PowerSource, Sample, SourceError};
use crate::config_error::ConfigError;

/// `[[source]] type = "hwmon"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HwmonConfig {
    /// Where the hwmon class directory is (tests point it at a fixture tree).
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Rail labels summed into the `Load` channel. Default: AGX Orin's
    /// VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0 (on Orin Nano/NX use VDD_IN alone).
    #[serde(default = "default_rails")]
    pub rails: Vec<String>,
    /// The rail reported on its own as the `Gpu` channel (none: no GPU channel; in a file
    /// `gpu_rail = ""`, as on an Orin Nano/NX whose GPU shares `VDD_CPU_GPU_CV`).
    #[serde(
        default = "default_gpu_rail",
        serialize_with = "gpu_rail_in_file",
        deserialize_with = "gpu_rail_from_file"
    )]
    pub gpu_rail: Option<String>,
    /// Where JetPack 4's `ina3221x` IIO devices are (read when `root` has no INA3221).
    #[serde(default = "default_iio_root")]
    pub iio_root: PathBuf,
}

impl Default for HwmonConfig {
    /// AGX Orin's rails, as a `[[source]] type = "hwmon"` table with no other key gives.
    fn default() -> Self {
        HwmonConfig {
            root: default_root(),
            rails: default_rails(),
            gpu_rail: default_gpu_rail(),
            iio_root: default_iio_root(),
        }
    }
}

fn default_iio_root() -> PathBuf {
    PathBuf::from("/sys/bus/i2c/drivers/ina3221x")
}

fn default_root() -> PathBuf {
    PathBuf::from("/sys/class/hwmon")
}
fn default_rails() -> Vec<String> {
    vec![
        "VDD_GPU_SOC".into(),
        "VDD_CPU_CV".into(),
        "VIN_SYS_5V0".into(),
    ]
}
fn default_gpu_rail() -> Option<String> {
    Some("VDD_GPU_SOC".into())
}

/// "No GPU rail" is written `gpu_rail = ""` (a missing `gpu_rail` means
/// [`default_gpu_rail`]).
fn gpu_rail_in_file<S: serde::Serializer>(rail: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(rail.as_deref().unwrap_or(""))
}

fn gpu_rail_from_file<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let rail = <String as serde::Deserialize>::deserialize(d)?;
    Ok((!rail.is_empty()).then_some(rail))
}

impl HwmonConfig {
    /// Channels reported: load, and gpu when a GPU rail is named.
    pub fn channel_count(&self) -> usize {
        1 + usize::from(self.gpu_rail.is_some())
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.rails.is_empty() {
            return Err(ConfigError::Invalid {
                key: "source.rails",
                reason: "name at least one rail".into(),
            });
        }
        Ok(())
    }
}

/// Where one rail's files are.
#[derive(Debug, Clone)]
enum Rail {
    /// hwmon: voltage (mV) and current (mA); power is their product.
    Hwmon { voltage: PathBuf, current: PathBuf },
    /// IIO: power (mW) and voltage (mV) files.
    Iio { power: PathBuf, voltage: PathBuf },
}

/// An opened INA3221 source.
#[derive(Debug)]
pub struct Hwmon {
    root: PathBuf,
    load: Vec<(String, Rail)>,
    gpu: Option<(String, Rail)>,
    channels: Vec<ChannelSpec>,
}

/// Finds every INA3221 rail under `root`, by label.
fn discover(root: &Path) -> Result<BTreeMap<String, Rail>, SourceError> {
    let io = |what: String| move |source| SourceError::Io { what, source };
    let mut rails = BTreeMap::new();
    for entry in std::fs::read_dir(root).map_err(io(format!("listing {}", root.display())))? {
        let dir = entry
            .map_err(io(format!("listing {}", root.display())))?
            .path();
        let name = std::fs::read_to_string(dir.join("name")).unwrap_or_default();
        if name.trim() != "ina3221" {
            continue;
        }
        for x in 1..=3 {
            let Ok(label) = std::fs::read_to_string(dir.join(format!("in{x}_label"))) else {
                continue;
            };
            let label = label.trim().to_string();
            rails.insert(
                label,
                Rail::Hwmon {
                    voltage: dir.join(format!("in{x}_input")),
                    current: dir.join(format!("curr{x}_input")),
                },
            );
        }
    }
    Ok(rails)
}

/// Finds JetPack 4 `ina3221x` rails under `root/*/iio:device*/`.
fn discover_iio(root: &Path) -> BTreeMap<String, Rail> {
    let mut rails = BTreeMap::new();
    let Ok(devices) = std::fs::read_dir(root) else {
        return rails;
    };
    for dev in devices.flatten() {
        let Ok(inner) = std::fs::read_dir(dev.path()) else {
            continue;
        };
        for iio in inner.flatten() {
            let dir = iio.path();
            if !dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("iio:device"))
            {
                continue;
            }
            for n in 0..3 {
                let Ok(label) = std::fs::read_to_string(dir.join(format!("rail_name_{n}"))) else {
                    continue;
                };
                rails.insert(
                    label.trim().to_string(),
                    Rail::Iio {
                        power: dir.join(format!("in_power{n}_input")),
                        voltage: dir.join(format!("in_voltage{n}_input")),
                    },
                );
            }
        }
    }
    rails
}

fn read_milli(path: &Path) -> Result<i64, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    text.trim().parse().map_err(|_| {
        SourceError::Format(format!(
            "{}: {:?} is not an integer",
            path.display(),
            text.trim()
        ))
    })
}

fn rail_power(r: &Rail) -> Result<(u64, u32), SourceError> {
    match r {
        Rail::Hwmon { voltage, current } => {
            let mv = read_milli(voltage)?;
            let ma = read_milli(current)?;
            // Current can read slightly negative around zero; power drawn is never negative.
            Ok((
                (mv.max(0) * ma.max(0) / 1000) as u64,
                mv.clamp(0, u32::MAX as i64) as u32,
            ))
        }
        Rail::Iio { power, voltage } => {
            let mw = read_milli(power)?;
            let mv = read_milli(voltage).unwrap_or(0);
            Ok((mw.max(0) as u64, mv.clamp(0, u32::MAX as i64) as u32))
        }
    }
}

impl Hwmon {
    /// Discovers the configured rails; fails naming any that is missing.
    pub fn open(cfg: &HwmonConfig) -> Result<Hwmon, SourceError> {
        let mut found = discover(&cfg.root).unwrap_or_default();
        if found.is_empty() {
            found = discover_iio(&cfg.iio_root);
        }
        if found.is_empty() {
            // Say why in the words of the first layout tried.
            discover(&cfg.root)?;
        }
        let pick = |label: &String| {
            found
                .get(label)
                .cloned()
                .map(|r| (label.clone(), r))
                .ok_or_else(|| {
                    SourceError::Format(format!(
                        "INA3221 rail {label} not found under {} (found: {})",
                        cfg.root.display(),
                        found.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })
        };
        let load = cfg.rails.iter().map(pick).collect::<Result<Vec<_>, _>>()?;
        let gpu = cfg.gpu_rail.as_ref().map(pick).transpose()?;
        let mut channels = vec![ChannelSpec {
            name: cfg.rails.join("+"),
            kind: ChannelKind::Load,
            tier: TrustTier::HardwareMeter,
        }];
        if let Some((label, _)) = &gpu {
            channels.push(ChannelSpec {
                name: label.clone(),
                kind: ChannelKind::Gpu,
                tier: TrustTier::HardwareMeter,
            });
        }
        Ok(Hwmon {
            root: cfg.root.clone(),
            load,
            gpu,
            channels,
        })
    }
}

impl PowerSource for Hwmon {
    fn describe(&self) -> String {
        format!("ina3221 hwmon at {}", self.root.display())
    }

    fn channels(&self) -> &[ChannelSpec] {
        &self.channels
    }

    fn sample(&mut self, _now_ms: u64) -> Result<Vec<Option<Sample>>, SourceError> {
        let mut total = 0u64;
        for (_, r) in &self.load {
            total += rail_power(r)?.0;
        }
        let mut out = vec![Some(Sample {
            power_mw: total,
            ..Sample::default()
        })];
        if let Some((_, r)) = &self.gpu {
            let (p, mv) = rail_power(r)?;
            out.push(Some(Sample {
                power_mw: p,
                voltage_mv: Some(mv),
                ..Sample::default()
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out an AGX Orin's two INA3221 devices as the kernel does.
    pub(crate) fn orin_fixture(root: &Path) {
        let dev = |n: &str, rails: &[(&str, i64, i64)]| {
            let d = root.join(n);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), "ina3221\n").unwrap();
            for (i, (label, mv, ma)) in rails.iter().enumerate() {
                let x = i + 1;
                std::fs::write(d.join(format!("in{x}_label")), format!("{label}\n")).unwrap();
                std::fs::write(d.join(format!("in{x}_input")), format!("{mv}\n")).unwrap();
                std::fs::write(d.join(format!("curr{x}_input")), format!("{ma}\n")).unwrap();
                std::fs::write(d.join(format!("in{}_input", x + 3)), "12\n").unwrap(); // shunt voltage
            }
            std::fs::write(d.join("in7_label"), "sum of shunt voltages\n").unwrap();
        };
        dev(
            "hwmon1",
            &[
                ("VDD_GPU_SOC", 19_200, 1_250),
                ("VDD_CPU_CV", 19_200, 600),
                ("VIN_SYS_5V0", 5_000, 1_100),
            ],
        );
        dev("hwmon2", &[("VDDQ_VDD2_1V8AO", 1_800, 300)]);
        let other = root.join("hwmon0");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("name"), "cpu_thermal\n").unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hwmon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn rails_are_found_by_label_and_power_is_volts_times_amps() {
        let root = tmp("ok");
        orin_fixture(&root);
        let cfg = HwmonConfig {
            root: root.clone(),
            rails: default_rails(),
            gpu_rail: default_gpu_rail(),
            iio_root: root.join("none"),
        };
        let mut h = Hwmon::open(&cfg).unwrap();
        assert_eq!(h.channels().len(), 2);
        let s = h.sample(0).unwrap();
        // 19.2 V x 1.25 A = 24 W; + 11.52 W + 5.5 W; VDDQ (inside VIN_SYS_5V0) not added twice.
        assert_eq!(s[0].unwrap().power_mw, 24_000 + 11_520 + 5_500);
        assert_eq!(s[1].unwrap().power_mw, 24_000);
        assert_eq!(s[1].unwrap().voltage_mv, Some(19_200));
    }

    #[test]
    fn a_missing_rail_or_file_is_a_typed_error_naming_it() {
        let root = tmp("missing");
        orin_fixture(&root);
        let cfg = HwmonConfig {
            root: root.clone(),
            rails: vec!["VDD_IN".into()],
            gpu_rail: None,
            iio_root: root.join("none"),
        };
        let e = Hwmon::open(&cfg).unwrap_err().to_string();
        assert!(e.contains("VDD_IN") && e.contains("VDD_GPU_SOC"), "{e}");
        let cfg = HwmonConfig {
            root: root.clone(),
            rails: default_rails(),
            gpu_rail: None,
            iio_root: root.join("none"),
        };
        let mut h = Hwmon::open(&cfg).unwrap();
        std::fs::remove_file(root.join("hwmon1/curr2_input")).unwrap();
        assert!(matches!(h.sample(0), Err(SourceError::Io { .. })));
        std::fs::write(root.join("hwmon1/curr2_input"), "garbage\n").unwrap();
        assert!(matches!(h.sample(0), Err(SourceError::Format(_))));
        let cfg = HwmonConfig {
            root: root.join("nope"),
            rails: default_rails(),
            gpu_rail: None,
            iio_root: root.join("none"),
        };
        assert!(matches!(Hwmon::open(&cfg), Err(SourceError::Io { .. })));
    }

    #[test]
    fn jetpack_4_iio_rails_are_read_when_there_is_no_hwmon_ina3221() {
        let root = tmp("iio");
        let iio = root.join("ina3221x/1-0040/iio:device0");
        std::fs::create_dir_all(&iio).unwrap();
        for (n, (label, mw, mv)) in [
            ("VDD_IN", 5_000, 5_080),
            ("VDD_CPU", 800, 5_080),
            ("VDD_GPU", 1_200, 5_080),
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(iio.join(format!("rail_name_{n}")), format!("{label}\n")).unwrap();
            std::fs::write(iio.join(format!("in_power{n}_input")), format!("{mw}\n")).unwrap();
            std::fs::write(iio.join(format!("in_voltage{n}_input")), format!("{mv}\n")).unwrap();
        }
        std::fs::create_dir_all(root.join("hwmon")).unwrap();
        let cfg = HwmonConfig {
            root: root.join("hwmon"),
            rails: vec!["VDD_IN".into()],
            gpu_rail: Some("VDD_GPU".into()),
            iio_root: root.join("ina3221x"),
        };
        let mut h = Hwmon::open(&cfg).unwrap();
        let s = h.sample(0).unwrap();
        assert_eq!(s[0].unwrap().power_mw, 5_000);
        assert_eq!(s[1].unwrap().power_mw, 1_200);
        assert_eq!(s[1].unwrap().voltage_mv, Some(5_080));
    }
}
