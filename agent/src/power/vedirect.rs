//! Victron VE.Direct text protocol (VE.Direct Protocol document, v3.3x), 19200 baud 8N1.
//!
//! A charge controller sends one block a second: lines `\r\n<label>\t<value>`, ending with
//! `\r\nChecksum\t<byte>`, where all bytes of the block sum to 0 modulo 256. Asynchronous
//! hex-protocol frames (`:` ... `\n`) may appear between lines and are skipped. The
//! [`FrameParser`] is sans-IO (feed bytes, get blocks); [`VeDirect`] reads a serial port on
//! a thread and keeps the latest good block.
//!
//! Fields used: `V` battery voltage (mV), `I` battery current (mA, negative when
//! discharging), `PPV` panel power (W), `SOC` (per mille, battery monitors).

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest::msg::{ChannelKind, TrustTier};
use serde::{Deserialize, Serialize};

use super::{ChannelSpec, PowerSource, Sample, SourceError};

/// The VE.Direct source's channels, in order.
pub const CHANNELS: [(&str, ChannelKind); 3] = [
    ("vedirect-pv", ChannelKind::Solar),
    ("vedirect-battery-charge", ChannelKind::BatteryCharge),
    ("vedirect-battery-discharge", ChannelKind::BatteryDischarge),
];

/// A block longer than this without a checksum line is garbage: resynchronise.
pub const MAX_BLOCK: usize = 1024;

/// `[[source]] type = "vedirect"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VeDirectConfig {
    /// The serial device (e.g. "/dev/ttyUSB0").
    pub port: String,
    /// A block older than this many milliseconds is stale.
    #[serde(default = "default_stale_ms")]
    pub stale_after_ms: u64,
}

impl VeDirectConfig {
    /// A charge controller on the serial device `port`, stale after the default time.
    pub fn new(port: impl Into<String>) -> VeDirectConfig {
        VeDirectConfig {
            port: port.into(),
            stale_after_ms: default_stale_ms(),
        }
    }
}

const fn default_stale_ms() -> u64 {
    5_000
}

/// One checksummed block: its fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    /// `(label, value)` pairs.
    pub fields: Vec<(String, String)>,
}

impl Block {
    /// A field's value.
    pub fn get(&self, label: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, v)| v.as_str())
    }

    fn int(&self, label: &str) -> Option<i64> {
        self.get(label)?.trim().parse().ok()
    }

    /// The samples for [`CHANNELS`].
    pub fn samples(&self) -> Vec<Option<Sample>> {
        let mv = self.int("V");
        let ma = self.int("I");
        let soc = self.int("SOC").map(|s| s.clamp(0, 1000) as u16);
        let battery_mw = match (mv, ma) {
            (Some(v), Some(i)) => Some(v * i / 1000),
            _ => None,
        };
        let voltage_mv = mv.map(|v| v.clamp(0, u32::MAX as i64) as u32);
        let bat = |p: Option<i64>| {
            p.map(|p| Sample {
                power_mw: p.max(0) as u64,
                voltage_mv,
                soc_permille: soc,
                energy_mj: None,
            })
        };
        vec![
            self.int("PPV").map(|w| Sample {
                power_mw: w.max(0) as u64 * 1000,
                ..Sample::default()
            }),
            bat(battery_mw),
            bat(battery_mw.map(|p| -p)),
        ]
    }
}

/// Counters kept by the parser.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Blocks whose checksum held.
    pub good: u64,
    /// Blocks whose checksum failed (rejected).
    pub bad_checksum: u64,
    /// Runs of bytes too long to be a block (dropped).
    pub oversize: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a block, accumulating.
    Block,
    /// The next byte is the checksum byte.
    ChecksumByte,
    /// Inside a hex-protocol frame, until `\n`.
    Hex,
}

/// Sans-IO VE.Direct text-frame parser.
#[derive(Debug)]
pub struct FrameParser {
    buf: Vec<u8>,
    state: State,
    /// The first block after start-up is usually cut: its failure is not counted.
    synced: bool,
    /// What has been seen.
    pub stats: ParserStats,
}

impl Default for FrameParser {
    fn default() -> Self {
        FrameParser {
            buf: Vec::with_capacity(256),
            state: State::Block,
            synced: false,
            stats: ParserStats::default(),
        }
    }
}

