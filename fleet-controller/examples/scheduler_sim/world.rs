//! The simulated world, made once from a seed and shared by every policy's run: the fleet
//! (sites in many time zones, GPUs, panels, batteries, grid connections), each device's
//! solar power every step (the site model, `attest::solar`, times seeded weather), the
//! forecasts the scheduler is given, the job stream and the outages.

use attest::msg::{JobId, Site};
use attest::solar::{clear_sky_fraction, sun_elevation};
use attest::{DeviceId, Millijoules, Milliwatts, TimestampMs};
use fleet_controller::market::{
    CarbonLimit, Co2eMg, ComputeCapability, GpuClass, GpuOffer, JobNeeds, JobRequest, MicroCredits,
    SharePpm, SolarForecast, Work,
};

/// Milliseconds in an hour.
pub const HOUR: u64 = 3_600_000;

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, seeded, good enough for a simulation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// SplitMix64's output mix.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for one (seed, a, b) triple: noise that depends on what it is for, not on
/// the order it is drawn in.
pub fn rng_for(seed: u64, a: u64, b: u64) -> Rng {
    Rng::new(mix(seed ^ mix(a.wrapping_add(mix(b)))))
}

/// Where the fleet is: city, latitude, longitude, grid region, mean cloudiness in late
/// November.
const SITES: [(&str, f64, f64, &str, f64); 20] = [
    ("Berlin", 52.5, 13.4, "DE", 0.7),
    ("Madrid", 40.4, -3.7, "ES", 0.35),
    ("Paris", 48.9, 2.35, "FR", 0.65),
    ("Warsaw", 52.2, 21.0, "PL", 0.7),
    ("Nairobi", -1.3, 36.8, "KE", 0.45),
    ("Lagos", 6.5, 3.4, "NG", 0.4),
    ("Johannesburg", -26.2, 28.0, "ZA", 0.35),
    ("Delhi", 28.6, 77.2, "IN", 0.25),
    ("Shanghai", 31.2, 121.5, "CN", 0.45),
    ("Tokyo", 35.7, 139.7, "JP", 0.35),
    ("Sydney", -33.9, 151.2, "AU", 0.35),
    ("Perth", -31.95, 115.86, "AU", 0.2),
    ("Santiago", -33.4, -70.6, "CL", 0.15),
    ("Sao Paulo", -23.5, -46.6, "BR", 0.5),
    ("Mexico City", 19.4, -99.1, "MX", 0.3),
    ("Phoenix", 33.4, -112.1, "US-AZ", 0.15),
    ("Los Angeles", 34.0, -118.2, "US-CAL-CISO", 0.25),
    ("Toronto", 43.7, -79.4, "CA", 0.7),
    ("Auckland", -36.85, 174.76, "NZ", 0.45),
    ("Honolulu", 21.3, -157.9, "US-HI", 0.35),
];

/// One simulated device: its offer's fixed part and its physics.
#[derive(Clone, Debug)]
pub struct Device {
    pub id: DeviceId,
    pub site: Site,
    pub city: usize,
    pub gpu: GpuOffer,
    pub price: MicroCredits,
    pub reliability: f64,
    pub job_w: f64,
    pub base_w: f64,
    pub grid_w: f64,
    pub battery_wh: f64,
    pub reserve_wh: f64,
    pub initial_wh: f64,
}

impl Device {
    /// Its job power as the offer carries it.
    pub fn job_power(&self) -> Milliwatts {
        Milliwatts((self.job_w * 1_000.0) as u32)
    }
}

/// A job and when it arrives.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub at: u64,
    pub job: JobRequest,
}

/// A device's outage: silent from `from` to `to` (ms); its job makes no progress.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub device: usize,
    pub from: u64,
    pub to: u64,
}

/// What the world is made from.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub seed: u64,
    pub devices: usize,
    /// Days of job arrivals.
    pub days: u64,
    /// Days after them for the backlog to drain (every deadline passes).
    pub drain_days: u64,
    pub jobs_per_hour: f64,
    pub start_ms: u64,
    pub step_ms: u64,
    /// Relative spread of the forecast's error (one standard deviation).
    pub forecast_error: f64,
}

