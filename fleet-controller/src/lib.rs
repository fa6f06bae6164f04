//! The Heliostat fleet controller as a library. Its parts (broker, ingest, store,
//! accounting, anchoring, API) arrive with the controller issue.

/// The controller's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
