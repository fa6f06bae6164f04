//! A Jetson module's power monitors and GPU clock as the kernel lays them out, in a
//! directory a test owns: INA3221 chips under `<root>/hwmon/hwmonN/` (`name`,
//! `inX_label`, `inX_input` in mV, `currX_input` in mA, and channel 7's "sum of shunt
//! voltages" label, which is not a rail), and the GPU's devfreq directory under
//! `<root>/devfreq/<gpu>/` (`available_frequencies`, `cur_freq`, `max_freq`, `min_freq`,
//! `governor`). Point the agent's `[[source]] type = "hwmon" root = "<root>/hwmon"` and
//! `[jobs] devfreq_dir = "<root>/devfreq/<gpu>"` at them.
//!
//! The rails split the plant's load so that they add up to it; the plant's GPU power
//! follows the `max_freq` cap the agent writes (power taken as proportional to the clock).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::plant::{PlantState, SharedPlant};

/// Boards whose layouts are reproduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// AGX Orin (JetPack 5/6): 0x40 VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0; 0x41 NC,
    /// VDDQ_VDD2_1V8AO, NC. GPU devfreq `17000000.ga10b`.
    AgxOrin,
    /// Orin NX / Nano: 0x40 VDD_IN (the whole module), VDD_CPU_GPU_CV, VDD_SOC.
    OrinNano,
    /// AGX Xavier on JetPack 5: 0x40 GPU, CPU, SOC; 0x41 CV, VDDRQ, SYS5V. GPU devfreq
    /// `17000000.gv11b`.
    AgxXavier,
}

