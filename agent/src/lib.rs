//! The Heliostat device agent as a library (the binary is a thin wrapper, and the demo
//! fleet runs this same code in-process).
//!
//! Map:
//! - [`config`]: the TOML configuration and its validation.
//! - [`governor`]: the power budget (solar surplus, battery, grid allowance, cap) and the
//!   control loop that holds a job to it (power limit, frequency cap, duty cycle, pause).
//! - [`identity`]: the device key file (created on first start, mode 0600).
//! - [`jobs`]: the job kernel layer: built-in kernels and PTX on CUDA or the CPU, in chunks.
//! - [`power`]: power sources behind one trait (simulator, Jetson INA3221, VE.Direct).
//! - [`meter`]: integrates samples into cumulative counters and seals hash-chained records.
//! - [`nonces`]: which controller commands are replays (nonces kept until their commands
//!   expire).
//! - [`outbox`]: the durable store-and-forward log, deleted only on the controller's ack.
//! - [`sender`]: what to publish next (fresh first, backlog in batches, resend on timeout).
//! - [`runtime`]: the running agent: ticks, the MQTT link (rumqttc), acks and commands.

pub mod config;
pub mod governor;
pub mod identity;
pub mod jobs;
pub mod meter;
pub mod nonces;
pub mod outbox;
pub mod power;
pub mod runtime;
pub mod sender;

pub use attest::DeviceId;

/// The agent's version, sent in every `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
