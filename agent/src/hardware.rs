//! What the device offers, for its hello: the board, its GPUs and its CPU, read once at
//! start. Discrete NVIDIA GPUs come from NVML (name, memory, compute capability); a
//! Jetson's integrated GPU, which NVML does not see, from the device tree (`compatible`
//! names the Tegra SoC) with the shared system memory as its memory. The parsers take text
//! and the readers a root folder, so tests run on fixtures.

use std::path::Path;

use attest::msg::Gpu;

/// The board, GPUs and CPU a hello carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Board or host model.
    pub board: String,
    /// GPUs offered.
    pub gpus: Vec<Gpu>,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical CPU cores.
    pub cpu_cores: u16,
}

/// Reads the offer under `root` (`/` on a device); GPUs (the device tree, then NVML) only
/// when `gpus` (jobs may use them).
pub fn discover(root: &Path, gpus: bool) -> Offer {
    let offer_gpus = gpus;
    let read = |p: &str| std::fs::read(root.join(p)).ok();
    let text = |p: &str| read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
    let board = text("proc/device-tree/model")
        .map(|m| m.trim_end_matches('\0').trim().to_string())
        .filter(|m| !m.is_empty())
        .or_else(|| text("sys/class/dmi/id/product_name").map(|m| m.trim().to_string()))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let meminfo = text("proc/meminfo").unwrap_or_default();
    let mut gpus = match read("proc/device-tree/compatible") {
        Some(c) if offer_gpus => jetson_gpu(&c, &meminfo).into_iter().collect(),
        _ => vec![],
    };
    if gpus.is_empty() && offer_gpus {
        gpus = nvml_gpus();
    }
    let cpuinfo = text("proc/cpuinfo").unwrap_or_default();
    let (cpu_model, cpu_cores) = cpu_of(&cpuinfo);
    Offer {
        board,
        gpus,
        cpu_model,
        cpu_cores,
    }
}

/// A Jetson's integrated GPU from the device tree's NUL-separated `compatible` list (the SoC
/// is its last entry, e.g. `nvidia,tegra234`) and `/proc/meminfo` (the GPU shares it).
pub fn jetson_gpu(compatible: &[u8], meminfo: &str) -> Option<Gpu> {
    let soc = compatible
        .split(|b| *b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find_map(|s| s.strip_prefix("nvidia,tegra"))?;
    let (model, arch) = match soc {
        "234" => ("Orin (nvgpu, ga10b)", "sm_87"),
        "194" => ("Xavier (nvgpu, gv11b)", "sm_72"),
        "186" => ("TX2 (nvgpu, gp10b)", "sm_62"),
        "210" => ("Nano/TX1 (nvgpu, gm20b)", "sm_53"),
        _ => return None,
    };
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(Gpu {
        model: model.to_string(),
        vram_mib: (mem_kib / 1024).min(u64::from(u32::MAX)) as u32,
        arch: arch.to_string(),
    })
}

/// The CPU's model name and logical cores from `/proc/cpuinfo` (x86's `model name`; on Arm,
/// which names no model there, the first core's part number where it is a known one).
pub fn cpu_of(cpuinfo: &str) -> (String, u16) {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let cores = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    let cores = if cores > 0 {
        cores
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let model = field("model name")
        .or_else(|| {
            let part = field("CPU part")?;
            let name = match part.as_str() {
                "0xd42" => "ARM Cortex-A78AE",
                "0xd08" => "ARM Cortex-A72",
                "0xd07" => "ARM Cortex-A57",
                "0xd0c" => "ARM Neoverse-N1",
                "0xd40" => "ARM Neoverse-V1",
                "0xd4f" => "ARM Neoverse-V2",
                "0x004" => "NVIDIA Carmel",
                _ => return Some(format!("Arm CPU part {part}")),
            };
            Some(name.to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    (model, cores.min(usize::from(u16::MAX)) as u16)
}

/// Every GPU NVML sees; none when NVML is missing (no driver) or says no.
fn nvml_gpus() -> Vec<Gpu> {
    let Ok(nvml) = nvml_wrapper::Nvml::init() else {
        return vec![];
    };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let cc = d.cuda_compute_capability().ok()?;
            Some(Gpu {
                model: d.name().ok()?,
                vram_mib: d
                    .memory_info()
                    .map(|m| (m.total >> 20).min(u64::from(u32::MAX)) as u32)
                    .unwrap_or(0),
                arch: format!("sm_{}{}", cc.major, cc.minor),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orin_is_read_from_its_device_tree_with_its_shared_memory() {
        let compatible = b"nvidia,p3737-0000+p3701-0005\0nvidia,p3701-0005\0nvidia,tegra234\0";
        let meminfo = "MemTotal:       64335836 kB\nMemFree:         1000 kB\n";
        let gpu = jetson_gpu(compatible, meminfo).expect("a Jetson");
        assert_eq!(gpu.arch, "sm_87");
        assert_eq!(gpu.compute_capability(), Some((8, 7)));
        assert_eq!(gpu.vram_mib, 62_827, "64,335,836 kB / 1024");
        assert!(gpu.model.starts_with("Orin"));
        assert_eq!(
            jetson_gpu(b"raspberrypi,4-model-b\0brcm,bcm2711\0", meminfo),
            None
        );
    }

    #[test]
    fn cpus_are_named_on_x86_and_arm() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n";
        assert_eq!(
            cpu_of(x86),
            ("AMD EPYC 7763 64-Core Processor".to_string(), 2)
        );
        let orin = (0..12)
            .map(|i| format!("processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n\n"))
            .collect::<String>();
        assert_eq!(cpu_of(&orin), ("ARM Cortex-A78AE".to_string(), 12));
    }

    #[test]
    fn a_jetson_root_folder_gives_the_whole_offer() {
        let root = std::env::temp_dir().join(format!("hw-{}", std::process::id()));
        let dt = root.join("proc/device-tree");
        std::fs::create_dir_all(&dt).unwrap();
        std::fs::write(dt.join("model"), b"NVIDIA Jetson AGX Orin Developer Kit\0").unwrap();
        std::fs::write(
            dt.join("compatible"),
            b"nvidia,p3701-0005\0nvidia,tegra234\0",
        )
        .unwrap();
        std::fs::write(root.join("proc/meminfo"), "MemTotal: 32000000 kB\n").unwrap();
        std::fs::write(
            root.join("proc/cpuinfo"),
            "processor : 0\nCPU part : 0xd42\n\nprocessor : 1\nCPU part : 0xd42\n",
        )
        .unwrap();
        assert!(
            discover(&root, false).gpus.is_empty(),
            "no GPU offered when jobs cannot use it"
        );
        let offer = discover(&root, true);
        assert_eq!(offer.board, "NVIDIA Jetson AGX Orin Developer Kit");
        assert_eq!(offer.gpus.len(), 1);
        assert_eq!(offer.gpus[0].vram_mib, 31_250);
        assert_eq!(
            (offer.cpu_model.as_str(), offer.cpu_cores),
            ("ARM Cortex-A78AE", 2)
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