impl FrameParser {
    /// Feeds bytes; returns the blocks they complete whose checksum holds.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Block> {
        let mut out = Vec::new();
        for &b in bytes {
            match self.state {
                State::Hex => {
                    if b == b'\n' {
                        self.state = State::Block;
                    }
                }
                State::ChecksumByte => {
                    self.buf.push(b);
                    let sum = self.buf.iter().fold(0u8, |a, x| a.wrapping_add(*x));
                    if sum == 0 {
                        self.stats.good += 1;
                        out.push(parse_fields(&self.buf));
                    } else if self.synced {
                        self.stats.bad_checksum += 1;
                    }
                    self.synced = true;
                    self.buf.clear();
                    self.state = State::Block;
                }
                State::Block => {
                    if b == b':' && (self.buf.is_empty() || self.buf.ends_with(b"\n")) {
                        self.state = State::Hex;
                        continue;
                    }
                    self.buf.push(b);
                    if self.buf.ends_with(b"\r\nChecksum\t") {
                        self.state = State::ChecksumByte;
                    } else if self.buf.len() > MAX_BLOCK {
                        self.stats.oversize += 1;
                        self.buf.clear();
                    }
                }
            }
        }
        out
    }
}

fn parse_fields(block: &[u8]) -> Block {
    let body = &block[..block.len().saturating_sub(b"\r\nChecksum\t".len() + 1)];
    let text = String::from_utf8_lossy(body);
    Block {
        fields: text
            .split("\r\n")
            .filter_map(|line| line.split_once('\t'))
            .map(|(l, v)| (l.to_string(), v.to_string()))
            .collect(),
    }
}

