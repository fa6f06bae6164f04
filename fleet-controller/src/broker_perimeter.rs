//! The broker's perimeter for Mosquitto with its dynamic security plugin, kept from the
//! controller's device list (docs/security.md, "Broker"):
//!
//! - `fleet-controller broker-files` writes the plugin's `dynamic-security.json` (every
//!   enrolled device that is not revoked, the controller) and a `mosquitto.conf`;
//! - while the broker runs, the controller adds a device when it enrols and removes it when
//!   it is revoked, with the plugin's commands on `$CONTROL/dynamic-security/v1`: the
//!   broker drops a removed device's connection at once and refuses the next.
//!
//! What the broker then enforces:
//! - only enrolled devices (username = device id, a password the controller issued at
//!   enrollment and keeps only as a hash) and the controller (its client certificate's
//!   common name) get in; nobody anonymous;
//! - client ids are tied to credentials (`use_username_as_clientid` on the devices'
//!   listener): nobody can take a device's client id to kick it off;
//! - a device publishes only to its own `hello`, `records`, `status` and `jobs` and
//!   subscribes only to its own `cmd` and `ack`;
//! - only the controller subscribes to the devices' topics, so only it can join the
//!   `$share/...` ingest group, and only it publishes `cmd` and `ack`;
//! - TLS on both listeners.
//!
//! Why not Mosquitto's ACL file: in Mosquitto 2.0 it does not check subscriptions, only
//! deliveries, so any client could join the ingest share group and the broker would then
//! drop the messages that fell to it (measured: 10 of 20 records lost to the controller).
//! The plugin refuses the subscription itself.

use std::path::{Path, PathBuf};

use attest::DeviceId;
use attest::topics::Leaf;
use base64::Engine as _;
use serde_json::{Value, json};

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

/// The dynamic security plugin's role name for `device`.
fn device_role(device: &DeviceId) -> String {
    format!("heliostat-device-{device}")
}

fn acl(kind: &str, topic: String) -> Value {
    json!({"acltype": kind, "topic": topic, "allow": true})
}

/// A device's rights: publish to its own `hello`, `records`, `status` and `jobs`; subscribe
/// to and receive its own `cmd` and `ack`, and the controller's key rotations. Literal topics: the plugin of Mosquitto 2.0 has
/// no `%u` substitution, so every device has a role of its own.
fn device_acls(device: &DeviceId) -> Vec<Value> {
    let own = |leaf| attest::topics::device(device, leaf);
    let mut acls: Vec<Value> = [Leaf::Hello, Leaf::Records, Leaf::Status, Leaf::Jobs]
        .into_iter()
        .map(|l| acl("publishClientSend", own(l)))
        .collect();
    for l in [Leaf::Cmd, Leaf::Ack] {
        acls.push(acl("subscribeLiteral", own(l)));
        acls.push(acl("publishClientReceive", own(l)));
    }
    acls.push(acl(
        "subscribeLiteral",
        attest::topics::CONTROLLER_KEYS.into(),
    ));
    acls.push(acl(
        "publishClientReceive",
        attest::topics::CONTROLLER_KEYS.into(),
    ));
    acls
}

/// The controller's rights: subscribe to and receive every device's `hello`, `records`,
/// `status` and `jobs` (in `share_group` or not), publish every device's `cmd` and `ack`,
/// and manage the plugin (add enrolled devices, remove revoked ones).
fn controller_acls(share_group: &str) -> Vec<Value> {
    let mut acls = Vec::new();
    for l in [Leaf::Hello, Leaf::Records, Leaf::Status, Leaf::Jobs] {
        let any = attest::topics::every_device(l);
        if !share_group.is_empty() {
            acls.push(acl(
                "subscribeLiteral",
                format!("$share/{share_group}/{any}"),
            ));
        }
        acls.push(acl("subscribeLiteral", any.clone()));
        acls.push(acl("publishClientReceive", any));
    }
    for l in [Leaf::Cmd, Leaf::Ack] {
        acls.push(acl("publishClientSend", attest::topics::every_device(l)));
    }
    acls.push(acl(
        "publishClientSend",
        attest::topics::CONTROLLER_KEYS.into(),
    ));
    acls.push(acl("publishClientSend", DYNSEC_TOPIC.into()));
    acls.push(acl("subscribeLiteral", DYNSEC_RESPONSE.into()));
    acls.push(acl("publishClientReceive", DYNSEC_RESPONSE.into()));
    acls
}

/// Where the plugin takes commands.
pub const DYNSEC_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where it answers.
pub const DYNSEC_RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";

/// The plugin's client entry for a device from its `$7$` hash (password, salt, iterations).
fn device_client(device: &DeviceId, hash: &str) -> Option<Value> {
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", rounds, salt, hash] = parts.as_slice() else {
        return None;
    };
    Some(json!({
        "username": device.to_string(),
        "textName": "Heliostat device",
        "password": hash,
        "salt": salt,
        "iterations": rounds.parse::<u32>().ok()?,
        "roles": [{"rolename": device_role(device)}],
    }))
}

