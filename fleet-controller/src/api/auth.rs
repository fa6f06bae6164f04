//! Who is calling: `Authorization: Bearer hst_...` turned into a [`Caller`] by the hash of
//! the token (the store keeps nothing else), or a 401 with a JSON reason. The token is
//! never logged nor echoed in an error.

use axum::http::header;

use super::{ApiState, AppError, blocking};
use crate::accounts::{Caller, Scope, Token};
use crate::store::accounts::AccountStore;

/// The caller of a route that needs a token. The route then asks for the scope it needs
/// with [`Auth::require`].
pub struct Auth(pub Caller);

impl Auth {
    /// The caller, if its token carries `scope`; a 403 `missing_scope` otherwise.
    pub fn require(&self, scope: Scope) -> Result<Caller, AppError> {
        if self.0.scopes.has(scope) {
            Ok(self.0)
        } else {
            Err(AppError::MissingScope(scope))
        }
    }
}

impl axum::extract::FromRequestParts<ApiState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &ApiState,
    ) -> Result<Self, AppError> {
        // The address that guesses tokens waits (api/guard.rs), whatever it sends now.
        let ip = state.guard.client_ip(&parts.extensions, &parts.headers);
        let now = std::time::Instant::now();
        state.guard.check_address(ip, now)?;
        let caller = match Self::caller(parts, state).await {
            Ok(c) => c,
            Err(e @ (AppError::MissingToken | AppError::BadToken)) => {
                state.guard.failed(ip, now);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        state.guard.take(caller.token, now)?;
        if let Some(slot) = parts.extensions.get::<super::guard::AuditSlot>() {
            slot.set(caller);
        }
        Ok(Auth(caller))
    }
}

impl Auth {
    /// The caller the `Authorization` header names.
    async fn caller(
        parts: &axum::http::request::Parts,
        state: &ApiState,
    ) -> Result<Caller, AppError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(AppError::MissingToken)?;
        let text = value.to_str().map_err(|_| AppError::BadToken)?;
        // RFC 6750 section 2.1: the scheme is case-insensitive.
        let (scheme, rest) = text.split_once(' ').ok_or(AppError::BadToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AppError::BadToken);
        }
        let token = Token::parse(rest.trim()).ok_or(AppError::BadToken)?;
        let hash = token.hash();
        let pool = state.store.clone();
        let caller = blocking(move || Ok(pool.get()?.caller(&hash)?)).await?;
        caller.ok_or(AppError::BadToken)
    }
}
