//! The Heliostat device agent as a library (the binary is a thin wrapper, and the demo
//! fleet runs this same code in-process).
//!
//! Its parts arrive with their issues: power sources, meter, durable outbox, MQTT link,
//! job runner and power governor. Today it knows its identity.

pub use attest::DeviceId;

/// The agent's version, sent in every `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