impl Board {
    /// The GPU's devfreq directory name.
    pub fn gpu(self) -> &'static str {
        match self {
            Board::AgxXavier => "17000000.gv11b",
            _ => "17000000.ga10b",
        }
    }

    /// The GPU's clock steps, Hz.
    pub fn frequencies(self) -> Vec<u64> {
        match self {
            Board::AgxXavier => vec![
                114_750_000,
                318_750_000,
                675_750_000,
                905_250_000,
                1_377_000_000,
            ],
            Board::OrinNano => vec![
                306_000_000,
                408_000_000,
                510_000_000,
                612_000_000,
                624_750_000,
            ],
            Board::AgxOrin => vec![
                306_000_000,
                408_000_000,
                612_000_000,
                816_000_000,
                1_020_000_000,
                1_300_500_000,
            ],
        }
    }

    /// The rails the agent should sum for the module's load, and the GPU's own rail (as
    /// `rails` and `gpu_rail` in the agent's hwmon source).
    pub fn load_rails(self) -> (Vec<&'static str>, Option<&'static str>) {
        match self {
            Board::AgxOrin => (
                vec!["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
                Some("VDD_GPU_SOC"),
            ),
            Board::OrinNano => (vec!["VDD_IN"], None),
            Board::AgxXavier => (
                vec!["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
                Some("GPU"),
            ),
        }
    }

    /// Each chip's three channels: (label, watts) for a plant state; "NC" is unconnected.
    fn chips(self, st: &PlantState) -> Vec<[(&'static str, f64); 3]> {
        let base = st.load_w - st.gpu_w;
        match self {
            Board::AgxOrin => vec![
                [
                    ("VDD_GPU_SOC", st.gpu_w + 0.3 * base),
                    ("VDD_CPU_CV", 0.3 * base),
                    ("VIN_SYS_5V0", 0.4 * base),
                ],
                [("NC", 0.0), ("VDDQ_VDD2_1V8AO", 0.0), ("NC", 0.0)],
            ],
            Board::OrinNano => vec![[
                ("VDD_IN", st.load_w),
                ("VDD_CPU_GPU_CV", st.gpu_w + 0.3 * base),
                ("VDD_SOC", 0.3 * base),
            ]],
            Board::AgxXavier => vec![
                [
                    ("GPU", st.gpu_w + 0.25 * base),
                    ("CPU", 0.25 * base),
                    ("SOC", 0.2 * base),
                ],
                [
                    ("CV", 0.1 * base),
                    ("VDDRQ", 0.1 * base),
                    ("SYS5V", 0.1 * base),
                ],
            ],
        }
    }
}

/// Replaces a file's content through a renamed temporary file (a reader never sees half).
fn try_write(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn write(path: &Path, text: &str) {
    try_write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Rail input voltage, millivolts (the INA3221s sit on the 5 V inputs).
const RAIL_MV: f64 = 5_000.0;

/// Writes every rail's files for `st` under `root/hwmon`.
pub fn write_rails(root: &Path, board: Board, st: &PlantState) {
    try_write_rails(root, board, st)
        .unwrap_or_else(|e| panic!("writing rails under {}: {e}", root.display()));
}

fn try_write_rails(root: &Path, board: Board, st: &PlantState) -> std::io::Result<()> {
    for (n, chip) in board.chips(st).iter().enumerate() {
        let dir = root.join("hwmon").join(format!("hwmon{}", n + 1));
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            try_write(&dir.join("name"), "ina3221\n")?;
            try_write(&dir.join("in7_label"), "sum of shunt voltages\n")?;
            try_write(&dir.join("in7_input"), "0\n")?;
        }
        for (i, (label, watts)) in chip.iter().enumerate() {
            let x = i + 1;
            try_write(&dir.join(format!("in{x}_label")), &format!("{label}\n"))?;
            let mv = if *label == "NC" { 0.0 } else { RAIL_MV };
            let ma = if mv > 0.0 {
                watts / (mv / 1000.0) * 1000.0
            } else {
                0.0
            };
            try_write(
                &dir.join(format!("in{x}_input")),
                &format!("{}\n", mv as u64),
            )?;
            try_write(
                &dir.join(format!("curr{x}_input")),
                &format!("{}\n", ma.round() as u64),
            )?;
        }
    }
    Ok(())
}

/// A module's sysfs trees kept up to date from a plant until dropped.
pub struct JetsonSim {
    root: PathBuf,
    board: Board,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JetsonSim {
    /// Lays out `board`'s trees under `root` and rewrites the rails every `interval`.
    pub fn start(plant: SharedPlant, board: Board, root: &Path, interval: Duration) -> JetsonSim {
        let freqs = board.frequencies();
        let highest = *freqs.last().unwrap();
        let devfreq = root.join("devfreq").join(board.gpu());
        std::fs::create_dir_all(&devfreq).unwrap();
        let list: Vec<String> = freqs.iter().map(u64::to_string).collect();
        write(
            &devfreq.join("available_frequencies"),
            &format!("{}\n", list.join(" ")),
        );
        write(&devfreq.join("max_freq"), &format!("{highest}\n"));
        write(&devfreq.join("min_freq"), &format!("{}\n", freqs[0]));
        write(&devfreq.join("cur_freq"), &format!("{highest}\n"));
        write(&devfreq.join("governor"), "nvhost_podgov\n");
        write_rails(root, board, plant.lock().unwrap().state());
        let stop = Arc::new(AtomicBool::new(false));
        let (halt, dir) = (stop.clone(), root.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                // The agent's governor writes max_freq; the clock and the GPU's power follow.
                let cap = std::fs::read_to_string(devfreq.join("max_freq"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(highest)
                    .min(highest);
                let st = {
                    let mut p = plant.lock().unwrap();
                    p.set_gpu_clock(cap as f64 / highest as f64);
                    p.state().clone()
                };
                // The tree's owner may remove it before stopping the simulator: stop then.
                if !dir.exists() {
                    return;
                }
                let written = try_write(&devfreq.join("cur_freq"), &format!("{cap}\n"))
                    .and_then(|()| try_write_rails(&dir, board, &st));
                if written.is_err() {
                    return;
                }
            }
        });
        JetsonSim {
            root: root.to_path_buf(),
            board,
            stop,
            thread: Some(thread),
        }
    }

    /// The hwmon class directory (the agent's `root`).
    pub fn hwmon(&self) -> PathBuf {
        self.root.join("hwmon")
    }

    /// The GPU's devfreq directory (the agent's `devfreq_dir`).
    pub fn devfreq(&self) -> PathBuf {
        self.root.join("devfreq").join(self.board.gpu())
    }
}

impl Drop for JetsonSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::plant::{Plant, PlantConfig};

    fn read_mw(dir: &Path, x: usize) -> f64 {
        let r = |f: String| -> f64 {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        r(format!("in{x}_input")) * r(format!("curr{x}_input")) / 1000.0
    }

    #[test]
    fn each_boards_load_rails_add_up_to_the_plants_load() {
        for board in [Board::AgxOrin, Board::OrinNano, Board::AgxXavier] {
            let tmp = crate::TempDir::new("jetson-rails");
            let mut plant = Plant::new(PlantConfig::default(), 0.0);
            plant.set_gpu_busy(true);
            let st = plant.step(Duration::from_secs(1)).clone();
            write_rails(tmp.path(), board, &st);
            let (rails, gpu) = board.load_rails();
            let mut total = 0.0;
            let mut gpu_mw = None;
            for n in 1..=2 {
                let dir = tmp.path().join(format!("hwmon/hwmon{n}"));
                if !dir.exists() {
                    continue;
                }
                assert_eq!(
                    std::fs::read_to_string(dir.join("name")).unwrap(),
                    "ina3221\n"
                );
                for x in 1..=3 {
                    let label = std::fs::read_to_string(dir.join(format!("in{x}_label"))).unwrap();
                    if rails.contains(&label.trim()) {
                        total += read_mw(&dir, x);
                    }
                    if gpu == Some(label.trim()) {
                        gpu_mw = Some(read_mw(&dir, x));
                    }
                }
            }
            assert!(
                (total - st.load_w * 1000.0).abs() < 20.0,
                "{board:?}: {total} mW vs {} W",
                st.load_w
            );
            if let Some(g) = gpu_mw {
                assert!(
                    g >= st.gpu_w * 1000.0 - 5.0,
                    "{board:?}: the GPU rail carries the GPU"
                );
            }
        }
    }
}
