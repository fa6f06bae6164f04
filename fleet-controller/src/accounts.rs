//! Accounts and API tokens: who may call the API, and for what.
//!
//! An account is a buyer (submits jobs, owns their inputs and results), a provider (runs
//! devices; its agents fetch the inputs of open jobs) or an operator (approves devices,
//! manages accounts). It holds tokens; each token carries [`Scopes`]: `read` (its own jobs,
//! results and blobs), `submit` (upload blobs, submit and cancel jobs), `operate` (device
//! approval, accounts and tokens; only an operator's token may carry it).
//!
//! A token is `hst_` and 64 hex digits: 32 random bytes, shown once when it is made. The
//! store keeps only [`TokenHash`], the SHA-256 of those 32 bytes, and finds a caller by it,
//! so nothing compares secrets and nothing that reads the database can call the API.
//! A token's secret is never logged: its `Debug` says `Token(..)`.

use std::fmt;

use crate::store::StoreError;
use crate::store::accounts::{AccountRow, AccountStore, NewAccount, NewToken};

/// An account's number (assigned by the store, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AccountId(pub u64);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A token's number: what lists show and what a revocation names (never the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct TokenId(pub u64);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What an account is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// Submits jobs and owns their inputs and results.
    Buyer,
    /// Runs devices: its agents fetch the inputs of jobs.
    Provider,
    /// Runs the controller: devices, accounts, tokens.
    Operator,
}

impl AccountKind {
    /// Every kind, in the order lists show them.
    pub const ALL: [AccountKind; 3] = [
        AccountKind::Buyer,
        AccountKind::Provider,
        AccountKind::Operator,
    ];

    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Buyer => "buyer",
            AccountKind::Provider => "provider",
            AccountKind::Operator => "operator",
        }
    }

    /// Parses [`AccountKind::as_str`].
    pub fn parse(s: &str) -> Option<AccountKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Parses a kind a person typed or posted, naming the known ones when it is none.
    pub fn parse_named(s: &str) -> Result<AccountKind, AccountError> {
        Self::parse(s).ok_or_else(|| AccountError::UnknownKind(s.into()))
    }

    /// The scopes this kind's tokens may carry, and get when none are named.
    pub fn allowed(self) -> Scopes {
        match self {
            AccountKind::Buyer | AccountKind::Provider => Scopes::of(&[Scope::Read, Scope::Submit]),
            AccountKind::Operator => Scopes::of(&[Scope::Read, Scope::Submit, Scope::Operate]),
        }
    }

    /// The scopes of a token made without asking for any: a provider's is `read` only (the
    /// token its agents carry); one with `submit` (staking, buying) must be asked for.
    pub fn default_scopes(self) -> Scopes {
        match self {
            AccountKind::Provider => Scopes::of(&[Scope::Read]),
            other => other.allowed(),
        }
    }
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for AccountKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One thing a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read the account's own jobs, results and blobs.
    Read,
    /// Upload blobs, submit and cancel jobs.
    Submit,
    /// Approve and revoke devices; create accounts and tokens; revoke tokens.
    Operate,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Read, Scope::Submit, Scope::Operate];

    /// The name tokens and requests use.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Operate => "operate",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Submit => 2,
            Scope::Operate => 4,
        }
    }
}

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// The set of `scopes`.
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |b, s| b | s.bit()))
    }

    /// Whether `scope` is in the set.
    pub fn has(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether every scope of `self` is in `other`.
    pub fn within(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.has(*s))
    }

    /// Parses names (`["read", "submit"]`); an unknown one is returned as the error.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Scopes, String> {
        let mut set = Scopes::default();
        for n in names {
            let n = n.trim();
            let s = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == n)
                .ok_or_else(|| n.to_string())?;
            set.0 |= s.bit();
        }
        Ok(set)
    }

    /// The stored form: names joined by commas (`read,submit`).
    pub fn to_stored(self) -> String {
        self.iter().map(Scope::as_str).collect::<Vec<_>>().join(",")
    }

    /// Parses [`Scopes::to_stored`].
    pub fn from_stored(s: &str) -> Result<Scopes, String> {
        Scopes::parse(s.split(',').filter(|n| !n.is_empty()))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({})", self.to_stored())
    }
}

impl serde::Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(Scope::as_str))
    }
}

/// The prefix of every token: a leaked one is easy to recognise (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "hst_";

/// A token's secret: 32 random bytes. Shown once, as [`Token::reveal`]; never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// SHA-256 of a token's 32 secret bytes: what the store keeps and looks callers up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", attest::hex::encode(&self.0[..4]))
    }
}

impl Token {
    /// A token from 32 secret bytes (tests pass fixed ones; [`Token::generate`] reads the
    /// operating system's random source).
    pub fn from_secret(secret: [u8; 32]) -> Token {
        Token(secret)
    }

