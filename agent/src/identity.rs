//! The device key: created on first start (file mode 0600), refused if anyone but the
//! owner can read it, never logged or sent. The file handling is `attest::keyfile`'s.

pub use attest::keyfile::{IdentityError, load_or_create};
