//! The publisher's HTTP error: an [`ErrorBody`] with its status, and
//! `Retry-After` when retrying can help.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use herald_shared::error_code::{ErrorBody, ErrorCode};

/// Seconds a client should wait before retrying a `NATS_UNAVAILABLE`.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) ErrorBody);

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        Self(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retryable = self.0.code == ErrorCode::NatsUnavailable;
        let mut response = (status, Json(self.0)).into_response();
        if retryable {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        response
    }
}
