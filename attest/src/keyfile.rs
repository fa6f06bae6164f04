//! Key files: an ed25519 secret seed as 64 hex digits, created on first use (file mode
//! 0600, in a 0700 directory) and refused when anyone but the owner can read it. Used for
//! device keys (the agent) and the controller's key.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::KeyPair;

/// Why the key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Group or others may read the key: refuse to use a key that may have leaked.
    #[error(
        "key file {path} has mode {mode:o}: it must not be readable by group or others (chmod 600)"
    )]
    Permissive { path: String, mode: u32 },
    /// The file does not hold a 32-byte hex seed.
    #[error("key file {path} is not a 64-digit hex seed")]
    Malformed { path: String },
    /// The system random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Loads the key at `path`, or creates it when absent. Returns the key and whether it was
/// created now (a first start).
pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), IdentityError> {
    let shown = path.display().to_string();
    let io = |what| {
        let p = shown.clone();
        move |source| IdentityError::Io {
            what,
            path: p,
            source,
        }
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissive { path: shown, mode });
            }
            let text = std::fs::read_to_string(path).map_err(io("reading"))?;
            let seed = crate::hex::decode_array::<32>(text.trim()).map_err(|_| {
                IdentityError::Malformed {
                    path: shown.clone(),
                }
            })?;
            Ok((KeyPair::from_seed(&seed), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
            let key = KeyPair::generate().map_err(|e| IdentityError::Random(e.to_string()))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io("creating"))?;
            writeln!(f, "{}", crate::hex::encode(&key.seed())).map_err(io("writing"))?;
            f.sync_all().map_err(io("syncing"))?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("syncing the directory of"))?;
            }
            Ok((key, true))
        }
        Err(e) => Err(io("inspecting")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_then_reused() {
        let dir = std::env::temp_dir().join(format!("identity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("keys/device.key");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.device_id(), k2.device_id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Permissive { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Malformed { .. })
        ));
    }
}
