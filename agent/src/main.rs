//! `heliostat-agent`: the device daemon.
//!
//! - `heliostat-agent run [--config PATH]`: measure, sign, store and send (default config
//!   `/etc/heliostat/agent.toml`).
//! - `heliostat-agent id [--config PATH]`: print the device id (creating the key if needed).
//! - `heliostat-agent status [--config PATH]`: sources, last reading, outbox depth, link state.
//! - `heliostat-agent check [--config PATH]`: checks the configuration and exits.
//!
//! A configuration that cannot be read or is not valid exits 78 (`EX_CONFIG`): the systemd
//! unit does not restart the agent for it (`RestartPreventExitStatus=78`); other failures
//! exit 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use heliostat_agent::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use heliostat_agent::runtime;

#[derive(Parser)]
#[command(name = "heliostat-agent", version, about = "Heliostat device agent")]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent.
    Run,
    /// Print the device id.
    Id,
    /// Print the running agent's status.
    Status,
    /// Check the configuration (exit 0, or 78 naming what is wrong) and exit.
    Check,
    /// Provision this device from a provisioning file (first boot): writes the
    /// configuration (to --config), makes the device key, redeems the enrollment token, and
    /// erases the secrets from the file (docs/agent.md, "Provisioning").
    Provision {
        /// The provisioning file.
        file: PathBuf,
        /// The user the agent runs as: it owns the key and reads the configuration.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Run one job for the agent, on stdin and stdout (started by the agent itself; holds no
    /// key and reads no configuration).
    #[command(hide = true)]
    Worker,
}

/// Logs to stderr at `RUST_LOG` (`warn`, or `info,heliostat_agent::power=debug`; `info`
/// when unset or unreadable), in colour only for a person at a terminal: a log file or
/// journald gets plain text.
fn init_logging(worker: bool) -> heliostat_telemetry::Telemetry {
    use tracing_subscriber::filter::Targets;
    let default = || Targets::new().with_default(tracing::Level::INFO);
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(text) => match text.parse::<Targets>() {
            Ok(f) => (f, None),
            Err(e) => (
                default(),
                Some(format!(
                    "RUST_LOG={text:?} not understood ({e}): logging at info"
                )),
            ),
        },
        Err(_) => (default(), None),
    };
    // Spans go out over OTLP when the OTEL_* variables say so (docs/agent.md), from the
    // agent itself, never from its job worker.
    let telemetry = if worker {
        heliostat_telemetry::logs_only(Box::new(filter))
    } else {
        heliostat_telemetry::init("heliostat-agent", Box::new(filter))
    };
    if let Some(why) = bad {
        tracing::warn!("{why}");
    }
    telemetry
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = init_logging(matches!(cli.cmd, Cmd::Worker));
    if let Cmd::Worker = cli.cmd {
        // Before any configuration or key is read: the worker gets only the job, and ends
        // with the agent.
        heliostat_agent::jobs::confine::die_with_parent();
        let code = heliostat_agent::jobs::worker::serve(std::io::stdin(), std::io::stdout());
        return ExitCode::from(code as u8);
    }
    if let Cmd::Provision { file, owner } = &cli.cmd {
        return provision(file, &cli.config, owner.as_deref());
    }
    let cfg = match AgentConfig::load(&cli.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("heliostat-agent: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match main_inner(cli.cmd, cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heliostat-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// sysexits(3)'s "configuration error".
const EX_CONFIG: u8 = 78;

/// `heliostat-agent provision`: says what it did, or why not with a sysexits code.
fn provision(file: &std::path::Path, config: &std::path::Path, owner: Option<&str>) -> ExitCode {
    use heliostat_agent::provision::{Owner, provision};
    let owner = match owner.map(|name| (name, Owner::lookup(name))) {
        None => None,
        Some((_, Some(o))) => Some(o),
        Some((name, None)) => {
            eprintln!("heliostat-agent: provision: no user {name} in /etc/passwd");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match provision(file, config, owner, runtime::now_ms()) {
        Ok(p) => {
            tracing::info!(device = %p.device, enrollment = ?p.enrollment, config = %config.display(), "provisioned");
            println!(
                "provisioned {} ({}); configuration in {}",
                p.device,
                p.enrollment
                    .as_deref()
                    .unwrap_or("no enrollment token: an operator approves it"),
                config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "provisioning failed");
            eprintln!("heliostat-agent: provision: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn main_inner(cmd: Cmd, cfg: AgentConfig) -> anyhow::Result<()> {
    match cmd {
        Cmd::Check => {
            println!(
                "configuration ok: device data in {}",
                cfg.data_dir.display()
            );
            Ok(())
        }
        Cmd::Id => {
            let (key, _) =
                heliostat_agent::identity::load_or_create(&runtime::key_path(&cfg.data_dir))?;
            println!("{}", key.device_id());
            Ok(())
        }
        Cmd::Worker | Cmd::Provision { .. } => {
            unreachable!("served before the configuration is read")
        }
        Cmd::Status => {
            let path = runtime::status_path(&cfg.data_dir);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (is the agent running?)", path.display()))?;
            println!("{text}");
            Ok(())
        }
        Cmd::Run => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(runtime::run(cfg, async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
            }))
        }
    }
}
