//! The demo's embedded broker (rumqttd), its TLS front and who may log in to it.
//!
//! Clients reach the broker only through TLS: `heliostat-mqtt-tls` terminates it on the
//! demo's broker port with a certificate from a CA the demo makes at each start
//! (`data/pki/ca.pem`, which the agents and the controller trust), and forwards to rumqttd
//! on a loopback port of its own. rumqttd has an authentication hook (client id, username,
//! password) but no topic rules. The demo uses the hook for what it can give: no anonymous
//! client; every agent logs in with its own password (username = its device id) under its
//! own client id (`heliostat-agent-{id}`), so no other client can take its id to kick it
//! off; the controller logs in as `heliostat-controller` with client ids
//! `heliostat-controller-*`. Per-device topic rules and revocation at the broker are
//! Mosquitto's, as `fleet-controller broker-files` writes it (docs/security.md, "Broker").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The controller's username at the embedded broker.
pub const CONTROLLER_USER: &str = "heliostat-controller";

/// The demo's TLS material: a CA and the broker's certificate and key (PEM files).
pub struct Pki {
    /// The CA every client trusts.
    pub ca: PathBuf,
    /// The broker's certificate, for 127.0.0.1 and localhost.
    pub cert: PathBuf,
    /// Its key (mode 0600).
    pub key: PathBuf,
}

/// Makes a fresh CA and broker certificate in `dir` (rcgen; ECDSA P-256).
pub fn make_pki(dir: &Path) -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Heliostat demo CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Heliostat demo broker");
    let cert = params.signed_by(&key, &ca)?;
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("broker.pem"),
        key: dir.join("broker.key"),
    };
    std::fs::write(&pki.ca, ca.pem())?;
    std::fs::write(&pki.cert, cert.pem())?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&pki.key);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pki.key)?
            .write_all(key.serialize_pem().as_bytes())?;
    }
    Ok(pki)
}

/// Usernames and their passwords, shared with the broker's hook (agents are added as
/// their keys are made).
#[derive(Debug, Clone, Default)]
pub struct Logins(Arc<RwLock<HashMap<String, String>>>);

impl Logins {
    /// A new random password for `user`.
    pub fn add(&self, user: &str) -> Result<String> {
        let mut secret = [0u8; 24];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("random source: {e}"))?;
        let password = attest::hex::encode(&secret);
        self.0
            .write()
            .unwrap()
            .insert(user.to_string(), password.clone());
        Ok(password)
    }

    /// Whether `user` with `password` may connect as `client_id`.
    pub fn allows(&self, client_id: &str, user: &str, password: &str) -> bool {
        let known = self.0.read().unwrap();
        let Some(expected) = known.get(user) else {
            return false;
        };
        let same = expected.len() == password.len()
            && expected
                .bytes()
                .zip(password.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        let own_id = if user == CONTROLLER_USER {
            client_id.starts_with("heliostat-controller-")
        } else {
            client_id == format!("heliostat-agent-{user}")
        };
        same && own_id
    }
}

/// Starts the embedded broker on `port`, which the caller found free, letting in only
/// what `logins` holds, and returns once it listens (the port can no longer be bound),
/// without connecting to it.
pub fn start(port: u16, logins: Logins) -> Result<()> {
    let mut connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 2 << 20,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    connections.set_auth_handler(move |client_id: String, user: String, password: String| {
        let ok = logins.allows(&client_id, &user, &password);
        if !ok {
            tracing::warn!(client_id, user, "embedded broker refused a login");
        }
        async move { ok }
    });
    let listener = rumqttd::ServerSettings {
        name: "v4-1".into(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let cfg = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some([("1".to_string(), listener)].into()),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(cfg);
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the embedded broker did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet};

    /// Connects and says what the broker answered (`None`: it closed the connection).
    async fn connect(
        port: u16,
        id: &str,
        login: Option<(&str, &str)>,
    ) -> Option<ConnectReturnCode> {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (_c, mut events) = AsyncClient::new(o, 8);
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => return Some(a.code),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Some(code),
                    Err(_) => return None,
                }
            }
        })
        .await;
        answer.expect("the broker answers within 5 s")
    }

    #[tokio::test]
    async fn the_broker_port_speaks_tls_with_the_demos_certificate_only() {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (inner, dir) = (
            free(),
            std::env::temp_dir().join(format!("demo-pki-{}", std::process::id())),
        );
        let pki = make_pki(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&pki.key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let logins = Logins::default();
        let device = attest::KeyPair::from_seed(&[6; 32]).device_id().to_string();
        let password = logins.add(&device).unwrap();
        start(inner, logins).unwrap();
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = front.local_addr().unwrap().port();
        let tls = heliostat_mqtt_tls::server_config(&pki.cert, &pki.key, None).unwrap();
        tokio::spawn(heliostat_mqtt_tls::terminate(
            front,
            tls,
            std::net::SocketAddr::from(([127, 0, 0, 1], inner)),
        ));
        let id = format!("heliostat-agent-{device}");
        // Plain MQTT on the TLS port gets nowhere.
        assert_eq!(connect(port, &id, Some((&device, &password))).await, None);
        // Through TLS, trusting the demo's CA: in.
        let files = heliostat_mqtt_tls::ClientFiles {
            ca: pki.ca.clone(),
            cert_and_key: None,
        };
        let bridge = heliostat_mqtt_tls::Bridge::start(
            "127.0.0.1",
            port,
            heliostat_mqtt_tls::client_config(&files).unwrap(),
        )
        .unwrap();
        let mut o = MqttOptions::new(id, bridge.socket().to_string_lossy(), 0);
        o.set_transport(rumqttc::Transport::Unix);
        o.set_credentials(&device, &password);
        let (_c, mut events) = AsyncClient::new(o, 8);
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(Event::Incoming(Packet::ConnAck(a))) = events.poll().await {
                    return a.code;
                }
            }
        })
        .await
        .expect("a TLS client gets in");
        assert_eq!(answer, ConnectReturnCode::Success);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_embedded_broker_lets_in_only_known_logins_under_their_own_client_ids() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let logins = Logins::default();
        let device = attest::KeyPair::from_seed(&[5; 32]).device_id().to_string();
        let password = logins.add(&device).unwrap();
        let controller = logins.add(CONTROLLER_USER).unwrap();
        start(port, logins.clone()).unwrap();
        let agent_id = format!("heliostat-agent-{device}");
        let ok = Some(ConnectReturnCode::Success);
        assert_eq!(
            connect(port, &agent_id, Some((&device, &password))).await,
            ok
        );
        assert_eq!(
            connect(
                port,
                "heliostat-controller-7",
                Some((CONTROLLER_USER, &controller))
            )
            .await,
            ok
        );
        for (id, login) in [
            (agent_id.as_str(), None),
            (agent_id.as_str(), Some((device.as_str(), "wrong"))),
            (
                "heliostat-agent-someone-else",
                Some((device.as_str(), password.as_str())),
            ),
            (
                agent_id.as_str(),
                Some((CONTROLLER_USER, controller.as_str())),
            ),
        ] {
            let answer = connect(port, id, login).await;
            assert_ne!(answer, ok, "{id} with {login:?} got in");
        }
    }
}
