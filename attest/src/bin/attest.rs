//! `attest`: make keys, inspect any Heliostat message, and verify proof bundles offline or
//! against the chain that anchors them.
//!
//! Exit codes: 0 when everything holds, 1 when a verification check fails (the message
//! names the check), 2 for usage or I/O errors, 3 when `verify` is not given the trust to
//! pin (it prints UNPINNED and verifies nothing).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use attest::bundle::{Address, AnchorRef, EvmPin, ProofBundle, Trust, VerifyOptions};
use attest::msg::AnyMessage;
use attest::{Envelope, Hash32, KeyPair, PublicKey, TimestampMs, batch};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "attest",
    version,
    about = "Heliostat evidence tool: keys, message inspection, proof bundle verification"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an ed25519 key pair; writes the secret seed (hex) with file mode 0600.
    Keygen {
        /// Where to write the secret seed. Refuses to overwrite.
        #[arg(long)]
        out: PathBuf,
    },
    /// Decode an envelope, a batch of envelopes or a proof bundle to JSON (signatures not checked).
    Inspect {
        /// The file: raw bytes, or hex text.
        file: PathBuf,
    },
    /// Verify a proof bundle: the statement's signature, device signatures, chains,
    /// inclusion proofs, anchors, intensities against their datasets, recomputed numbers.
    Verify {
        /// The bundle (JSON or postcard).
        bundle: PathBuf,
        #[command(flatten)]
        args: VerifyArgs,
    },
    /// Verify a statement of account (`fleetctl statement`): every ledger entry signed by
    /// the controller you trust and anchored, the book's postings complete and its
    /// balances consistent. Exit 0 verified, 1 failed, 2 unusable, 3 no trust pinned.
    VerifyAccount {
        /// The statement (JSON).
        statement: PathBuf,
        #[command(flatten)]
        args: VerifyArgs,
    },
}

/// What `verify` is told to trust and accept.
#[derive(Args)]
struct VerifyArgs {
    /// The controller key you trust (hex): it must sign the statement and every local
    /// anchor. Required: without it nothing is verified (UNPINNED, exit 3).
    #[arg(long)]
    controller_key: Option<String>,
    /// For EVM anchors: the chain id you trust (with --contract).
    #[arg(long)]
    chain_id: Option<u64>,
    /// For EVM anchors: the anchor contract you trust, 0x-hex (with --chain-id).
    #[arg(long)]
    contract: Option<String>,
    /// JSON-RPC URL of an EVM node: also check that EVM-anchored roots are on chain.
    #[arg(long)]
    rpc: Option<String>,
    /// Accept an intensity dataset carried in the bundle, by digest (hex), after checking
    /// it yourself; repeatable. The bundled table needs no acceptance.
    #[arg(long = "accept-dataset")]
    accept_dataset: Vec<String>,
    /// Accept every carried intensity dataset (the report lists them as not bundled).
    #[arg(long)]
    allow_unknown_datasets: bool,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Keygen { out } => keygen(&out).map(|_| ExitCode::SUCCESS),
        Cmd::Inspect { file } => inspect(&file).map(|_| ExitCode::SUCCESS),
        Cmd::Verify { bundle, args } => verify(&bundle, args),
        Cmd::VerifyAccount { statement, args } => verify_account(&statement, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("attest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn keygen(out: &Path) -> Result<()> {
    let key = KeyPair::generate().context("reading the system random source")?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    writeln!(
        f,
        "{}",
        attest::hex::encode(&key.seed().expect("a generated key has its seed"))
    )
    .with_context(|| format!("writing {}", out.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", out.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "device_id": key.device_id().to_string(),
            "public_key": key.public().to_string(),
            "secret_file": out.display().to_string(),
        }))?
    );
    Ok(())
}

