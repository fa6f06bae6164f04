//! `heliostat-agent`: the device daemon.
//!
//! - `heliostat-agent run [--config PATH]`: measure, sign, store and send (default config
//!   `/etc/heliostat/agent.toml`).
//! - `heliostat-agent id [--config PATH]`: print the device id (creating the key if needed).
//! - `heliostat-agent status [--config PATH]`: sources, last reading, outbox depth, link state.

use std::io::IsTerminal;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match main_inner(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heliostat-agent: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main_inner(cli: Cli) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(&cli.config)?;
    match cli.cmd {
        Cmd::Id => {
            let (key, _) =
                heliostat_agent::identity::load_or_create(&runtime::key_path(&cfg.data_dir))?;
            println!("{}", key.device_id());
            Ok(())
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
