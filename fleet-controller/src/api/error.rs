//! The API's one error type and the extractors whose rejections are that error: every
//! failure is JSON `{"reason", "message"}` with a stable `reason`, never axum's plain text.

use axum::Json;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::accounting::HoursError;
use crate::accounts::{AccountError, Scope};
use crate::bundles::BundleError;
use crate::certificates::{ImportError, RetireFailure};
use crate::jobs::SubmitError;
use crate::ledger::LedgerError;
use crate::store::StoreError;
use crate::store::certificates::RetireError;
use crate::store::enrollment::EnrollError;
use attest::DeviceId;

/// Every error the API returns.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Not a device id.
    #[error("{0}")]
    BadDeviceId(String),
    /// No such device.
    #[error("no device {0}")]
    UnknownDevice(DeviceId),
    /// Nothing to put in a bundle.
    #[error("{0}")]
    NothingToProve(String),
    /// No receipt of that job from that device.
    #[error("{0}")]
    NoReceipt(String),
    /// An output upload the job cannot take (not a provider's, not done, wrong index or
    /// size).
    #[error("{0}")]
    OutputRefused(String),
    /// Uploaded outputs that together do not hash to the receipt's `output_hash`.
    #[error("{0}")]
    OutputMismatch(String),
    /// A period that is missing or inverted.
    #[error("{0}")]
    BadPeriod(String),
    /// A query string that does not parse.
    #[error("{0}")]
    BadQuery(String),
    /// A period longer than the route allows.
    #[error("{0}")]
    PeriodTooLong(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Something else went wrong inside.
    #[error("{0}")]
    Internal(String),
    /// No such route.
    #[error("no such route")]
    NoRoute,
    /// Not a hex SHA-256.
    #[error("{0}")]
    BadHash(String),
    /// No blob with that hash that the caller may read.
    #[error("no blob {0}")]
    NoSuchBlob(String),
    /// A body larger than the route accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A request body that could not be read.
    #[error("{0}")]
    BadBody(String),
    /// A JSON body that does not parse into what the route takes.
    #[error("{0}")]
    BadJson(String),
    /// A route that exists, asked with a method it does not answer.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No `Authorization: Bearer` header on a route that needs a token.
    #[error("this route needs a token: Authorization: Bearer hst_...")]
    MissingToken,
    /// A token that is malformed, unknown or revoked (which one is not said).
    #[error("the token is not valid (malformed, unknown or revoked)")]
    BadToken,
    /// Held back by a rate limit (api/guard.rs).
    #[error("{}", match .0 {
        super::guard::Held::RateLimited(s) => format!("this token is over its request rate: retry in {s} s"),
        super::guard::Held::TooManyFailures(s) => format!("too many bad tokens from this address: retry in {s} s"),
    })]
    Held(super::guard::Held),
    /// A valid token without the scope the route needs.
    #[error("this route needs a token with the {} scope", .0.as_str())]
    MissingScope(Scope),
    /// An upload that would take the account past its quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// An upload whose bytes do not hash to the name it was put under.
    #[error("the body hashes to {got}, not {named}")]
    HashMismatch {
        /// The hash in the path.
        named: String,
        /// The body's.
        got: String,
    },
    /// A blob a job that is not finished still needs.
    #[error("{0}")]
    BlobInUse(String),
    /// Not a job id (32 hex digits).
    #[error("{0}")]
    BadJobId(String),
    /// No such job of the caller's (another account's job is not told apart).
    #[error("no job {0}")]
    UnknownJob(String),
    /// A job refused at submission.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// A move the job's state does not allow (cancel of a finished job).
    #[error("{0}")]
    IllegalState(String),
    /// An account or token that could not be made.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// No such token.
    #[error("no token {0}")]
    UnknownToken(u64),
    /// A path segment that is not what the route takes (an account or token number).
    #[error("{0}")]
    BadPath(String),
    /// A certificate import refused whole.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// A certificate retirement refused.
    #[error(transparent)]
    Retire(#[from] RetireFailure),
    /// An enrollment token that enrols nothing.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
    /// A redemption's hello that does not prove the device's key.
    #[error("hello: {0}")]
    BadHello(String),
}