/// Reads a file as raw bytes, or as hex when it is entirely hex text.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(text) = std::str::from_utf8(&raw) {
        let t = text.trim();
        if let Some(b) = Some(t)
            .filter(|t| !t.is_empty() && !t.starts_with('{'))
            .and_then(|t| attest::hex::decode(t).ok())
        {
            return Ok(b);
        }
    }
    Ok(raw)
}

fn envelope_json(env: &Envelope) -> serde_json::Value {
    let message = match AnyMessage::open(env) {
        Ok(m) => serde_json::to_value(&m).unwrap_or_else(|e| json!({"error": e.to_string()})),
        Err(e) => json!({"error": e.to_string()}),
    };
    json!({
        "version": env.as_bytes()[0],
        "kind": env.kind().to_string(),
        "length": env.as_bytes().len(),
        "hash": env.hash().to_hex(),
        "signature": attest::hex::encode(&env.signature()),
        "decoded": message,
    })
}

fn inspect(path: &Path) -> Result<()> {
    let bytes = read_bytes(path)?;
    let out = if batch::is_batch(&bytes) {
        let items = batch::decode(&bytes).context("decoding batch")?;
        json!({"batch": items.iter().map(|i| match i {
            Ok(env) => envelope_json(env),
            Err(e) => json!({"error": e.to_string()}),
        }).collect::<Vec<_>>()})
    } else {
        match Envelope::decode(&bytes) {
            Ok(env) => envelope_json(&env),
            Err(env_err) => match ProofBundle::decode(&bytes) {
                Ok(b) => serde_json::to_value(&b)?,
                Err(b_err) => bail!("not an envelope ({env_err}) nor a bundle ({b_err})"),
            },
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The options `args` pin; `None` (after saying so) when no controller key is pinned.
fn options(args: &VerifyArgs) -> Result<Option<VerifyOptions>> {
    let Some(controller_key) = args.controller_key.as_deref() else {
        println!(
            "UNPINNED: pass --controller-key with the controller key you trust; \
             a bundle's own keys prove nothing"
        );
        return Ok(None);
    };
    let controller_key = attest::hex::decode_array::<32>(controller_key)
        .map(PublicKey)
        .context("--controller-key")?;
    let evm = match (args.chain_id, args.contract.as_deref()) {
        (Some(chain_id), Some(c)) => Some(EvmPin {
            chain_id,
            contract: Address(
                attest::hex::decode_array::<20>(c.trim_start_matches("0x"))
                    .context("--contract")?,
            ),
        }),
        (None, None) => None,
        _ => bail!("--chain-id and --contract go together"),
    };
    let accepted_datasets = args
        .accept_dataset
        .iter()
        .map(|d| attest::hex::decode_array::<32>(d).map(Hash32))
        .collect::<Result<Vec<_>, _>>()
        .context("--accept-dataset")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(Some(VerifyOptions {
        trust: Trust {
            controller_key,
            evm,
        },
        now: TimestampMs(now),
        accepted_datasets,
        any_dataset: args.allow_unknown_datasets,
    }))
}

/// `attest verify-account`.
fn verify_account(path: &Path, args: VerifyArgs) -> Result<ExitCode> {
    let Some(opts) = options(&args)? else {
        return Ok(ExitCode::from(3));
    };
    if args.rpc.is_some() {
        bail!(
            "--rpc is not supported for statements of account yet (EVM anchors are checked offline)"
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let report = match attest::bundle::AccountProof::decode(&bytes)
        .and_then(|p| attest::bundle::verify_account(&p, &opts))
    {
        Ok(r) => r,
        Err(e) => {
            println!("FAILED: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "verified: {} holds {} micro-credits after {} postings, all accounted for{}",
            report.book,
            report.balance,
            report.postings,
            report.through_epoch.map_or(String::new(), |e| format!(
                " (anchored through epoch {})",
                e.0
            ))
        );
        if report.onchain_unchecked {
            println!("  some anchors are on an EVM chain and were checked offline only");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(path: &Path, args: VerifyArgs) -> Result<ExitCode> {
    let Some(opts) = options(&args)? else {
        return Ok(ExitCode::from(3));
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (rpc, as_json) = (args.rpc.as_deref(), args.json);
    let report = match ProofBundle::decode(&bytes).and_then(|b| attest::bundle::verify(&b, &opts)) {
        Ok(r) => r,
        Err(e) => {
            println!("FAILED: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut onchain = Vec::new();
    if let Some(url) = rpc {
        for (epoch, head, anchor) in &report.anchors {
            if let AnchorRef::Evm {
                chain_id,
                contract,
                tx_hash,
                block_number,
            } = anchor
            {
                match attest::evm::check_anchor(
                    url,
                    *epoch,
                    head,
                    *chain_id,
                    contract,
                    tx_hash,
                    *block_number,
                ) {
                    Ok(a) => onchain.push(
                        json!({"epoch": epoch.0, "block": a.block_number, "root": a.root.to_hex()}),
                    ),
                    Err(e) => {
                        println!("FAILED: check `anchor` failed: on chain: {e}");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
        }
    }
    let s = &report.statement;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"ok": true, "report": report, "onchain": onchain})
            )?
        );
    } else {
        println!("OK: {:?}", s.subject);
        println!(
            "  evidence: {} chain messages ({} meter records), {} epoch(s)",
            report.evidence,
            report.records,
            report.anchors.len()
        );
        println!(
            "  energy: load {:.6} kWh, solar {:.6} kWh, grid import {:.6} kWh",
            s.energy.load.kwh(),
            s.energy.solar.kwh(),
            s.energy.grid_import.kwh()
        );
        println!(
            "  renewable (hourly matched): {:.4} %, emissions {:.3} g CO2e",
            s.renewable_share_ppm as f64 / 10_000.0,
            s.co2e_mg as f64 / 1000.0,
        );
        println!(
            "  battery at the start (derived from the chain): {:.6} kWh, {:.6} kWh of it renewable",
            s.battery_initial.stored.kwh(),
            s.battery_initial.renewable.kwh()
        );
        for d in &report.datasets {
            println!(
                "  intensity: {} h from {} ({}){}",
                d.hours,
                d.name,
                d.digest,
                if d.bundled {
                    ""
                } else {
                    " NOT BUNDLED with this verifier: accepted on your word"
                }
            );
        }
        println!(
            "  trust tier: {:?}, {} plausibility flag(s) recomputed",
            s.tier,
            s.flags.len()
        );
        if let (Some(job), Some(sci)) = (&s.job, &s.sci) {
            println!(
                "  job: {:.6} kWh, {:.3} g CO2e operational, {:.3} g embodied (from the hello)",
                job.energy.kwh(),
                sci.operational_mg as f64 / 1000.0,
                sci.embodied_mg as f64 / 1000.0
            );
        }
        if let Some(c) = &report.coverage {
            // Side by side, never netted: the SCI above is the measured one.
            println!(
                "  certificates: {} retired; of the job's {:.3} g CO2e measured, {:.3} g covered by granular certificates of the same hour, {:.3} g by yearly RECs (not netted into SCI)",
                c.certificates.len(),
                c.measured_mg as f64 / 1000.0,
                c.granular_mg as f64 / 1000.0,
                c.rec_mg as f64 / 1000.0
            );
        }
        for (epoch, head, anchor) in &report.anchors {
            match anchor {
                AnchorRef::Local { controller_key, .. } => {
                    println!(
                        "  epoch {epoch}: root {} ({} leaves), local log signed by {controller_key}",
                        head.root, head.size
                    )
                }
                AnchorRef::Evm {
                    chain_id,
                    block_number,
                    ..
                } => println!(
                    "  epoch {epoch}: root {} ({} leaves), EVM chain {chain_id} block {block_number}{}",
                    head.root,
                    head.size,
                    if rpc.is_some() {
                        " (checked on chain)"
                    } else {
                        " (not checked on chain: pass --rpc)"
                    }
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
