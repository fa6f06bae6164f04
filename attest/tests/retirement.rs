//! Certificates retired for a job: a job's bundle carries each controller-signed
//! `Retirement` with its inclusion proof, the verifier applies the coverage rules to the
//! recomputed statement and reports measured and covered emissions apart; a retirement
//! that is forged, misstated, for another hour or region, repeated or not in the tree is
//! refused by the check that guards it.

use attest::bundle::{Check, ProofBundle, VerifyOptions, verify};
use attest::coverage::{self, Coverage};
use attest::msg::{
    Certificate, CertificateScheme, ChainMessage, Hello, Retirement, Statement, Subject,
};
use attest::sample::{self, SAMPLE_START};
use attest::units::MS_PER_HOUR;
use attest::{Envelope, EpochId, KeyPair, TimestampMs};

fn controller() -> KeyPair {
    KeyPair::from_seed(&[0xc0; 32])
}

fn opts() -> VerifyOptions {
    VerifyOptions::pinned(
        controller().public(),
        TimestampMs(SAMPLE_START.0 + 30 * 86_400_000),
    )
}

struct Job {
    hello: Envelope,
    hello_msg: Hello,
    chain: Vec<Envelope>,
    statement: Statement,
    /// The first hour with emissions, and what the job emitted in it.
    hour: u64,
    measured: u64,
}

fn job() -> Job {
    let (hello, chain, _, _) = sample::job_chain_on(0, 4);
    let messages: Vec<ChainMessage> = chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let hello_msg: Hello = hello.open().unwrap();
    let statement = sample::statement(&hello_msg, &messages, sample::job_subject(), TimestampMs(0));
    let (hour, _, measured) = coverage::job_hours(&statement)
        .unwrap()
        .into_iter()
        .find(|h| h.2 > 0)
        .unwrap_or_else(|| {
            panic!("the sample job runs partly on the grid at night: {statement:#?}")
        });
    Job {
        hello,
        hello_msg,
        chain,
        statement,
        hour,
        measured,
    }
}

fn granular(id: &str, hour: u64, region: &str, wh: u64) -> Certificate {
    Certificate {
        id: id.into(),
        scheme: CertificateScheme::Granular,
        start: TimestampMs(hour * MS_PER_HOUR),
        end: TimestampMs((hour + 1) * MS_PER_HOUR),
        source: "wind".into(),
        technology: "onshore wind turbine".into(),
        producer: "DE-WIND-17".into(),
        region: region.into(),
        volume_wh: wh,
        issuer: "Granular Registry Test".into(),
    }
}

/// A 1 Wh granular certificate of the job's first hour with emissions, and what it covers
/// there.
fn first(j: &Job) -> (Certificate, u64) {
    let c = granular("GC-DE-1", j.hour, "DE", 1);
    let covered = coverage::covers(
        &j.statement,
        std::slice::from_ref(&j.hello_msg),
        &[],
        &c,
        j.hour,
    )
    .unwrap();
    (c, covered)
}

fn retirement(
    j: &Job,
    id: u64,
    certificate: Certificate,
    hour: u64,
    covered_mg: u64,
) -> Retirement {
    let Subject::Job { device, job } = j.statement.subject else {
        unreachable!()
    };
    Retirement {
        id,
        certificate,
        job,
        device,
        hour,
        account: 2,
        covered_mg,
        at: TimestampMs(SAMPLE_START.0 + 2 * MS_PER_HOUR),
    }
}

fn bundle(j: &Job, retirements: &[Retirement], key: &KeyPair) -> ProofBundle {
    let sealed: Vec<Envelope> = retirements.iter().map(|r| Envelope::seal(r, key)).collect();
    sample::bundle_with_retirements(
        &j.hello,
        &j.chain,
        &controller(),
        EpochId(3),
        &j.statement,
        &sealed,
    )
}

fn refused(b: &ProofBundle) -> (Check, String) {
    let e = verify(b, &opts()).expect_err("a bad retirement verified");
    (e.check, e.detail)
}

