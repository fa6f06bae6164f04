//! `heliostat-demo`: the whole system on one machine. An embedded MQTT broker (rumqttd),
//! the fleet controller (SQLite in a data directory, local anchor log), and a fleet of real
//! agents with simulated power sources at different sites and weather, publishing signed
//! records over the real MQTT path. Prints where to look, and keeps running.
//!
//! `cargo run --release -p heliostat-demo` (README: the main job).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use fleet_controller::config::{BrokerConfig, ControllerConfig};
use fleet_controller::store::Store;
use fleet_controller::store::accounts::AccountStore as _;
use heliostat_agent::config::{AgentConfig, FsyncPolicy, LinkConfig, MeterConfig, SiteConfig};
use heliostat_agent::power::SourceConfig;
use heliostat_agent::power::simulator::SimulatorConfig;

mod broker;
mod buyer;

#[derive(Parser)]
#[command(
    name = "heliostat-demo",
    version,
    about = "Heliostat on one machine: broker, controller and a simulated fleet"
)]
struct Args {
    /// Where the controller's database, keys and the agents' data go.
    #[arg(long, default_value = "demo-data")]
    data_dir: PathBuf,
    /// The embedded broker's port on 127.0.0.1 (0: a free one, printed).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// How many simulated agents.
    #[arg(long, default_value_t = 5)]
    agents: usize,
    /// Agent record interval, ms.
    #[arg(long, default_value_t = 10_000)]
    record_ms: u64,
    /// Epoch interval (anchoring), ms.
    #[arg(long, default_value_t = 60_000)]
    epoch_ms: u64,
    /// The controller's HTTP API port on 127.0.0.1 (0: a free one, printed).
    #[arg(long, default_value_t = 8080)]
    api_port: u16,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    run_for_s: Option<u64>,
    /// The demo buyer submits a job this often, seconds (0: none).
    #[arg(long, default_value_t = 30)]
    jobs_every_s: u64,
}

/// Sites of the simulated fleet: (name, lat, lon, panel W, battery Wh, region, cloudiness).
const SITES: &[(&str, f64, f64, u32, u32, &str, f64)] = &[
    ("Berlin rooftop", 52.52, 13.405, 400, 1_000, "DE", 0.5),
    ("Seville farm", 37.39, -5.98, 800, 2_400, "ES", 0.1),
    ("Nairobi school", -1.29, 36.82, 300, 1_200, "KE", 0.3),
    ("Phoenix garage", 33.45, -112.07, 600, 1_800, "US-AZ", 0.05),
    ("Bergen cabin", 60.39, 5.32, 250, 800, "NO", 0.7),
    ("Chennai lab", 13.08, 80.27, 500, 1_500, "IN-TN", 0.35),
    ("Adelaide shed", -34.93, 138.6, 450, 1_600, "AU-SA", 0.2),
];

/// Binds 127.0.0.1:`port` (0: a free port) for `what`, or says plainly that it is taken.
fn bind_local(port: u16, what: &str) -> Result<std::net::TcpListener> {
    std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for {what} on 127.0.0.1:{port}: {e} (another program has it? \
             pick another port, or 0 for a free one)"
        )
    })
}

/// The controller's configuration, also written to `dir/controller.toml` for the
/// `fleet-controller --config` commands the demo prints.
fn controller_config(
    dir: &Path,
    port: u16,
    password: &str,
    ca: &Path,
    epoch_ms: u64,
    api_port: u16,
) -> Result<(PathBuf, ControllerConfig)> {
    let mut cfg = ControllerConfig::new(
        dir.join("controller"),
        BrokerConfig {
            port,
            username: Some(broker::CONTROLLER_USER.into()),
            password: Some(password.into()),
            tls_ca_file: Some(ca.into()),
            // One controller: no shared subscription.
            share_group: String::new(),
            ..BrokerConfig::new("127.0.0.1")
        },
    );
    cfg.enrollment.auto_approve = true;
    cfg.epochs.interval_ms = epoch_ms;
    cfg.api.listen = format!("127.0.0.1:{api_port}");
    // A demo shows placements as they happen.
    cfg.market.tick_ms = 1_000;
    cfg.validate()?;
    let path = dir.join("controller.toml");
    cfg.write_toml(&path)?;
    Ok((path, cfg))
}

