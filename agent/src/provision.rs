//! First-boot provisioning (`heliostat-agent provision FILE`): a device image's boot
//! partition, a USB stick or the kernel command line hands the device a provisioning file;
//! this turns it into the agent's configuration, the device's key and its enrollment.
//!
//! The file is an agent configuration (the same keys as `agent.toml`) with a `[provision]`
//! table: `api_url` and `enrollment_token` (redeemed with the controller, which approves
//! the device), and optionally `ca_pem`, `client_cert_pem`, `client_key_pem` (the MQTT
//! link's TLS material, written beside the configuration). In order:
//! 1. everything is parsed and checked first: a file with a missing key, a bad controller
//!    key or an unknown key changes nothing;
//! 2. the TLS files, then the configuration, are written atomically (temporary file, fsync,
//!    rename): the agent never sees a half-written configuration;
//! 3. the device key is made on the device (kept if it exists: provisioning again keeps the
//!    device's identity);
//! 4. the token is redeemed with a hello signed by that key;
//! 5. the broker login the controller issued with the enrollment (username = device id,
//!    a password) replaces the file's in the configuration, when the link has TLS (or
//!    `insecure_plaintext_password`);
//! 6. the secrets (`enrollment_token`, `client_key_pem`, the MQTT password) are erased from
//!    the provisioning file, which then names the device enrolled.
//!
//! A failure says what and exits with a sysexits code: 78 for a bad file, 75 when the
//! controller cannot be reached (retry later: nothing is lost, the token is kept), 77 when
//! it refuses the token, 73 when a file cannot be written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{AgentConfig, ConfigError};

/// The `[provision]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSection {
    /// The controller's HTTP API (`http://controller:8080`), for the enrollment.
    pub api_url: Option<String>,
    /// An enrollment token (`hst_...`) the operator made; erased once redeemed.
    pub enrollment_token: Option<String>,
    /// The broker's CA certificate (PEM), when it is not in the system's store.
    pub ca_pem: Option<String>,
    /// The device's MQTT client certificate (PEM).
    pub client_cert_pem: Option<String>,
    /// Its private key (PEM); erased from the provisioning file once written.
    pub client_key_pem: Option<String>,
    /// Set by a provisioning that went through: the device it enrolled.
    pub enrolled_device: Option<String>,
}

/// Why provisioning stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The file could not be read.
    #[error("reading the provisioning file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Not TOML, an unknown key, or a missing one (the message names it).
    #[error("the provisioning file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The configuration it holds is not valid.
    #[error("the provisioning file {path}: {cause}")]
    Invalid { path: PathBuf, cause: ConfigError },
    /// `[provision]` is inconsistent (a token without an API, half a client certificate).
    #[error("the provisioning file {path}: [provision] {message}")]
    Section { path: PathBuf, message: String },
    /// A file could not be written (or its owner set).
    #[error("writing {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The device key could not be made or read.
    #[error("the device key: {0}")]
    Key(String),
    /// The controller could not be reached: try again later (the token is kept).
    #[error("the controller at {url} could not be reached ({reason}); will retry")]
    Unreachable { url: String, reason: String },
    /// The controller refused the enrollment.
    #[error("the controller refused the enrollment: HTTP {status} {reason}: {message}")]
    Refused {
        status: u16,
        reason: String,
        message: String,
    },
}

impl ProvisionError {
    /// The process's exit code (sysexits): 78 a bad file, 75 try again later, 77 refused,
    /// 73 cannot write.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProvisionError::Read { .. }
            | ProvisionError::Parse { .. }
            | ProvisionError::Invalid { .. }
            | ProvisionError::Section { .. } => 78,
            ProvisionError::Unreachable { .. } => 75,
            ProvisionError::Refused { .. } => 77,
            ProvisionError::Write { .. } | ProvisionError::Key(_) => 73,
        }
    }
}

/// What a provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The device.
    pub device: attest::DeviceId,
    /// The controller's answer to the enrollment (`approved`, `preapproved`, `enrolled`),
    /// when there was a token.
    pub enrollment: Option<String>,
}