/// Frames fields as a charge controller would, checksum byte included (for simulators and tests).
pub fn encode_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (l, v) in fields {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(l.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(b"\r\nChecksum\t");
    let sum = out.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    out.push(0u8.wrapping_sub(sum));
    out
}

#[derive(Debug, Default)]
struct Shared {
    latest: Option<(Instant, Block)>,
    stats: ParserStats,
    error: Option<String>,
}

/// A VE.Direct charge controller on a serial port.
pub struct VeDirect {
    port: String,
    stale: Duration,
    shared: Arc<Mutex<Shared>>,
    channels: Vec<ChannelSpec>,
}

impl VeDirect {
    /// Opens the port (19200 8N1) and starts the reader thread.
    pub fn open(cfg: &VeDirectConfig) -> Result<VeDirect, SourceError> {
        let mut port = serialport::new(&cfg.port, 19_200)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .timeout(Duration::from_millis(500))
            .open()
            .map_err(|e| SourceError::Io {
                what: format!("opening {}", cfg.port),
                source: e.into(),
            })?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread_shared = shared.clone();
        let name = cfg.port.clone();
        std::thread::Builder::new()
            .name(format!("vedirect {name}"))
            .spawn(move || {
                let mut parser = FrameParser::default();
                let mut buf = [0u8; 256];
                loop {
                    match port.read(&mut buf) {
                        Ok(0) => std::thread::sleep(Duration::from_millis(50)),
                        Ok(n) => {
                            let blocks = parser.feed(&buf[..n]);
                            let mut s = thread_shared.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(b) = blocks.into_iter().last() {
                                s.latest = Some((Instant::now(), b));
                            }
                            s.stats = parser.stats;
                            s.error = None;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(e) => {
                            thread_shared
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .error = Some(e.to_string());
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                    if Arc::strong_count(&thread_shared) == 1 {
                        return; // the source was dropped
                    }
                }
            })
            .map_err(|e| SourceError::Io {
                what: "starting the VE.Direct reader".into(),
                source: e,
            })?;
        Ok(VeDirect {
            port: cfg.port.clone(),
            stale: Duration::from_millis(cfg.stale_after_ms),
            shared,
            channels: CHANNELS
                .iter()
                .map(|(n, k)| ChannelSpec {
                    name: n.to_string(),
                    kind: *k,
                    tier: TrustTier::HardwareMeter,
                })
                .collect(),
        })
    }

    /// The parser's counters so far.
    pub fn stats(&self) -> ParserStats {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).stats
    }
}

impl PowerSource for VeDirect {
    fn describe(&self) -> String {
        format!("vedirect:{}", self.port)
    }

    fn channels(&self) -> &[ChannelSpec] {
        &self.channels
    }

    fn sample(&mut self, _now_ms: u64) -> Result<Vec<Option<Sample>>, SourceError> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        match &s.latest {
            Some((at, block)) if at.elapsed() <= self.stale => Ok(block.samples()),
            _ => Err(match &s.error {
                Some(e) => SourceError::Format(format!("{}: {e}", self.port)),
                None => SourceError::Stale(self.port.clone()),
            }),
        }
    }

    fn faults(&self) -> Vec<(&'static str, u64)> {
        let s = self.stats();
        vec![("bad_checksum", s.bad_checksum), ("oversize", s.oversize)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block as an MPPT 100/20 sends it (fields from the VE.Direct protocol document).
    pub(crate) fn mppt_block(ppv_w: u32, ma: i32) -> Vec<u8> {
        let (ppv, i) = (ppv_w.to_string(), ma.to_string());
        encode_block(&[
            ("PID", "0xA053"),
            ("FW", "159"),
            ("SER#", "HQ2132QY2KR"),
            ("V", "25600"),
            ("I", &i),
            ("VPV", "38760"),
            ("PPV", &ppv),
            ("CS", "3"),
            ("MPPT", "2"),
            ("ERR", "0"),
            ("LOAD", "ON"),
            ("H19", "10346"),
            ("H20", "152"),
            ("H21", "412"),
            ("H22", "210"),
            ("H23", "398"),
            ("HSDS", "271"),
        ])
    }

    #[test]
    fn good_blocks_parse_and_give_power_by_channel() {
        let mut p = FrameParser::default();
        let mut bytes = mppt_block(0, 0); // first block: sync
        bytes.extend(mppt_block(245, 8_500));
        bytes.extend(mppt_block(0, -1_200));
        let blocks = p.feed(&bytes);
        assert_eq!(blocks.len(), 3);
        assert_eq!(
            p.stats,
            ParserStats {
                good: 3,
                bad_checksum: 0,
                oversize: 0
            }
        );
        let s = blocks[1].samples();
        assert_eq!(s[0].unwrap().power_mw, 245_000);
        assert_eq!(s[1].unwrap().power_mw, 25_600 * 8_500 / 1000);
        assert_eq!(s[2].unwrap().power_mw, 0);
        let s = blocks[2].samples();
        assert_eq!(s[2].unwrap().power_mw, 25_600 * 1_200 / 1000);
        assert_eq!(blocks[1].get("SER#"), Some("HQ2132QY2KR"));
    }

    #[test]
    fn a_bad_checksum_is_rejected_and_counted_and_the_next_block_still_parses() {
        let mut p = FrameParser::default();
        p.feed(&mppt_block(1, 1));
        let mut bad = mppt_block(200, 100);
        bad[20] ^= 0x01;
        assert!(p.feed(&bad).is_empty());
        assert_eq!(p.stats.bad_checksum, 1);
        assert_eq!(p.feed(&mppt_block(200, 100)).len(), 1);
    }

    #[test]
    fn split_reads_cut_blocks_hex_frames_and_garbage_are_survived() {
        let mut p = FrameParser::default();
        // Start in the middle of a block: not counted as bad.
        let first = mppt_block(10, 10);
        assert!(p.feed(&first[30..]).is_empty());
        assert_eq!(p.stats.bad_checksum, 0);
        // Byte by byte, with a hex frame between blocks.
        let mut bytes = b":A0102000543\n".to_vec();
        bytes.extend(mppt_block(99, 1));
        let mut got = Vec::new();
        for b in bytes {
            got.extend(p.feed(&[b]));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples()[0].unwrap().power_mw, 99_000);
        // A long run of garbage is dropped, counted, and parsing resumes.
        let junk = vec![b'x'; 3 * MAX_BLOCK];
        assert!(p.feed(&junk).is_empty());
        assert!(p.stats.oversize >= 2);
        p.feed(&mppt_block(1, 1)); // resync (cut by the garbage)
        assert_eq!(p.feed(&mppt_block(50, 1)).len(), 1);
    }

    #[test]
    fn a_source_on_a_pseudo_terminal_reads_what_a_simulated_controller_writes() {
        use serialport::SerialPort;
        use std::io::Write;
        let (mut master, slave) = serialport::TTYPort::pair().expect("pseudo-terminal pair");
        let path = slave.name().expect("pty name");
        let mut src = VeDirect::open(&VeDirectConfig {
            port: path,
            stale_after_ms: 5_000,
        })
        .unwrap();
        assert!(matches!(src.sample(0), Err(SourceError::Stale(_))));
        let mut bad = mppt_block(1, 1);
        bad[25] ^= 4;
        for block in [
            mppt_block(5, 5),
            mppt_block(180, 2_000),
            bad,
            mppt_block(181, 2_000),
        ] {
            master.write_all(&block).unwrap();
            master.flush().unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if src
                .sample(0)
                .is_ok_and(|s| s[0].unwrap().power_mw == 181_000)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no block arrived through the pty"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(src.stats().bad_checksum, 1);
        drop(slave);
    }
}
