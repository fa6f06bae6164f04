//! A price and carbon estimate before a job is submitted: for each online offer that fits
//! the job's hardware needs, what the job would cost at that device's price over its run
//! time, how much of its energy the rig's battery and forecast sun could cover (its runway
//! against the run), and the grams CO2e of the rest at the region's grid intensity now.
//! An estimate, labelled as one: the scheduler decides with its own forecasts, and the
//! carbon statement after the run is what counts.

use serde::Serialize;

use crate::intensity::IntensityResolver;
use crate::market_view::Listing;

/// One offer's estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// The device.
    pub device: String,
    /// Its region.
    pub region: String,
    /// Its price, micro-credits per GPU-hour.
    pub price_micro_per_gpu_hour: u64,
    /// The job's expected price there, micro-credits.
    pub price_micro: u64,
    /// The share of the job's energy its battery and sun could cover, 0..1.
    pub renewable: f64,
    /// The job's expected energy, Wh.
    pub energy_wh: f64,
    /// The rest from the grid at its region's intensity now, grams CO2e.
    pub co2e_g: f64,
    /// Where that intensity comes from.
    pub intensity_source: String,
}

/// What is estimated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    /// Its run time, hours.
    pub run_h: f64,
    /// Its draw, W.
    pub power_w: f64,
    /// The buyer's price ceiling, micro-credits per GPU-hour.
    pub max_price_micro_per_gpu_hour: u64,
}

/// The estimate at each online offer within the price ceiling, cheapest in carbon first
/// (then in price).
pub fn estimate(
    offers: &[Listing],
    job: Job,
    intensity: &IntensityResolver,
    now_ms: u64,
) -> Vec<Estimate> {
    let hour = now_ms / 3_600_000;
    let mut out: Vec<Estimate> = offers
        .iter()
        .filter(|o| o.online && o.price_micro_per_gpu_hour <= job.max_price_micro_per_gpu_hour)
        .map(|o| {
            let renewable = if job.run_h <= 0.0 {
                1.0
            } else {
                (o.runway_h / job.run_h).clamp(0.0, 1.0)
            };
            let energy_wh = job.power_w * job.run_h;
            let i = intensity.at(&o.region, hour);
            Estimate {
                device: o.device.clone(),
                region: o.region.clone(),
                price_micro_per_gpu_hour: o.price_micro_per_gpu_hour,
                price_micro: crate::ledger::price_of(
                    o.price_micro_per_gpu_hour,
                    (job.run_h * 3_600_000.0) as u64,
                ),
                renewable,
                energy_wh,
                co2e_g: energy_wh / 1000.0 * (1.0 - renewable) * f64::from(i.mg_per_kwh) / 1000.0,
                intensity_source: i.source,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.co2e_g
            .total_cmp(&b.co2e_g)
            .then(a.price_micro.cmp(&b.price_micro))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(device: &str, price: u64, runway_h: f64, region: &str) -> Listing {
        Listing {
            device: device.into(),
            board: "b".into(),
            gpu: None,
            vram_mib: 0,
            cuda: None,
            cpu: "c".into(),
            price_micro_per_gpu_hour: price,
            region: region.into(),
            online: true,
            last_seen_ms: 0,
            battery: Some(0.5),
            solar_w: 0.0,
            load_w: 0.0,
            renewable_now: 1.0,
            renewable_today: None,
            runway_h,
            reputation: 0.5,
            measured: None,
        }
    }

    #[test]
    fn a_rig_that_can_run_it_on_sun_and_battery_is_the_clean_one() {
        let i = IntensityResolver::flat(400_000, "test");
        let job = Job {
            run_h: 2.0,
            power_w: 60.0,
            max_price_micro_per_gpu_hour: 1_000_000,
        };
        let offers = [
            offer("a", 500_000, 1.0, "DE"),
            offer("b", 800_000, 5.0, "KE"),
            offer("c", 2_000_000, 9.0, "ES"),
        ];
        let e = estimate(&offers, job, &i, 0);
        // c is over the ceiling; b covers the whole run; a half of it.
        assert_eq!(
            e.iter().map(|x| x.device.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(e[0].renewable, 1.0);
        assert_eq!(e[0].co2e_g, 0.0);
        assert_eq!(e[1].renewable, 0.5);
        // 120 Wh, half from a 400 g/kWh grid: 24 g.
        assert!((e[1].co2e_g - 24.0).abs() < 1e-9, "{}", e[1].co2e_g);
        assert_eq!(e[1].price_micro, 1_000_000, "2 h at 0.5 credits an hour");
    }
}
