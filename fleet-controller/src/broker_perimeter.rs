//! The broker's perimeter for Mosquitto, written from the controller's device list
//! (`fleet-controller broker-files`; docs/security.md): a password file, an ACL file and a
//! `mosquitto.conf` that together
//!
//! - let in only enrolled, approved devices (username = device id, a password the
//!   controller issued at enrollment and keeps only as a hash) and the controller;
//! - tie every client id to its credentials (`use_username_as_clientid`: nobody can take a
//!   device's or the controller's client id, so nobody can kick them off);
//! - let a device publish only to its own `hello`, `records`, `status` and `jobs`, and read
//!   only its own `cmd` and `ack`;
//! - let only the controller read the devices' topics (so only it can join the
//!   `$share/...` ingest group) and write `cmd` and `ack`;
//! - serve TLS on every listener: devices on one, the controller on another that asks for
//!   a client certificate and takes the certificate's common name as the username.
//!
//! Revoking a device and writing the files again, then reloading Mosquitto (SIGHUP), drops
//! its credentials and its connection.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use attest::DeviceId;
use attest::topics::Leaf;
use base64::Engine as _;

/// PBKDF2 iterations of Mosquitto 2's `$7$` hashes (its own default).
const PBKDF2_ROUNDS: u32 = 101;
/// Salt length of Mosquitto 2's `$7$` hashes, bytes.
const SALT_LEN: usize = 12;

/// A new broker password: 32 random bytes, hex.
pub fn new_password() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(std::io::Error::other)?;
    Ok(attest::hex::encode(&b))
}

/// `password` hashed as Mosquitto's password file stores it: `$7$` (PBKDF2-HMAC-SHA512),
/// iterations, base64 salt, base64 hash.
pub fn mosquitto_hash(password: &str) -> std::io::Result<String> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(std::io::Error::other)?;
    Ok(hash_with_salt(password, &salt))
}

fn hash_with_salt(password: &str, salt: &[u8]) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, PBKDF2_ROUNDS, &mut out);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "$7${PBKDF2_ROUNDS}${}${}",
        b64.encode(salt),
        b64.encode(out)
    )
}

/// Whether `password` is the one `hash` (a `$7$` line's hash part) was made from.
pub fn hash_matches(password: &str, hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    match (parts.as_slice(), parts.get(3).map(|s| b64.decode(s))) {
        (["", "7", rounds, _, _], Some(Ok(salt))) if *rounds == PBKDF2_ROUNDS.to_string() => {
            hash_with_salt(password, &salt) == hash
        }
        _ => false,
    }
}

/// The password file: one `user:hash` line per device and the controller's when it logs in
/// with a password.
pub fn password_file(devices: &[(DeviceId, String)], controller: Option<(&str, &str)>) -> String {
    let mut s = String::from("# Written by `fleet-controller broker-files`: do not edit.\n");
    if let Some((user, hash)) = controller {
        let _ = writeln!(s, "{user}:{hash}");
    }
    for (d, hash) in devices {
        let _ = writeln!(s, "{d}:{hash}");
    }
    s
}

/// The ACL file: the device patterns (`%u` is the username, which is the device id), then
/// the controller's rights.
pub fn acl_file(controller_user: &str) -> String {
    let dev = |leaf: Leaf| format!("{}%u/{}", attest::topics::PREFIX, leaf.as_str());
    let any = |leaf: Leaf| attest::topics::every_device(leaf);
    let mut s = String::from(
        "# Written by `fleet-controller broker-files`: do not edit.\n\
         # A device (username = its id) writes its own topics and reads its own cmd and ack.\n",
    );
    for leaf in [Leaf::Hello, Leaf::Records, Leaf::Status, Leaf::Jobs] {
        let _ = writeln!(s, "pattern write {}", dev(leaf));
    }
    for leaf in [Leaf::Cmd, Leaf::Ack] {
        let _ = writeln!(s, "pattern read {}", dev(leaf));
    }
    let _ = writeln!(
        s,
        "\n# The controller reads every device (and so alone joins the ingest share group)\n\
         # and writes their commands and acks.\nuser {controller_user}"
    );
    for leaf in [Leaf::Hello, Leaf::Records, Leaf::Status, Leaf::Jobs] {
        let _ = writeln!(s, "topic read {}", any(leaf));
    }
    for leaf in [Leaf::Cmd, Leaf::Ack] {
        let _ = writeln!(s, "topic write {}", any(leaf));
    }
    s
}

/// Where the broker listens and with which certificates.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// Devices' listener (TLS, username and password).
    pub device_port: u16,
    /// The controller's listener (TLS with a client certificate whose CN is its username).
    pub controller_port: u16,
    /// Address to bind both to (empty: every address).
    pub bind: String,
    /// CA that signs the server certificate and the controller's client certificate.
    pub ca: PathBuf,
    /// The broker's certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `mosquitto.conf` naming the password and ACL files in `dir`.
pub fn mosquitto_conf(dir: &Path, l: &Listeners) -> String {
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\ntls_version tlsv1.2\n",
        l.ca.display(),
        l.cert.display(),
        l.key.display()
    );
    let bind = if l.bind.is_empty() {
        String::new()
    } else {
        format!(" {}", l.bind)
    };
    format!(
        "# Written by `fleet-controller broker-files`: do not edit.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         password_file {dir}/passwd\n\
         acl_file {dir}/acl\n\
         # Devices: TLS, username (the device id) and password; the client id is the username.\n\
         listener {dp}{bind}\n{tls}use_username_as_clientid true\n\
         # The controller: TLS with a client certificate; its common name is its username.\n\
         listener {cp}{bind}\n{tls}require_certificate true\nuse_identity_as_username true\n",
        dir = dir.display(),
        dp = l.device_port,
        cp = l.controller_port,
    )
}

/// Writes `text` to `dir/name` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.new"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_has_mosquittos_layout_and_depends_on_password_and_salt() {
        let h = hash_with_salt("s3cret", &[7u8; SALT_LEN]);
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(parts[3]).unwrap(), [7u8; SALT_LEN]);
        assert_eq!(b64.decode(parts[4]).unwrap().len(), 64);
        assert_eq!(h, hash_with_salt("s3cret", &[7u8; SALT_LEN]));
        assert_ne!(h, hash_with_salt("s3cres", &[7u8; SALT_LEN]));
        assert_ne!(h, hash_with_salt("s3cret", &[8u8; SALT_LEN]));
        assert_ne!(mosquitto_hash("x").unwrap(), mosquitto_hash("x").unwrap());
        assert!(hash_matches("s3cret", &h));
        assert!(!hash_matches("s3cres", &h));
        assert!(!hash_matches("s3cret", "$6$x$y"));
    }

    #[test]
    fn the_acl_gives_devices_their_own_topics_and_the_controller_all() {
        let acl = acl_file("heliostat-controller");
        assert!(acl.contains("pattern write heliostat/v1/dev/%u/records\n"));
        assert!(acl.contains("pattern read heliostat/v1/dev/%u/cmd\n"));
        assert!(!acl.contains("pattern write heliostat/v1/dev/%u/cmd"));
        assert!(!acl.contains("pattern read heliostat/v1/dev/%u/records"));
        let controller = acl.split("user heliostat-controller\n").nth(1).unwrap();
        assert!(controller.contains("topic read heliostat/v1/dev/+/records\n"));
        assert!(controller.contains("topic write heliostat/v1/dev/+/ack\n"));
    }
}
