//! The offline verifier: [`verify`] runs the checks of [`Check`] in order and stops at the
//! first that fails (docs/protocol.md, section 8).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use super::anchors::{check_anchors, check_inclusion};
use super::{
    BUNDLE_FORMAT, Check, DatasetUse, MAX_BUNDLE_DATASETS, MAX_BUNDLE_RETIREMENTS,
    OLDEST_BUNDLE_FORMAT, ProofBundle, Report, VerifyError, VerifyOptions, fail,
};
use crate::account::{StatementInput, compute_statement};
use crate::chain::{ChainPolicy, ChainVerifier, Outcome};
use crate::coverage::Coverage;
use crate::envelope::{Envelope, Verified};
use crate::hash::Hash32;
use crate::id::DeviceId;
use crate::intensity::{Dataset, Figure, RegionTable, bundled_digest};
use crate::keys::KeyHistory;
use crate::msg::{ChainMessage, Hello, Retirement, Statement, hello_at};
use crate::units::TimestampMs;

struct Item {
    index: usize,
    envelope: Envelope,
    msg: ChainMessage,
}

/// Verifies a bundle offline. See the module documentation for what is checked.
pub fn verify(bundle: &ProofBundle, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    // Format.
    let old_format = bundle.format == OLDEST_BUNDLE_FORMAT && bundle.key_rotations.is_empty();
    if bundle.format != BUNDLE_FORMAT && !old_format {
        return fail(
            Check::Format,
            format!(
                "bundle format {} (this verifier reads {OLDEST_BUNDLE_FORMAT} to {BUNDLE_FORMAT})",
                bundle.format
            ),
        );
    }
    if bundle.evidence.is_empty() {
        return fail(Check::Format, "the bundle holds no evidence");
    }
    if bundle.retirements.len() > MAX_BUNDLE_RETIREMENTS {
        return fail(
            Check::Format,
            format!(
                "{} retirements, at most {MAX_BUNDLE_RETIREMENTS}",
                bundle.retirements.len()
            ),
        );
    }
    if bundle.datasets.len() > MAX_BUNDLE_DATASETS {
        return fail(
            Check::Format,
            format!(
                "{} datasets, at most {MAX_BUNDLE_DATASETS}",
                bundle.datasets.len()
            ),
        );
    }

    // The controller's keys: the pinned one, and the line of rotations it is part of.
    let keys = KeyHistory::from_links(opts.trust.controller_key, &bundle.key_rotations)
        .or_else(|e| fail(Check::Statement, format!("controller keys: {e}")))?;

    // The statement, signed by the newest controller key (it was made last).
    let statement_env = Envelope::decode(&bundle.statement.0)
        .or_else(|e| fail(Check::Statement, format!("statement: {e}")))?;
    statement_env.verify(&keys.newest()).or_else(|e| {
        fail(
            Check::Statement,
            format!(
                "statement: {e} under the controller key {} (pinned {})",
                keys.newest(),
                opts.trust.controller_key
            ),
        )
    })?;
    let stated: Statement = statement_env
        .open()
        .or_else(|e| fail(Check::Statement, format!("statement: {e}")))?;

    // Devices: every hello of each (its versions, judged by time).
    let mut hellos: BTreeMap<DeviceId, Vec<Hello>> = BTreeMap::new();
    for (i, blob) in bundle.devices.iter().enumerate() {
        let env = Envelope::decode(&blob.0)
            .or_else(|e| fail(Check::Device, format!("device #{i}: {e}")))?;
        let hello: Hello = env
            .open()
            .or_else(|e| fail(Check::Device, format!("device #{i}: {e}")))?;
        env.verify(&hello.public_key).or_else(|e| {
            fail(
                Check::Device,
                format!("device #{i} ({}): hello {e}", hello.device),
            )
        })?;
        hellos.entry(hello.device).or_default().push(hello);
    }
    for (device, versions) in hellos.iter_mut() {
        versions.sort_by_key(|h| h.timestamp);
        if let Some(w) = versions
            .windows(2)
            .find(|w| w[0].timestamp == w[1].timestamp)
        {
            return fail(
                Check::Device,
                format!(
                    "two hellos of {device} at the same time {}",
                    w[0].timestamp.0
                ),
            );
        }
    }
    let subject_device = stated.subject.device();
    let Some(subject_hellos) = hellos.get(&subject_device).cloned() else {
        return fail(
            Check::Device,
            format!("no hello for the statement's device {subject_device}"),
        );
    };

    // Decode evidence.
    let mut items = Vec::with_capacity(bundle.evidence.len());
    for (index, ev) in bundle.evidence.iter().enumerate() {
        let envelope = Envelope::decode(&ev.envelope.0)
            .or_else(|e| fail(Check::Decode, format!("evidence #{index}: {e}")))?;
        let msg = ChainMessage::open(&envelope)
            .or_else(|e| fail(Check::Decode, format!("evidence #{index}: {e}")))?;
        if !hellos.contains_key(&msg.link().device) {
            return fail(
                Check::Decode,
                format!(
                    "evidence #{index}: no hello for device {}",
                    msg.link().device
                ),
            );
        }
        items.push(Item {
            index,
            envelope,
            msg,
        });
    }

    // Signatures, in one batch (split over the cores with std); on failure, one by one to
    // name the bad one.
    verify_signatures(&items, &hellos)?;
    checks_after_signatures(
        bundle,
        opts,
        &keys,
        &stated,
        &items,
        &hellos,
        &subject_hellos,
    )
}

