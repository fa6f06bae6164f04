//! The Heliostat fleet controller as a library.
//!
//! Map (growing with the controller issue):
//! - [`store`]: the narrow store interface and its SQLite backend (WAL, versioned migrations,
//!   idempotent inserts on (device, sequence)).

pub mod store;

/// The controller's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