/// A token for the demo's account `name` of `kind`: the account is made on the first start,
/// and each start gives it a fresh token (the old ones keep working).
/// Micro-credits the demo buyer holds at each start.
const DEMO_BUYER_CREDITS: u64 = 1_000_000_000_000;

fn demo_token(
    store: &mut fleet_controller::store::sqlite::SqliteStore,
    kind: fleet_controller::accounts::AccountKind,
    name: &str,
    quota_bytes: u64,
) -> Result<(String, String)> {
    use fleet_controller::accounts::{self, Token};
    use fleet_controller::store::accounts::AccountStore;
    let now = fleet_controller::runtime::now_ms();
    let label = "heliostat-demo";
    let (token, scopes) = match store.account_by_name(name)? {
        Some(a) => {
            let (_, t, scopes) =
                accounts::issue(store, a.id, None, label, Token::generate()?, now)?;
            (t, scopes)
        }
        None => {
            let made = accounts::create(
                store,
                kind,
                name,
                quota_bytes,
                None,
                label,
                Token::generate()?,
                now,
            )?;
            (made.token, made.scopes)
        }
    };
    Ok((token.reveal(), scopes.to_stored()))
}

/// Agent `i` of the fleet: its site from [`SITES`], its sampling fitted to `record_ms`.
fn agent_config(
    dir: &Path,
    i: usize,
    port: u16,
    key: &attest::PublicKey,
    record_ms: u64,
    api_port: u16,
) -> Result<AgentConfig> {
    let (_, lat, lon, wp, wh, region, clouds) = SITES[i % SITES.len()];
    let sample_ms = (record_ms / 10).clamp(100, 1_000);
    let record_ms = record_ms.max(sample_ms).div_ceil(sample_ms) * sample_ms;
    let mut cfg = AgentConfig::new(
        dir.join(format!("agent-{i}")),
        SiteConfig {
            panel_watts_peak: wp,
            battery_wh: wh,
            battery_reserve_wh: wh / 5,
            grid_region: region.into(),
            price_micro_per_gpu_hour: 200_000 + 25_000 * i as u64,
            max_draw_w: 300,
            ..SiteConfig::new(lat, lon)
        },
        LinkConfig {
            port,
            resend_after_ms: 15_000,
            ..LinkConfig::new("127.0.0.1", key)
        },
        vec![SourceConfig::Simulator(SimulatorConfig {
            seed: 1_000 + i as u64,
            cloudiness: clouds,
            base_load_w: (30 + 5 * (i % 4)) as f64,
            gpu_w: (40 + 20 * (i % 3)) as f64,
            ..Default::default()
        })],
    );
    cfg.meter = MeterConfig {
        sample_interval_ms: sample_ms,
        record_interval_ms: record_ms,
    };
    cfg.outbox.fsync = FsyncPolicy::Always;
    // Inputs from the controller's blob store with the demo provider's token.
    cfg.jobs.blob_url = Some(format!("http://127.0.0.1:{api_port}/api/v1/blobs/"));
    cfg.jobs.blob_token_file = Some(dir.join("provider.token"));
    cfg.validate()?;
    Ok(cfg)
}