#[test]
fn a_jobs_retirements_verify_and_show_measured_and_covered_apart() {
    let j = job();
    // 1 Wh at the hour's intensity: less than the job's emissions in the hour.
    let (c, covered) = first(&j);
    assert!(
        covered > 0 && covered < j.measured,
        "{covered} of {}",
        j.measured
    );
    let r = retirement(&j, 1, c, j.hour, covered);
    let report = verify(&bundle(&j, &[r], &controller()), &opts()).unwrap();
    let Coverage {
        measured_mg,
        granular_mg,
        rec_mg,
        ..
    } = report.coverage.clone().unwrap();
    let job = report.statement.job.unwrap();
    assert_eq!(measured_mg, job.co2e_mg);
    assert_eq!((granular_mg, rec_mg), (covered, 0));
    // Never netted: the statement's SCI is the measured one, retirement or not.
    assert_eq!(report.statement.sci, j.statement.sci);
    assert_eq!(report.statement.sci.unwrap().operational_mg, job.co2e_mg);
    // A job with no retirement reports none covered.
    let plain = verify(&bundle(&j, &[], &controller()), &opts()).unwrap();
    assert_eq!(plain.coverage.unwrap().granular_mg, 0);
}

#[test]
fn a_retirement_signed_by_another_key_or_misstated_is_refused() {
    let j = job();
    let (c, covered) = first(&j);
    let r = retirement(&j, 1, c, j.hour, covered);
    let (check, why) = refused(&bundle(
        &j,
        std::slice::from_ref(&r),
        &KeyPair::from_seed(&[9; 32]),
    ));
    assert_eq!(check, Check::Retirement, "{why}");
    // The controller overstates what the certificate covers.
    let mut more = r;
    more.covered_mg += 1;
    let (check, why) = refused(&bundle(&j, &[more], &controller()));
    assert_eq!(check, Check::Retirement);
    assert!(why.contains("the rules give"), "{why}");
}

#[test]
fn a_retirement_for_the_wrong_hour_or_region_or_twice_is_refused_with_the_reason() {
    let j = job();
    let hellos = [j.hello_msg.clone()];
    let (c, covered) = first(&j);
    // Produced in the hour after the one it is retired for.
    let late = granular("GC-DE-2", j.hour + 1, "DE", 1);
    let e = coverage::covers(&j.statement, &hellos, &[], &late, j.hour).unwrap_err();
    assert!(e.to_string().contains("does not match hour"), "{e}");
    let (check, why) = refused(&bundle(
        &j,
        &[retirement(&j, 1, late, j.hour, covered)],
        &controller(),
    ));
    assert_eq!(check, Check::Retirement);
    assert!(why.contains("does not match hour"), "{why}");
    // Produced in another grid region.
    let french = granular("GC-FR-1", j.hour, "FR", 1);
    let e = coverage::covers(&j.statement, &hellos, &[], &french, j.hour).unwrap_err();
    assert!(e.to_string().contains("region \"FR\""), "{e}");
    // The same certificate twice.
    let first = retirement(&j, 1, c.clone(), j.hour, covered);
    let e = coverage::covers(
        &j.statement,
        &hellos,
        std::slice::from_ref(&first),
        &c,
        j.hour,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "certificate GC-DE-1 is retired already");
    let second = retirement(&j, 2, c, j.hour, covered);
    let (check, why) = refused(&bundle(&j, &[first, second], &controller()));
    assert_eq!(check, Check::Retirement);
    assert!(why.contains("retired already"), "{why}");
}

#[test]
fn a_retirement_not_in_the_anchored_tree_fails_inclusion() {
    let j = job();
    let (c, covered) = first(&j);
    let mut b = bundle(
        &j,
        &[retirement(&j, 1, c.clone(), j.hour, covered)],
        &controller(),
    );
    // Swapped for another, validly signed, retirement the epoch never held.
    let mut other = retirement(&j, 1, c, j.hour, covered);
    other.certificate.id = "GC-DE-99".into();
    b.retirements[0].envelope.0 = Envelope::seal(&other, &controller()).into_bytes();
    assert_eq!(refused(&b).0, Check::Inclusion);
}

#[test]
fn a_device_period_bundle_carries_no_retirement() {
    let j = job();
    let c = granular("GC-DE-1", j.hour, "DE", 1);
    let r = retirement(&j, 1, c, j.hour, 1);
    let messages: Vec<ChainMessage> = j
        .chain
        .iter()
        .map(|e| ChainMessage::open(e).unwrap())
        .collect();
    let period = sample::statement(
        &j.hello_msg,
        &messages,
        Subject::DevicePeriod {
            device: j.hello_msg.device,
        },
        TimestampMs(0),
    );
    let b = sample::bundle_with_retirements(
        &j.hello,
        &j.chain,
        &controller(),
        EpochId(3),
        &period,
        &[Envelope::seal(&r, &controller())],
    );
    let (check, why) = refused(&b);
    assert_eq!(check, Check::Retirement);
    assert!(why.contains("device-period"), "{why}");
}
