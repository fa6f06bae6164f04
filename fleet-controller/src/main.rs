//! `fleet-controller`: ingest and operator commands.
//!
//! - `fleet-controller --config FILE run`: ingest from the configured broker.
//! - `fleet-controller --config FILE key`: the controller's public key (give it to agents).
//! - `fleet-controller --config FILE devices`: every device with its state.
//! - `fleet-controller --config FILE approve|revoke ID`.
//! - `fleet-controller --config FILE broker-files --out DIR [--ca F --cert F --key F]`:
//!   Mosquitto's dynamic security file and configuration from the device list.
//! - `fleet-controller --config FILE bundle --device ID --out FILE`: a proof bundle.
//! - `fleet-controller deploy-anchor --rpc URL --key-file FILE`: deploy the anchor contract.
//! - `fleet-controller deploy-settlement --rpc URL --key-file FILE [--token ADDR | --mint N]`:
//!   deploy the settlement contract (for an existing ERC-20, or with a new demo token).
//! - `fleet-controller --config FILE account create --kind operator --name ops`: an account
//!   and its first API token, printed once (how the first operator is made); `account
//!   token --name N` another token; `account list`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleet_controller::config::ControllerConfig;
use fleet_controller::store::{DeviceState, Store};

#[derive(Parser)]
#[command(
    name = "fleet-controller",
    version,
    about = "Heliostat fleet controller"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "/etc/heliostat/controller.toml")]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest from the broker.
    Run,
    /// Print the controller's public key.
    Key,
    /// List devices.
    Devices,
    /// Rotate the controller's key, with the controller stopped (docs/security.md, "Keys"):
    /// a new key takes over from now on, the rotation signed by both keys is stored (devices
    /// follow it from the broker when the controller starts again, bundles carry it), and the
    /// old key file is kept as `controller.key.retired-<its public key>`. Prints the new
    /// public key.
    RotateKey,
    /// Approve a device: its records count from now on.
    Approve { id: String },
    /// Revoke a device: its records are kept apart, never counted.
    Revoke { id: String },
    /// Deploy the anchor contract from the key in KEY_FILE (needs no config file); prints
    /// the contract address for `epochs.evm.contract`.
    DeployAnchor {
        /// The node's JSON-RPC URL.
        #[arg(long)]
        rpc: String,
        /// File holding the sender's secp256k1 private key (hex).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Deploy the settlement contract from the treasury key in KEY_FILE (needs no config
    /// file), paying in the ERC-20 at TOKEN, or in a new demo token (`HeliostatCredit`, 6
    /// decimals) with MINT units minted to the treasury; prints the contract address for
    /// `settlement.contract`, then the token's.
    DeploySettlement {
        /// The node's JSON-RPC URL.
        #[arg(long)]
        rpc: String,
        /// File holding the treasury's secp256k1 private key (hex, mode 0600).
        #[arg(long)]
        key_file: PathBuf,
        /// An existing ERC-20 to pay in (`0x` + 40 hex digits).
        #[arg(long, conflicts_with = "mint")]
        token: Option<String>,
        /// Units of a new demo token minted to the treasury.
        #[arg(long, default_value_t = 0)]
        mint: u64,
    },
    /// Write Mosquitto's perimeter into OUT from the device list (docs/security.md): the
    /// dynamic security plugin's `dynamic-security.json` (every enrolled device not revoked,
    /// the controller) and, with --ca/--cert/--key, a `mosquitto.conf`. For a first start or
    /// a rebuild, with the broker stopped: while it runs, the controller (`broker.dynsec`)
    /// adds and removes devices itself.
    BrokerFiles {
        /// The folder to write into.
        #[arg(long)]
        out: PathBuf,
        /// The controller's username at the broker: the common name of its client
        /// certificate (default: broker.username, else `heliostat-controller`).
        #[arg(long)]
        controller_user: Option<String>,
        /// CA file (PEM) for the listeners and the controller's certificate.
        #[arg(long, requires_all = ["cert", "key"])]
        ca: Option<PathBuf>,
        /// The broker's certificate (PEM).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The broker's key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The devices' listener port.
        #[arg(long, default_value_t = 8883)]
        device_port: u16,
        /// The controller's listener port.
        #[arg(long, default_value_t = 8884)]
        controller_port: u16,
        /// The address both listeners bind to (default: every address).
        #[arg(long, default_value = "")]
        bind: String,
        /// The plugin (default: where Debian puts `mosquitto_dynamic_security.so`).
        #[arg(long)]
        plugin: Option<PathBuf>,
    },
    /// API accounts and tokens (the first operator is made here).
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Export a proof bundle for a device over a period, or for one job on it (`--job`:
    /// its receipt and the records over its hours), anchored epochs only, with the
    /// intensities of `accounting` (table, hourly CSV or flat figure).
    Bundle {
        /// The device id.
        #[arg(long)]
        device: String,
        /// A job id (32 hex digits): the job's bundle instead of a period's.
        #[arg(long, conflicts_with_all = ["from", "to"])]
        job: Option<String>,
        /// Period start, ms since the Unix epoch.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Period end, ms since the Unix epoch (default: the last anchored message).
        #[arg(long)]
        to: Option<u64>,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// JSON instead of postcard.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Make an account and its first token; prints the token (shown this once).
    Create {
        /// buyer, provider or operator.
        #[arg(long)]
        kind: String,
        /// A unique name (A-Z a-z 0-9 . _ -).
        #[arg(long)]
        name: String,
        /// Its blob quota in bytes (default: api.default_quota_bytes).
        #[arg(long)]
        quota_bytes: Option<u64>,
        /// The token's scopes, comma-separated (default: all the kind may hold).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// The token's label.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Another token for an account; prints it (shown this once).
    Token {
        /// The account's name.
        #[arg(long)]
        name: String,
        /// The token's scopes, comma-separated (default: all the kind may hold).
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// The token's label.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Set an account's web console password (10 to 1024 bytes), read from the first line
    /// of stdin; ends the account's console sessions.
    Password {
        /// The account's name.
        #[arg(long)]
        name: String,
    },
    /// List accounts and their tokens (never the secrets).
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Spans go out over OTLP when the OTEL_* variables say so (README, "Telemetry").
    let _telemetry = heliostat_telemetry::init(
        "heliostat-controller",
        heliostat_telemetry::env_filter("info"),
    );
    match inner(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-controller: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn inner(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::DeployAnchor { rpc, key_file } = &cli.cmd {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (addr, gas) = rt.block_on(fleet_controller::anchor::evm::EvmAnchor::deploy(
            rpc, key_file,
        ))?;
        println!("{addr:#x}");
        eprintln!("deployed the anchor contract at {addr:#x} (gas {gas})");
        return Ok(());
    }
    if let Cmd::DeploySettlement {
        rpc,
        key_file,
        token,
        mint,
    } = &cli.cmd
    {
        let token = token
            .as_deref()
            .map(fleet_controller::anchor::evm::parse_address)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (s, t, token_gas, gas) = rt.block_on(
            fleet_controller::settlement::chain::SettlementChain::deploy(
                rpc, key_file, token, *mint,
            ),
        )?;
        println!("{s:#x}");
        println!("{t:#x}");
        match token_gas {
            Some(g) => eprintln!(
                "deployed the demo token at {t:#x} (gas {g}, {mint} units to the treasury) and the settlement contract at {s:#x} (gas {gas})"
            ),
            None => eprintln!("deployed the settlement contract at {s:#x} for {t:#x} (gas {gas})"),
        }
        return Ok(());
    }
    let cfg = ControllerConfig::load(&cli.config)?;
    match cli.cmd {
        Cmd::DeployAnchor { .. } | Cmd::DeploySettlement { .. } => unreachable!("handled above"),
        Cmd::Run => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(fleet_controller::runtime::run(cfg, async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
            }))
        }
        Cmd::Key => {
            let key = fleet_controller::runtime::controller_key(&cfg)?;
            println!("{}", key.public());
            Ok(())
        }
        Cmd::Devices => {
            use std::io::Write;
            let ingest = fleet_controller::runtime::open(&cfg)?;
            let mut out = std::io::stdout().lock();
            for d in ingest.store().devices()? {
                let n = ingest.store().count_items(d.id)?;
                let hello: Option<attest::msg::Hello> = attest::Envelope::decode(&d.hello)
                    .ok()
                    .and_then(|e| e.open().ok());
                let version = match hello.as_ref().map(|h| h.version_parts()) {
                    Some((v, Some(image))) => format!("agent {v} image {image}"),
                    Some((v, None)) => format!("agent {v}"),
                    None => "agent ?".into(),
                };
                // A closed pipe (`| head`) ends the listing quietly.
                if writeln!(
                    out,
                    "{}\t{}\t{n} messages\tlast seen {} ms\t{version}",
                    d.id,
                    d.state.as_str(),
                    d.last_seen_ms
                )
                .is_err()
                {
                    break;
                }
            }
            Ok(())
        }
        Cmd::BrokerFiles {
            out,
            controller_user,
            ca,
            cert,
            key,
            device_port,
            controller_port,
            bind,
            plugin,
        } => {
            use fleet_controller::broker_perimeter as bp;
            use fleet_controller::store::broker::BrokerStore;
            let ingest = fleet_controller::runtime::open(&cfg)?;
            let devices = ingest.store().broker_credentials()?;
            let user = controller_user
                .or_else(|| cfg.broker.username.clone())
                .unwrap_or_else(|| "heliostat-controller".into());
            let config = bp::dynsec_config(&devices, &user, &cfg.broker.share_group);
            // The broker rewrites it on every change: its user must own it (docs/security.md).
            bp::write_file(
                &out,
                "dynamic-security.json",
                &serde_json::to_string_pretty(&config)?,
                0o600,
            )?;
            if let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) {
                let plugin = plugin.or_else(bp::find_dynsec_plugin).ok_or_else(|| {
                    anyhow::anyhow!(
                        "mosquitto_dynamic_security.so not found: install mosquitto or name it with --plugin"
                    )
                })?;
                let l = bp::Listeners {
                    device_port,
                    controller_port,
                    bind,
                    ca,
                    cert,
                    key,
                    plugin,
                };
                bp::write_file(&out, "mosquitto.conf", &bp::mosquitto_conf(&out, &l), 0o644)?;
            }
            eprintln!(
                "wrote the broker's files for {} devices and the controller ({user}) into {}",
                devices.len(),
                out.display()
            );
            Ok(())
        }
        Cmd::RotateKey => {
            let new = rotate_key(&cfg)?;
            println!("{new}");
            Ok(())
        }
        Cmd::Approve { id } | Cmd::Revoke { id } if attest::DeviceId::parse(&id).is_err() => {
            anyhow::bail!("{id}: {}", attest::DeviceId::parse(&id).unwrap_err())
        }
        Cmd::Bundle {
            device,
            job,
            from,
            to,
            out,
            json,
        } => {
            let id = attest::DeviceId::parse(&device)?;
            let ingest = fleet_controller::runtime::open(&cfg)?;
            let key = ingest.key().clone();
            let intensity =
                fleet_controller::intensity::IntensityResolver::from_config(&cfg.accounting)?;
            let b = match job {
                Some(job) => {
                    let job = attest::hex::decode_array::<16>(&job)
                        .map(attest::msg::JobId)
                        .map_err(|e| anyhow::anyhow!("--job {job}: {e}"))?;
                    fleet_controller::bundles::job(ingest.store(), &key, id, job, &intensity)?
                }
                None => fleet_controller::bundles::device_period(
                    ingest.store(),
                    &key,
                    id,
                    from,
                    to.unwrap_or(u64::MAX / 2),
                    &intensity,
                    to.is_none(),
                )?,
            };
            let bytes = if json {
                b.to_json().into_bytes()
            } else {
                b.to_postcard()
            };
            std::fs::write(&out, bytes)?;
            println!(
                "{}: {} messages in {} epoch(s); verify with: attest verify {} --controller-key {}",
                out.display(),
                b.evidence.len(),
                b.epochs.len(),
                out.display(),
                key.public()
            );
            Ok(())
        }
        Cmd::Account { cmd } => account(&cfg, cmd),
        Cmd::Approve { id } => set(&cfg, &id, DeviceState::Approved),
        Cmd::Revoke { id } => set(&cfg, &id, DeviceState::Revoked),
    }
}

fn set(cfg: &ControllerConfig, id: &str, state: DeviceState) -> anyhow::Result<()> {
    let id = attest::DeviceId::parse(id)?;
    let mut ingest = fleet_controller::runtime::open(cfg)?;
    if !ingest.store_mut().set_state(id, state)? {
        anyhow::bail!("no device {id} (it must say hello first)");
    }
    println!("{id}: {}", state.as_str());
    Ok(())
}

fn account(cfg: &ControllerConfig, cmd: AccountCmd) -> anyhow::Result<()> {
    use fleet_controller::accounts::{self, AccountKind, Token};
    use fleet_controller::store::accounts::AccountStore;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let mut store = fleet_controller::store::sqlite::SqliteStore::open(&cfg.db_path())?;
    let now = fleet_controller::runtime::now_ms();
    match cmd {
        AccountCmd::Create {
            kind,
            name,
            quota_bytes,
            scopes,
            label,
        } => {
            let kind = AccountKind::parse_named(&kind)?;
            let made = accounts::create(
                &mut store,
                kind,
                &name,
                quota_bytes.unwrap_or(cfg.api.default_quota_bytes),
                scopes.as_deref(),
                &label,
                Token::generate()?,
                now,
            )?;
            // The token alone on stdout (for `$(...)`), what it is on stderr.
            println!("{}", made.token.reveal());
            eprintln!(
                "account {} ({kind} {name}), token {} with scopes {}: keep it, it is not shown again",
                made.account.id,
                made.token_id,
                made.scopes.to_stored()
            );
        }
        AccountCmd::Token {
            name,
            scopes,
            label,
        } => {
            let a = store
                .account_by_name(&name)?
                .ok_or_else(|| anyhow::anyhow!("no account named {name}"))?;
            let (id, token, scopes) = accounts::issue(
                &mut store,
                a.id,
                scopes.as_deref(),
                &label,
                Token::generate()?,
                now,
            )?;
            println!("{}", token.reveal());
            eprintln!(
                "token {id} for account {} ({name}) with scopes {}: keep it, it is not shown again",
                a.id,
                scopes.to_stored()
            );
        }
        AccountCmd::Password { name } => {
            use fleet_controller::store::console::ConsoleStore;
            let a = store
                .account_by_name(&name)?
                .ok_or_else(|| anyhow::anyhow!("no account named {name}"))?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let phc =
                fleet_controller::console::hash_password(line.trim_end_matches(['\r', '\n']))?;
            store.set_password(a.id, &phc, now)?;
            eprintln!("account {} ({name}): console password set", a.id);
        }
        AccountCmd::List => {
            for a in store.accounts()? {
                let tokens: Vec<String> = store
                    .tokens(a.id)?
                    .iter()
                    .map(|t| {
                        let state = if t.revoked_ms.is_some() {
                            " revoked"
                        } else {
                            ""
                        };
                        format!("{}:{}{state}", t.id, t.scopes.to_stored())
                    })
                    .collect();
                println!(
                    "{}\t{}\t{}\tquota {} bytes\ttokens {}",
                    a.id,
                    a.kind,
                    a.name,
                    a.quota_bytes,
                    tokens.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// `rotate-key` (see [`Cmd::RotateKey`]), in an order a crash at any point leaves
/// recoverable: the new key is written beside the old (`controller.key.new`), then the
/// rotation is stored, then the old file is set aside and the new one takes its name. A
/// controller started between the last two steps refuses to run, saying so.
fn rotate_key(cfg: &ControllerConfig) -> anyhow::Result<attest::PublicKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    anyhow::ensure!(
        std::env::var_os(fleet_controller::runtime::KEY_ENV).is_none(),
        "{} is set: rotate with the key file, then put the new seed in your secret store",
        fleet_controller::runtime::KEY_ENV
    );
    anyhow::ensure!(
        cfg.pkcs11.is_none(),
        "the key is in a PKCS#11 token ([pkcs11]): rotation inside a token is not supported"
    );
    let path = cfg.key_path();
    let old = fleet_controller::runtime::controller_key(cfg)?;
    let new = attest::KeyPair::generate().map_err(|e| anyhow::anyhow!("random source: {e}"))?;
    let staged = path.with_extension("key.new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staged)?;
    f.write_all(
        attest::hex::encode(&new.seed().expect("a generated key has its seed")).as_bytes(),
    )?;
    f.sync_all()?;
    let at = attest::units::TimestampMs(fleet_controller::runtime::now_ms());
    let link = attest::keys::KeyLink::new(&old, &new, at);
    let mut store = fleet_controller::store::sqlite::SqliteStore::open(&cfg.db_path())?;
    store.add_key_rotation(&link, at.0)?;
    let retired = path.with_extension(format!("key.retired-{}", old.public()));
    std::fs::rename(&path, &retired)?;
    std::fs::rename(&staged, &path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    eprintln!(
        "the controller key is now {} (was {}, kept as {}); start the controller: devices follow",
        new.public(),
        old.public(),
        retired.display()
    );
    Ok(new.public())
}
