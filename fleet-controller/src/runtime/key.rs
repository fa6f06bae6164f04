//! The controller's key: from the environment or its private file.

use anyhow::{Context, Result};

use crate::config::ControllerConfig;

/// The environment variable that may hold the controller's key (its 32-byte seed, 64 hex
/// digits): for a secret manager or systemd's credentials instead of the key file.
pub const KEY_ENV: &str = "HELIOSTAT_CONTROLLER_KEY";

/// The controller's key: in a PKCS#11 token when `[pkcs11]` is set, else from [`KEY_ENV`]
/// when set, else the key file (made on first use, refused when group or others may read
/// it).
pub fn controller_key(cfg: &ControllerConfig) -> Result<attest::KeyPair> {
    if let Some(p) = &cfg.pkcs11 {
        return super::pkcs11::key(p);
    }
    key_from(std::env::var(KEY_ENV).ok(), &cfg.key_path())
}

/// The first line of a secret file, refused when group or others may read it.
pub(super) fn read_secret_file(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} has mode {mode:o}: it must not be readable by group or others (chmod 600)",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn key_from(env: Option<String>, path: &std::path::Path) -> Result<attest::KeyPair> {
    match env {
        Some(hex) => {
            let seed = attest::hex::decode_array::<32>(hex.trim()).map_err(|_| {
                anyhow::anyhow!("{KEY_ENV} must be the key's 32-byte seed in hex (64 digits)")
            })?;
            Ok(attest::KeyPair::from_seed(&seed))
        }
        None => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            Ok(attest::keyfile::load_or_create(path)?.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_environment_when_set_else_from_a_private_file() {
        let dir = std::env::temp_dir().join(format!("controller-key-{}", std::process::id()));
        let path = dir.join("controller.key");
        let seed = "11".repeat(32);
        let from_env = key_from(Some(seed.clone()), &path).unwrap();
        assert_eq!(
            from_env.public(),
            attest::KeyPair::from_seed(&[0x11; 32]).public()
        );
        assert!(
            !path.exists(),
            "no file made when the environment holds the key"
        );
        let e = key_from(Some("xyz".into()), &path).unwrap_err().to_string();
        assert!(e.contains(KEY_ENV) && !e.contains("xyz"), "{e}");
        let made = key_from(None, &path).unwrap();
        assert_eq!(key_from(None, &path).unwrap().public(), made.public());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            key_from(None, &path)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
