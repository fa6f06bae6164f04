//! The controller's key in a PKCS#11 token (`[pkcs11]`; docs/security.md, "Keys"): the
//! secret never leaves the token, which signs each message (CKM_EDDSA, Ed25519).
//!
//! At start the module is loaded, the token found by label, the user logged in with the PIN
//! from `pin_file` (mode 0600), and the key pair found by label. One signature made and
//! checked against the public key read from the token proves the pair before anything is
//! signed with it. A signature the token cannot make later (a token pulled out) is retried
//! on a new session once, then stops the process: a message must never go out unsigned or
//! signed by another key.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::config::Pkcs11Config;

/// An open, logged-in session and the private key's handle in it.
struct Signer {
    ctx: Pkcs11,
    cfg: Pkcs11Config,
    pin: String,
    session: Session,
    key: ObjectHandle,
}

impl Signer {
    fn open(ctx: &Pkcs11, cfg: &Pkcs11Config, pin: &str) -> Result<(Session, ObjectHandle)> {
        let slot = ctx
            .get_slots_with_token()?
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|i| i.label() == cfg.token))
            .with_context(|| format!("no PKCS#11 token labelled {:?}", cfg.token))?;
        let session = ctx.open_ro_session(slot)?;
        session
            .login(UserType::User, Some(&AuthPin::from(pin.to_string())))
            .context("logging in to the PKCS#11 token (pkcs11.pin_file)")?;
        let key = *session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(cfg.label.as_bytes().to_vec()),
            ])?
            .first()
            .with_context(|| format!("no private key labelled {:?} in the token", cfg.label))?;
        Ok((session, key))
    }

    fn sign(&mut self, msg: &[u8]) -> Result<[u8; 64]> {
        let mech = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Ed25519));
        let sig = match self.session.sign(&mech, self.key, msg) {
            Ok(s) => s,
            Err(first) => {
                tracing::warn!(error = %first, "the PKCS#11 token refused to sign; opening a new session");
                let (session, key) = Self::open(&self.ctx, &self.cfg, &self.pin)?;
                self.session = session;
                self.key = key;
                self.session.sign(&mech, self.key, msg)?
            }
        };
        sig.try_into()
            .map_err(|s: Vec<u8>| anyhow::anyhow!("the token gave a {}-byte signature", s.len()))
    }
}

/// The public key of the pair labelled `cfg.label`: its `CKA_EC_POINT` (an Ed25519 point,
/// raw or as a DER OCTET STRING).
fn public_key(session: &Session, cfg: &Pkcs11Config) -> Result<attest::PublicKey> {
    let handle = *session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(cfg.label.as_bytes().to_vec()),
        ])?
        .first()
        .with_context(|| format!("no public key labelled {:?} in the token", cfg.label))?;
    let point = session
        .get_attributes(handle, &[AttributeType::EcPoint])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .context("the public key has no CKA_EC_POINT")?;
    let raw = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        p if p.len() == 32 => p,
        p => anyhow::bail!("CKA_EC_POINT of {} bytes is no Ed25519 key", p.len()),
    };
    Ok(attest::PublicKey(raw.try_into().expect("32 bytes")))
}

/// The controller's key pair, its secret in the token.
pub fn key(cfg: &Pkcs11Config) -> Result<attest::KeyPair> {
    let pin = crate::runtime::key::read_secret_file(&cfg.pin_file)?;
    let ctx = Pkcs11::new(&cfg.module)
        .with_context(|| format!("loading the PKCS#11 module {}", cfg.module.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of this process loaded the module first.
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => return Err(e).context("initialising the PKCS#11 module"),
    }
    let (session, key) = Signer::open(&ctx, cfg, &pin)?;
    let public = public_key(&session, cfg)?;
    let signer = Arc::new(Mutex::new(Signer {
        ctx,
        cfg: cfg.clone(),
        pin,
        session,
        key,
    }));
    // The pair proven once before anything is signed with it.
    let probe = b"heliostat: the controller key in its token";
    let sig = signer.lock().unwrap().sign(probe)?;
    attest::sigbatch::verify_one(probe, &sig, &public).map_err(|e| {
        anyhow::anyhow!(
            "the token's key {:?} does not sign for its public key: {e}",
            cfg.label
        )
    })?;
    tracing::info!(token = %cfg.token, label = %cfg.label, key = %public, "controller key in a PKCS#11 token");
    Ok(attest::KeyPair::external(
        public,
        Arc::new(move |msg: &[u8]| {
            let mut s = signer.lock().unwrap_or_else(|p| p.into_inner());
            match s.sign(msg) {
                Ok(sig) => sig,
                Err(e) => panic!("the PKCS#11 token cannot sign: {e:#}"),
            }
        }),
    ))
}