/// Everything a policy's run needs, the same for all.
pub struct World {
    pub p: Params,
    pub devices: Vec<Device>,
    /// Solar power, W, per device per step (`solar[d][step]`).
    pub solar: Vec<Vec<f32>>,
    /// Solar energy, Wh, per device per hour of the run.
    pub hourly_wh: Vec<Vec<f32>>,
    pub arrivals: Vec<Arrival>,
    pub outages: Vec<Outage>,
}

impl World {
    /// Builds the world for `p`.
    pub fn new(p: Params) -> World {
        let mut rng = Rng::new(p.seed);
        let devices: Vec<Device> = (0..p.devices).map(|i| device(&mut rng, i)).collect();
        let steps = p.steps();
        let per_hour = (HOUR / p.step_ms) as usize;
        let solar: Vec<Vec<f32>> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (0..steps)
                    .map(|s| solar_w(&p, d, i, p.start_ms + s as u64 * p.step_ms) as f32)
                    .collect()
            })
            .collect();
        let hourly_wh = solar
            .iter()
            .map(|w| {
                w.chunks(per_hour)
                    .map(|c| c.iter().sum::<f32>() * (p.step_ms as f32 / HOUR as f32))
                    .collect()
            })
            .collect();
        let arrivals = arrivals(&p, &mut rng);
        let outages = outages(&p, &mut rng);
        World {
            p,
            devices,
            solar,
            hourly_wh,
            arrivals,
            outages,
        }
    }

    /// The forecast of device `d`'s solar energy for `hours` hours from the hour of `now`:
    /// the truth times seeded error (`error` = 0 for the oracle). The error has a part per
    /// site and day and a part per hour, together `forecast_error` relative.
    pub fn forecast(&self, d: usize, now: u64, hours: usize, error: f64) -> SolarForecast {
        let first_hour = now / HOUR;
        let run_h0 = self.p.start_ms / HOUR;
        let wh = (0..hours as u64)
            .map(|k| {
                let hour = first_hour + k;
                let Some(&truth) = self.hourly_wh[d].get((hour - run_h0) as usize) else {
                    return 0.0;
                };
                if error == 0.0 {
                    return truth;
                }
                let day = rng_for(self.p.seed ^ 0xf0, d as u64, hour / 24).normal();
                let hr = rng_for(self.p.seed ^ 0xf1, d as u64, hour).normal();
                let e = error * (0.8 * day + 0.6 * hr);
                (f64::from(truth) * (1.0 + e)).max(0.0) as f32
            })
            .collect();
        SolarForecast { first_hour, wh }
    }
}

/// How much is asked of the fleet, per day of arrivals.
pub struct Load {
    pub jobs_per_day: f64,
    /// Job energy asked for, kWh a day.
    pub job_kwh_per_day: f64,
    /// Solar energy on the fleet's panels, kWh a day (over the whole run).
    pub solar_kwh_per_day: f64,
    /// Share of the fleet's device-hours the jobs take at their class's nominal power.
    pub utilisation: f64,
}

impl World {
    /// The load the job stream puts on the fleet.
    pub fn load(&self) -> Load {
        let days = self.p.days as f64;
        let job_wh: f64 = self
            .arrivals
            .iter()
            .map(|a| a.job.work.energy().0 as f64 / 3.6e6)
            .sum();
        let job_hours: f64 = self
            .arrivals
            .iter()
            .map(|a| {
                let class = a.job.needs.gpu_class.unwrap_or(GpuClass::Consumer);
                a.job.work.energy().0 as f64 / 3.6e6 / nominal_w(class)
            })
            .sum();
        let solar_wh: f64 = self.hourly_wh.iter().flatten().map(|&w| f64::from(w)).sum();
        let run_days = (self.p.days + self.p.drain_days) as f64;
        Load {
            jobs_per_day: self.arrivals.len() as f64 / days,
            job_kwh_per_day: job_wh / 1e3 / days,
            solar_kwh_per_day: solar_wh / 1e3 / run_days,
            utilisation: job_hours / (days * 24.0 * self.devices.len() as f64),
        }
    }
}

impl Params {
    /// Steps in the run.
    pub fn steps(&self) -> usize {
        (((self.days + self.drain_days) * 24 * HOUR) / self.step_ms) as usize
    }
}