/// Chain, inclusion, anchor, intensity and recomputation checks (everything after
/// signatures).
fn checks_after_signatures(
    bundle: &ProofBundle,
    opts: &VerifyOptions,
    keys: &KeyHistory,
    stated: &Statement,
    items: &[Item],
    hellos: &BTreeMap<DeviceId, Vec<Hello>>,
    subject_hellos: &[Hello],
) -> Result<Report, VerifyError> {
    let subject_device = subject_hellos[0].device;
    // Chains, per device, in sequence order. The subject's must start where its chain
    // starts (sequence 0 with a zero `prev`, or a restart): the battery's content at the
    // period's start is derived from there.
    let mut order: Vec<&Item> = items.iter().collect();
    order.sort_by_key(|it| (it.msg.link().device, it.msg.link().seq));
    let mut chain: Vec<ChainMessage> = Vec::with_capacity(items.len());
    let mut verifier: Option<ChainVerifier> = None;
    for it in order {
        let device = it.msg.link().device;
        let first = verifier.as_ref().is_none_or(|v| v.device() != device);
        if first {
            let key = &hellos[&device][0].public_key;
            let policy = ChainPolicy {
                window: 1,
                ..ChainPolicy::default()
            };
            let v = if device == subject_device {
                ChainVerifier::new(key, policy)
            } else {
                ChainVerifier::trust_first(key, policy)
            };
            verifier =
                Some(v.or_else(|_| {
                    fail(Check::Device, format!("device {device}: bad public key"))
                })?);
        }
        let v = verifier.as_mut().expect("set above");
        match v.feed_checked(&it.envelope, it.msg.clone(), opts.now) {
            Ok(Outcome::Accepted(verified)) => {
                let (_, msg) = Verified::into_parts(*verified);
                if device == subject_device {
                    chain.push(msg);
                }
            }
            Ok(Outcome::Duplicate { seq }) => {
                return fail(
                    Check::Chain,
                    format!("evidence #{}: seq {seq} appears twice", it.index),
                );
            }
            Err(e) if first && device == subject_device => {
                return fail(
                    Check::Chain,
                    format!(
                        "evidence #{}: {e}: the subject's evidence must start at its chain's start, \
                         from which the battery's content is derived",
                        it.index
                    ),
                );
            }
            Err(e) => return fail(Check::Chain, format!("evidence #{}: {e}", it.index)),
        }
    }

    // Inclusion proofs, then anchors.
    check_inclusion("evidence", &bundle.evidence, &bundle.epochs)?;
    check_inclusion("retirement", &bundle.retirements, &bundle.epochs)?;
    let onchain_unchecked = check_anchors(&bundle.epochs, opts, keys)?;

    // Intensities, each against its named dataset.
    let (figures, datasets) = check_intensities(bundle, opts, stated, subject_hellos)?;

    // Recompute the statement from the records and compare.
    let intensity = |hour: u64| {
        figures.get(&hour).copied().unwrap_or(Figure {
            mg_per_kwh: 0,
            dataset: Hash32::ZERO,
        })
    };
    let input = StatementInput {
        subject: stated.subject,
        hellos: subject_hellos,
        chain: &chain,
        from: stated.from,
        intensity: &intensity,
    };
    let computed = match compute_statement(&input) {
        Ok(s) => s,
        Err(e @ crate::account::AccountError::Carbon(_)) => {
            return fail(Check::Energy, e.to_string());
        }
        Err(e @ crate::account::AccountError::NoRecords) => {
            return fail(Check::Energy, e.to_string());
        }
        Err(e) => return fail(Check::Job, e.to_string()),
    };
    compare(stated, &computed)?;
    let coverage = check_retirements(bundle, keys, &computed, subject_hellos)?;

    Ok(Report {
        statement: computed,
        datasets,
        evidence: bundle.evidence.len(),
        records: chain.iter().filter(|m| m.as_record().is_some()).count(),
        anchors: bundle
            .epochs
            .iter()
            .map(|e| (e.epoch, e.head, e.anchor.clone()))
            .collect(),
        onchain_unchecked,
        coverage,
    })
}

