//! `[console]`: the web console the controller serves beside its API.

use serde::{Deserialize, Serialize};

/// The web console's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/` (the API stays under `/api/v1` either way).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a login lasts, hours.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only; browsers also send it to
    /// `http://localhost` and `http://127.0.0.1`). Turn off only to reach a console over plain
    /// HTTP on another host, which sends the cookie in clear.
    #[serde(default = "yes")]
    pub secure_cookies: bool,
    /// Failed logins an account name may have within `login_window_s` before further
    /// attempts are refused without a check; a client address may have four times as many.
    #[serde(default = "default_login_failures")]
    pub login_failures: u32,
    /// The window of `login_failures`, seconds.
    #[serde(default = "default_login_window_s")]
    pub login_window_s: u64,
    /// Largest file the job form takes (it is held in memory while hashed; the API's
    /// streamed upload takes up to `api.max_blob_bytes`).
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_hours: default_session_hours(),
            secure_cookies: true,
            login_failures: default_login_failures(),
            login_window_s: default_login_window_s(),
            max_upload_bytes: default_max_upload_bytes(),
        }
    }
}

const fn yes() -> bool {
    true
}
const fn default_session_hours() -> u64 {
    12
}
const fn default_login_failures() -> u32 {
    5
}
const fn default_login_window_s() -> u64 {
    900
}
const fn default_max_upload_bytes() -> usize {
    16 << 20
}
