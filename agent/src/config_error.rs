//! The one error every part of the configuration returns (the agent config and each power
//! source's own table), naming the key that is wrong. Below both `config` and `power`.

use std::path::PathBuf;

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. (The cause is in the message, not chained as a source:
    /// `{:#}` would print it twice.)
    #[error("reading {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The TOML did not parse or named an unknown key (the message names it).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value breaks a rule.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    /// A configuration built in code holds a value the file format cannot say (the message
    /// names the key).
    #[error("writing the configuration as TOML: {message}")]
    Unwritable { message: String },
    /// The file could not be written.
    #[error("writing {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}
