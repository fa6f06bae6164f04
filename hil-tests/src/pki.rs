//! Test certificates made by `openssl` (a real X.509 chain, no certificate code of ours): a
//! CA, a server certificate for 127.0.0.1 and localhost, and client certificates whose
//! common names are given.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::require;

/// In `dir`: `{name}-ca.pem` (and its key), `{name}-server.pem` and `.key`, and for each
/// `cn` of `clients`, `{name}-{cn}.pem` and `.key` with that common name. Every file is
/// made readable by others: Mosquitto started as root drops to its own user.
pub fn make(dir: &Path, name: &str, clients: &[&str]) {
    let openssl = require("openssl", "openssl");
    let run = |args: &[&str]| {
        let ok = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .stderr(Stdio::null())
            .status()
            .expect("running openssl");
        assert!(ok.success(), "openssl {args:?}");
    };
    let ca = format!("{name}-ca");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &format!("{ca}.key"),
        "-out",
        &format!("{ca}.pem"),
        "-days",
        "2",
        "-subj",
        &format!("/CN={ca}"),
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("writing san.ext");
    for who in std::iter::once("server").chain(clients.iter().copied()) {
        let base = format!("{name}-{who}");
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{base}.key"),
            "-out",
            &format!("{base}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{base}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{base}.pem"),
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
    }
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).expect("reading the PKI folder") {
        let _ = std::fs::set_permissions(
            e.expect("a PKI file").path(),
            std::fs::Permissions::from_mode(0o644),
        );
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
}
