//! `[alerts]`: rules the controller watches and the webhook it tells.

use serde::{Deserialize, Serialize};

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A device not heard from for `threshold` seconds (clears below `clear`).
    Offline,
    /// An approved device's battery at or below `threshold` (0..1) (clears at or above
    /// `clear`).
    LowBattery,
    /// A job that failed (fires once per job; `threshold` and `for_s` unused).
    JobFailed,
}

impl AlertKind {
    /// The name events and the webhook carry.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Offline => "offline",
            AlertKind::LowBattery => "low_battery",
            AlertKind::JobFailed => "job_failed",
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Its unique name.
    pub name: String,
    /// What it watches.
    pub kind: AlertKind,
    /// Where it fires (seconds offline; battery fraction).
    #[serde(default)]
    pub threshold: f64,
    /// Where it clears (hysteresis): below it for `offline`, at or above it for
    /// `low_battery`; the threshold itself when absent.
    #[serde(default)]
    pub clear: Option<f64>,
    /// How long the condition must hold before it fires, seconds (a delay against flapping).
    #[serde(default)]
    pub for_s: u64,
}

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Watch the rules.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often they are evaluated, ms.
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
    /// Where firings and resolutions are POSTed as JSON (none: shown in the console only).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// The rules (`[[alerts.rule]]`); the defaults when absent.
    #[serde(default = "default_rules", rename = "rule")]
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            every_ms: default_every_ms(),
            webhook_url: None,
            rules: default_rules(),
        }
    }
}

impl AlertsConfig {
    /// Checks the rules (unique names, sensible thresholds) and the webhook.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.is_empty() || self.rules[..i].iter().any(|o| o.name == r.name) {
                return Err(format!(
                    "alerts.rule`: {:?}: names must be unique and not empty",
                    r.name
                ));
            }
            let ok = match r.kind {
                AlertKind::Offline => {
                    r.threshold > 0.0 && r.clear.is_none_or(|c| c > 0.0 && c <= r.threshold)
                }
                AlertKind::LowBattery => {
                    (0.0..1.0).contains(&r.threshold)
                        && r.clear.is_none_or(|c| (r.threshold..=1.0).contains(&c))
                }
                AlertKind::JobFailed => true,
            };
            if !ok {
                return Err(format!(
                    "alerts.rule`: {:?}: threshold {} / clear {:?} do not fit a {} rule",
                    r.name,
                    r.threshold,
                    r.clear,
                    r.kind.as_str()
                ));
            }
        }
        if let Some(u) = &self.webhook_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(format!(
                "alerts.webhook_url`: {u:?}: an http:// or https:// URL"
            ));
        }
        if self.every_ms < 100 {
            return Err("alerts.every_ms`: at least 100".into());
        }
        Ok(())
    }
}

const fn yes() -> bool {
    true
}
const fn default_every_ms() -> u64 {
    10_000
}

/// Offline for 5 minutes, battery at 20 % for 5 minutes (clear at 30 %), any failed job.
fn default_rules() -> Vec<AlertRule> {
    vec![
        AlertRule {
            name: "device offline".into(),
            kind: AlertKind::Offline,
            threshold: 300.0,
            clear: Some(60.0),
            for_s: 0,
        },
        AlertRule {
            name: "battery low".into(),
            kind: AlertKind::LowBattery,
            threshold: 0.2,
            clear: Some(0.3),
            for_s: 300,
        },
        AlertRule {
            name: "job failed".into(),
            kind: AlertKind::JobFailed,
            threshold: 0.0,
            clear: None,
            for_s: 0,
        },
    ]
}
