//! MQTT topic names, spelled once: `heliostat/v1/dev/{device-id}/{leaf}`.
//!
//! The agent publishes `hello`, `records`, `status` and `jobs` and subscribes to `cmd` and
//! `ack`; the controller subscribes to every device's `hello` and `records` and publishes
//! `cmd` and `ack` (docs/protocol.md, "MQTT topics").

use alloc::format;
use alloc::string::String;

use crate::id::DeviceId;

/// Every device topic starts with this.
pub const PREFIX: &str = "heliostat/v1/dev/";

/// The controller's key rotations (retained; `crate::keys`): every device reads it.
pub const CONTROLLER_KEYS: &str = "heliostat/v1/controller/keys";

/// The last part of a device topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    /// The device's signed hello (retained).
    Hello,
    /// Chain messages, single or batched.
    Records,
    /// The agent's status, JSON (retained; the last will says offline).
    Status,
    /// Job progress events, JSON.
    Jobs,
    /// Controller-signed commands.
    Cmd,
    /// Controller-signed acknowledgements (retained).
    Ack,
}

impl Leaf {
    /// Every leaf.
    pub const ALL: [Leaf; 6] = [
        Leaf::Hello,
        Leaf::Records,
        Leaf::Status,
        Leaf::Jobs,
        Leaf::Cmd,
        Leaf::Ack,
    ];

    /// Its name in a topic.
    pub fn as_str(self) -> &'static str {
        match self {
            Leaf::Hello => "hello",
            Leaf::Records => "records",
            Leaf::Status => "status",
            Leaf::Jobs => "jobs",
            Leaf::Cmd => "cmd",
            Leaf::Ack => "ack",
        }
    }

    /// The leaf a topic name ends in, if it is one.
    pub fn parse(s: &str) -> Option<Leaf> {
        Leaf::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A device's topic: `heliostat/v1/dev/{id}/{leaf}`.
pub fn device(id: &DeviceId, leaf: Leaf) -> String {
    format!("{PREFIX}{id}/{}", leaf.as_str())
}

/// The filter for one leaf of every device: `heliostat/v1/dev/+/{leaf}`.
pub fn every_device(leaf: Leaf) -> String {
    format!("{PREFIX}+/{}", leaf.as_str())
}

/// Splits a device topic into its device and leaf; `None` for anything else.
pub fn parse(topic: &str) -> Option<(DeviceId, Leaf)> {
    let rest = topic.strip_prefix(PREFIX)?;
    let (id, leaf) = rest.split_once('/')?;
    Some((DeviceId::parse(id).ok()?, Leaf::parse(leaf)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::KeyPair;

    #[test]
    fn a_device_topic_round_trips_and_strangers_do_not_parse() {
        let id = KeyPair::from_seed(&[1; 32]).device_id();
        for leaf in Leaf::ALL {
            assert_eq!(parse(&device(&id, leaf)), Some((id, leaf)));
        }
        assert_eq!(
            every_device(Leaf::Records),
            "heliostat/v1/dev/+/records".to_string()
        );
        assert_eq!(parse("heliostat/v1/dev/not-an-id/records"), None);
        assert_eq!(parse(&format!("{PREFIX}{id}/other")), None);
        assert_eq!(parse("other/topic"), None);
    }
}
