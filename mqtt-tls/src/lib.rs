//! TLS for the MQTT links of the agent and the controller, done here with rustls 0.23 (on
//! ring) rather than inside rumqttc.
//!
//! rumqttc 0.25.1, the newest release, builds its TLS on `rustls-webpki` 0.102.8 and
//! `rustls-pemfile` 2.2.0, both under RustSec advisories with no fixed release in that line.
//! So rumqttc is built without TLS and connects to a [`Bridge`]: a Unix socket in a private
//! directory (mode 0700) of this process, where every connection rumqttc opens becomes one
//! TCP connection to the broker wrapped in TLS (the broker's certificate checked against the
//! configured CA, the client certificate presented when there is one). The MQTT bytes are
//! copied both ways unchanged. A failed handshake closes rumqttc's side, which sees a
//! connection error and reconnects with its backoff; the reason is logged and kept
//! ([`Bridge::last_error`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpStream, UnixListener};

/// How long a TCP connect plus handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    /// A PEM file held nothing usable.
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    /// rustls refused the material (a key that does not match its certificate, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The broker's host is not a DNS name or an IP address.
    #[error("{0:?} is not a host name a certificate can name")]
    ServerName(String),
    /// The bridge's socket could not be made.
    #[error("the TLS bridge's socket {path}: {cause}")]
    Socket { path: PathBuf, cause: io::Error },
}

/// The files of one TLS client: the CA that signs the broker's certificate and, optionally,
/// this client's certificate and key.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        path: path.into(),
        cause,
    })
}

/// Every certificate of a PEM file (at least one).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| TlsError::Pem {
        path: path.into(),
        message: format!("no usable private key: {e}"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts only `files.ca` and presents the client certificate
/// when there is one.
pub fn client_config(files: &ClientFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates(&files.ca)? {
        roots.add(c)?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match &files.cert_and_key {
        Some((cert, key)) => {
            builder.with_client_auth_cert(certificates(cert)?, private_key(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server configuration from a certificate chain and its key; with `client_ca`, clients
/// must present a certificate that CA signed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(
        certificates(cert)?,
        private_key(key)?,
    )?))
}

/// A private directory (0700) for this process's sockets, removed with it.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(io::Error::other)?;
        let name = format!(
            "heliostat-tls-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(nonce)
        );
        let dir = base.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why a bridge's latest connection failed, shared with whoever reports link errors.
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    /// The reason, if the latest connection failed.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }

    fn set(&self, reason: Option<String>) {
        *self.0.lock().unwrap() = reason;
    }
}

/// A Unix socket whose connections become TLS connections to the broker (module docs).
pub struct Bridge {
    socket: PathBuf,
    last_error: LastError,
    task: tokio::task::JoinHandle<()>,
    _dir: PrivateDir,
}

impl Bridge {
    /// Starts the bridge to `host:port` on the current tokio runtime.
    pub fn start(host: &str, port: u16, config: Arc<ClientConfig>) -> Result<Bridge, TlsError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::ServerName(host.into()))?;
        let dir = PrivateDir::new().map_err(|cause| TlsError::Socket {
            path: std::env::temp_dir(),
            cause,
        })?;
        let socket = dir.0.join("mqtt.sock");
        let listener = UnixListener::bind(&socket).map_err(|cause| TlsError::Socket {
            path: socket.clone(),
            cause,
        })?;
        let last_error = LastError::default();
        let errors = last_error.clone();
        let connector = tokio_rustls::TlsConnector::from(config);
        let broker = format!("{host}:{port}");
        let task = tokio::spawn(async move {
            loop {
                let Ok((local, _)) = listener.accept().await else {
                    continue;
                };
                let (connector, name, broker, errors) = (
                    connector.clone(),
                    name.clone(),
                    broker.clone(),
                    errors.clone(),
                );
                tokio::spawn(async move {
                    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                        let tcp = TcpStream::connect(&broker).await?;
                        let _ = tcp.set_nodelay(true);
                        connector.connect(name, tcp).await
                    })
                    .await
                    .unwrap_or_else(|_| Err(io::Error::other("timed out")));
                    match connected {
                        Ok(mut tls) => {
                            errors.set(None);
                            let mut local = local;
                            let _ = tokio::io::copy_bidirectional(&mut local, &mut tls).await;
                        }
                        Err(e) => {
                            tracing::warn!(%broker, error = %e, "TLS connection to the broker failed");
                            errors.set(Some(format!("{broker}: {e}")));
                        }
                    }
                });
            }
        });
        Ok(Bridge {
            socket,
            last_error,
            task,
            _dir: dir,
        })
    }

    /// The socket rumqttc connects to (`Transport::Unix`, this path as the host).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Why the latest connection failed, if it did (a handle that stays current).
    pub fn last_error(&self) -> LastError {
        self.last_error.clone()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts TLS on `listener` and forwards each connection's bytes to `upstream` in clear
/// (a TLS front for a broker that listens only on loopback). Runs until dropped.
pub async fn terminate(
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    upstream: std::net::SocketAddr,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let Ok(mut inner) = TcpStream::connect(upstream).await else {
                tracing::warn!(%upstream, "the broker behind the TLS front is not there");
                return;
            };
            let _ = inner.set_nodelay(true);
            let mut tls = tls;
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
        });
    }
}
