//! The publisher's HTTP error: an [`ErrorBody`] with its status, and
//! `Retry-After` when retrying can help.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use herald_shared::error_code::{ErrorBody, ErrorCode};

/// Seconds a client should wait before retrying a retryable error, unless
/// the error says how long (a quota's refill).
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) body: ErrorBody,
    /// `Retry-After` in seconds, when waiting that long can help.
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody::new(code, message).into()
    }

    /// The same error, answered with `Retry-After: <secs>`.
    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
}

impl ApiError {
    /// The error body and its `Retry-After` seconds, if any.
    pub(crate) fn into_parts(self) -> (ErrorBody, Option<u64>) {
        (self.body, self.retry_after_secs)
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        let retry_after_secs = body.code.is_retryable().then_some(DEFAULT_RETRY_AFTER_SECS);
        Self {
            body,
            retry_after_secs,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.body.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
