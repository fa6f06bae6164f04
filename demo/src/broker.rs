//! The demo's embedded broker (rumqttd) and who may log in to it.
//!
//! rumqttd has an authentication hook (client id, username, password) but no topic rules.
//! The demo uses the hook for what it can give: no anonymous client; every agent logs in
//! with its own password (username = its device id) under its own client id
//! (`heliostat-agent-{id}`), so no other client can take its id to kick it off; the
//! controller logs in as `heliostat-controller` with client ids `heliostat-controller-*`.
//! It listens on loopback only and has no TLS. Per-device topic rules, TLS and revocation
//! at the broker are Mosquitto's, as `fleet-controller broker-files` writes it
//! (docs/security.md, "Broker").

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Result;

/// The controller's username at the embedded broker.
pub const CONTROLLER_USER: &str = "heliostat-controller";

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
