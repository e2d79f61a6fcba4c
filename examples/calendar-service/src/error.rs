//! Every way a request fails, with the code the caller sees.
//!
//! Codes are the service's own (`^[A-Z][A-Z0-9_]{0,63}$`, which the edge
//! checks); the edge passes them to the browser as they are.

use herald_shared::error_code::FieldError;

/// Why a request was not done.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller is not a member of the calendar (or it does not exist: the
    /// two are not told apart, so ids cannot be probed).
    #[error("you are not a member of calendar `{0}`")]
    Forbidden(String),
    /// A request without a valid `Herald-User` (not from an edge).
    #[error("no caller: the Herald-User header is missing or invalid")]
    NoUser,
    #[error("{0}")]
    NotFound(String),
    /// Another timed event holds the same location at that time.
    #[error("{0}")]
    SlotTaken(String),
    #[error("{0}")]
    CalendarFull(String),
    /// The change's domain event would be refused by Herald.
    #[error("{0}")]
    TooLarge(String),
    /// An update that changes nothing.
    #[error("the update changes nothing")]
    Unchanged,
    /// Other changes to the calendar kept winning the compare-and-set.
    #[error("the calendar changed too often meanwhile; try again")]
    Conflict,
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// NATS (the bucket or JetStream) failed; the change may or may not have
    /// been made, and is then published by the calendar's next change.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl ServiceError {
    /// The code on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden(_) | Self::NoUser => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::SlotTaken(_) => "SLOT_TAKEN",
            Self::CalendarFull(_) => "CALENDAR_FULL",
            Self::TooLarge(_) => "EVENT_TOO_LARGE",
            Self::Unchanged => "UNCHANGED",
            Self::Conflict => "CONFLICT",
            Self::Validation(_) => "VALIDATION_FAILED",
            Self::Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// The failed rules, for `VALIDATION_FAILED`.
    pub fn errors(&self) -> &[FieldError] {
        match self {
            Self::Validation(errors) => errors,
            _ => &[],
        }
    }

    pub(crate) fn validation(path: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError {
            path: path.into(),
            message: message.into(),
        }])
    }

    pub(crate) fn unavailable(err: impl std::fmt::Display) -> Self {
        Self::Unavailable(err.to_string())
    }
}
