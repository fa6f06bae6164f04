//! A Victron MPPT charge controller on a pseudo-terminal: VE.Direct text blocks (one every
//! `interval`, as the real one sends one a second), read from a [`Plant`](super::plant)
//! at the moment each block is sent. The agent opens the terminal's path exactly as it
//! opens `/dev/ttyUSB0` (19200 8N1 is set on it and ignored by a pseudo-terminal).
//!
//! Faults on demand ([`VeFaults`]): a wrong checksum byte, a block cut off half way (the
//! next block follows at once, as after a cable glitch), hex-protocol frames between
//! blocks, or silence.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

use super::plant::{PlantState, SharedPlant};

/// One VE.Direct text block: `\r\n<label>\t<value>` lines, then `\r\nChecksum\t` and the
/// byte that makes the whole block sum to 0 modulo 256.
pub fn block(fields: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    for (label, value) in fields {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(label.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\nChecksum\t");
    let sum = out.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    out.push(0u8.wrapping_sub(sum));
    out
}

/// The fields an MPPT (a SmartSolar 100/20, product id 0xA053) sends for a plant state:
/// battery voltage and current, panel voltage and power, charge state.
pub fn mppt_fields(st: &PlantState) -> Vec<(&'static str, String)> {
    let cs = if st.solar_w <= 0.0 {
        0 // off
    } else if st.soc >= 0.999 {
        5 // float
    } else {
        3 // bulk
    };
    vec![
        ("PID", "0xA053".into()),
        ("FW", "159".into()),
        ("SER#", "HQ2132QY2KR".into()),
        ("V", format!("{}", st.battery_mv.round() as i64)),
        ("I", format!("{}", st.battery_ma().round() as i64)),
        (
            "VPV",
            format!("{}", if st.solar_w > 0.0 { 36_500 } else { 10 }),
        ),
        ("PPV", format!("{}", st.solar_w.round() as i64)),
        ("CS", cs.to_string()),
        ("MPPT", if st.solar_w > 0.0 { "2" } else { "0" }.into()),
        ("ERR", "0".into()),
        ("LOAD", "ON".into()),
        ("H19", format!("{}", (st.solar_wh / 10.0) as i64)),
        ("HSDS", format!("{}", st.t_ms / 86_400_000)),
    ]
}

/// What the simulator does wrong, changeable while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VeFaults {
    /// Every n-th block gets a wrong checksum byte.
    pub bad_checksum_every: Option<u64>,
    /// Every n-th block is cut off half way.
    pub partial_every: Option<u64>,
    /// A hex-protocol frame (`:A...\n`) before every block.
    pub hex_frames: bool,
    /// Send nothing.
    pub silent: bool,
}

/// A charge controller on a pseudo-terminal, sending until dropped.
pub struct VeDirectSim {
    path: String,
    faults: Arc<Mutex<VeFaults>>,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    // The terminal's device side stays open here so that the master can always write.
    _device_side: TTYPort,
}

impl VeDirectSim {
    /// Starts a controller reporting `plant` every `interval`.
    pub fn start(plant: SharedPlant, interval: Duration) -> VeDirectSim {
        let (mut master, device_side) = TTYPort::pair().expect("a pseudo-terminal pair");
        let path = device_side.name().expect("the terminal's path");
        let faults = Arc::new(Mutex::new(VeFaults::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, halt) = (faults.clone(), sent.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !halt.load(Ordering::Relaxed) {
                std::thread::sleep(interval);
                let faults = f.lock().unwrap().clone();
                if faults.silent {
                    continue;
                }
                n += 1;
                let st = plant.lock().unwrap().state().clone();
                let mut bytes = block(&mppt_fields(&st));
                if faults
                    .bad_checksum_every
                    .is_some_and(|k| n.is_multiple_of(k))
                {
                    let last = bytes.len() - 1;
                    bytes[last] = bytes[last].wrapping_add(1);
                }
                if faults.partial_every.is_some_and(|k| n.is_multiple_of(k)) {
                    bytes.truncate(bytes.len() / 2);
                }
                if faults.hex_frames {
                    let _ = master.write_all(b":A0102000543\n");
                }
                // A write fails only while nothing has the terminal open; keep sending.
                if master.write_all(&bytes).is_ok() {
                    s.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        VeDirectSim {
            path,
            faults,
            sent,
            stop,
            thread: Some(thread),
            _device_side: device_side,
        }
    }

    /// The terminal's path, for `[[source]] type = "vedirect" port = ...`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Changes what goes wrong from the next block on.
    pub fn set_faults(&self, faults: VeFaults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// Blocks written so far (whole, cut or with a bad checksum).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for VeDirectSim {
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
    use std::io::Read;

    #[test]
    fn a_block_sums_to_zero_and_ends_with_its_checksum_line() {
        let b = block(&[("V", "12800".into()), ("I", "-1500".into())]);
        assert_eq!(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        assert!(b.starts_with(b"\r\nV\t12800\r\nI\t-1500\r\nChecksum\t"));
        assert_eq!(b.len(), b"\r\nV\t12800\r\nI\t-1500\r\nChecksum\t".len() + 1);
    }

    #[test]
    fn the_terminal_carries_blocks_that_follow_the_plant() {
        let plant = Arc::new(Mutex::new(Plant::new(
            PlantConfig::default(),
            12.0 * 3_600.0,
        )));
        let sim = VeDirectSim::start(plant, Duration::from_millis(20));
        let mut port = serialport::new(sim.path(), 19_200)
            .timeout(Duration::from_secs(2))
            .open_native()
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.windows(5).filter(|w| w == b"PPV\t2").count() < 2 {
            let n = port.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        // Noon on a clear day: the 200 W panel makes 200 W, and the blocks say so.
        assert!(String::from_utf8_lossy(&got).contains("PPV\t200\r\n"));
    }
}