/// Each retirement: signed by the controller key of its time, for this job, and applied in order
/// by the rules of [`crate::coverage`] to the recomputed statement (its inclusion in an
/// anchored epoch is checked with the evidence's). A job's coverage, even with none.
fn check_retirements(
    bundle: &ProofBundle,
    keys: &KeyHistory,
    statement: &Statement,
    hellos: &[Hello],
) -> Result<Option<Coverage>, VerifyError> {
    if statement.job.is_none() {
        if !bundle.retirements.is_empty() {
            return fail(
                Check::Retirement,
                "a device-period bundle carries retirements: certificates cover a job's emissions",
            );
        }
        return Ok(None);
    }
    let mut retirements = Vec::with_capacity(bundle.retirements.len());
    for (i, ev) in bundle.retirements.iter().enumerate() {
        let env = Envelope::decode(&ev.envelope.0)
            .or_else(|e| fail(Check::Retirement, format!("retirement #{i}: {e}")))?;
        let r: Retirement = env
            .open()
            .or_else(|e| fail(Check::Retirement, format!("retirement #{i}: {e}")))?;
        let key = keys.key_at(r.at);
        env.verify(&key).or_else(|e| {
            fail(
                Check::Retirement,
                format!("retirement #{i}: {e} under the controller key of its time {key}"),
            )
        })?;
        retirements.push(r);
    }
    crate::coverage::cover(statement, hellos, &retirements)
        .map(Some)
        .or_else(|e| fail(Check::Retirement, e.to_string()))
}

/// Each stated hour's figure, looked up in the dataset the hour names (the bundled table,
/// or one the bundle carries and the user accepted) for the subject's region.
fn check_intensities(
    bundle: &ProofBundle,
    opts: &VerifyOptions,
    stated: &Statement,
    hellos: &[Hello],
) -> Result<(BTreeMap<u64, Figure>, Vec<DatasetUse>), VerifyError> {
    let bundled = bundled_digest();
    let table = RegionTable::bundled().or_else(|e| fail(Check::Intensity, e.to_string()))?;
    let mut carried: BTreeMap<Hash32, &Dataset> = BTreeMap::new();
    for (i, d) in bundle.datasets.iter().enumerate() {
        d.validate()
            .or_else(|e| fail(Check::Format, format!("dataset #{i}: {e}")))?;
        carried.insert(d.digest(), d);
    }
    let mut figures = BTreeMap::new();
    let mut uses: Vec<DatasetUse> = Vec::new();
    for line in &stated.hours {
        // An hour is judged by the hello valid at its start.
        let hour_start = TimestampMs(line.hour.saturating_mul(crate::units::MS_PER_HOUR));
        let region = &hello_at(hellos, hour_start)
            .unwrap_or(&hellos[0])
            .site
            .grid_region;
        let (mg, name, is_bundled) = if line.dataset == bundled {
            (
                table.figure(region, line.hour),
                "bundled grid-intensity table",
                true,
            )
        } else if let Some(d) = carried.get(&line.dataset) {
            if !opts.any_dataset && !opts.accepted_datasets.contains(&line.dataset) {
                return fail(
                    Check::Intensity,
                    format!(
                        "hour {} takes its intensity from dataset {:?} ({}), which is not bundled \
                         with this verifier: check it and accept it by its digest \
                         (--accept-dataset {}) or accept any (--allow-unknown-datasets)",
                        line.hour,
                        d.name(),
                        line.dataset,
                        line.dataset
                    ),
                );
            }
            let Some(mg) = d.figure(region, line.hour) else {
                return fail(
                    Check::Intensity,
                    format!(
                        "hour {}: dataset {:?} ({}) has no figure for region {:?}",
                        line.hour,
                        d.name(),
                        line.dataset,
                        region
                    ),
                );
            };
            (mg, d.name(), false)
        } else {
            return fail(
                Check::Intensity,
                format!(
                    "hour {} names dataset {}, which is neither the bundled table nor carried in \
                     the bundle",
                    line.hour, line.dataset
                ),
            );
        };
        if mg != line.intensity_mg_per_kwh {
            return fail(
                Check::Intensity,
                format!(
                    "hour {}: stated {} mg/kWh, dataset {:?} ({}) gives {mg} for region {:?}",
                    line.hour, line.intensity_mg_per_kwh, name, line.dataset, region
                ),
            );
        }
        figures.insert(
            line.hour,
            Figure {
                mg_per_kwh: mg,
                dataset: line.dataset,
            },
        );
        match uses.iter_mut().find(|u| u.digest == line.dataset) {
            Some(u) => u.hours += 1,
            None => uses.push(DatasetUse {
                digest: line.dataset,
                name: name.to_string(),
                bundled: is_bundled,
                hours: 1,
            }),
        }
    }
    Ok((figures, uses))
}

