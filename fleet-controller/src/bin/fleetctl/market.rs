//! The market from a shell: devices' offers, their state now, their energy runway and
//! their measured throughput beside what their hellos claim.

use anyhow::Result;

use crate::api::Api;
use crate::{Output, print};

/// The market's filters.
#[derive(clap::Args)]
pub struct MarketArgs {
    /// Only GPUs whose model contains this (`orin`, `h100`).
    #[arg(long)]
    pub gpu: Option<String>,
    /// At least this much GPU memory, MiB.
    #[arg(long)]
    pub vram_min_mib: Option<u32>,
    /// At least this renewable share now, 0..1.
    #[arg(long)]
    pub renewable_now_min: Option<f64>,
    /// Only devices online now.
    #[arg(long)]
    pub online: bool,
    /// price, renewable or runway.
    #[arg(long)]
    pub sort: Option<String>,
    /// The load the runway is for, W (on top of the rig's own).
    #[arg(long, default_value_t = 60.0)]
    pub load_w: f64,
}

/// `fleetctl market`.
pub fn show(api: &Api, out: Output, a: &MarketArgs) -> Result<()> {
    let mut q = vec![format!("load_w={}", a.load_w)];
    if let Some(g) = &a.gpu {
        q.push(format!("gpu={g}"));
    }
    if let Some(v) = a.vram_min_mib {
        q.push(format!("vram_min_mib={v}"));
    }
    if let Some(r) = a.renewable_now_min {
        q.push(format!("renewable_now_min={r}"));
    }
    if a.online {
        q.push("online=true".into());
    }
    if let Some(s) = &a.sort {
        q.push(format!("sort={s}"));
    }
    let v = api.json(&format!("/api/v1/market?{}", q.join("&")), false)?;
    print(out, &v, |v| {
        let mut t = format!(
            "{:<34} {:<22} {:>7} {:>9} {:>6} {:>6} {:>8} {:>5} {:>16}",
            "device", "gpu", "price", "renewable", "batt", "online", "runway", "rep", "measured"
        );
        for d in v.as_array().into_iter().flatten() {
            let measured = &d["measured"];
            t.push_str(&format!(
                "\n{:<34} {:<22} {:>7} {:>8.0}% {:>6} {:>6} {:>7.1}h {:>5.2} {:>16}",
                d["device"].as_str().unwrap_or("?"),
                d["gpu"].as_str().unwrap_or("(cpu)"),
                d["price_micro_per_gpu_hour"],
                d["renewable_now"].as_f64().unwrap_or(0.0) * 100.0,
                d["battery"]
                    .as_f64()
                    .map_or("-".into(), |b| format!("{:.0}%", b * 100.0)),
                if d["online"] == true { "yes" } else { "no" },
                d["runway_h"].as_f64().unwrap_or(0.0),
                d["reputation"].as_f64().unwrap_or(0.0),
                measured["items_per_s"]
                    .as_f64()
                    .map_or("-".into(), |r| format!(
                        "{r:.0}/s {}",
                        measured["backend"].as_str().unwrap_or("?")
                    )),
            ));
        }
        t
    });
    Ok(())
}