fn main() -> std::process::ExitCode {
    // The in-process agents run their jobs in worker processes of this same binary.
    if std::env::args().nth(1).as_deref() == Some("worker") {
        let code = heliostat_agent::jobs::worker::serve(std::io::stdin(), std::io::stdout());
        return std::process::ExitCode::from(code as u8);
    }
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("heliostat-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    // rumqttd logs every client that disconnects (cleanly or not) as an ERROR from its
    // router and its connection tasks ("no-connection id N is already gone", "router-drop"):
    // off by default here, RUST_LOG shows them. The demo checks the broker's port itself and
    // stops, named, when it cannot listen. Spans go out over OTLP when OTEL_* says so.
    let _telemetry = heliostat_telemetry::init(
        "heliostat-demo",
        heliostat_telemetry::env_filter(
            "warn,heliostat_demo=info,rumqttd::router::routing=off,rumqttd::server::broker=off",
        ),
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data = std::fs::canonicalize(&args.data_dir)?;
    // Both ports first, so that a taken one stops the demo here, named, before anything
    // says it runs.
    // The broker's port takes TLS (the front below); rumqttd listens on a loopback port of
    // its own behind it.
    let front = bind_local(args.port, "the embedded MQTT broker")?;
    let broker_port = front.local_addr()?.port();
    let api = bind_local(args.api_port, "the HTTP API")?;
    let api_port = api.local_addr()?.port();
    let inner_port = bind_local(0, "the embedded broker (inside)")?
        .local_addr()?
        .port();
    let pki = broker::make_pki(&data.join("pki"))?;
    let broker_logins = broker::Logins::default();
    broker::start(inner_port, broker_logins.clone())?;
    let controller_login = broker_logins.add(broker::CONTROLLER_USER)?;
    let (ccfg_path, ccfg) = controller_config(
        &data,
        broker_port,
        &controller_login,
        &pki.ca,
        args.epoch_ms,
        api_port,
    )?;
    std::fs::create_dir_all(&ccfg.data_dir)?;
    let (ckey, _) = attest::keyfile::load_or_create(&ccfg.key_path())?;
    let ckey_hex = ckey.public().to_string();
    let db = ccfg.db_path();
    // A buyer and an operator to try the API with (README: "Accounts and tokens").
    let (operator, buyer, provider) = {
        use fleet_controller::accounts::AccountKind;
        let mut store = fleet_controller::store::sqlite::SqliteStore::open(&db)
            .with_context(|| format!("opening {}", db.display()))?;
        let quota = ccfg.api.default_quota_bytes;
        (
            demo_token(&mut store, AccountKind::Operator, "demo-operator", quota)?,
            demo_token(&mut store, AccountKind::Buyer, "demo-buyer", quota)?,
            demo_token(&mut store, AccountKind::Provider, "demo-provider", quota)?,
        )
    };
    // The agents' provider token, and the buyer's for fleetctl, in files of mode 0600.
    let write_secret = |path: &Path, secret: &str| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(f, "{secret}")?;
        Ok(())
    };
    write_secret(&data.join("provider.token"), &provider.0)?;
    let buyer_token_file = data.join("buyer.token");
    write_secret(&buyer_token_file, &buyer.0)?;

    let mut provisioning = fleet_controller::store::sqlite::SqliteStore::open(&db)
        .with_context(|| format!("opening {}", db.display()))?;
    let provider_id = provisioning
        .account_by_name("demo-provider")?
        .context("the demo provider's account")?
        .id;
    let now = fleet_controller::runtime::now_ms();
    // Console logins for the operator and the buyer: fresh passwords at each start (a
    // password set ends the account's earlier sessions), printed and kept beside the tokens.
    let mut logins = Vec::new();
    for name in ["demo-operator", "demo-buyer"] {
        use fleet_controller::store::console::ConsoleStore;
        let id = provisioning
            .account_by_name(name)?
            .with_context(|| format!("the account {name}"))?
            .id;
        let mut secret = [0u8; 12];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        let password = attest::hex::encode(&secret);
        provisioning.set_password(
            id,
            &fleet_controller::console::hash_password(&password)?,
            now,
        )?;
        logins.push((name, password));
    }
    write_secret(
        &data.join("console.logins"),
        &logins
            .iter()
            .map(|(n, p)| format!("{n} {p}"))
            .collect::<Vec<_>>()
            .join("\n"),
    )?;
    // The demo buyer's credits, topped up at each start: its jobs' ceilings are held in
    // escrow from them.
    {
        use fleet_controller::store::ledger::LedgerStore;
        let buyer_id = provisioning
            .account_by_name("demo-buyer")?
            .context("the demo buyer's account")?
            .id;
        let have = provisioning.balance(fleet_controller::ledger::Book::Wallet(buyer_id))?;
        if let Some(top_up) = DEMO_BUYER_CREDITS
            .checked_sub(have.max(0) as u64)
            .filter(|n| *n > 0)
        {
            let tx = fleet_controller::ledger::deposit(buyer_id, top_up, "the demo's buyer")?;
            provisioning.post(&tx, now)?;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // A part that stops (the controller, an agent) stops the demo, non-zero, naming why.
    let (failed_tx, failed_rx) = std::sync::mpsc::channel::<String>();
    let mut parts = Vec::new();
    // The broker's TLS front, before any client connects.
    let tls = heliostat_mqtt_tls::server_config(&pki.cert, &pki.key, None)?;
    front.set_nonblocking(true)?;
    let inner = std::net::SocketAddr::from(([127, 0, 0, 1], inner_port));
    let front_task = rt.spawn(async move {
        match tokio::net::TcpListener::from_std(front) {
            Ok(l) => heliostat_mqtt_tls::terminate(l, tls, inner).await,
            Err(e) => tracing::error!(error = %e, "the broker's TLS front"),
        }
    });
    parts.push(rt.spawn({
        let rx = stop_rx.clone();
        let failed = failed_tx.clone();
        async move {
            if let Err(e) =
                fleet_controller::runtime::run_with_api_listener(ccfg, stopped(rx), Some(api)).await
            {
                let _ = failed.send(format!("the controller stopped: {e:#}"));
            }
        }
    }));
    let mut ids = Vec::new();
    for i in 0..args.agents {
        let mut cfg = agent_config(
            &data,
            i,
            broker_port,
            &ckey.public(),
            args.record_ms,
            api_port,
        )?;
        // The demo provisions each device's key before it starts, as an image's first boot
        // would: nothing reads a key file while another task writes it.
        let key_file = heliostat_agent::runtime::key_path(&cfg.data_dir);
        let (key, _) = heliostat_agent::identity::load_or_create(&key_file)
            .with_context(|| format!("agent {i}'s key"))?;
        ids.push((SITES[i % SITES.len()].0, key.device_id()));
        // Its own login at the embedded broker, over TLS.
        let user = key.device_id().to_string();
        cfg.link.password = Some(broker_logins.add(&user)?);
        cfg.link.username = Some(user);
        cfg.link.tls_ca_file = Some(pki.ca.clone());
        // Each rig is the demo provider's: only its token serves the jobs placed there.
        provisioning.set_device_provider(key.device_id(), Some(provider_id), now)?;
        let rx = stop_rx.clone();
        let failed = failed_tx.clone();
        // Agents connect a few milliseconds apart, as a fleet does (hundreds at the very same
        // instant make the embedded broker drop and log some of the connections).
        std::thread::sleep(Duration::from_millis(4));
        parts.push(rt.spawn(async move {
            if let Err(e) = heliostat_agent::runtime::run(cfg, stopped(rx)).await {
                let _ = failed.send(format!("agent {i} stopped: {e:#}"));
            }
        }));
    }

    println!("Heliostat demo running");
    println!("  web console            http://127.0.0.1:{api_port}/");
    for (name, password) in &logins {
        println!("  console login          {name} / {password}");
    }
    println!(
        "  embedded MQTT broker   127.0.0.1:{broker_port} (TLS; CA {})",
        pki.ca.display()
    );
    println!("  controller database    {}", db.display());
    println!("  HTTP API               http://127.0.0.1:{api_port}/api/v1/devices");
    println!("  controller public key  {ckey_hex}");
    println!(
        "  operator token         {} (account demo-operator: {})",
        operator.0, operator.1
    );
    println!(
        "  buyer token            {} (account demo-buyer: {})",
        buyer.0, buyer.1
    );
    println!(
        "  epochs anchored every  {} ms (local signed log)",
        args.epoch_ms
    );
    for (site, id) in &ids {
        println!("  agent {id}  {site}");
    }
    println!("Look at it:");
    println!(
        "  cargo run -p fleet-controller -- --config {} devices",
        ccfg_path.display()
    );
    if let Some((_, id)) = ids.first() {
        println!(
            "  cargo run -p fleet-controller -- --config {} bundle --device {id} --out bundle.json --json",
            ccfg_path.display()
        );
        println!("  cargo run -p attest -- verify bundle.json --controller-key {ckey_hex}");
    }
    println!("  curl http://127.0.0.1:{api_port}/api/v1/epochs");
    let fleetctl = format!(
        "cargo run -p fleet-controller --bin fleetctl -- --url http://127.0.0.1:{api_port} --token-file {}",
        buyer_token_file.display()
    );
    println!("  {fleetctl} status");
    println!("  {fleetctl} proof JOB --controller-key {ckey_hex} --out job.bundle");
    println!(
        "  curl -H 'Authorization: Bearer {}' http://127.0.0.1:{api_port}/api/v1/account",
        buyer.0
    );
    println!("(Ctrl-C stops it.)");

    // The buyer's stream of jobs, through the HTTP API.
    if args.jobs_every_s > 0 {
        let every = Duration::from_secs(args.jobs_every_s);
        let api = format!("http://127.0.0.1:{api_port}");
        let token = buyer.0.clone();
        let rx = stop_rx.clone();
        std::thread::Builder::new()
            .name("demo-buyer".into())
            .spawn(move || {
                let mut n = 0u64;
                let mut next = Instant::now() + Duration::from_secs(3);
                while !*rx.borrow() {
                    if Instant::now() >= next {
                        next += every;
                        match buyer::submit_one(
                            &api,
                            &token,
                            n,
                            fleet_controller::runtime::now_ms(),
                        ) {
                            Ok(id) => tracing::info!(job = %id, "demo buyer submitted a job"),
                            Err(e) => tracing::warn!(error = %e, "demo buyer could not submit"),
                        }
                        n += 1;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })?;
    }
    let started = Instant::now();
    let failure = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break None,
                _ = tick.tick() => {}
            }
            if let Ok(why) = failed_rx.try_recv() {
                break Some(why);
            }
            if args
                .run_for_s
                .is_some_and(|s| started.elapsed() >= Duration::from_secs(s))
            {
                break None;
            }
            n += 1;
            if !n.is_multiple_of(10) {
                continue;
            }
            if let Ok(store) = fleet_controller::store::sqlite::SqliteStore::open(&db) {
                let stored: u64 = ids
                    .iter()
                    .map(|(_, id)| store.count_items(*id).unwrap_or(0))
                    .sum();
                let epochs = store
                    .last_epoch()
                    .ok()
                    .flatten()
                    .map_or(0, |e| e.epoch.next().0);
                let jobs = {
                    use fleet_controller::store::accounts::AccountStore;
                    use fleet_controller::store::jobs::JobStore;
                    store
                        .account_by_name("demo-buyer")
                        .ok()
                        .flatten()
                        .and_then(|a| store.jobs_of(a.id, 10_000).ok())
                        .unwrap_or_default()
                };
                let done = jobs
                    .iter()
                    .filter(|j| j.state == fleet_controller::jobs::JobState::Done)
                    .count();
                println!(
                    "[{:>5} s] {stored} signed records stored, {epochs} epoch(s) anchored, jobs: {} submitted, {done} done",
                    started.elapsed().as_secs(),
                    jobs.len()
                );
            }
        }
    });
    // Every part stops on its own (agents say goodbye to the broker) before the runtime
    // goes; dropping them mid-connection would make the broker log each as an error.
    let _ = stop_tx.send(true);
    rt.block_on(async {
        let all = async {
            for p in parts {
                let _ = p.await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
    });
    front_task.abort();
    rt.shutdown_timeout(Duration::from_secs(3));
    if let Some(why) = failure {
        anyhow::bail!("{why}");
    }
    println!("stopped");
    Ok(())
}