fn verify_signatures(
    items: &[Item],
    hellos: &BTreeMap<DeviceId, Vec<Hello>>,
) -> Result<(), VerifyError> {
    let batch: Vec<crate::sigbatch::Item<'_>> = items
        .iter()
        .map(|it| crate::sigbatch::Item {
            message: it.envelope.signed_bytes(),
            signature: it.envelope.signature(),
            key: &hellos[&it.msg.link().device][0].public_key,
        })
        .collect();
    if crate::sigbatch::verify_all(&batch) {
        return Ok(());
    }
    for (it, b) in items.iter().zip(&batch) {
        if it.envelope.verify(b.key).is_err() {
            return fail(
                Check::Signature,
                format!(
                    "evidence #{} (seq {}): bad signature",
                    it.index,
                    it.msg.link().seq
                ),
            );
        }
    }
    fail(
        Check::Signature,
        "batch verification failed but no single signature did",
    )
}

fn compare(stated: &Statement, computed: &Statement) -> Result<(), VerifyError> {
    if stated.from != computed.from || stated.to != computed.to {
        return fail(
            Check::Energy,
            format!(
                "period stated {}..{} but the records span {}..{}",
                stated.from.0, stated.to.0, computed.from.0, computed.to.0
            ),
        );
    }
    if stated.hours.len() != computed.hours.len() {
        return fail(
            Check::Energy,
            format!(
                "{} hour lines stated, the records give {}",
                stated.hours.len(),
                computed.hours.len()
            ),
        );
    }
    for (s, c) in stated.hours.iter().zip(&computed.hours) {
        if s.hour != c.hour || s.energy != c.energy {
            return fail(
                Check::Energy,
                format!(
                    "hour {}: stated energy {:?}, recomputed {:?}",
                    s.hour, s.energy, c.energy
                ),
            );
        }
    }
    if stated.energy != computed.energy {
        return fail(
            Check::Energy,
            format!(
                "stated total {:?}, recomputed {:?}",
                stated.energy, computed.energy
            ),
        );
    }
    if stated.battery_initial != computed.battery_initial {
        return fail(
            Check::Carbon,
            format!(
                "battery content at the start stated {:?}, derived from the chain {:?}",
                stated.battery_initial, computed.battery_initial
            ),
        );
    }
    for (s, c) in stated.hours.iter().zip(&computed.hours) {
        if s.renewable != c.renewable || s.co2e_mg != c.co2e_mg {
            return fail(
                Check::Carbon,
                format!(
                    "hour {}: stated renewable {} / {} mg, recomputed {} / {} mg",
                    s.hour, s.renewable, s.co2e_mg, c.renewable, c.co2e_mg
                ),
            );
        }
    }
    if stated.renewable != computed.renewable
        || stated.renewable_share_ppm != computed.renewable_share_ppm
        || stated.co2e_mg != computed.co2e_mg
        || stated.battery_final != computed.battery_final
    {
        return fail(
            Check::Carbon,
            format!(
                "stated renewable {} ({} ppm), {} mg CO2e, battery {:?}; recomputed {} ({} ppm), {} mg, {:?}",
                stated.renewable,
                stated.renewable_share_ppm,
                stated.co2e_mg,
                stated.battery_final,
                computed.renewable,
                computed.renewable_share_ppm,
                computed.co2e_mg,
                computed.battery_final
            ),
        );
    }
    if stated.flags != computed.flags {
        return fail(
            Check::Tier,
            format!(
                "{} plausibility flags stated, the records raise {}: {:?}",
                stated.flags.len(),
                computed.flags.len(),
                computed
                    .flags
                    .iter()
                    .map(|f| (f.code, f.seq.0))
                    .collect::<Vec<_>>()
            ),
        );
    }
    if stated.tier != computed.tier {
        return fail(
            Check::Tier,
            format!("stated {:?}, recomputed {:?}", stated.tier, computed.tier),
        );
    }
    if stated.job != computed.job || stated.sci != computed.sci {
        return fail(
            Check::Job,
            format!(
                "stated {:?} {:?}, recomputed {:?} {:?}",
                stated.job, stated.sci, computed.job, computed.sci
            ),
        );
    }
    if stated != computed {
        return fail(
            Check::Carbon,
            "the statement differs from its recomputation in a field not named above",
        );
    }
    Ok(())
}
