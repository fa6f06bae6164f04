//! Residual emissions covered by retired energy attribute certificates: the rules the
//! controller applies when a buyer retires a certificate for a job's hour, and the verifier
//! applies again to every retirement a job's bundle carries.
//!
//! Measured and covered are kept apart: a job's statement (its emissions, its SCI) comes
//! from the device's signed records alone and never changes; coverage is reported beside
//! it, split into granular certificates (same hour) and yearly RECs (same year at best).
//!
//! The rules, for a retirement of certificate `c` for the job's hour `h`:
//! 1. `c` is well formed ([`check_certificate`]): an id, a volume above zero, a production
//!    interval `start < end`; granular: within one UTC hour; a REC: at most 366 days;
//! 2. `c` has not been retired before (in the job's retirements: the controller's ledger
//!    refuses a second retirement anywhere);
//! 3. `c`'s region is the device's grid region in hour `h` (by the hello valid at the hour's
//!    start; ASCII case is ignored);
//! 4. `c` matches `h`: a granular certificate was produced within `h`; a REC's interval
//!    holds all of `h`;
//! 5. the job has emissions in `h` that earlier retirements left uncovered. The job's
//!    emissions in an hour are the hour's emissions pro rata of the job's energy over the
//!    period's load (the rule of the job's share, hour by hour; with no load, all of the
//!    job's emissions in its first hour). The retirement covers
//!    `min(left, floor(volume_wh x 3.6e6 mJ x intensity(h) / 3.6e9))` mg: the certificate's
//!    energy at the hour's grid intensity, never more than is left.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

use crate::carbon::{emissions_mg, pro_rata};
use crate::id::DeviceId;
use crate::msg::{
    Certificate, CertificateScheme, Hello, JobId, Retirement, Statement, Subject, hello_at,
};
use crate::units::{MS_PER_HOUR, Millijoules, TimestampMs};

/// Longest production interval of a yearly certificate: a leap year.
pub const MAX_REC_MS: u64 = 366 * 24 * MS_PER_HOUR;

/// Millijoules in a watt-hour.
const MJ_PER_WH: u64 = 3_600_000;

/// Why a certificate is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// No id.
    #[error("the certificate has no id")]
    NoId,
    /// A text field past its bound.
    #[error("certificate {id}: {reason}")]
    Text { id: String, reason: String },
    /// A volume of zero.
    #[error("certificate {0}: its volume is 0 Wh")]
    NoVolume(String),
    /// `end <= start`.
    #[error("certificate {id}: its production interval {start}..{end} ms is empty")]
    EmptyInterval { id: String, start: u64, end: u64 },
    /// A granular certificate over more than one UTC hour.
    #[error(
        "certificate {id}: a granular certificate is produced within one UTC hour, not over {start}..{end} ms"
    )]
    GranularAcrossHours { id: String, start: u64, end: u64 },
    /// A yearly certificate over more than 366 days.
    #[error("certificate {id}: a REC's interval is at most 366 days, not {days} days")]
    RecTooLong { id: String, days: u64 },
}

/// Why a retirement is refused (the controller's answer to a buyer, the verifier's to a
/// bundle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoverageError {
    /// The certificate is malformed.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// The statement is not a job's.
    #[error("a certificate covers a job's emissions; this statement is a device-period's")]
    NotAJob,
    /// The retirement names another job or device than the statement.
    #[error("retirement {id} is for job {job} on {device}, not this statement's job")]
    OtherJob {
        id: u64,
        job: JobId,
        device: DeviceId,
    },
    /// The certificate was retired already.
    #[error("certificate {0} is retired already")]
    AlreadyRetired(String),
    /// The certificate's region is not the device's in that hour.
    #[error(
        "certificate {id} was produced in region {certificate:?}; the job ran in {device:?} in hour {hour}"
    )]
    WrongRegion {
        id: String,
        certificate: String,
        device: String,
        hour: u64,
    },
    /// The certificate's production interval does not match the hour.
    #[error(
        "certificate {id} ({scheme}) was produced over {start}..{end} ms, which does not match hour {hour} ({hour_start}..{hour_end} ms)"
    )]
    WrongHour {
        id: String,
        scheme: &'static str,
        start: u64,
        end: u64,
        hour: u64,
        hour_start: u64,
        hour_end: u64,
    },
    /// The job has no emissions in that hour (it did not run then, or ran on the sun).
    #[error("the job has no emissions in hour {0} to cover")]
    NoEmissions(u64),
    /// Earlier retirements cover all of the job's emissions in that hour.
    #[error("the job's {measured_mg} mg CO2e in hour {hour} are covered already")]
    Covered { hour: u64, measured_mg: u64 },
    /// A retirement's stated coverage differs from the recomputed one.
    #[error("retirement {id} states {stated} mg covered; the rules give {computed} mg")]
    Misstated { id: u64, stated: u64, computed: u64 },
}