/// Who owns what provisioning writes (the service's user): uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// Looks a user up in `/etc/passwd`.
    pub fn lookup(name: &str) -> Option<Owner> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Owner {
                uid: f[2].parse().unwrap_or(u32::MAX),
                gid: f[3].parse().unwrap_or(u32::MAX),
            })
        })
    }
}

/// Reads and checks a provisioning file: its `[provision]` table and the configuration.
pub fn read(file: &Path) -> Result<(ProvisionSection, AgentConfig), ProvisionError> {
    let text = std::fs::read_to_string(file).map_err(|cause| ProvisionError::Read {
        path: file.into(),
        cause,
    })?;
    let parse = |message: String| ProvisionError::Parse {
        path: file.into(),
        message,
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
    let section: ProvisionSection = match table.remove("provision") {
        Some(v) => v
            .try_into()
            .map_err(|e: toml::de::Error| parse(e.to_string()))?,
        None => ProvisionSection::default(),
    };
    let section_err = |message: &str| ProvisionError::Section {
        path: file.into(),
        message: message.into(),
    };
    if section.enrollment_token.is_some() != section.api_url.is_some() {
        return Err(section_err(
            "enrollment_token and api_url go together (the token is redeemed at the API)",
        ));
    }
    if section.client_cert_pem.is_some() != section.client_key_pem.is_some() {
        return Err(section_err(
            "client_cert_pem and client_key_pem go together",
        ));
    }
    let cfg: AgentConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| parse(e.to_string()))?;
    cfg.validate().map_err(|cause| ProvisionError::Invalid {
        path: file.into(),
        cause,
    })?;
    Ok((section, cfg))
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, fsynced, renamed,
/// the directory fsynced) with `mode`, group-owned by `owner` when given.
fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<Owner>,
) -> Result<(), ProvisionError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |cause: std::io::Error| ProvisionError::Write {
        path: path.into(),
        cause,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(
        ".{}.new",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    if let Some(o) = owner {
        std::os::unix::fs::chown(&tmp, Some(0), Some(o.gid)).map_err(err)?;
    }
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)?;
    Ok(())
}

