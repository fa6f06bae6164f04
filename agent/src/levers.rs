//! The governor's hardware levers (IO): a Jetson GPU's devfreq frequency cap through sysfs
//! and a discrete GPU's NVML power limit. The control law that decides what to ask of them is
//! the sans-IO [`crate::governor`]; these only carry it out.

use crate::governor::Lever;

/// Jetson GPU frequency cap through devfreq sysfs: writes `max_freq` with the highest of
/// `available_frequencies` at or below `ratio x the highest`, assuming power roughly follows
/// frequency (conservative: dynamic power falls faster, with voltage). The directory is
/// configurable (`/sys/class/devfreq/17000000.ga10b` on Orin; a temp dir in tests).
pub struct DevfreqLever {
    dir: std::path::PathBuf,
    freqs: Vec<u64>,
    original_max: Option<String>,
    last_error: Option<String>,
}

impl DevfreqLever {
    /// Opens a devfreq directory (reads `available_frequencies`).
    pub fn open(dir: &std::path::Path) -> std::io::Result<DevfreqLever> {
        let text = std::fs::read_to_string(dir.join("available_frequencies"))?;
        let mut freqs: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        freqs.sort_unstable();
        freqs.dedup();
        if freqs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "available_frequencies lists no frequency",
            ));
        }
        let original_max = std::fs::read_to_string(dir.join("max_freq")).ok();
        Ok(DevfreqLever {
            dir: dir.to_path_buf(),
            freqs,
            original_max,
            last_error: None,
        })
    }

    fn write_max(&mut self, value: &str) {
        if let Err(e) = std::fs::write(self.dir.join("max_freq"), value) {
            let msg = e.to_string();
            if self.last_error.as_deref() != Some(&msg) {
                tracing::warn!(dir = %self.dir.display(), error = %msg, "devfreq: cannot set max_freq");
            }
            self.last_error = Some(msg);
        }
    }
}

impl Lever for DevfreqLever {
    fn name(&self) -> &'static str {
        "devfreq"
    }

    fn apply(&mut self, target_w: f64, full_w: f64) -> f64 {
        let top = *self.freqs.last().expect("non-empty");
        let ratio = if full_w > 0.0 {
            (target_w / full_w).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let want = (top as f64 * ratio) as u64;
        let f = self
            .freqs
            .iter()
            .rev()
            .find(|f| **f <= want)
            .copied()
            .unwrap_or(self.freqs[0]);
        self.write_max(&f.to_string());
        f as f64 / top as f64
    }

    fn release(&mut self) {
        let v = self
            .original_max
            .clone()
            .unwrap_or_else(|| self.freqs.last().expect("non-empty").to_string());
        self.write_max(v.trim());
    }
}

/// NVML power limit on a discrete GPU: the GPU holds its own draw at the limit (within
/// its allowed range). Needs root; a refusal is logged once and the lever reports no
/// effect, so duty-cycling takes over.
pub struct NvmlLimitLever {
    nvml: nvml_wrapper::Nvml,
    index: u32,
    range_mw: (u32, u32),
    default_mw: u32,
    failed: bool,
}

impl NvmlLimitLever {
    /// Opens GPU `index` through NVML.
    pub fn open(index: u32) -> Result<NvmlLimitLever, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let (range_mw, default_mw) = {
            let d = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML GPU {index}: {e}"))?;
            let c = d
                .power_management_limit_constraints()
                .map_err(|e| format!("NVML power limit range: {e}"))?;
            let def = d
                .power_management_limit_default()
                .map_err(|e| format!("NVML default power limit: {e}"))?;
            ((c.min_limit, c.max_limit), def)
        };
        Ok(NvmlLimitLever {
            nvml,
            index,
            range_mw,
            default_mw,
            failed: false,
        })
    }

    fn set(&mut self, mw: u32) -> bool {
        if self.failed {
            return false;
        }
        let r = self
            .nvml
            .device_by_index(self.index)
            .and_then(|mut d| d.set_power_management_limit(mw));
        if let Err(e) = r {
            tracing::warn!(error = %e, "NVML: cannot set the power limit (needs root); duty-cycling instead");
            self.failed = true;
            return false;
        }
        true
    }
}

impl Lever for NvmlLimitLever {
    fn name(&self) -> &'static str {
        "nvml-power-limit"
    }

    fn apply(&mut self, target_w: f64, full_w: f64) -> f64 {
        let mw = ((target_w * 1000.0) as u32).clamp(self.range_mw.0, self.range_mw.1);
        if !self.set(mw) || full_w <= 0.0 {
            return 1.0;
        }
        (mw as f64 / 1000.0 / full_w).clamp(0.0, 1.0)
    }

    fn release(&mut self) {
        let d = self.default_mw;
        self.set(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governor::{Governor, GovernorConfig, PowerNow};

    fn p(solar: f64, load: f64, job: f64, batt: f64) -> PowerNow {
        PowerNow {
            solar_w: solar,
            load_w: load,
            job_w: job,
            battery_above_reserve_wh: batt,
        }
    }

    #[test]
    fn the_devfreq_lever_caps_the_frequency_and_restores_it() {
        let dir = std::env::temp_dir().join(format!("heliostat-devfreq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("available_frequencies"),
            "306000000 408000000 612000000 816000000 1020000000\n",
        )
        .unwrap();
        std::fs::write(dir.join("max_freq"), "1020000000\n").unwrap();
        let mut l = DevfreqLever::open(&dir).unwrap();
        let mut g = Governor::new(GovernorConfig::default(), vec![Box::new(l)]);
        // 36 W of a 60 W job: at most 0.6 x 1020 MHz = 612 MHz.
        let d = g.update(&p(76.0, 40.0, 0.0, 0.0), 600.0, 0.0, 1.0);
        assert_eq!(
            std::fs::read_to_string(dir.join("max_freq")).unwrap(),
            "612000000"
        );
        assert!((d.lever_fraction - 0.6).abs() < 1e-9, "{d:?}");
        assert!((d.duty - 1.0).abs() < 1e-9, "{d:?}");
        g.release();
        assert_eq!(
            std::fs::read_to_string(dir.join("max_freq")).unwrap(),
            "1020000000"
        );
        // A directory without the files is refused at open.
        l = match DevfreqLever::open(&dir.join("missing")) {
            Ok(_) => panic!("opened a missing devfreq dir"),
            Err(_) => DevfreqLever::open(&dir).unwrap(),
        };
        assert_eq!(l.name(), "devfreq");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