/// One hour of a job: what it emitted and what certificates cover, apart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CoverageHour {
    /// Hours since the Unix epoch, UTC.
    pub hour: u64,
    /// The hour's grid intensity, mg CO2e/kWh.
    pub intensity_mg_per_kwh: u32,
    /// The job's emissions in the hour, measured.
    pub measured_mg: u64,
    /// Covered by granular certificates produced in the hour.
    pub granular_mg: u64,
    /// Covered by yearly certificates.
    pub rec_mg: u64,
}

/// A job's measured emissions and the certificates that cover them, side by side: never
/// netted (the statement's SCI is the measured one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// The job's emissions, measured (its statement's figure).
    pub measured_mg: u64,
    /// Covered by granular certificates.
    pub granular_mg: u64,
    /// Covered by yearly certificates (RECs).
    pub rec_mg: u64,
    /// Hour by hour (hours with emissions or coverage).
    pub hours: Vec<CoverageHour>,
    /// The certificates retired, in retirement order.
    pub certificates: Vec<String>,
}

/// Checks a certificate's fields (rule 1).
pub fn check_certificate(c: &Certificate) -> Result<(), CertificateError> {
    if c.id.trim().is_empty() {
        return Err(CertificateError::NoId);
    }
    c.check_text().map_err(|e| CertificateError::Text {
        id: c.id.chars().take(64).collect(),
        reason: alloc::format!("{e}"),
    })?;
    if c.volume_wh == 0 {
        return Err(CertificateError::NoVolume(c.id.clone()));
    }
    let (start, end) = (c.start.0, c.end.0);
    if end <= start {
        return Err(CertificateError::EmptyInterval {
            id: c.id.clone(),
            start,
            end,
        });
    }
    match c.scheme {
        CertificateScheme::Granular if start / MS_PER_HOUR != (end - 1) / MS_PER_HOUR => {
            Err(CertificateError::GranularAcrossHours {
                id: c.id.clone(),
                start,
                end,
            })
        }
        CertificateScheme::Rec if end - start > MAX_REC_MS => Err(CertificateError::RecTooLong {
            id: c.id.clone(),
            days: (end - start).div_ceil(24 * MS_PER_HOUR),
        }),
        _ => Ok(()),
    }
}

/// Whether a (well-formed) certificate matches an hour (rule 4).
pub fn matches_hour(c: &Certificate, hour: u64) -> bool {
    let (from, to) = (
        hour.saturating_mul(MS_PER_HOUR),
        hour.saturating_add(1).saturating_mul(MS_PER_HOUR),
    );
    match c.scheme {
        CertificateScheme::Granular => c.start.0 >= from && c.end.0 <= to,
        CertificateScheme::Rec => c.start.0 <= from && c.end.0 >= to,
    }
}

/// The job's emissions hour by hour (rule 5): `(hour, intensity, mg)` for each hour line.
pub fn job_hours(statement: &Statement) -> Result<Vec<(u64, u32, u64)>, CoverageError> {
    let job = statement.job.as_ref().ok_or(CoverageError::NotAJob)?;
    let load = statement.energy.load;
    Ok(statement
        .hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mg = if load.0 == 0 {
                // The job's share's own rule: all of it at the first hour's intensity.
                if i == 0 {
                    emissions_mg(job.energy, h.intensity_mg_per_kwh)
                } else {
                    0
                }
            } else {
                pro_rata(h.co2e_mg, job.energy, load)
            };
            (h.hour, h.intensity_mg_per_kwh, mg)
        })
        .collect())
}

/// Applies retirements in order, checking each (rules 1 to 5).
struct Tally<'a> {
    statement: &'a Statement,
    hellos: &'a [Hello],
    hours: BTreeMap<u64, CoverageHour>,
    seen: BTreeSet<String>,
    order: Vec<String>,
}