/// What devices of a class are like.
struct ClassSpec {
    /// Job power range, W.
    job_w: (f64, f64),
    base_w: f64,
    vram_mib: &'static [u32],
    capabilities: &'static [(u8, u8)],
    /// Asking price range, micro-credits per GPU-hour.
    price: (f64, f64),
}

fn class_spec(class: GpuClass) -> ClassSpec {
    match class {
        GpuClass::Embedded => ClassSpec {
            job_w: (15.0, 40.0),
            base_w: 5.0,
            vram_mib: &[8_192, 16_384, 32_768, 65_536],
            capabilities: &[(8, 7)],
            price: (20e3, 60e3),
        },
        GpuClass::Consumer => ClassSpec {
            job_w: (220.0, 400.0),
            base_w: 40.0,
            vram_mib: &[12_288, 16_384, 24_576],
            capabilities: &[(8, 6), (8, 9)],
            price: (150e3, 400e3),
        },
        GpuClass::Datacenter => ClassSpec {
            job_w: (300.0, 700.0),
            base_w: 80.0,
            vram_mib: &[40_960, 81_920],
            capabilities: &[(8, 0), (9, 0)],
            price: (800e3, 2_500e3),
        },
    }
}

fn device(rng: &mut Rng, i: usize) -> Device {
    let city = i % SITES.len();
    let (_, lat, lon, region, _) = SITES[city];
    let class = match rng.unit() {
        u if u < 0.5 => GpuClass::Embedded,
        u if u < 0.85 => GpuClass::Consumer,
        _ => GpuClass::Datacenter,
    };
    let spec = class_spec(class);
    let (job_w, base_w, vram, caps, price) = (
        rng.range(spec.job_w.0, spec.job_w.1),
        spec.base_w,
        spec.vram_mib,
        spec.capabilities,
        spec.price,
    );
    let panel_wp = (job_w + base_w) * rng.range(2.0, 4.0);
    let battery_wh = job_w * rng.range(3.0, 10.0);
    let reserve_wh = battery_wh * rng.range(0.2, 0.3);
    let (major, minor) = rng.pick(caps);
    let grid_w = if rng.unit() < 0.85 { job_w } else { 0.0 };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    Device {
        id: DeviceId(id),
        site: Site {
            lat_microdeg: ((lat + rng.range(-1.0, 1.0)) * 1e6) as i32,
            lon_microdeg: ((lon + rng.range(-1.0, 1.0)) * 1e6) as i32,
            panel_watts_peak: panel_wp as u32,
            battery_wh: battery_wh as u32,
            battery_reserve_wh: reserve_wh as u32,
            grid_region: region.into(),
        },
        city,
        gpu: GpuOffer {
            class,
            vram_mib: rng.pick(vram),
            capability: ComputeCapability::new(major, minor),
        },
        price: MicroCredits(rng.range(price.0, price.1) as u64),
        reliability: rng.range(0.9, 0.999),
        job_w,
        base_w,
        grid_w,
        battery_wh: f64::from(battery_wh as u32),
        reserve_wh: f64::from(reserve_wh as u32),
        initial_wh: battery_wh * rng.range(0.4, 0.8),
    }
}

/// Solar power at `t`: panel x clear-sky fraction x the day's weather at the site (cloudier
/// days are dimmer and more broken).
fn solar_w(p: &Params, d: &Device, i: usize, t: u64) -> f64 {
    let (lat, lon) = (
        f64::from(d.site.lat_microdeg) / 1e6,
        f64::from(d.site.lon_microdeg) / 1e6,
    );
    let clear = clear_sky_fraction(sun_elevation(lat, lon, t));
    if clear <= 0.0 {
        return 0.0;
    }
    let day = t / (24 * HOUR);
    let mean = SITES[d.city].4;
    let city_day =
        (mean + 0.3 * rng_for(p.seed ^ 0xc1, d.city as u64, day).normal()).clamp(0.0, 0.95);
    let cloud = (city_day + 0.1 * rng_for(p.seed ^ 0xc2, i as u64, day).normal()).clamp(0.0, 0.95);
    // Passing clouds: a 20-minute pattern, deeper on cloudier days.
    let knot = t / (20 * 60_000);
    let f = (t % (20 * 60_000)) as f64 / (20.0 * 60_000.0);
    let n = |k: u64| rng_for(p.seed ^ 0xc3, i as u64, k).unit();
    let passing = n(knot) * (1.0 - f) + n(knot + 1) * f;
    f64::from(d.site.panel_watts_peak) * clear * (1.0 - 0.7 * cloud) * (1.0 - 0.4 * cloud * passing)
}

