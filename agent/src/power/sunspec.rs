//! SunSpec Modbus TCP meters and inverters (tokio-modbus).
//!
//! Discovery: the `SunS` marker (0x5375 0x6E53) at base register 40000, else 0, else 50000;
//! then the model chain from `base + 2`: each model is `ID, L` followed by `L` registers, up
//! to `ID = 0xFFFF`. Values carry scale-factor registers (value x 10^sf); "not implemented"
//! is 0x8000 for int16 and sunssf, 0xFFFF for uint16. Offsets below are counted from the
//! first register after `ID, L`, from the sunspec/models definitions
//! (`json/model_{1,103,203,802}.json`):
//!
//! | model | points used |
//! |---|---|
//! | 1 common (L 66) | Mn 0 (16 regs), Md 16 (16), SN 48 (16) |
//! | 101-103 inverter (L 50) | PhVphA 8, V_SF 11, W 12, W_SF 13, WH 22 (acc32), WH_SF 24 |
//! | 201-204 meter (L 105) | PhV 5, V_SF 13, W 16, W_SF 20, TotWhExp 36 (acc32), TotWhImp 44 (acc32), TotWh_SF 52 |
//! | 802 battery (L 62) | SoC 9 (%), SoC_SF 54 |
//!
//! A meter's `W` is taken as positive when importing from the grid (the SunSpec meter
//! convention) and is the power a record reports (scaled by `W_SF`); its import and export
//! energy counters (`TotWhImp`, `TotWhExp`, scaled by `TotWh_SF`) feed the meter's energy
//! directly. Power is never derived from the counters: they step in whole watt-hours.
//! Polling runs on its own thread with its own runtime and timeouts; the agent reads the
//! latest result, so a slow or absent device never stalls the other sources.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attest::msg::{ChannelKind, TrustTier};
use serde::{Deserialize, Serialize};
use tokio_modbus::client::Reader;

use super::{ChannelSpec, PowerSource, Sample, SourceError};

/// `[[source]] type = "sunspec"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SunSpecConfig {
    /// `host:port` of the Modbus TCP device (port 502 usually).
    pub address: SocketAddr,
    /// Modbus unit id.
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// What it measures: `grid` (a meter, models 201-204) or `solar` (an inverter, 101-103).
    pub measures: Measures,
    /// Poll period, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Per-request timeout, milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// What a SunSpec device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measures {
    /// Grid import and export (a meter).
    Grid,
    /// Solar production (an inverter).
    Solar,
}

impl Measures {
    /// Channels reported.
    pub fn channels(self) -> &'static [(&'static str, ChannelKind)] {
        match self {
            Measures::Grid => &[
                ("sunspec-grid-import", ChannelKind::GridImport),
                ("sunspec-grid-export", ChannelKind::GridExport),
            ],
            Measures::Solar => &[("sunspec-solar", ChannelKind::Solar)],
        }
    }
}