impl<'a> Tally<'a> {
    fn new(statement: &'a Statement, hellos: &'a [Hello]) -> Result<Tally<'a>, CoverageError> {
        let hours = job_hours(statement)?
            .into_iter()
            .map(|(hour, intensity_mg_per_kwh, measured_mg)| {
                (
                    hour,
                    CoverageHour {
                        hour,
                        intensity_mg_per_kwh,
                        measured_mg,
                        ..CoverageHour::default()
                    },
                )
            })
            .collect();
        Ok(Tally {
            statement,
            hellos,
            hours,
            seen: BTreeSet::new(),
            order: Vec::new(),
        })
    }

    /// What retiring `c` for `hour` covers, and records it.
    fn apply(&mut self, c: &Certificate, hour: u64) -> Result<u64, CoverageError> {
        check_certificate(c)?;
        if self.seen.contains(&c.id) {
            return Err(CoverageError::AlreadyRetired(c.id.clone()));
        }
        let hour_start = hour.saturating_mul(MS_PER_HOUR);
        if let Some(hello) = hello_at(self.hellos, TimestampMs(hour_start)).or(self.hellos.first())
        {
            let region = &hello.site.grid_region;
            if !region.eq_ignore_ascii_case(&c.region) {
                return Err(CoverageError::WrongRegion {
                    id: c.id.clone(),
                    certificate: c.region.clone(),
                    device: region.clone(),
                    hour,
                });
            }
        }
        if !matches_hour(c, hour) {
            return Err(CoverageError::WrongHour {
                id: c.id.clone(),
                scheme: c.scheme.as_str(),
                start: c.start.0,
                end: c.end.0,
                hour,
                hour_start,
                hour_end: hour_start.saturating_add(MS_PER_HOUR),
            });
        }
        let line = match self.hours.get_mut(&hour) {
            Some(l) if l.measured_mg > 0 => l,
            _ => return Err(CoverageError::NoEmissions(hour)),
        };
        let left = line.measured_mg - line.granular_mg - line.rec_mg;
        if left == 0 {
            return Err(CoverageError::Covered {
                hour,
                measured_mg: line.measured_mg,
            });
        }
        let energy = Millijoules(c.volume_wh.saturating_mul(MJ_PER_WH));
        let covered = emissions_mg(energy, line.intensity_mg_per_kwh).min(left);
        if covered == 0 {
            // Too small a certificate to cover a whole milligram: nothing to retire it for.
            return Err(CoverageError::NoEmissions(hour));
        }
        match c.scheme {
            CertificateScheme::Granular => line.granular_mg += covered,
            CertificateScheme::Rec => line.rec_mg += covered,
        }
        self.seen.insert(c.id.clone());
        self.order.push(c.id.clone());
        Ok(covered)
    }

    fn finish(self) -> Coverage {
        let hours: Vec<CoverageHour> = self
            .hours
            .into_values()
            .filter(|h| h.measured_mg > 0 || h.granular_mg > 0 || h.rec_mg > 0)
            .collect();
        Coverage {
            measured_mg: self.statement.job.map_or(0, |j| j.co2e_mg),
            granular_mg: hours.iter().map(|h| h.granular_mg).sum(),
            rec_mg: hours.iter().map(|h| h.rec_mg).sum(),
            hours,
            certificates: self.order,
        }
    }
}

fn subject_job(statement: &Statement) -> Result<(DeviceId, JobId), CoverageError> {
    match statement.subject {
        Subject::Job { device, job } => Ok((device, job)),
        Subject::DevicePeriod { .. } => Err(CoverageError::NotAJob),
    }
}

/// Checks a job's retirements against its statement (in `id` order, as the controller
/// applied them) and gives its coverage. `hellos` are the device's, every version.
pub fn cover(
    statement: &Statement,
    hellos: &[Hello],
    retirements: &[Retirement],
) -> Result<Coverage, CoverageError> {
    let (device, job) = subject_job(statement)?;
    let mut sorted: Vec<&Retirement> = retirements.iter().collect();
    sorted.sort_by_key(|r| r.id);
    let mut tally = Tally::new(statement, hellos)?;
    for r in sorted {
        if r.job != job || r.device != device {
            return Err(CoverageError::OtherJob {
                id: r.id,
                job: r.job,
                device: r.device,
            });
        }
        let computed = tally.apply(&r.certificate, r.hour)?;
        if computed != r.covered_mg {
            return Err(CoverageError::Misstated {
                id: r.id,
                stated: r.covered_mg,
                computed,
            });
        }
    }
    Ok(tally.finish())
}