impl AppError {
    pub(super) fn reason(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::BadDeviceId(_) => (StatusCode::BAD_REQUEST, "bad_device_id"),
            AppError::UnknownDevice(_) => (StatusCode::NOT_FOUND, "unknown_device"),
            AppError::NothingToProve(_) => (StatusCode::CONFLICT, "nothing_to_prove"),
            AppError::NoReceipt(_) => (StatusCode::NOT_FOUND, "no_receipt"),
            AppError::OutputRefused(_) => (StatusCode::CONFLICT, "output_refused"),
            AppError::OutputMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "output_mismatch"),
            AppError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query"),
            AppError::BadPeriod(_) => (StatusCode::BAD_REQUEST, "bad_period"),
            AppError::PeriodTooLong(_) => (StatusCode::BAD_REQUEST, "period_too_long"),
            AppError::Store(StoreError::Ledger(LedgerError::Insufficient { .. })) => {
                (StatusCode::PAYMENT_REQUIRED, "insufficient_credits")
            }
            AppError::Store(StoreError::Ledger(LedgerError::SpendCap { .. })) => {
                (StatusCode::PAYMENT_REQUIRED, "spend_cap")
            }
            AppError::Store(StoreError::Ledger(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "ledger_refused")
            }
            AppError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            AppError::NoRoute => (StatusCode::NOT_FOUND, "no_such_route"),
            AppError::BadHash(_) => (StatusCode::BAD_REQUEST, "bad_hash"),
            AppError::NoSuchBlob(_) => (StatusCode::NOT_FOUND, "no_such_blob"),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AppError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            AppError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token"),
            AppError::BadToken => (StatusCode::UNAUTHORIZED, "bad_token"),
            AppError::MissingScope(_) => (StatusCode::FORBIDDEN, "missing_scope"),
            AppError::Held(super::guard::Held::RateLimited(_)) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            AppError::Held(super::guard::Held::TooManyFailures(_)) => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_failures")
            }
            AppError::QuotaExceeded(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            AppError::HashMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch"),
            AppError::BlobInUse(_) => (StatusCode::CONFLICT, "blob_in_use"),
            AppError::BadJobId(_) => (StatusCode::BAD_REQUEST, "bad_job_id"),
            AppError::UnknownJob(_) => (StatusCode::NOT_FOUND, "unknown_job"),
            AppError::Submit(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.reason()),
            AppError::IllegalState(_) => (StatusCode::CONFLICT, "illegal_state"),
            AppError::Account(e) => match e {
                AccountError::UnknownKind(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_kind"),
                AccountError::BadName(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_name"),
                AccountError::NameTaken(_) => (StatusCode::CONFLICT, "name_taken"),
                AccountError::UnknownScope(_) => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "unknown_scope")
                }
                AccountError::ScopeNotAllowed { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "scope_not_allowed")
                }
                AccountError::BadLabel => (StatusCode::UNPROCESSABLE_ENTITY, "bad_label"),
                AccountError::UnknownAccount(_) => (StatusCode::NOT_FOUND, "unknown_account"),
                AccountError::Random(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                AccountError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            },
            AppError::UnknownToken(_) => (StatusCode::NOT_FOUND, "unknown_token"),
            AppError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            AppError::Import(e) => import_reason(e),
            AppError::Retire(e) => retire_reason(e),
            AppError::Enroll(EnrollError::BadToken) => {
                (StatusCode::UNAUTHORIZED, "bad_enrollment_token")
            }
            AppError::Enroll(EnrollError::DeviceRevoked(_)) => {
                (StatusCode::CONFLICT, "device_revoked")
            }
            AppError::BadHello(_) => (StatusCode::BAD_REQUEST, "bad_hello"),
        }
    }
}