    /// A new token from the operating system's random source.
    pub fn generate() -> Result<Token, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Token(secret))
    }

    /// Parses `hst_` + 64 hex digits; `None` for anything else (the reason is not told: a
    /// caller learns nothing about what a valid token looks like from the error).
    pub fn parse(s: &str) -> Option<Token> {
        let hex = s.strip_prefix(TOKEN_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        attest::hex::decode_array::<32>(hex).ok().map(Token)
    }

    /// What the store keeps.
    pub fn hash(&self) -> TokenHash {
        TokenHash(attest::Hash32::digest(&self.0).0)
    }

    /// Its secret bytes (a console session's cookie carries them as hex).
    pub fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The token as its holder uses it (`hst_...`): printed once, never logged.
    pub fn reveal(&self) -> String {
        format!("{TOKEN_PREFIX}{}", attest::hex::encode(&self.0))
    }
}

/// Who is calling: the account behind a valid, unrevoked token, with that token's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: AccountId,
    /// Its kind.
    pub kind: AccountKind,
    /// The token's scopes.
    pub scopes: Scopes,
    /// The token.
    pub token: TokenId,
}

/// Why an account or a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Not buyer, provider or operator.
    #[error("unknown account kind {0:?} (known: buyer, provider, operator)")]
    UnknownKind(String),
    /// The name is not 1 to 64 of `A-Z a-z 0-9 . _ -`.
    #[error("account name {0:?}: 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    /// Another account has this name.
    #[error("an account named {0:?} exists")]
    NameTaken(String),
    /// A scope name that does not exist.
    #[error("unknown scope {0:?} (known: read, submit, operate)")]
    UnknownScope(String),
    /// A scope the account's kind may not hold (`operate` is for operators).
    #[error("a {kind} account's tokens may carry {allowed}, not {asked}")]
    ScopeNotAllowed {
        /// The account's kind.
        kind: AccountKind,
        /// What was asked.
        asked: String,
        /// What the kind allows.
        allowed: String,
    },
    /// A token label over 64 bytes.
    #[error("token label: at most 64 bytes")]
    BadLabel,
    /// No such account.
    #[error("no account {0}")]
    UnknownAccount(AccountId),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// An account just made, with its first token (shown once).
#[derive(Debug)]
pub struct Created {
    /// The account.
    pub account: AccountRow,
    /// Its first token's number.
    pub token_id: TokenId,
    /// Its first token.
    pub token: Token,
    /// The token's scopes.
    pub scopes: Scopes,
}

fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadName(name.into()))
    }
}

/// The scopes a new token of a `kind` account gets: `asked` (names), or all the kind may
/// hold when `None`.
pub fn scopes_for(kind: AccountKind, asked: Option<&[String]>) -> Result<Scopes, AccountError> {
    let Some(asked) = asked else {
        return Ok(kind.default_scopes());
    };
    let scopes =
        Scopes::parse(asked.iter().map(String::as_str)).map_err(AccountError::UnknownScope)?;
    if scopes.is_empty() || !scopes.within(kind.allowed()) {
        return Err(AccountError::ScopeNotAllowed {
            kind,
            asked: scopes.to_stored(),
            allowed: kind.allowed().to_stored(),
        });
    }
    Ok(scopes)
}

/// A token's label: at most 64 bytes.
fn check_label(label: &str) -> Result<(), AccountError> {
    if label.len() > 64 {
        return Err(AccountError::BadLabel);
    }
    Ok(())
}

/// Makes an account and its first token (`token`, which the caller generated) in one
/// transaction. The CLI's `account create` and `POST /api/v1/accounts` both come here.
#[allow(clippy::too_many_arguments)]
pub fn create(
    store: &mut impl AccountStore,
    kind: AccountKind,
    name: &str,
    quota_bytes: u64,
    scopes: Option<&[String]>,
    label: &str,
    token: Token,
    now_ms: u64,
) -> Result<Created, AccountError> {
    check_name(name)?;
    check_label(label)?;
    let scopes = scopes_for(kind, scopes)?;
    let new = NewAccount {
        kind,
        name: name.into(),
        quota_bytes,
        created_ms: now_ms,
    };
    let t = NewToken {
        hash: token.hash(),
        scopes,
        label: label.into(),
        created_ms: now_ms,
    };
    let (account, token_id) = store
        .create_account(&new, &t)?
        .ok_or_else(|| AccountError::NameTaken(name.into()))?;
    Ok(Created {
        account,
        token_id,
        token,
        scopes,
    })
}