/// The plugin's whole configuration (`dynamic-security.json`): every device with a login
/// and a role of its own, the controller (no password: it logs in with its certificate),
/// and nothing allowed by default. Devices whose hash is not a `$7$` one are left out.
pub fn dynsec_config(
    devices: &[(DeviceId, String)],
    controller_user: &str,
    share_group: &str,
) -> Value {
    let mut clients = vec![json!({
        "username": controller_user,
        "textName": "Heliostat controller (client certificate)",
        "roles": [{"rolename": "heliostat-controller"}],
    })];
    let mut roles = vec![json!({
        "rolename": "heliostat-controller",
        "acls": controller_acls(share_group),
    })];
    for (d, hash) in devices {
        if let Some(c) = device_client(d, hash) {
            clients.push(c);
            roles.push(json!({"rolename": device_role(d), "acls": device_acls(d)}));
        }
    }
    json!({
        "clients": clients,
        "roles": roles,
        "groups": [],
        "defaultACLAccess": {
            "publishClientSend": false,
            "publishClientReceive": false,
            "subscribe": false,
            "unsubscribe": true,
        },
    })
}

/// Plugin commands that give `device` its login (any earlier one goes, which also drops its
/// connection): sent by the controller when a device enrols.
pub fn enrol_commands(device: &DeviceId, password: &str) -> Value {
    let role = device_role(device);
    json!({"commands": [
        {"command": "deleteClient", "username": device.to_string()},
        {"command": "deleteRole", "rolename": role},
        {"command": "createRole", "rolename": role, "acls": device_acls(device)},
        {"command": "createClient", "username": device.to_string(), "password": password,
         "textName": "Heliostat device", "roles": [{"rolename": role}]},
    ]})
}

/// Plugin commands that take `device`'s login and role away: the broker drops its
/// connection at once and refuses the next.
pub fn revoke_commands(device: &DeviceId) -> Value {
    json!({"commands": [
        {"command": "deleteClient", "username": device.to_string()},
        {"command": "deleteRole", "rolename": device_role(device)},
    ]})
}

/// Logs the plugin's answers: failures as warnings, but for removing what is not there
/// (every first enrollment removes a login that never was).
pub fn log_responses(payload: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        tracing::warn!("the broker's dynamic security answer is not JSON");
        return;
    };
    for r in v["responses"].as_array().into_iter().flatten() {
        let command = r["command"].as_str().unwrap_or("?");
        match r["error"].as_str() {
            None => tracing::debug!(command, "broker security command done"),
            Some(e) if command.starts_with("delete") && e.contains("not found") => {}
            Some(e) => tracing::warn!(command, error = e, "the broker refused a security command"),
        }
    }
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
    /// The dynamic security plugin (`mosquitto_dynamic_security.so`).
    pub plugin: PathBuf,
}

/// Where Debian and others put the dynamic security plugin.
pub fn find_dynsec_plugin() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// `mosquitto.conf` loading the plugin with `dir/dynamic-security.json`.
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
        "# Written by `fleet-controller broker-files`: edit the command line, not this file.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         plugin {plugin}\n\
         plugin_opt_config_file {dir}/dynamic-security.json\n\
         # Devices: TLS, username (the device id) and password; the client id is the username.\n\
         listener {dp}{bind}\n{tls}use_username_as_clientid true\n\
         # The controller: TLS with a client certificate; its common name is its username.\n\
         listener {cp}{bind}\n{tls}require_certificate true\nuse_identity_as_username true\n",
        plugin = l.plugin.display(),
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
    fn the_plugin_config_gives_each_device_its_own_topics_and_the_controller_all() {
        let a = attest::KeyPair::from_seed(&[1; 32]).device_id();
        let hash = hash_with_salt("pw", &[3; SALT_LEN]);
        let cfg = dynsec_config(&[(a, hash.clone())], "heliostat-controller", "ingest");
        let text = cfg.to_string();
        let clients = cfg["clients"].as_array().unwrap();
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[1]["username"], a.to_string());
        assert_eq!(clients[1]["iterations"], 101);
        assert_eq!(
            format!(
                "$7$101${}${}",
                clients[1]["salt"].as_str().unwrap(),
                clients[1]["password"].as_str().unwrap()
            ),
            hash
        );
        assert!(
            clients[0].get("password").is_none(),
            "the controller uses its certificate"
        );
        let own = attest::topics::device(&a, Leaf::Records);
        assert!(text.contains(&own));
        assert!(!text.contains("%u"));
        assert!(text.contains("$share/ingest/heliostat/v1/dev/+/records"));
        assert_eq!(cfg["defaultACLAccess"]["subscribe"], false);
        assert_eq!(cfg["defaultACLAccess"]["publishClientSend"], false);
        let device_role = &cfg["roles"][1]["acls"];
        assert!(
            device_role.as_array().unwrap().iter().all(|acl| {
                let t = acl["topic"].as_str().unwrap();
                t.contains(&a.to_string()) || t == attest::topics::CONTROLLER_KEYS
            }),
            "{device_role}"
        );
        // A hash of another scheme is left out rather than written wrong.
        let cfg = dynsec_config(&[(a, "$6$x$y".into())], "c", "");
        assert_eq!(cfg["clients"].as_array().unwrap().len(), 1);
    }
}