fn import_reason(e: &ImportError) -> (StatusCode, &'static str) {
    match e {
        ImportError::Count(_) | ImportError::Repeated(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "bad_import")
        }
        ImportError::Malformed { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad_certificate"),
        ImportError::Duplicate(_) => (StatusCode::CONFLICT, "certificate_exists"),
        ImportError::UnknownAccount(_) => (StatusCode::NOT_FOUND, "unknown_account"),
        ImportError::NotABuyer(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_a_buyer"),
        ImportError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
    }
}

fn retire_reason(e: &RetireFailure) -> (StatusCode, &'static str) {
    use attest::coverage::CoverageError as C;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        RetireFailure::UnknownJob(_) => (StatusCode::NOT_FOUND, "unknown_job"),
        RetireFailure::NotDone { .. } => (StatusCode::CONFLICT, "job_not_done"),
        RetireFailure::NotRunThere { .. } => (unprocessable, "not_run_there"),
        RetireFailure::Statement(BundleError::Store(_)) | RetireFailure::Store(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
        }
        RetireFailure::Statement(_) => (StatusCode::CONFLICT, "nothing_to_prove"),
        RetireFailure::Refused(RetireError::UnknownCertificate(_)) => {
            (StatusCode::NOT_FOUND, "unknown_certificate")
        }
        RetireFailure::Refused(RetireError::AlreadyRetired { .. })
        | RetireFailure::Refused(RetireError::Coverage(C::AlreadyRetired(_))) => {
            (StatusCode::CONFLICT, "already_retired")
        }
        RetireFailure::Refused(RetireError::Coverage(c)) => match c {
            C::WrongHour { .. } => (unprocessable, "wrong_hour"),
            C::WrongRegion { .. } => (unprocessable, "wrong_region"),
            C::NoEmissions(_) => (unprocessable, "no_emissions"),
            C::Covered { .. } => (unprocessable, "covered_already"),
            C::Certificate(_) => (unprocessable, "bad_certificate"),
            _ => (unprocessable, "coverage_refused"),
        },
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, reason) = self.reason();
        let body = Json(json!({"reason": reason, "message": self.to_string()}));
        if let AppError::Held(
            super::guard::Held::RateLimited(s) | super::guard::Held::TooManyFailures(s),
        ) = self
        {
            return (status, [(header::RETRY_AFTER, s.to_string())], body).into_response();
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 section 3: a 401 names the scheme it wants.
            return (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (status, body).into_response()
    }
}

impl From<BundleError> for AppError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Store(s) => AppError::Store(s),
            BundleError::UnknownDevice(d) => AppError::UnknownDevice(d),
            e @ BundleError::NoReceipt { .. } => AppError::NoReceipt(e.to_string()),
            other => AppError::NothingToProve(other.to_string()),
        }
    }
}

impl From<HoursError> for AppError {
    fn from(e: HoursError) -> Self {
        match e {
            HoursError::Store(s) => AppError::Store(s),
            HoursError::BadHello => AppError::Internal(e.to_string()),
            HoursError::Account(a) => AppError::NothingToProve(a.to_string()),
        }
    }
}

/// axum's `Query`, whose rejection is the API's JSON error rather than plain text.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, AppError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| AppError::BadQuery(e.body_text()))
    }
}

/// A JSON body of at most the router's body limit, parsed into `T`; its rejections (too
/// large, cut off, not JSON, not the shape `T` takes) are the API's JSON errors. The
/// content type is not insisted on: a body that parses is taken.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, AppError> {
        let bytes = <axum::body::Bytes as axum::extract::FromRequest<S>>::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AppError::TooLarge(e.body_text()),
                _ => AppError::BadBody(e.body_text()),
            })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| AppError::BadJson(e.to_string()))
    }
}

impl From<super::guard::Held> for AppError {
    fn from(h: super::guard::Held) -> Self {
        AppError::Held(h)
    }
}