impl SunSpecConfig {
    /// A device at `address` that measures `measures`, on the default unit id and timings.
    pub fn new(address: SocketAddr, measures: Measures) -> SunSpecConfig {
        SunSpecConfig {
            address,
            unit_id: default_unit(),
            measures,
            poll_ms: default_poll_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

const fn default_unit() -> u8 {
    1
}
const fn default_poll_ms() -> u64 {
    1_000
}
const fn default_timeout_ms() -> u64 {
    2_000
}

/// The base addresses probed for the `SunS` marker, in order.
pub const BASES: [u16; 3] = [40_000, 0, 50_000];
const SUNS: [u16; 2] = [0x5375, 0x6E53];

/// A model found in the chain: its id, where its body starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelHeader {
    /// Model id.
    pub id: u16,
    /// First register after `ID, L`.
    pub body: u16,
    /// `L`.
    pub len: u16,
}

/// Why a SunSpec read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SunSpecError {
    /// Transport failure or timeout.
    #[error("modbus: {0}")]
    Transport(String),
    /// The device answered with a Modbus exception.
    #[error("modbus exception {0}")]
    Exception(String),
    /// No `SunS` marker at any base address.
    #[error("no SunS marker at registers 40000, 0 or 50000")]
    NoMarker,
    /// The model chain is malformed (runs past 65535 or never ends).
    #[error("malformed SunSpec model chain: {0}")]
    BadChain(String),
    /// The model the configuration needs is absent.
    #[error("no SunSpec model {0} on the device")]
    MissingModel(&'static str),
    /// A needed point reads "not implemented".
    #[error("SunSpec point {0} not implemented")]
    NotImplemented(&'static str),
}

/// Register reads: the one thing discovery and decoding need from the transport.
pub trait Registers {
    /// Reads `n` holding registers from `addr`.
    fn read(
        &mut self,
        addr: u16,
        n: u16,
    ) -> impl std::future::Future<Output = Result<Vec<u16>, SunSpecError>>;
}

/// Finds the base address holding the `SunS` marker.
pub async fn find_base(r: &mut impl Registers) -> Result<u16, SunSpecError> {
    for base in BASES {
        match r.read(base, 2).await {
            Ok(v) if v == SUNS => return Ok(base),
            Ok(_) | Err(SunSpecError::Exception(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SunSpecError::NoMarker)
}

/// Walks the model chain after the marker.
pub async fn walk(r: &mut impl Registers, base: u16) -> Result<Vec<ModelHeader>, SunSpecError> {
    let mut out = Vec::new();
    let mut addr = base
        .checked_add(2)
        .ok_or_else(|| SunSpecError::BadChain("base at the top".into()))?;
    for _ in 0..128 {
        let h = r.read(addr, 2).await?;
        if h[0] == 0xFFFF {
            return Ok(out);
        }
        let body = addr
            .checked_add(2)
            .ok_or_else(|| SunSpecError::BadChain(format!("model {} past 65535", h[0])))?;
        out.push(ModelHeader {
            id: h[0],
            body,
            len: h[1],
        });
        addr = body
            .checked_add(h[1])
            .ok_or_else(|| SunSpecError::BadChain(format!("model {} past 65535", h[0])))?;
    }
    Err(SunSpecError::BadChain("more than 128 models".into()))
}

fn int16(v: u16) -> Option<i64> {
    (v != 0x8000).then_some(v as i16 as i64)
}
fn uint16(v: u16) -> Option<i64> {
    (v != 0xFFFF).then_some(v as i64)
}
fn acc32(hi: u16, lo: u16) -> i64 {
    ((hi as u32) << 16 | lo as u32) as i64
}
fn sunssf(v: u16) -> Option<i32> {
    let s = v as i16;
    (v != 0x8000 && (-10..=10).contains(&s)).then_some(s as i32)
}

/// `value x 10^sf x unit`, in integers (unit scales to milli-units etc.).
fn scaled(value: i64, sf: i32, unit: i64) -> i64 {
    if sf >= 0 {
        value * 10i64.pow(sf as u32) * unit
    } else {
        value * unit / 10i64.pow((-sf) as u32)
    }
}

/// A string point: two ASCII characters per register, high byte first, NUL padded.
pub fn string(regs: &[u16]) -> String {
    let bytes: Vec<u8> = regs
        .iter()
        .flat_map(|r| r.to_be_bytes())
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// Reads of one device: power (mW, signed: + import / production), counters (mJ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Real power, milliwatts.
    pub power_mw: i64,
    /// Import (or production) counter, millijoules.
    pub import_mj: Option<u64>,
    /// Export counter, millijoules.
    pub export_mj: Option<u64>,
    /// Voltage, millivolts.
    pub voltage_mv: Option<u32>,
}

/// Decodes a meter body (models 201-204).
pub fn decode_meter(b: &[u16]) -> Result<Reading, SunSpecError> {
    if b.len() < 53 {
        return Err(SunSpecError::BadChain(format!(
            "meter model of length {}",
            b.len()
        )));
    }
    let w = int16(b[16]).ok_or(SunSpecError::NotImplemented("W"))?;
    let w_sf = sunssf(b[20]).ok_or(SunSpecError::NotImplemented("W_SF"))?;
    let wh_sf = sunssf(b[52]);
    let wh = |i: usize| wh_sf.map(|sf| scaled(acc32(b[i], b[i + 1]), sf, 3_600_000).max(0) as u64);
    let v = int16(b[5])
        .zip(sunssf(b[13]))
        .map(|(v, sf)| scaled(v, sf, 1000).clamp(0, u32::MAX as i64) as u32);
    Ok(Reading {
        power_mw: scaled(w, w_sf, 1000),
        import_mj: wh(44),
        export_mj: wh(36),
        voltage_mv: v,
    })
}

/// Decodes an inverter body (models 101-103).
pub fn decode_inverter(b: &[u16]) -> Result<Reading, SunSpecError> {
    if b.len() < 25 {
        return Err(SunSpecError::BadChain(format!(
            "inverter model of length {}",
            b.len()
        )));
    }
    let w = int16(b[12]).ok_or(SunSpecError::NotImplemented("W"))?;
    let w_sf = sunssf(b[13]).ok_or(SunSpecError::NotImplemented("W_SF"))?;
    let wh = sunssf(b[24]).map(|sf| scaled(acc32(b[22], b[23]), sf, 3_600_000).max(0) as u64);
    let v = uint16(b[8])
        .zip(sunssf(b[11]))
        .map(|(v, sf)| scaled(v, sf, 1000).clamp(0, u32::MAX as i64) as u32);
    Ok(Reading {
        power_mw: scaled(w, w_sf, 1000),
        import_mj: wh,
        export_mj: None,
        voltage_mv: v,
    })
}

/// Decodes a battery's state of charge (model 802) in per mille.
pub fn decode_soc(b: &[u16]) -> Option<u16> {
    if b.len() < 55 {
        return None;
    }
    let soc = uint16(b[9])?;
    let sf = sunssf(b[54])?;
    Some(scaled(soc, sf, 10).clamp(0, 1000) as u16)
}

struct Modbus {
    ctx: tokio_modbus::client::Context,
    timeout: Duration,
}

impl Registers for Modbus {
    async fn read(&mut self, addr: u16, n: u16) -> Result<Vec<u16>, SunSpecError> {
        match tokio::time::timeout(self.timeout, self.ctx.read_holding_registers(addr, n)).await {
            Err(_) => Err(SunSpecError::Transport(format!(
                "timeout reading {n} registers at {addr}"
            ))),
            Ok(Err(e)) => Err(SunSpecError::Transport(e.to_string())),
            Ok(Ok(Err(code))) => Err(SunSpecError::Exception(format!(
                "{code:?} reading {n} registers at {addr}"
            ))),
            Ok(Ok(Ok(v))) if v.len() == n as usize => Ok(v),
            Ok(Ok(Ok(v))) => Err(SunSpecError::Transport(format!(
                "asked {n} registers, got {}",
                v.len()
            ))),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    latest: Option<(Instant, Reading, Option<u16>)>,
    error: Option<String>,
    description: Option<String>,
}

/// Reads one device after discovery: the configured model, and the battery if present.
async fn poll_once(
    r: &mut impl Registers,
    measures: Measures,
    models: &[ModelHeader],
) -> Result<(Reading, Option<u16>), SunSpecError> {
    let (ids, what): (&[u16], &'static str) = match measures {
        Measures::Grid => (&[201, 202, 203, 204], "201-204 (meter)"),
        Measures::Solar => (&[101, 102, 103], "101-103 (inverter)"),
    };
    let m = models
        .iter()
        .find(|m| ids.contains(&m.id))
        .ok_or(SunSpecError::MissingModel(what))?;
    let body = r.read(m.body, m.len.min(125)).await?;
    let reading = match measures {
        Measures::Grid => decode_meter(&body)?,
        Measures::Solar => decode_inverter(&body)?,
    };
    let soc = match models.iter().find(|m| m.id == 802) {
        Some(b) => decode_soc(&r.read(b.body, b.len.min(125)).await?),
        None => None,
    };
    Ok((reading, soc))
}

async fn poll_loop(cfg: SunSpecConfig, shared: Arc<Mutex<Shared>>) {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let set_error = |e: String| shared.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e);
    loop {
        if Arc::strong_count(&shared) == 1 {
            return;
        }
        let connect =
            tokio_modbus::client::tcp::connect_slave(cfg.address, tokio_modbus::Slave(cfg.unit_id));
        let mut dev = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(ctx)) => Modbus { ctx, timeout },
            Ok(Err(e)) => {
                set_error(format!("connecting to {}: {e}", cfg.address));
                tokio::time::sleep(Duration::from_millis(cfg.poll_ms.max(500))).await;
                continue;
            }
            Err(_) => {
                set_error(format!("connecting to {}: timeout", cfg.address));
                continue;
            }
        };
        let discovered = async {
            let base = find_base(&mut dev).await?;
            let models = walk(&mut dev, base).await?;
            let common = match models.iter().find(|m| m.id == 1) {
                Some(c) => dev.read(c.body, c.len.min(66)).await.ok(),
                None => None,
            };
            Ok::<_, SunSpecError>((models, common))
        }
        .await;
        let models = match discovered {
            Ok((models, common)) => {
                let desc = common.filter(|c| c.len() >= 64).map(|c| {
                    format!(
                        "{} {} (serial {})",
                        string(&c[0..16]),
                        string(&c[16..32]),
                        string(&c[48..64])
                    )
                });
                shared.lock().unwrap_or_else(|p| p.into_inner()).description = desc;
                models
            }
            Err(e) => {
                set_error(format!("{}: {e}", cfg.address));
                tokio::time::sleep(Duration::from_millis(cfg.poll_ms.max(500))).await;
                continue;
            }
        };
        // Poll until something fails, then reconnect and discover again.
        loop {
            if Arc::strong_count(&shared) == 1 {
                return;
            }
            match poll_once(&mut dev, cfg.measures, &models).await {
                Ok((reading, soc)) => {
                    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.latest = Some((Instant::now(), reading, soc));
                    s.error = None;
                }
                Err(e) => {
                    set_error(format!("{}: {e}", cfg.address));
                    if !matches!(e, SunSpecError::NotImplemented(_)) {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(cfg.poll_ms)).await;
        }
    }
}

/// A SunSpec device polled on its own thread.
pub struct SunSpec {
    cfg: SunSpecConfig,
    shared: Arc<Mutex<Shared>>,
    channels: Vec<ChannelSpec>,
}

impl SunSpec {
    /// Starts polling; discovery happens in the background (errors show in samples).
    pub fn open(cfg: &SunSpecConfig) -> Result<SunSpec, SourceError> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (c, s) = (cfg.clone(), shared.clone());
        std::thread::Builder::new()
            .name(format!("sunspec {}", cfg.address))
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(poll_loop(c, s));
                }
            })
            .map_err(|e| SourceError::Io {
                what: "starting the SunSpec poller".into(),
                source: e,
            })?;
        Ok(SunSpec {
            channels: cfg
                .measures
                .channels()
                .iter()
                .map(|(n, k)| ChannelSpec {
                    name: n.to_string(),
                    kind: *k,
                    tier: TrustTier::HardwareMeter,
                })
                .collect(),
            cfg: cfg.clone(),
            shared,
        })
    }

    /// The device's common-model description, once discovered.
    pub fn description(&self) -> Option<String> {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .description
            .clone()
    }
}

impl PowerSource for SunSpec {
    fn describe(&self) -> String {
        format!("sunspec:{}#{}", self.cfg.address, self.cfg.unit_id)
    }

    fn channels(&self) -> &[ChannelSpec] {
        &self.channels
    }

    fn sample(&mut self, _now_ms: u64) -> Result<Vec<Option<Sample>>, SourceError> {
        let s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let stale = Duration::from_millis(self.cfg.poll_ms * 3 + self.cfg.timeout_ms);
        let Some((at, r, soc)) = s.latest.filter(|(at, _, _)| at.elapsed() <= stale) else {
            return Err(match &s.error {
                Some(e) => SourceError::Format(e.clone()),
                None => SourceError::Stale(self.describe()),
            });
        };
        let _ = at;
        let base = Sample {
            voltage_mv: r.voltage_mv,
            soc_permille: soc,
            ..Sample::default()
        };
        Ok(match self.cfg.measures {
            Measures::Grid => vec![
                Some(Sample {
                    power_mw: r.power_mw.max(0) as u64,
                    energy_mj: r.import_mj,
                    ..base
                }),
                Some(Sample {
                    power_mw: (-r.power_mw).max(0) as u64,
                    energy_mj: r.export_mj,
                    ..base
                }),
            ],
            Measures::Solar => vec![Some(Sample {
                power_mw: r.power_mw.max(0) as u64,
                energy_mj: r.import_mj,
                ..base
            })],
        })
    }
}

/// A register image as a real three-phase meter holds it (models 1 and 203): for
/// simulators and tests.
pub fn meter_image(
    base: u16,
    w: i16,
    w_sf: i16,
    imp_wh: u32,
    exp_wh: u32,
) -> std::collections::HashMap<u16, u16> {
    let mut m = std::collections::HashMap::new();
    let mut put = |addr: u16, vals: &[u16]| {
        for (i, v) in vals.iter().enumerate() {
            m.insert(addr + i as u16, *v);
        }
    };
    put(base, &SUNS);
    // Model 1, L = 66.
    let mut common = vec![0u16; 66];
    let text = |s: &str, out: &mut [u16]| {
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            out[i] = (pair[0] as u16) << 8 | *pair.get(1).unwrap_or(&0) as u16;
        }
    };
    text("Heliostat Labs", &mut common[0..16]);
    text("HL-3P-100", &mut common[16..32]);
    text("SN0042", &mut common[48..64]);
    put(base + 2, &[1, 66]);
    put(base + 4, &common);
    // Model 203, L = 105.
    let mut meter = vec![0x8000u16; 105];
    meter[5] = 2301; // PhV 230.1 V with V_SF -1
    meter[13] = (-1i16) as u16;
    meter[16] = w as u16;
    meter[20] = w_sf as u16;
    meter[36] = (exp_wh >> 16) as u16;
    meter[37] = exp_wh as u16;
    meter[44] = (imp_wh >> 16) as u16;
    meter[45] = imp_wh as u16;
    meter[52] = 0; // TotWh_SF
    let at = base + 4 + 66;
    put(at, &[203, 105]);
    put(at + 2, &meter);
    put(at + 2 + 105, &[0xFFFF, 0]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Image(HashMap<u16, u16>);

    impl Registers for Image {
        async fn read(&mut self, addr: u16, n: u16) -> Result<Vec<u16>, SunSpecError> {
            (addr..addr + n)
                .map(|a| {
                    self.0
                        .get(&a)
                        .copied()
                        .ok_or(SunSpecError::Exception("IllegalDataAddress".into()))
                })
                .collect()
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn discovery_walks_the_model_chain_and_scale_factors_apply() {
        let mut img = Image(meter_image(40_000, 12_345, -1, 1_000, 20));
        let base = block_on(find_base(&mut img)).unwrap();
        assert_eq!(base, 40_000);
        let models = block_on(walk(&mut img, base)).unwrap();
        assert_eq!(
            models,
            vec![
                ModelHeader {
                    id: 1,
                    body: 40_004,
                    len: 66
                },
                ModelHeader {
                    id: 203,
                    body: 40_072,
                    len: 105
                }
            ]
        );
        let (r, soc) = block_on(poll_once(&mut img, Measures::Grid, &models)).unwrap();
        assert_eq!(r.power_mw, 1_234_500);
        assert_eq!(r.import_mj, Some(3_600_000_000));
        assert_eq!(r.export_mj, Some(72_000_000));
        assert_eq!(r.voltage_mv, Some(230_100));
        assert_eq!(soc, None);
        assert_eq!(
            block_on(poll_once(&mut img, Measures::Solar, &models)),
            Err(SunSpecError::MissingModel("101-103 (inverter)"))
        );
    }

    #[test]
    fn the_marker_is_found_at_the_other_bases_and_its_absence_is_an_error() {
        let mut img = Image(meter_image(0, 10, 0, 0, 0));
        assert_eq!(block_on(find_base(&mut img)), Ok(0));
        let mut img = Image(meter_image(50_000, 10, 0, 0, 0));
        assert_eq!(block_on(find_base(&mut img)), Ok(50_000));
        let mut img = Image(HashMap::new());
        assert_eq!(block_on(find_base(&mut img)), Err(SunSpecError::NoMarker));
        // A chain that never ends is refused, not looped over.
        let mut m = meter_image(40_000, 10, 0, 0, 0);
        m.insert(40_000 + 4 + 66 + 2 + 105, 1);
        m.insert(40_000 + 4 + 66 + 2 + 105 + 1, 0);
        let mut img = Image(m);
        assert!(block_on(walk(&mut img, 40_000)).is_err());
    }

    #[test]
    fn not_implemented_points_and_exporting_meters_read_correctly() {
        let mut b = vec![0u16; 105];
        b[16] = 0x8000;
        assert_eq!(decode_meter(&b), Err(SunSpecError::NotImplemented("W")));
        b[16] = (-500i16) as u16;
        b[20] = 1;
        let r = decode_meter(&b).unwrap();
        assert_eq!(r.power_mw, -5_000_000);
        let mut inv = vec![0u16; 50];
        inv[12] = 4_200;
        inv[13] = 0;
        inv[22] = 0;
        inv[23] = 5;
        inv[24] = 3; // 5 x 10^3 Wh
        let r = decode_inverter(&inv).unwrap();
        assert_eq!(
            (r.power_mw, r.import_mj),
            (4_200_000, Some(5_000 * 3_600_000))
        );
        let mut bat = vec![0u16; 62];
        bat[9] = 873;
        bat[54] = (-1i16) as u16;
        assert_eq!(decode_soc(&bat), Some(873));
    }
}
