//! The offer search language buyers type (the console's market page, `GET
//! /api/v1/market?q=`): space-separated terms, all of which an offer must meet.
//!
//! | term | meaning |
//! |---|---|
//! | `gpu:orin` | the GPU model contains `orin` (any case) |
//! | `vram>=8000` | at least this much GPU memory, MiB |
//! | `cuda>=8.7` | at least this CUDA compute capability |
//! | `price<=0.5` | at most this price, credits per GPU-hour |
//! | `renewable>=80` | at least this share of its load renewable now, % |
//! | `runway>=4` | it could run the job at least this long on battery and forecast sun, hours |
//! | `reputation>=0.6` | at least this reputation, 0..1 |
//! | `region:DE` | in this grid region |
//! | `online` | heard from within the last minute |
//! | `sort:price` | cheapest first (`renewable`, `runway`, `reputation`, `performance`: most first; performance is the latest right probe's items per second) |
//!
//! A term it does not know is an error naming it, never ignored.

use crate::market_view::{Listing, Search};

/// A parsed query: what the market view filters by itself, and what is checked after.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfferQuery {
    /// The view's own search.
    pub search: Search,
    /// Most price, micro-credits per GPU-hour.
    pub max_price_micro: Option<u64>,
    /// Least runway, hours.
    pub min_runway_h: Option<f64>,
    /// Least CUDA capability (major, minor).
    pub min_cuda: Option<(u32, u32)>,
    /// Least reputation.
    pub min_reputation: Option<f64>,
    /// This region only.
    pub region: Option<String>,
    /// Sort by reputation (the view sorts by the rest).
    pub by_reputation: bool,
    /// Sort by measured throughput (the latest right probe's items per second).
    pub by_performance: bool,
}

fn number(term: &str, v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| format!("{term:?}: {v:?} is not a number of zero or more"))
}

fn cuda(term: &str, v: &str) -> Result<(u32, u32), String> {
    let (a, b) = v.split_once('.').unwrap_or((v, "0"));
    match (a.parse(), b.parse()) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(format!("{term:?}: a capability is MAJOR.MINOR, like 8.7")),
    }
}

/// Parses a query.
pub fn parse(q: &str) -> Result<OfferQuery, String> {
    let mut out = OfferQuery::default();
    for term in q.split_whitespace() {
        let lower = term.to_ascii_lowercase();
        if lower == "online" {
            out.search.online_only = true;
        } else if let Some(v) = lower.strip_prefix("gpu:") {
            out.search.gpu = Some(v.to_string());
        } else if let Some(v) = term
            .strip_prefix("region:")
            .or_else(|| term.strip_prefix("REGION:"))
        {
            out.region = Some(v.to_string());
        } else if let Some(v) = lower.strip_prefix("vram>=") {
            out.search.vram_min_mib = Some(number(term, v)? as u32);
        } else if let Some(v) = lower.strip_prefix("renewable>=") {
            out.search.renewable_now_min = Some(number(term, v)?.min(100.0) / 100.0);
        } else if let Some(v) = lower.strip_prefix("price<=") {
            out.max_price_micro = Some((number(term, v)? * 1e6).round() as u64);
        } else if let Some(v) = lower.strip_prefix("runway>=") {
            out.min_runway_h = Some(number(term, v)?);
        } else if let Some(v) = lower.strip_prefix("reputation>=") {
            out.min_reputation = Some(number(term, v)?);
        } else if let Some(v) = lower.strip_prefix("cuda>=") {
            out.min_cuda = Some(cuda(term, v)?);
        } else if let Some(v) = lower.strip_prefix("sort:") {
            match v {
                "price" | "renewable" | "runway" => out.search.sort = Some(v.to_string()),
                "reputation" => out.by_reputation = true,
                "performance" => out.by_performance = true,
                _ => {
                    return Err(format!(
                        "{term:?}: sort by price, renewable, runway, reputation or performance"
                    ));
                }
            }
        } else {
            return Err(format!(
                "{term:?} is not a search term (gpu:, vram>=, cuda>=, price<=, renewable>=, runway>=, reputation>=, region:, online, sort:)"
            ));
        }
    }
    Ok(out)
}