/// What retiring `certificate` for `hour` would cover after the job's `earlier`
/// retirements (which must check), or why it is refused.
pub fn covers(
    statement: &Statement,
    hellos: &[Hello],
    earlier: &[Retirement],
    certificate: &Certificate,
    hour: u64,
) -> Result<u64, CoverageError> {
    cover(statement, hellos, earlier)?;
    let mut sorted: Vec<&Retirement> = earlier.iter().collect();
    sorted.sort_by_key(|r| r.id);
    let mut tally = Tally::new(statement, hellos)?;
    for r in sorted {
        tally.apply(&r.certificate, r.hour)?;
    }
    tally.apply(certificate, hour)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::{BatteryState, EnergyBySource, HourLine};
    use crate::hash::Hash32;
    use crate::msg::{JobAccount, TrustTier};
    use alloc::string::ToString;
    use alloc::vec;

    const H: u64 = 490_000; // an hour index in 2025

    fn statement() -> Statement {
        let line = |hour: u64, grid_mj: u64, co2e_mg: u64| HourLine {
            hour,
            intensity_mg_per_kwh: 400_000,
            dataset: Hash32::ZERO,
            energy: EnergyBySource {
                grid_import: Millijoules(grid_mj),
                load: Millijoules(grid_mj * 2),
                ..EnergyBySource::default()
            },
            renewable: Millijoules(grid_mj),
            co2e_mg,
        };
        // Two hours: 36 kJ of grid each (4000 mg at 400 g/kWh), load 72 kJ each.
        let hours = vec![line(H, 36_000_000, 4000), line(H + 1, 36_000_000, 4000)];
        Statement {
            subject: Subject::Job {
                device: DeviceId([7; 16]),
                job: JobId([1; 16]),
            },
            from: TimestampMs(H * MS_PER_HOUR),
            to: TimestampMs((H + 2) * MS_PER_HOUR - 1),
            energy: EnergyBySource {
                grid_import: Millijoules(72_000_000),
                load: Millijoules(144_000_000),
                ..EnergyBySource::default()
            },
            renewable: Millijoules(72_000_000),
            renewable_share_ppm: 500_000,
            co2e_mg: 8000,
            battery_initial: BatteryState::default(),
            battery_final: BatteryState::default(),
            hours,
            tier: TrustTier::SoftwareEstimate,
            flags: vec![],
            // Half the load: half of each hour's emissions.
            job: Some(JobAccount {
                energy: Millijoules(72_000_000),
                renewable: Millijoules(36_000_000),
                co2e_mg: 4000,
            }),
            sci: None,
        }
    }

    fn hello(region: &str) -> Hello {
        let mut h: Hello = crate::sample::SampleDevice::new(3).hello().open().unwrap();
        h.site.grid_region = region.to_string();
        h.timestamp = TimestampMs(0);
        h
    }

    fn cert(id: &str, scheme: CertificateScheme, start: u64, end: u64, wh: u64) -> Certificate {
        Certificate {
            id: id.into(),
            scheme,
            start: TimestampMs(start),
            end: TimestampMs(end),
            source: "solar".into(),
            technology: "photovoltaic".into(),
            producer: "KE-PV-0042".into(),
            region: "KE".into(),
            volume_wh: wh,
            issuer: "Test registry".into(),
        }
    }

    fn granular(id: &str, hour: u64, wh: u64) -> Certificate {
        cert(
            id,
            CertificateScheme::Granular,
            hour * MS_PER_HOUR,
            (hour + 1) * MS_PER_HOUR,
            wh,
        )
    }

    fn retired(id: u64, c: Certificate, hour: u64, covered_mg: u64) -> Retirement {
        Retirement {
            id,
            certificate: c,
            job: JobId([1; 16]),
            device: DeviceId([7; 16]),
            hour,
            account: 2,
            covered_mg,
            at: TimestampMs(0),
        }
    }

    #[test]
    fn the_jobs_hours_are_each_hours_emissions_pro_rata_of_its_energy() {
        let hours = job_hours(&statement()).unwrap();
        assert_eq!(hours, vec![(H, 400_000, 2000), (H + 1, 400_000, 2000)]);
    }

    #[test]
    fn a_certificate_covers_its_energy_at_the_hours_intensity_and_never_more_than_is_left() {
        let s = statement();
        let hellos = [hello("ke")];
        // 2 Wh at 400 g/kWh: 800 mg.
        let c1 = granular("GC-1", H, 2);
        assert_eq!(covers(&s, &hellos, &[], &c1, H), Ok(800));
        // 10 Wh would be 4000 mg; 1200 are left.
        let first = [retired(1, c1, H, 800)];
        let c2 = granular("GC-2", H, 10);
        assert_eq!(covers(&s, &hellos, &first, &c2, H), Ok(1200));
        let both = [first[0].clone(), retired(2, c2, H, 1200)];
        assert_eq!(
            covers(&s, &hellos, &both, &granular("GC-3", H, 1), H),
            Err(CoverageError::Covered {
                hour: H,
                measured_mg: 2000
            })
        );
        let c = cover(&s, &hellos, &both).unwrap();
        assert_eq!(
            (c.measured_mg, c.granular_mg, c.rec_mg),
            (4000, 2000, 0),
            "{c:?}"
        );
        assert_eq!(c.hours[1].granular_mg, 0);
        assert_eq!(c.certificates, vec!["GC-1".to_string(), "GC-2".into()]);
    }

    #[test]
    fn a_certificate_retired_twice_for_the_wrong_hour_or_region_is_refused() {
        let s = statement();
        let hellos = [hello("KE")];
        let c = granular("GC-1", H, 1);
        let first = [retired(1, c.clone(), H, 400)];
        assert_eq!(
            covers(&s, &hellos, &first, &c, H + 1),
            Err(CoverageError::AlreadyRetired("GC-1".into()))
        );
        assert!(matches!(
            covers(&s, &hellos, &[], &c, H + 1),
            Err(CoverageError::WrongHour { hour, .. }) if hour == H + 1
        ));
        let mut far = c.clone();
        far.region = "DE".into();
        assert!(matches!(
            covers(&s, &hellos, &[], &far, H),
            Err(CoverageError::WrongRegion { ref device, .. }) if device == "KE"
        ));
        // An hour the job did not run in.
        assert_eq!(
            covers(&s, &hellos, &[], &granular("GC-9", H + 5, 1), H + 5),
            Err(CoverageError::NoEmissions(H + 5))
        );
    }

    #[test]
    fn a_rec_matches_any_hour_of_its_year_and_is_reported_apart() {
        let s = statement();
        let hellos = [hello("KE")];
        let year = cert(
            "REC-2025-77",
            CertificateScheme::Rec,
            (H - 100) * MS_PER_HOUR,
            (H + 8000) * MS_PER_HOUR,
            1000,
        );
        let c = cover(&s, &hellos, &[retired(4, year.clone(), H + 1, 2000)]).unwrap();
        assert_eq!((c.granular_mg, c.rec_mg), (0, 2000));
        let mut short = year.clone();
        short.end = TimestampMs(H * MS_PER_HOUR + 1);
        assert!(matches!(
            covers(&s, &hellos, &[], &short, H),
            Err(CoverageError::WrongHour { .. })
        ));
        let mut long = year;
        long.end = TimestampMs(long.start.0 + MAX_REC_MS + 1);
        assert!(matches!(
            check_certificate(&long),
            Err(CertificateError::RecTooLong { days: 367, .. })
        ));
    }

    #[test]
    fn malformed_certificates_are_refused_with_their_reason() {
        let ok = granular("GC-1", H, 1);
        assert_eq!(check_certificate(&ok), Ok(()));
        let mut c = ok.clone();
        c.id = " ".into();
        assert_eq!(check_certificate(&c), Err(CertificateError::NoId));
        let mut c = ok.clone();
        c.volume_wh = 0;
        assert!(matches!(
            check_certificate(&c),
            Err(CertificateError::NoVolume(_))
        ));
        let mut c = ok.clone();
        c.end = c.start;
        assert!(matches!(
            check_certificate(&c),
            Err(CertificateError::EmptyInterval { .. })
        ));
        let mut c = ok.clone();
        c.end = TimestampMs(c.end.0 + 1);
        assert!(matches!(
            check_certificate(&c),
            Err(CertificateError::GranularAcrossHours { .. })
        ));
        let mut c = ok;
        c.issuer = "x".repeat(300);
        assert!(matches!(
            check_certificate(&c),
            Err(CertificateError::Text { .. })
        ));
    }

    #[test]
    fn a_misstated_or_foreign_retirement_fails_the_check() {
        let s = statement();
        let hellos = [hello("KE")];
        assert_eq!(
            cover(&s, &hellos, &[retired(1, granular("GC-1", H, 1), H, 401)]),
            Err(CoverageError::Misstated {
                id: 1,
                stated: 401,
                computed: 400
            })
        );
        let mut other = retired(1, granular("GC-1", H, 1), H, 400);
        other.job = JobId([2; 16]);
        assert!(matches!(
            cover(&s, &hellos, &[other]),
            Err(CoverageError::OtherJob { id: 1, .. })
        ));
        let mut period = s;
        period.subject = Subject::DevicePeriod {
            device: DeviceId([7; 16]),
        };
        assert_eq!(cover(&period, &hellos, &[]), Err(CoverageError::NotAJob));
    }
}