/// Provisions the device from `file`: writes the configuration to `config_path`, makes the
/// key, redeems the token, erases the secrets from `file` (module documentation).
pub fn provision(
    file: &Path,
    config_path: &Path,
    owner: Option<Owner>,
    now_ms: u64,
) -> Result<Provisioned, ProvisionError> {
    let (section, mut cfg) = read(file)?;
    // TLS material beside the configuration, before the configuration names it.
    let tls_dir = config_path.parent().unwrap_or(Path::new(".")).join("tls");
    if let Some(pem) = &section.ca_pem {
        let p = tls_dir.join("ca.pem");
        write_atomic(&p, pem.as_bytes(), 0o644, owner)?;
        cfg.link.tls_ca_file = Some(p);
    }
    if let (Some(cert), Some(key)) = (&section.client_cert_pem, &section.client_key_pem) {
        let (c, k) = (tls_dir.join("client.pem"), tls_dir.join("client.key"));
        write_atomic(&c, cert.as_bytes(), 0o644, owner)?;
        write_atomic(&k, key.as_bytes(), 0o640, owner)?;
        cfg.link.tls_client_cert = Some(c);
        cfg.link.tls_client_key = Some(k);
    }
    let text = cfg.to_toml().map_err(|e| ProvisionError::Invalid {
        path: file.into(),
        cause: e,
    })?;
    write_atomic(config_path, text.as_bytes(), 0o640, owner)?;

    // The key, made here (or kept: provisioning again is the same device).
    std::fs::create_dir_all(&cfg.data_dir).map_err(|cause| ProvisionError::Write {
        path: cfg.data_dir.clone(),
        cause,
    })?;
    let key_path = crate::runtime::key_path(&cfg.data_dir);
    let (key, _) = crate::identity::load_or_create(&key_path)
        .map_err(|e| ProvisionError::Key(e.to_string()))?;
    if let Some(o) = owner {
        for p in [cfg.data_dir.as_path(), key_path.as_path()] {
            std::os::unix::fs::chown(p, Some(o.uid), Some(o.gid)).map_err(|cause| {
                ProvisionError::Write {
                    path: p.into(),
                    cause,
                }
            })?;
        }
    }
    let device = key.device_id();

    let enrollment = match (&section.api_url, &section.enrollment_token) {
        (Some(url), Some(token)) => {
            let (state, login) = redeem(url, token, &cfg, &key, now_ms)?;
            // The broker login the controller issued replaces the file's: written only
            // where it would not travel in clear.
            if let Some((user, password)) = login {
                if cfg.link.tls_ca_file.is_some() || cfg.link.insecure_plaintext_password {
                    cfg.link.username = Some(user);
                    cfg.link.password = Some(password);
                    let text = cfg.to_toml().map_err(|e| ProvisionError::Invalid {
                        path: file.into(),
                        cause: e,
                    })?;
                    write_atomic(config_path, text.as_bytes(), 0o640, owner)?;
                } else {
                    eprintln!(
                        "heliostat-agent: the controller issued a broker login, not stored: the link has no TLS (set [provision] ca_pem or link.tls_ca_file)"
                    );
                }
            }
            Some(state)
        }
        _ => None,
    };

    // The secrets leave the provisioning file; it now says which device it made.
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(file).map_err(
        |cause| ProvisionError::Read {
            path: file.into(),
            cause,
        },
    )?)
    .map_err(|e| ProvisionError::Parse {
        path: file.into(),
        message: e.to_string(),
    })?;
    if let Some(toml::Value::Table(p)) = table.get_mut("provision") {
        p.remove("enrollment_token");
        p.remove("client_key_pem");
        p.insert(
            "enrolled_device".into(),
            toml::Value::String(device.to_string()),
        );
    }
    if let Some(toml::Value::Table(l)) = table.get_mut("link") {
        l.remove("password");
    }
    let erased = toml::to_string(&table).map_err(|e| ProvisionError::Parse {
        path: file.into(),
        message: e.to_string(),
    })?;
    write_atomic(file, erased.as_bytes(), 0o600, None)?;
    Ok(Provisioned { device, enrollment })
}

/// Redeems the token at the controller with a hello signed now; the controller's word
/// for the device's state, and the broker login it issued (username, password), if any.
fn redeem(
    url: &str,
    token: &str,
    cfg: &AgentConfig,
    key: &attest::KeyPair,
    now_ms: u64,
) -> Result<(String, Option<(String, String)>), ProvisionError> {
    let offer = crate::hardware::discover(Path::new("/"), false);
    let hello = crate::runtime::signed_hello(
        cfg,
        key,
        &crate::reported_version(&cfg.image_release_file),
        &offer,
        &[],
        now_ms,
    );
    let body = serde_json::json!({
        "token": token,
        "hello": attest::hex::encode(hello.as_bytes()),
    })
    .to_string();
    let endpoint = format!("{}/api/v1/enrollments", url.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build(),
    );
    let mut resp = agent
        .post(&endpoint)
        .header("Content-Type", "application/json")
        .send(body.as_bytes())
        .map_err(|e| ProvisionError::Unreachable {
            url: endpoint.clone(),
            reason: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    let answer: serde_json::Value = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    if status >= 500 {
        return Err(ProvisionError::Unreachable {
            url: endpoint,
            reason: format!("HTTP {status}"),
        });
    }
    if !(200..300).contains(&status) {
        return Err(ProvisionError::Refused {
            status,
            reason: answer["reason"].as_str().unwrap_or("?").into(),
            message: answer["message"].as_str().unwrap_or("").into(),
        });
    }
    let login = match (
        answer["broker"]["username"].as_str(),
        answer["broker"]["password"].as_str(),
    ) {
        (Some(u), Some(p)) => Some((u.to_string(), p.to_string())),
        _ => None,
    };
    Ok((
        answer["state"].as_str().unwrap_or("enrolled").to_string(),
        login,
    ))
}
