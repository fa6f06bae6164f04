//! The Heliostat device agent as a library (the binary is a thin wrapper, and the demo
//! fleet runs this same code in-process).
//!
//! Map:
//! - [`clock`]: the one wall clock (only the loops at the edges read it).
//! - [`config`]: the TOML configuration and its validation; [`site`] and [`config_error`]
//!   sit below it and the power sources, which read them too.
//! - [`governor`]: the power budget (solar surplus, battery, grid allowance, cap) and the
//!   control law that holds a job to it (duty cycle, pause), sans-IO; [`levers`]: the
//!   hardware it turns (NVML power limit, devfreq frequency cap).
//! - [`hardware`]: what the hello offers (board, GPUs from NVML or a Jetson's device tree,
//!   CPU).
//! - [`identity`]: the device key file (created on first start, mode 0600).
//! - [`inbox`]: acks and commands from the controller, verified or refused with a reason.
//! - [`jobs`]: the job kernel layer (built-in kernels and PTX on CUDA or the CPU, in
//!   chunks), the runner thread, and the job desk that decides a job's lifecycle.
//! - [`power`]: power sources behind one trait (simulator, Jetson INA3221, VE.Direct).
//! - [`meter`]: integrates samples into cumulative counters and seals hash-chained records.
//! - [`nonces`]: which controller commands are replays (nonces kept until their commands
//!   expire).
//! - [`outbox`]: the durable store-and-forward log, deleted only on the controller's ack.
//! - [`sender`]: what to publish next (fresh first, backlog in batches, resend on timeout).
//! - [`status`]: what `heliostat-agent status` prints.
//! - [`runtime`]: the running agent: the loop, the MQTT link (rumqttc), the data files.

pub mod clock;
pub mod config;
pub mod config_error;
pub mod governor;
pub mod hardware;
pub mod identity;
pub mod inbox;
pub mod jobs;
pub mod levers;
pub mod meter;
pub mod nonces;
pub mod outbox;
pub mod power;
pub mod runtime;
pub mod sender;
pub mod site;
pub mod status;

pub use attest::DeviceId;

/// The agent's version, sent in every `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