/// Adds a token (`token`, which the caller generated) to an account.
pub fn issue(
    store: &mut impl AccountStore,
    account: AccountId,
    scopes: Option<&[String]>,
    label: &str,
    token: Token,
    now_ms: u64,
) -> Result<(TokenId, Token, Scopes), AccountError> {
    check_label(label)?;
    let row = store
        .account(account)?
        .ok_or(AccountError::UnknownAccount(account))?;
    let scopes = scopes_for(row.kind, scopes)?;
    let t = NewToken {
        hash: token.hash(),
        scopes,
        label: label.into(),
        created_ms: now_ms,
    };
    let id = store
        .add_token(account, &t)?
        .ok_or(AccountError::UnknownAccount(account))?;
    Ok((id, token, scopes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_token_round_trips_through_its_text_and_only_its_hash_finds_the_caller() {
        let t = Token::from_secret([7; 32]);
        let text = t.reveal();
        assert!(text.starts_with("hst_") && text.len() == 68, "{text}");
        assert_eq!(Token::parse(&text), Some(t.clone()));
        assert_eq!(format!("{t:?}"), "Token(..)");
        for bad in [
            "",
            "hst_",
            &text[..67],
            &text[4..],
            &format!("{text}0"),
            "Bearer x",
        ] {
            assert_eq!(Token::parse(bad), None, "{bad}");
        }
        assert_eq!(t.hash().0, attest::Hash32::digest(&[7; 32]).0);

        let mut s = SqliteStore::in_memory().unwrap();
        let made = create(
            &mut s,
            AccountKind::Buyer,
            "alice",
            1 << 20,
            None,
            "laptop",
            t.clone(),
            5,
        )
        .unwrap();
        assert_eq!(made.scopes, Scopes::of(&[Scope::Read, Scope::Submit]));
        let caller = s.caller(&t.hash()).unwrap().unwrap();
        assert_eq!(
            (caller.account, caller.kind, caller.scopes, caller.token),
            (
                made.account.id,
                AccountKind::Buyer,
                made.scopes,
                made.token_id
            )
        );
        assert_eq!(s.caller(&Token::from_secret([8; 32]).hash()).unwrap(), None);
        // Revoked: it no longer finds anyone.
        assert!(s.revoke_token(made.token_id, 9).unwrap());
        assert_eq!(s.caller(&t.hash()).unwrap(), None);
        assert!(!s.revoke_token(TokenId(999), 9).unwrap());
    }

    #[test]
    fn names_scopes_and_kinds_are_checked_before_anything_is_stored() {
        let mut s = SqliteStore::in_memory().unwrap();
        let tok = || Token::from_secret([1; 32]);
        let op = |s: &mut SqliteStore, kind, name: &str, scopes: Option<&[String]>| {
            create(s, kind, name, 0, scopes, "", tok(), 1)
        };
        assert!(matches!(
            op(&mut s, AccountKind::Buyer, "a b", None),
            Err(AccountError::BadName(_))
        ));
        assert!(matches!(
            op(&mut s, AccountKind::Buyer, "", None),
            Err(AccountError::BadName(_))
        ));
        let operate = ["operate".to_string()];
        let e = op(&mut s, AccountKind::Buyer, "bob", Some(&operate)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a buyer account's tokens may carry read,submit, not operate"
        );
        let e = op(&mut s, AccountKind::Buyer, "bob", Some(&["root".into()])).unwrap_err();
        assert!(
            matches!(e, AccountError::UnknownScope(ref n) if n == "root"),
            "{e}"
        );
        assert!(matches!(
            op(&mut s, AccountKind::Buyer, "bob", Some(&[])),
            Err(AccountError::ScopeNotAllowed { .. })
        ));
        assert!(
            s.accounts().unwrap().is_empty(),
            "nothing stored on refusal"
        );
        let ops = op(&mut s, AccountKind::Operator, "ops", Some(&operate)).unwrap();
        assert_eq!(ops.scopes, Scopes::of(&[Scope::Operate]));
        assert!(matches!(
            op(&mut s, AccountKind::Buyer, "ops", None),
            Err(AccountError::NameTaken(_))
        ));
        let (id, t, scopes) = issue(
            &mut s,
            ops.account.id,
            Some(&["read".into()]),
            "ci",
            Token::from_secret([2; 32]),
            3,
        )
        .unwrap();
        assert_eq!(scopes, Scopes::of(&[Scope::Read]));
        assert_eq!(s.caller(&t.hash()).unwrap().unwrap().token, id);
        assert!(matches!(
            issue(&mut s, AccountId(77), None, "", tok(), 3),
            Err(AccountError::UnknownAccount(AccountId(77)))
        ));
    }

    #[test]
    fn scopes_store_as_names_and_parse_back() {
        let all = AccountKind::Operator.allowed();
        assert_eq!(all.to_stored(), "read,submit,operate");
        assert_eq!(Scopes::from_stored("read,submit,operate"), Ok(all));
        assert_eq!(Scopes::from_stored(""), Ok(Scopes::default()));
        assert_eq!(Scopes::from_stored("read,x"), Err("x".into()));
        assert_eq!(
            serde_json::to_value(all).unwrap(),
            serde_json::json!(["read", "submit", "operate"])
        );
        assert!(Scopes::of(&[Scope::Read]).within(all));
        assert!(!all.within(AccountKind::Provider.allowed()));
    }
}
