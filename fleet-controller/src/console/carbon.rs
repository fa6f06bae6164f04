//! Price and carbon on the jobs pages: the estimate before a job is submitted (at each
//! online offer) and the carbon statement after it ran (from its device's records, as its
//! proof has it).

use maud::{Markup, html};
use serde_json::Value;

/// The estimate form's query on the jobs page.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EstimateQuery {
    /// Price ceiling, credits per GPU-hour.
    pub(super) est_price: Option<f64>,
    /// Run time, hours.
    pub(super) est_hours: Option<f64>,
}

pub(super) fn estimate_section(v: Option<&Value>, q: &EstimateQuery) -> Markup {
    html! {
        section.estimate aria-labelledby="estimate-h" {
            h2 #estimate-h { "Price and carbon before you submit" }
            form.filters method="get" action="/jobs" {
                label for="est_price" { "Ceiling (credits per GPU-hour)" }
                input #est_price type="number" name="est_price" min="0" step="0.000001" value=(q.est_price.unwrap_or(1.0));
                label for="est_hours" { "Run time (hours)" }
                input #est_hours type="number" name="est_hours" min="0.01" step="0.01" value=(q.est_hours.unwrap_or(1.0));
                button type="submit" { "Estimate" }
            }
            @if let Some(v) = v {
                table.estimate #estimate {
                    caption { "At each online offer now, cleanest first: " (v["note"].as_str().unwrap_or_default()) }
                    thead { tr { th scope="col" { "Device" } th scope="col" { "Region" } th scope="col" { "Price" } th scope="col" { "Energy" } th scope="col" { "From sun and battery" } th scope="col" { "CO₂e" } } }
                    tbody {
                        @for o in v["offers"].as_array().into_iter().flatten() {
                            tr {
                                td { a href={"/devices/" (o["device"].as_str().unwrap_or_default())} { code { (o["device"].as_str().unwrap_or_default()) } } }
                                td { (o["region"].as_str().unwrap_or_default()) }
                                td.num { (format!("{:.6}", o["price_micro"].as_f64().unwrap_or(0.0) / 1e6)) " credits" }
                                td.num { (format!("{:.1} Wh", o["energy_wh"].as_f64().unwrap_or(0.0))) }
                                td.num { (format!("{:.0} %", o["renewable"].as_f64().unwrap_or(0.0) * 100.0)) }
                                td.num { (format!("{:.2} g", o["co2e_g"].as_f64().unwrap_or(0.0))) }
                            }
                        }
                    }
                }
                @if v["offers"].as_array().is_none_or(|o| o.is_empty()) { p { "No online offer within that ceiling." } }
            }
        }
    }
}

fn mj_wh(mj: u64) -> String {
    let wh = mj as f64 / 3.6e6;
    if wh >= 1000.0 {
        format!("{:.2} kWh", wh / 1000.0)
    } else {
        format!("{wh:.2} Wh")
    }
}

fn mg_g(mg: u64) -> String {
    format!("{:.3} g", mg as f64 / 1000.0)
}

/// The carbon statement of a done job, from its device's records (as the proof has it).
pub(super) fn statement_section(st: &attest::msg::Statement, device: &str, job: &str) -> Markup {
    html! {
        section aria-labelledby="carbon-h" {
            h2 #carbon-h { "Carbon statement" }
            dl.facts {
                @if let Some(j) = &st.job {
                    dt { "Job energy" } dd { (mj_wh(j.energy.0)) }
                    dt { "Of it renewable (hourly matched)" } dd { (mj_wh(j.renewable.0)) " (" (format!("{:.1} %", if j.energy.0 > 0 { j.renewable.0 as f64 / j.energy.0 as f64 * 100.0 } else { 0.0 })) ")" }
                    dt { "Job emissions" } dd { (mg_g(j.co2e_mg)) " CO₂e" }
                }
                @if let Some(sci) = &st.sci {
                    dt { "SCI" } dd { (mg_g(sci.per_unit_mg)) " CO₂e per unit (" (sci.functional_units) " units; operational " (mg_g(sci.operational_mg)) ", embodied " (mg_g(sci.embodied_mg)) ")" }
                }
                dt { "Trust tier" } dd { (format!("{:?}", st.tier).to_lowercase()) @if !st.flags.is_empty() { ", " (st.flags.len()) " flags" } }
            }
            table.compare {
                caption { "The device's energy over the job's hours, by source" }
                thead { tr { th scope="col" { "Source" } th scope="col" { "Energy" } } }
                tbody {
                    tr { th scope="row" { "Solar" } td.num { (mj_wh(st.energy.solar.0)) } }
                    tr { th scope="row" { "Battery out" } td.num { (mj_wh(st.energy.battery_discharge.0)) } }
                    tr { th scope="row" { "Grid" } td.num { (mj_wh(st.energy.grid_import.0)) } }
                    tr { th scope="row" { "Load" } td.num { (mj_wh(st.energy.load.0)) } }
                    tr { th scope="row" { "Emissions (grid)" } td.num { (mg_g(st.co2e_mg)) } }
                }
            }
            p {
                a.button href={"/api/v1/devices/" (device) "/jobs/" (job) "/bundle"} download={"job-" (job) ".bundle.json"} { "Download the proof bundle" }
                " "
                a.button #verify-here href={"/verify?bundle=/api/v1/devices/" (device) "/jobs/" (job) "/bundle"} { "Verify it in this browser" }
                " Check it offline: " code { "attest verify job.bundle.json --controller-key KEY" }
                " (a bundle is ready once the epoch holding the job's receipt is closed)."
            }
        }
    }
}
