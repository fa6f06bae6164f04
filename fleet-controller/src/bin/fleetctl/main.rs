//! `fleetctl`: the controller's HTTP API from a shell. Data goes to stdout (`--output json`
//! for scripts), progress and errors to stderr; an API error exits 1 naming its `reason`.
//!
//! The token comes from `--token-file`, else `FLEETCTL_TOKEN`; the API from `--url`, else
//! `FLEETCTL_URL`, else `http://127.0.0.1:8080`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use attest::Hash32;
use clap::{Parser, Subcommand, ValueEnum};

mod api;
mod certificates;
mod ledger;
mod logs;
mod market;
mod settlement;

use api::Api;
use logs::follow;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "Heliostat's controller API from a shell"
)]
struct Cli {
    /// The controller's API (else FLEETCTL_URL, else http://127.0.0.1:8080).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the API token (else FLEETCTL_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Text for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Who the token belongs to, its scopes and the account's blob usage.
    Account,
    /// Upload input files and submit a built-in job; follows it to the end unless --detach.
    Submit {
        /// The built-in kernel (sha256_batch, mandelbrot, matmul_f32).
        #[arg(long)]
        kernel: String,
        /// A kernel parameter, NAME=VALUE (repeat).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, i64)>,
        /// An input file, uploaded by its SHA-256 (repeat, in order).
        #[arg(long = "input")]
        inputs: Vec<PathBuf>,
        /// Due this many seconds from now.
        #[arg(long, default_value_t = 86_400)]
        deadline_in_s: u64,
        /// The price ceiling, micro-credits per GPU-hour.
        #[arg(long, default_value_t = 1_000_000)]
        max_price: u64,
        /// The least renewable share of its energy, 0..1.
        #[arg(long)]
        min_renewable: Option<f64>,
        /// May wait for the sun within its deadline.
        #[arg(long)]
        flexible: bool,
        /// Print the job and return instead of following it.
        #[arg(long)]
        detach: bool,
        /// Stop following after this many seconds (the job goes on).
        #[arg(long, default_value_t = 3_600)]
        follow_s: u64,
    },
    /// Your jobs, or one job with its history.
    Status { job: Option<String> },
    /// A job's events: its state changes with their reasons and its device's progress;
    /// with --follow, until it ends (resuming after a lost connection). With
    /// `--output json`, one JSON object a line.
    Logs {
        job: String,
        #[arg(long, short)]
        follow: bool,
        /// Stop following after this many seconds (the job goes on).
        #[arg(long, default_value_t = 86_400)]
        follow_s: u64,
    },
    /// Cancel a job.
    Cancel { job: String },
    /// A job's outputs; with --out, downloaded into that folder and checked by hash.
    Results {
        job: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A job's carbon proof from the device that ran it, verified here against the
    /// controller key you pin; written to --out.
    Proof {
        job: String,
        /// The device that ran it (default: the one the job was sent to).
        #[arg(long)]
        device: Option<String>,
        /// The controller's public key (hex) you trust.
        #[arg(long)]
        controller_key: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// The market: devices' offers with their state now and energy runway.
    Market(market::MarketArgs),
    /// The fleet's devices.
    Devices,
    /// Your credits: available, and held in escrow by your open jobs (micro-credits).
    Balance,
    /// Your ledger: deposits, escrows, payouts and refunds, newest first.
    History {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Your statement of account, verified here against the controller key you pin (every
    /// posting signed, anchored and accounted for); written to --out.
    Statement {
        /// The controller's public key (hex) you trust.
        #[arg(long)]
        controller_key: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Move credits into your stake (a provider; negative: withdraw, once none of your
    /// devices holds a job). A proven wrong result takes a share of it.
    Stake {
        #[arg(allow_negative_numbers = true)]
        amount: i64,
    },
    /// Where your earnings are paid on chain (a provider): an address, `0x` and 40 hex
    /// digits; registering one opts you into the settlement rounds.
    PayoutAddress { address: String },
    /// Your payouts on chain, newest first: round, amount, address, published or not. With
    /// `--output json`, each with its round's root and the proof a wallet sends to
    /// `claim(round, account, amount, proof)`.
    Settlements,
    /// Make a settlement round now (operator): every provider due is paid out of the
    /// ledger; the controller's settlement loop publishes the round on chain.
    Settle,
    /// The settlement rounds, newest first, and where each was published (operator).
    Rounds,
    /// The energy attribute certificates you hold (an operator: `--account N`, or all),
    /// each with its retirement once retired.
    Certificates {
        #[arg(long)]
        account: Option<u64>,
    },
    /// Import certificates bought on a registry into a buyer's holding (operator): FILE
    /// holds a JSON array of them (docs/controller.md, "Certificates").
    ImportCertificates {
        file: PathBuf,
        #[arg(long)]
        account: u64,
    },
    /// Retire a certificate you hold for one hour of your done job: it covers the job's
    /// emissions in that hour (never more), always shown apart from the measured ones.
    Retire {
        job: String,
        certificate: String,
        /// Hours since the Unix epoch, UTC (`fleetctl emissions JOB` lists the job's).
        #[arg(long)]
        hour: u64,
        /// The device whose run it covers (a job that ran on several).
        #[arg(long)]
        device: Option<String>,
    },
    /// A done job's emissions: measured, and the part retired certificates cover, hour by
    /// hour.
    Emissions {
        job: String,
        #[arg(long)]
        device: Option<String>,
    },
    /// Issue credits to an account, paid for outside the platform (operator).
    Credit {
        /// The account's number (`fleetctl account` shows yours).
        account: u64,
        /// Micro-credits.
        amount: u64,
        #[arg(long, default_value = "")]
        memo: String,
    },
    /// Shell completions on stdout (`fleetctl completions bash > /etc/bash_completion.d/fleetctl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Approve a pending device (operator); with --provider, say which provider runs it
    /// (only that provider's token then serves its jobs).
    Approve {
        device: String,
        #[arg(long)]
        provider: Option<String>,
    },
    /// Revoke a device (operator).
    Revoke { device: String },
}

fn parse_param(s: &str) -> Result<(String, i64), String> {
    let (k, v) = s.split_once('=').ok_or("NAME=VALUE")?;
    Ok((k.to_string(), v.parse().map_err(|e| format!("{v}: {e}"))?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn token(cli: &Cli) -> Result<Option<String>> {
    if let Some(p) = &cli.token_file {
        let t = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    Ok(std::env::var("FLEETCTL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

fn print(out: Output, v: &Value, text: impl FnOnce(&Value) -> String) {
    match out {
        Output::Json => println!("{v}"),
        Output::Text => println!("{}", text(v)),
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Cmd::Completions { shell } = cli.cmd {
        use clap::CommandFactory;
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "fleetctl", &mut script);
        // A reader that stops early (`| head`) is no error.
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("writing the completions"),
        };
    }
    let url = cli
        .url
        .clone()
        .or_else(|| std::env::var("FLEETCTL_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let api = Api::new(&url, token(&cli)?);
    let out = cli.output;
    match cli.cmd {
        Cmd::Account => {
            let v = api.json("/api/v1/account", true)?;
            print(out, &v, |v| {
                format!(
                    "{} {} ({}), scopes {}, blobs {} of {} bytes",
                    v["kind"],
                    v["name"],
                    v["id"],
                    v["token"]["scopes"],
                    v["used_bytes"],
                    v["quota_bytes"]
                )
            });
        }
        Cmd::Submit {
            kernel,
            params,
            inputs,
            deadline_in_s,
            max_price,
            min_renewable,
            flexible,
            detach,
            follow_s,
        } => {
            let mut hashes = Vec::new();
            for path in &inputs {
                let bytes =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let hash = Hash32::digest(&bytes);
                let n = bytes.len();
                api.send("PUT", &format!("/api/v1/blobs/{}", hash.to_hex()), bytes)?;
                eprintln!("uploaded {} ({n} bytes) as {hash}", path.display());
                hashes.push(hash.to_hex());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            let mut job = json!({
                "workload": {"builtin": {"kernel": kernel, "params":
                    params.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>()}},
                "inputs": hashes,
                "deadline_ms": now + deadline_in_s * 1000,
                "max_price_micro_per_gpu_hour": max_price,
                "flexible": flexible,
            });
            if let Some(share) = min_renewable {
                if !(0.0..=1.0).contains(&share) {
                    bail!("--min-renewable {share}: a share from 0 to 1");
                }
                job["carbon"] =
                    json!({"min_renewable_share_ppm": ((share * 1e6).round() as u32).max(1)});
            }
            let v = api.send("POST", "/api/v1/jobs", job.to_string().into_bytes())?;
            let id = v["id"]
                .as_str()
                .context("the answer names no job id")?
                .to_string();
            eprintln!("job {id} {}", v["state"]);
            if detach {
                print(out, &v, |v| {
                    v["id"].as_str().unwrap_or_default().to_string()
                });
                return Ok(());
            }
            let v = follow(&api, &id, Duration::from_secs(follow_s))?;
            print(out, &v, |v| format!("{} {}", id, v["state"]));
        }
        Cmd::Status { job: None } => {
            let v = api.json("/api/v1/jobs", true)?;
            print(out, &v, |v| {
                v["jobs"]
                    .as_array()
                    .or_else(|| v.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|j| {
                                format!(
                                    "{}  {:<10}  deadline {}",
                                    j["id"].as_str().unwrap_or("?"),
                                    j["state"].as_str().unwrap_or("?"),
                                    j["deadline_ms"]
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
        }
        Cmd::Status { job: Some(id) } => {
            let v = api.json(&format!("/api/v1/jobs/{id}"), true)?;
            print(out, &v, |v| {
                let mut s = format!("{} {}", id, v["state"]);
                for h in v["history"].as_array().into_iter().flatten() {
                    s.push_str(&format!(
                        "\n  {}  {}  {}",
                        h["at_ms"],
                        h["state"],
                        h["reason"].as_str().unwrap_or("")
                    ));
                }
                s
            });
        }
        Cmd::Logs {
            job,
            follow,
            follow_s,
        } => {
            let mut stdout = std::io::stdout().lock();
            logs::stream(&api, &job, follow, Duration::from_secs(follow_s), |item| {
                use std::io::Write;
                let line = match (item, out) {
                    (logs::Item::Event(e), Output::Json) => json!({"event": e}).to_string(),
                    (logs::Item::Progress(p), Output::Json) => json!({"progress": p}).to_string(),
                    (logs::Item::Event(e), Output::Text) => logs::event_line(e),
                    (logs::Item::Progress(p), Output::Text) => format!(
                        "{}  progress    {}",
                        p["at_ms"].as_i64().map_or_else(
                            || "?".into(),
                            fleet_controller::intensity::civil::format_rfc3339_ms
                        ),
                        logs::progress_bar(p)
                    ),
                    (logs::Item::Reconnecting(why), _) => {
                        eprintln!("connection lost ({why}); resuming");
                        return;
                    }
                };
                let _ = writeln!(stdout, "{line}");
                let _ = stdout.flush();
            })?;
        }
        Cmd::Cancel { job } => {
            let v = api.send(
                "POST",
                &format!("/api/v1/jobs/{job}/cancel"),
                b"{}".to_vec(),
            )?;
            print(out, &v, |v| format!("{} {}", job, v["state"]));
        }
        Cmd::Results { job, out: dir } => {
            let v = api.json(&format!("/api/v1/jobs/{job}/results"), true)?;
            if let Some(dir) = &dir {
                std::fs::create_dir_all(dir)?;
                for o in v["outputs"].as_array().into_iter().flatten() {
                    let hash = o["sha256"].as_str().context("an output without a hash")?;
                    let bytes = api.get(&format!("/api/v1/blobs/{hash}"), true)?;
                    if Hash32::digest(&bytes).to_hex() != hash {
                        bail!("output {}: the bytes do not hash to {hash}", o["index"]);
                    }
                    let path = dir.join(format!("out{}.bin", o["index"]));
                    std::fs::write(&path, bytes)?;
                    eprintln!("{} ({} bytes, sha256 checked)", path.display(), o["bytes"]);
                }
            }
            print(out, &v, |v| {
                let outputs = v["outputs"].as_array().map_or(0, |a| a.len());
                format!("{} {}: {outputs} output(s)", job, v["state"])
            });
        }
        Cmd::Proof {
            job,
            device,
            controller_key,
            out: path,
        } => {
            let device = match device {
                Some(d) => d,
                None => api.json(&format!("/api/v1/jobs/{job}"), true)?["device"]
                    .as_str()
                    .context("the job was not sent to a device yet")?
                    .to_string(),
            };
            let bytes = api.get(
                &format!("/api/v1/devices/{device}/jobs/{job}/bundle?format=postcard"),
                false,
            )?;
            let bundle = attest::bundle::ProofBundle::decode(&bytes)
                .map_err(|e| anyhow::anyhow!("the bundle does not decode: {e}"))?;
            let key = attest::PublicKey(
                attest::hex::decode_array(&controller_key)
                    .map_err(|e| anyhow::anyhow!("--controller-key: {e}"))?,
            );
            let now = attest::TimestampMs(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as u64,
            );
            let report =
                attest::bundle::verify(&bundle, &attest::bundle::VerifyOptions::pinned(key, now))
                    .map_err(|e| anyhow::anyhow!("the proof does not verify: {e}"))?;
            std::fs::write(&path, &bytes)?;
            let v = serde_json::to_value(&report.statement)?;
            print(out, &v, |_| {
                let s = &report.statement;
                let mut t = format!(
                    "{}: verified against the pinned controller key, {} records",
                    path.display(),
                    report.records
                );
                if let Some(j) = &s.job {
                    t.push_str(&format!(
                        "\njob: {:.6} kWh, {:.6} kWh renewable, {:.3} g CO2e",
                        j.energy.kwh(),
                        j.renewable.kwh(),
                        j.co2e_mg as f64 / 1000.0
                    ));
                }
                t
            });
        }
        Cmd::Market(args) => market::show(&api, out, &args)?,
        Cmd::Completions { .. } => unreachable!("answered above"),
        Cmd::Balance => ledger::balance(&api, out)?,
        Cmd::Stake { amount } => ledger::stake(&api, out, amount)?,
        Cmd::History { limit } => ledger::history(&api, out, limit)?,
        Cmd::Statement {
            controller_key,
            out: file,
        } => ledger::statement(&api, out, &controller_key, &file)?,
        Cmd::Credit {
            account,
            amount,
            memo,
        } => ledger::credit(&api, out, account, amount, &memo)?,
        Cmd::PayoutAddress { address } => settlement::set_address(&api, out, &address)?,
        Cmd::Settlements => settlement::payouts(&api, out)?,
        Cmd::Settle => settlement::settle(&api, out)?,
        Cmd::Rounds => settlement::rounds(&api, out)?,
        Cmd::Certificates { account } => certificates::list(&api, out, account)?,
        Cmd::ImportCertificates { file, account } => {
            certificates::import(&api, out, &file, account)?
        }
        Cmd::Retire {
            job,
            certificate,
            hour,
            device,
        } => certificates::retire(&api, out, &job, &certificate, hour, device.as_deref())?,
        Cmd::Emissions { job, device } => {
            certificates::emissions(&api, out, &job, device.as_deref())?
        }
        Cmd::Devices => {
            let v = api.json("/api/v1/devices", false)?;
            print(out, &v, |v| {
                v.as_array()
                    .or_else(|| v["devices"].as_array())
                    .map(|a| {
                        a.iter()
                            .map(|d| {
                                format!(
                                    "{}  {:<8}  last seen {}  agent {}{}",
                                    d["id"].as_str().unwrap_or("?"),
                                    d["state"].as_str().unwrap_or("?"),
                                    d["last_seen_ms"],
                                    d["agent_version"].as_str().unwrap_or("?"),
                                    d["image"]
                                        .as_str()
                                        .map_or(String::new(), |i| format!(" image {i}")),
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
        }
        Cmd::Approve { device, provider } => {
            let mut v = api.send(
                "POST",
                &format!("/api/v1/devices/{device}/approve"),
                b"{}".to_vec(),
            )?;
            if let Some(p) = provider {
                let body = json!({ "provider": p }).to_string().into_bytes();
                let r = api.send("POST", &format!("/api/v1/devices/{device}/provider"), body)?;
                v["provider"] = r["provider"].clone();
            }
            print(out, &v, |v| match v["provider"].as_str() {
                Some(p) => format!("{device} {} (provider {p})", v["state"]),
                None => format!("{device} {}", v["state"]),
            });
        }
        Cmd::Revoke { device } => {
            let v = api.send(
                "POST",
                &format!("/api/v1/devices/{device}/revoke"),
                b"{}".to_vec(),
            )?;
            print(out, &v, |v| format!("{device} {}", v["state"]));
        }
    }
    Ok(())
}
