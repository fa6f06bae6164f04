//! Key files: an ed25519 secret seed as 64 hex digits, created on first use (file mode
//! 0600, in a 0700 directory) and refused when anyone but the owner can read it. Used for
//! device keys (the agent) and the controller's key.
//!
//! A new key is written whole before it has its name: a temporary file in the same
//! directory is written and fsynced, then hard-linked to the key's path (which fails if
//! another process got there first: its key wins and is loaded) and the directory fsynced.
//! A power cut at any point leaves no key or the whole key, never an empty or half file.
//! An empty key file (left by versions that created the file before writing it) never held
//! a key anything was signed with: it is replaced.

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

/// An I/O error of `what` on the key file at `path`, for `map_err`.
fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.display().to_string();
    move |source| IdentityError::Io { what, path, source }
}

/// Loads the key at `path`, or creates it when absent. Returns the key and whether it was
/// created now (a first start).
pub fn load_or_create(path: &Path) -> Result<(KeyPair, bool), IdentityError> {
    let shown = path.display().to_string();
    let io = |what| io_error(what, path);
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => {
            // Interrupted creation by an older agent: no key was ever in it.
            std::fs::remove_file(path).map_err(io("removing the empty key file"))?;
            create(path)
        }
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(io("inspecting")(e)),
    }
}

/// Makes a new key at `path` (absent): temporary file, fsync, link into place, fsync the
/// directory. When another process linked its key first, that key is loaded instead.
fn create(path: &Path) -> Result<(KeyPair, bool), IdentityError> {
    let io = |what| io_error(what, path);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let key = KeyPair::generate().map_err(|e| IdentityError::Random(e.to_string()))?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| IdentityError::Random(e.to_string()))?;
    let name = path
        .file_name()
        .map_or_else(|| "key".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", crate::hex::encode(&nonce)));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(
            f,
            "{}",
            crate::hex::encode(&key.seed().expect("a key made from a seed"))
        )?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("writing a new key for")(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    if let Some(dir) = dir {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the directory of"))?;
    }
    match linked {
        Ok(()) => Ok((key, true)),
        // Another process made the key at the same moment: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            load_or_create(path).map(|(k, _)| (k, false))
        }
        Err(e) => Err(io("linking the new key to")(e)),
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

    #[test]
    fn an_empty_key_file_from_an_interrupted_first_start_is_replaced_not_a_dead_end() {
        // What a power cut between creating and writing the file left behind.
        let dir = std::env::temp_dir().join(format!("identity-empty-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("device.key");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        let (k, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(load_or_create(&path).unwrap().0.device_id(), k.device_id());
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["device.key".to_string()]);
    }

    #[test]
    fn processes_starting_at_once_end_up_with_one_key() {
        let dir = std::env::temp_dir().join(format!("identity-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("device.key");
        let ids: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&path).unwrap().0.device_id()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let on_disk = load_or_create(&path).unwrap().0.device_id();
        assert_eq!(on_disk, ids[0]);
    }
}