impl OfferQuery {
    /// Whether a listing the view returned meets the terms it does not check itself.
    pub fn admits(&self, l: &Listing) -> bool {
        self.max_price_micro
            .is_none_or(|p| l.price_micro_per_gpu_hour <= p)
            && self.min_runway_h.is_none_or(|h| l.runway_h >= h)
            && self.min_reputation.is_none_or(|r| l.reputation >= r)
            && self
                .region
                .as_deref()
                .is_none_or(|r| l.region.eq_ignore_ascii_case(r))
            && self.min_cuda.is_none_or(|(a, b)| {
                l.cuda
                    .as_deref()
                    .and_then(|c| cuda("", c).ok())
                    .is_some_and(|have| have >= (a, b))
            })
    }

    /// Filters and (for reputation) sorts the view's listings.
    pub fn apply(&self, listings: Vec<Listing>) -> Vec<Listing> {
        let mut out: Vec<Listing> = listings.into_iter().filter(|l| self.admits(l)).collect();
        if self.by_reputation {
            out.sort_by(|a, b| b.reputation.total_cmp(&a.reputation));
        }
        if self.by_performance {
            let speed = |l: &Listing| {
                l.measured
                    .as_ref()
                    .filter(|m| m.right)
                    .map_or(-1.0, |m| m.items_per_s)
            };
            out.sort_by(|a, b| speed(b).total_cmp(&speed(a)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_parse_into_the_search_and_the_checks_after_it() {
        let q = parse("gpu:Orin vram>=8000 cuda>=8.7 price<=0.5 renewable>=80 runway>=4 reputation>=0.6 region:KE online sort:runway").unwrap();
        assert_eq!(q.search.gpu.as_deref(), Some("orin"));
        assert_eq!(q.search.vram_min_mib, Some(8000));
        assert_eq!(q.search.renewable_now_min, Some(0.8));
        assert!(q.search.online_only);
        assert_eq!(q.search.sort.as_deref(), Some("runway"));
        assert_eq!(q.max_price_micro, Some(500_000));
        assert_eq!(q.min_cuda, Some((8, 7)));
        assert_eq!(q.region.as_deref(), Some("KE"));
        assert_eq!(parse("").unwrap(), OfferQuery::default());
    }

    #[test]
    fn an_unknown_or_malformed_term_is_an_error_naming_it() {
        assert!(
            parse("gpu:orin cheap")
                .unwrap_err()
                .contains(r#""cheap" is not a search term"#)
        );
        assert!(parse("price<=lots").unwrap_err().contains("price<=lots"));
        assert!(parse("sort:colour").unwrap_err().contains("sort by"));
        assert!(parse("cuda>=x.y").unwrap_err().contains("MAJOR.MINOR"));
    }

    #[test]
    fn checks_after_the_view_admit_what_they_say() {
        let l = Listing {
            device: "d".into(),
            board: "b".into(),
            gpu: Some("Orin".into()),
            vram_mib: 8192,
            cuda: Some("8.7".into()),
            cpu: "c".into(),
            price_micro_per_gpu_hour: 400_000,
            region: "KE".into(),
            online: true,
            last_seen_ms: 0,
            battery: None,
            solar_w: 0.0,
            load_w: 0.0,
            renewable_now: 1.0,
            renewable_today: None,
            runway_h: 5.0,
            reputation: 0.7,
            measured: None,
        };
        assert!(
            parse("price<=0.4 runway>=5 cuda>=8.7 reputation>=0.7 region:ke")
                .unwrap()
                .admits(&l)
        );
        assert!(!parse("price<=0.39").unwrap().admits(&l));
        assert!(!parse("cuda>=9.0").unwrap().admits(&l));
        assert!(!parse("runway>=5.1").unwrap().admits(&l));
        assert!(!parse("region:DE").unwrap().admits(&l));
        // Measured speed sorts; a wrong or missing probe comes last.
        let probed = |d: &str, speed: f64, right: bool| Listing {
            device: d.into(),
            measured: Some(crate::store::probes::ProbeResult {
                at_ms: 0,
                right,
                items_per_s: speed,
                mj_per_item: None,
                backend: "cpu".into(),
            }),
            ..l.clone()
        };
        let sorted = parse("sort:performance").unwrap().apply(vec![
            probed("slow", 10.0, true),
            l.clone(),
            probed("liar", 1e9, false),
            probed("fast", 99.0, true),
        ]);
        let order: Vec<&str> = sorted.iter().map(|x| x.device.as_str()).collect();
        assert_eq!(&order[..2], ["fast", "slow"]);
    }
}
