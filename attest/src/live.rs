//! Live payloads: JSON, unsigned, for people and dashboards (nothing is accounted from
//! them). The agent's retained status on `heliostat/v1/dev/{id}/status` and its job events
//! on `.../jobs` (docs/agent.md, "Jobs"). Defined here, once, so that the agent writes and
//! any reader parses one shape.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::msg::{JobId, JobOutcome};
use crate::units::SeqNo;

/// The retained status of a device (its last will publishes `Offline`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Connected.
    Online(Online),
    /// Gone (the broker publishes the agent's last will).
    Offline,
}

/// What an online agent says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Online {
    /// The agent's version.
    pub agent: String,
    /// The next sequence number it will use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_seq: Option<SeqNo>,
    /// Records not yet acknowledged by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_depth: Option<u64>,
    /// Why no record is sealed now (the outbox or its disk is full), when that is so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_blocked: Option<String>,
    /// Outbox entries set aside as torn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<u64>,
    /// Each power source's health, in channel order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceHealth>,
}

/// How a power source is doing: its errors since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    /// The source as configured (`vedirect:/dev/ttyUSB0`, `sunspec:10.0.0.5:502`...).
    pub source: String,
    /// Every error: failed reads plus the input it found bad and dropped.
    pub errors: u64,
    /// The same by reason (`io`, `format`, `stale`, `unavailable`, `bad_checksum`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_reason: BTreeMap<String, u64>,
    /// The last error, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job event (not retained; the signed receipt is the record of a job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job's runner started.
    Started {
        job: JobId,
        chunks: u32,
        /// The power budget it starts under, watts.
        budget_w: f64,
    },
    /// Paused between chunks (`applies` when it came before the job started).
    Pause {
        job: JobId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        applies: Option<String>,
    },
    /// Resumed.
    Resume {
        job: JobId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        applies: Option<String>,
    },
    /// Cancelled.
    Cancel {
        job: JobId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        applies: Option<String>,
    },
    /// No new jobs; the running one finishes.
    Draining,
    /// Ended, and its receipt sealed as `seq`.
    Finished {
        job: JobId,
        outcome: JobOutcome,
        chunks: u32,
        pauses: u32,
        seq: SeqNo,
    },
    /// Progress of the running job, about once a second.
    Progress {
        job: JobId,
        chunks_done: u64,
        chunks: u32,
        paused: bool,
        /// The power governor's last decision, as the agent reports it.
        #[cfg(feature = "std")]
        decision: Option<serde_json::Value>,
    },
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn status_and_events_keep_their_json_shape() {
        let online = DeviceStatus::Online(Online {
            agent: "0.1.0".into(),
            next_seq: Some(SeqNo(7)),
            ..Online::default()
        });
        assert_eq!(
            serde_json::to_value(&online).unwrap(),
            serde_json::json!({"state": "online", "agent": "0.1.0", "next_seq": 7})
        );
        assert_eq!(
            serde_json::to_string(&DeviceStatus::Offline).unwrap(),
            r#"{"state":"offline"}"#
        );
        let job = JobId([0xab; 16]);
        let e = JobEvent::Pause {
            job,
            applies: Some("when the job starts".into()),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "pause");
        assert_eq!(v["job"], "ab".repeat(16));
        assert_eq!(serde_json::from_value::<JobEvent>(v).unwrap(), e);
        assert_eq!(
            serde_json::to_value(JobEvent::Draining).unwrap(),
            serde_json::json!({"event": "draining"})
        );
    }
}
