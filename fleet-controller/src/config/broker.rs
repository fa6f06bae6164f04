//! `[broker]` (the MQTT broker the controller reads from) and `[pkcs11]` (where its key may
//! live).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The controller's key in a PKCS#11 token (`[pkcs11]`; docs/security.md, "Keys").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The token's PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, a YubiHSM's...).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The label of the Ed25519 key pair (CKK_EC_EDWARDS) in it.
    pub label: String,
    /// A file whose first line is the user PIN (mode 0600).
    pub pin_file: PathBuf,
}

/// An external MQTT broker (Mosquitto in tests and production).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Host.
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Username.
    #[serde(default)]
    pub username: Option<String>,
    /// Password. Sent only over TLS unless `insecure_plaintext_password`.
    #[serde(default)]
    pub password: Option<String>,
    /// Allow the password over plain TCP (a broker on the same host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plaintext_password: bool,
    /// TLS: the CA bundle (PEM) that signs the broker's certificate turns TLS on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// TLS client certificate (PEM), with `tls_client_key`: the controller's identity at a
    /// broker that asks for certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// TLS client key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
    /// The broker runs Mosquitto's dynamic security plugin as `broker-files` wrote it: the
    /// controller adds enrolled devices and removes revoked ones while it runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynsec: bool,
    /// Shared-subscription group: controllers in one group split the devices' messages.
    #[serde(default = "default_group")]
    pub share_group: String,
}

impl BrokerConfig {
    /// The broker at `host` on the default port, anonymous, in the default share group.
    pub fn new(host: impl Into<String>) -> BrokerConfig {
        BrokerConfig {
            host: host.into(),
            port: default_port(),
            username: None,
            password: None,
            insecure_plaintext_password: false,
            tls_ca_file: None,
            tls_client_cert: None,
            tls_client_key: None,
            dynsec: false,
            share_group: default_group(),
        }
    }

    /// Checks what a field alone cannot say.
    pub fn validate(&self) -> anyhow::Result<()> {
        let b = self;
        if b.password.is_some() && b.tls_ca_file.is_none() && !b.insecure_plaintext_password {
            anyhow::bail!(
                "config key `broker.password`: would be sent in clear over plain TCP: set \
                 broker.tls_ca_file (TLS), or broker.insecure_plaintext_password = true for a \
                 broker on this host"
            );
        }
        if b.tls_client_cert.is_some() != b.tls_client_key.is_some() {
            anyhow::bail!(
                "config key `broker.tls_client_cert`: set both tls_client_cert and tls_client_key, or neither"
            );
        }
        if b.tls_client_cert.is_some() && b.tls_ca_file.is_none() {
            anyhow::bail!("config key `broker.tls_ca_file`: client certificates need TLS");
        }
        Ok(())
    }
}

const fn default_port() -> u16 {
    1883
}
fn default_group() -> String {
    "heliostat-ingest".into()
}
