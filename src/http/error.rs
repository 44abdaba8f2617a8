//! JSON errors: every failure of the HTTP API is `{"error": "..."}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::queue::job_control::ControlError;

/// An API error: a status and a message for the operator.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, and where possible what to do.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        tracing::warn!(error = %err, "admin request failed on the database");
        let status = if crate::db::is_transient(&err) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, format!("database error: {err}"))
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, err.to_string()),
            ControlError::WrongState { .. } | ControlError::UniqueKeyHeld(_) => {
                Self::new(StatusCode::CONFLICT, err.to_string())
            }
            ControlError::Database(e) => e.into(),
        }
    }
}
