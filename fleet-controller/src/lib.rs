//! The Heliostat fleet controller as a library.
//!
//! Map (growing with the controller issue):
//! - [`accounts`]: buyer, provider and operator accounts; API tokens (hashed) and scopes.
//! - [`jobs`]: jobs as buyers submit them (sans-IO): the checks, the order that is stored,
//!   the states and their legal moves.
//! - [`accounting`]: the statement builder (bundles, device hours, fleet hours) and the
//!   device-hour and fleet-hour accounting over stored records.
//! - [`anchor`]: where epoch roots are anchored, one backend a file behind one trait:
//!   `anchor/local.rs` (epochs closed into RFC 6962 trees, the signed local log) and
//!   `anchor/evm.rs` (the anchor contract on an EVM chain, alloy, crash-safe).
//! - [`market_view`]: the market view (offers joined with live state and an energy runway).
//! - [`dispatch`]: jobs placed by the scheduler as signed `RunJob`s, their states following
//!   the devices' receipts.
//! - [`crash`]: named crash points for the kill -9 tests.
//! - [`api`]: the HTTP API (axum): devices, epochs, status, bundle download (public);
//!   accounts, blobs and jobs (with a token): `api/` has one file per part.
//! - [`config`]: the TOML configuration.
//! - [`bundles`]: proof bundles for a device-period that `attest verify` accepts.
//! - [`intensity`]: grid carbon intensity by region and hour (bundled Ember table, operator
//!   hourly CSV, or a flat figure), named in every statement.
//! - [`market`]: the carbon-aware scheduler (sans-IO): jobs and device offers in, placements,
//!   waits for sun and refusals out; `examples/scheduler_sim` runs it over a simulated week.
//! - [`runtime`]: the MQTT ingest loop around [`ingest`].
//! - [`queue`]: the byte-bounded queue between the MQTT loop and the ingest thread.
//! - [`ingest`]: payloads in, verified evidence stored, acks out (sans-IO); hellos and
//!   enrollment in `ingest/hello.rs`.
//! - plausibility flags live in `attest::plausibility` (the verifier recomputes them).
//! - [`store`]: the narrow store interface and its SQLite backend (WAL, versioned migrations,
//!   idempotent inserts on (device, sequence)).

pub mod accounting;
pub mod accounts;
pub mod alerts;
pub mod anchor;
pub mod api;
pub mod broker_perimeter;
pub mod bundles;
pub mod certificates;
pub mod config;
pub mod console;
pub mod crash;
pub mod dispatch;
pub mod estimate;
pub mod ingest;
pub mod intensity;
pub mod jobs;
pub mod ledger;
pub mod market;
pub mod market_view;
pub mod offer_query;
pub mod queue;
pub mod reputation;
pub mod runtime;
pub mod settlement;
pub mod store;
pub mod validate;

/// The controller's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
