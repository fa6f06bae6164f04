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
pub mod home_assistant;
pub mod identity;
pub mod inbox;
pub mod jobs;
pub mod levers;
pub mod meter;
pub mod metrics;
pub mod nonces;
pub mod outbox;
pub mod power;
pub mod provision;
pub mod runtime;
pub mod sender;
pub mod site;
pub mod status;
pub mod systemd;

pub use attest::DeviceId;

/// The agent's version, sent in every `Hello`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Most bytes of an image build name.
const MAX_IMAGE_BUILD: usize = 64;

/// The version a device reports in its hello and status: the agent's, and on a device image
/// the image's build as semver build metadata (`0.1.0+heliostat-arm64.20261130.1`), read
/// from the first line of `image_release` (characters other than ASCII letters, digits,
/// `.` and `-` become `-`; at most 64). A missing or empty file: the agent's version alone.
pub fn reported_version(image_release: &std::path::Path) -> String {
    let build = std::fs::read_to_string(image_release)
        .ok()
        .and_then(|t| t.lines().next().map(str::trim).map(str::to_string))
        .unwrap_or_default();
    let build: String = build
        .chars()
        .take(MAX_IMAGE_BUILD)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if build.is_empty() {
        VERSION.to_string()
    } else {
        format!("{VERSION}+{build}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_version_carries_the_image_build_as_build_metadata() {
        let dir = std::env::temp_dir().join(format!("image-release-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("image-release");
        assert_eq!(
            reported_version(&file),
            VERSION,
            "no file: the agent's version"
        );
        std::fs::write(&file, "heliostat-arm64 2026.11.30 #1\nsecond line\n").unwrap();
        assert_eq!(
            reported_version(&file),
            format!("{VERSION}+heliostat-arm64-2026.11.30--1")
        );
        std::fs::write(&file, "  \n").unwrap();
        assert_eq!(reported_version(&file), VERSION);
        std::fs::write(&file, "x".repeat(200)).unwrap();
        assert_eq!(reported_version(&file).len(), VERSION.len() + 1 + 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
