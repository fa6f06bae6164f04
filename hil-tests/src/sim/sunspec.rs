//! A SunSpec device on Modbus TCP (a real Modbus TCP server, tokio-modbus's): the `SunS`
//! marker at a base address, the common model (1), then a meter (model 203, three-phase
//! wye, as the grid connection's meter) or an inverter (model 103, as a solar inverter's
//! own metering), then the end marker. Values come from a [`Plant`](super::plant) at the
//! moment each request is answered, so the meter and the other simulators agree.
//!
//! Faults on demand ([`ModbusFaults`]): every request answered with an exception, or
//! never answered (a device that hangs), or the model chain missing its meter.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_modbus::prelude::{ExceptionCode, Request, Response};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

use super::plant::{PlantState, SharedPlant};

/// Which model the device has after the common model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Model 203 at the grid connection: `W` import positive, `TotWhImp`/`TotWhExp`.
    GridMeter,
    /// Model 103 of a solar inverter: `W` and its lifetime `WH`.
    SolarInverter,
}

/// What the device does wrong, changeable while it serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModbusFaults {
    /// Answer every request with this exception.
    pub exception: Option<ExceptionCode>,
    /// Never answer (the request waits an hour).
    pub hang: bool,
}

/// A register image: address -> value.
pub type Image = HashMap<u16, u16>;

fn put(image: &mut Image, at: u16, values: &[u16]) {
    for (i, v) in values.iter().enumerate() {
        image.insert(at + i as u16, *v);
    }
}

fn acc32(out: &mut [u16], at: usize, value: u32) {
    out[at] = (value >> 16) as u16;
    out[at + 1] = value as u16;
}

/// The image of a device with `model` reporting `st`, its `SunS` marker at `base` (40000,
/// 0 or 50000, the three a reader tries).
pub fn image(base: u16, model: Model, st: &PlantState) -> Image {
    let mut m = Image::new();
    put(&mut m, base, &[0x5375, 0x6E53]);
    let mut common = vec![0u16; 66];
    for (field, text) in [(0usize, "Heliostat HIL"), (16, "SIM-203"), (48, "HIL0001")] {
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            common[field + i] = (pair[0] as u16) << 8 | *pair.get(1).unwrap_or(&0) as u16;
        }
    }
    put(&mut m, base + 2, &[1, 66]);
    put(&mut m, base + 4, &common);
    let at = base + 4 + 66;
    let (id, body) = match model {
        Model::GridMeter => {
            // Not-implemented is 0x8000 for every int16 the meter does not fill.
            let mut b = vec![0x8000u16; 105];
            b[5] = 2300; // PhV 230.0 V, V_SF -1
            b[13] = (-1i16) as u16;
            b[16] = ((st.import_w - st.export_w) * 10.0).round() as i16 as u16; // W_SF -1
            b[20] = (-1i16) as u16;
            acc32(&mut b, 36, st.export_wh as u32);
            acc32(&mut b, 44, st.import_wh as u32);
            b[52] = 0; // TotWh_SF
            (203, b)
        }
        Model::SolarInverter => {
            let mut b = vec![0x8000u16; 50];
            b[8] = 2300; // PhVphA, V_SF -1
            b[11] = (-1i16) as u16;
            b[12] = (st.solar_w * 10.0).round() as i16 as u16; // W_SF -1
            b[13] = (-1i16) as u16;
            acc32(&mut b, 22, st.solar_wh as u32);
            b[24] = 0; // WH_SF
            (103, b)
        }
    };
    put(&mut m, at, &[id, body.len() as u16]);
    put(&mut m, at + 2, &body);
    put(&mut m, at + 2 + body.len() as u16, &[0xFFFF, 0]);
    m
}

/// Where a device's registers come from.
#[derive(Clone)]
enum Registers {
    /// Computed from a plant at each request.
    Plant {
        plant: SharedPlant,
        model: Model,
        base: u16,
    },
    /// A fixed image a test changes as it likes.
    Image(Arc<Mutex<Image>>),
}

#[derive(Clone)]
struct Device {
    registers: Registers,
    faults: Arc<Mutex<ModbusFaults>>,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for Device {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let faults = *self.faults.lock().unwrap();
        if faults.hang {
            return Box::pin(async {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                Err(ExceptionCode::ServerDeviceBusy)
            });
        }
        if let Some(e) = faults.exception {
            return Box::pin(std::future::ready(Err(e)));
        }
        let regs = match &self.registers {
            Registers::Plant { plant, model, base } => {
                image(*base, *model, plant.lock().unwrap().state())
            }
            Registers::Image(image) => image.lock().unwrap().clone(),
        };
        Box::pin(std::future::ready(match req {
            Request::ReadHoldingRegisters(addr, n) => (addr..addr.saturating_add(n))
                .map(|a| {
                    regs.get(&a)
                        .copied()
                        .ok_or(ExceptionCode::IllegalDataAddress)
                })
                .collect::<Result<Vec<u16>, _>>()
                .map(Response::ReadHoldingRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        }))
    }
}

/// A SunSpec device serving on a loopback port from a thread of its own (for the life of
/// the test process).
pub struct SunSpecSim {
    pub address: SocketAddr,
    faults: Arc<Mutex<ModbusFaults>>,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl SunSpecSim {
    /// Serves `model` from `plant` with its marker at `base`.
    pub fn start(plant: SharedPlant, model: Model, base: u16) -> SunSpecSim {
        SunSpecSim::serve(Registers::Plant { plant, model, base })
    }

    /// Serves whatever `image` holds at each request (a test edits it to change readings).
    pub fn serve_image(image: Arc<Mutex<Image>>) -> SunSpecSim {
        SunSpecSim::serve(Registers::Image(image))
    }

    fn serve(registers: Registers) -> SunSpecSim {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = std_listener.local_addr().unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let faults = Arc::new(Mutex::new(ModbusFaults::default()));
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let device = Device {
            registers,
            faults: faults.clone(),
            requests: requests.clone(),
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let new_service = move |_| Ok(Some(device.clone()));
                let on_connected = |stream, socket_addr| {
                    let new_service = new_service.clone();
                    async move { accept_tcp_connection(stream, socket_addr, new_service) }
                };
                let _ = Server::new(listener).serve(&on_connected, |_| {}).await;
            });
        });
        SunSpecSim {
            address,
            faults,
            requests,
        }
    }

    /// Changes what goes wrong from the next request on.
    pub fn set_faults(&self, faults: ModbusFaults) {
        *self.faults.lock().unwrap() = faults;
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::plant::{Plant, PlantConfig};

    #[test]
    fn the_image_walks_from_the_marker_through_the_common_model_to_the_meter_and_the_end() {
        let empty = PlantConfig {
            initial_soc: 0.0,
            ..PlantConfig::default()
        };
        let mut plant = Plant::new(empty, 0.0);
        plant.step(Duration::from_secs(3_600)); // a night hour, battery empty: 15 W imported
        let img = image(40_000, Model::GridMeter, plant.state());
        assert_eq!(img[&40_000], 0x5375);
        assert_eq!((img[&40_002], img[&40_003]), (1, 66));
        let at = 40_004 + 66;
        assert_eq!((img[&at], img[&(at + 1)]), (203, 105));
        let body = at + 2;
        assert_eq!(img[&(body + 16)] as i16, 150, "W: 15.0 W at W_SF -1");
        assert_eq!(
            img[&(body + 44)] as u32 * 65_536 + img[&(body + 45)] as u32,
            15
        );
        assert_eq!((img[&(body + 105)], img[&(body + 106)]), (0xFFFF, 0));
    }
}
