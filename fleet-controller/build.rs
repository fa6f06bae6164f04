//! Builds `attest-wasm` (the proof verifier as WebAssembly) for the console's in-browser
//! verification page and hands its path to the crate (`HELIOSTAT_VERIFIER_WASM`). The
//! nested build has its own target folder (`target/verifier-wasm`, shared by every profile,
//! so it runs once) and the environment of a plain `cargo` call. Without the
//! `wasm32-unknown-unknown` target the controller still builds: the page then says the
//! verifier is missing and how to add it (`scripts/setup` installs the target).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("the workspace").to_path_buf();
    for watched in [
        "attest/src",
        "attest/wasm/src",
        "attest/wasm/Cargo.toml",
        "attest/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("attest_wasm.wasm");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"))
        .join("verifier-wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "attest-wasm",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // A plain cargo call: nothing of this build's own settings (profile, flags, target).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME")
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&k);
        }
    }
    let built = target_dir.join("wasm32-unknown-unknown/release/attest_wasm.wasm");
    let ok = cmd.status().is_ok_and(|s| s.success()) && built.exists();
    if ok {
        std::fs::copy(&built, &out).expect("copying the verifier");
    } else {
        println!(
            "cargo:warning=the in-browser verifier (attest-wasm) did not build: `rustup target add wasm32-unknown-unknown`; the console's verify page will say so"
        );
        std::fs::write(&out, b"").expect("writing an empty verifier");
    }
    println!("cargo:rustc-env=HELIOSTAT_VERIFIER_WASM={}", out.display());
}