/// Nominal job power per class, W (a job's energy is its duration at this power).
fn nominal_w(class: GpuClass) -> f64 {
    match class {
        GpuClass::Embedded => 25.0,
        GpuClass::Consumer => 300.0,
        GpuClass::Datacenter => 500.0,
    }
}

fn arrivals(p: &Params, rng: &mut Rng) -> Vec<Arrival> {
    let mut out = Vec::new();
    let end = p.start_ms + p.days * 24 * HOUR;
    let mut t = p.start_ms as f64;
    let mean_gap = HOUR as f64 / p.jobs_per_hour;
    let mut n: u64 = 0;
    loop {
        t += -rng.unit().max(1e-12).ln() * mean_gap;
        if t as u64 >= end {
            return out;
        }
        n += 1;
        out.push(Arrival {
            at: t as u64,
            job: job(rng, n, t as u64),
        });
    }
}

fn job(rng: &mut Rng, n: u64, at: u64) -> JobRequest {
    let class = match rng.unit() {
        u if u < 0.5 => GpuClass::Embedded,
        u if u < 0.85 => GpuClass::Consumer,
        _ => GpuClass::Datacenter,
    };
    let hours = rng.range(0.5, 4.0);
    let wh = hours * nominal_w(class);
    let (vram, max_price): (&[u32], f64) = match class {
        GpuClass::Embedded => (&[0, 8_192, 16_384, 32_768], 60e3),
        GpuClass::Consumer => (&[0, 12_288, 16_384, 24_576], 400e3),
        GpuClass::Datacenter => (&[0, 40_960, 81_920], 2_500e3),
    };
    let mut min_vram_mib = rng.pick(vram);
    if rng.unit() < 0.005 {
        min_vram_mib = 1 << 20; // a terabyte: no device has it
    }
    let flexible = rng.unit() < 0.7;
    let deadline_h = if flexible {
        (2.0 * hours).max(rng.range(8.0, 36.0))
    } else {
        hours * rng.range(1.5, 3.0) + 0.5
    };
    let ceiling = match rng.unit() {
        u if u < 0.90 => 2.0 * max_price,
        u if u < 0.98 => 0.6 * max_price,
        _ => 0.1 * max_price,
    };
    let carbon = match rng.unit() {
        u if flexible && u < 0.15 => CarbonLimit::MinRenewable(SharePpm(900_000)),
        u if flexible && u < 0.20 => {
            // A fifth of the job's energy from a 400 g/kWh grid.
            CarbonLimit::MaxEmissions(Co2eMg((wh / 1_000.0 * 0.2 * 400_000.0) as u64))
        }
        _ => CarbonLimit::None,
    };
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    JobRequest {
        id: JobId(id),
        needs: JobNeeds {
            gpu_class: Some(class),
            min_vram_mib,
            min_capability: if rng.unit() < 0.2 {
                ComputeCapability::new(8, 6)
            } else {
                ComputeCapability::new(8, 0)
            },
        },
        work: Work::Energy(Millijoules((wh * 3_600_000.0) as u64)),
        deadline: TimestampMs(at + (deadline_h * HOUR as f64) as u64),
        max_price_per_gpu_hour: MicroCredits(ceiling as u64),
        carbon,
        flexible,
        submitted: TimestampMs(at),
    }
}

fn outages(p: &Params, rng: &mut Rng) -> Vec<Outage> {
    let mut out = Vec::new();
    for d in 0..p.devices {
        for day in 0..p.days + p.drain_days {
            if rng.unit() >= 0.1 {
                continue;
            }
            let from = p.start_ms + day * 24 * HOUR + (rng.unit() * (24 * HOUR) as f64) as u64;
            let minutes = if rng.unit() < 0.7 {
                rng.range(5.0, 25.0)
            } else {
                rng.range(40.0, 240.0)
            };
            out.push(Outage {
                device: d,
                from,
                to: from + (minutes * 60_000.0) as u64,
            });
        }
    }
    out.sort_by_key(|o| (o.from, o.device));
    out
}
