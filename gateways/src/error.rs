//! The one error type of the gateways, answered as HTTP status + JSON or as a gRPC status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed. Client errors keep their detail; internal ones are logged once here
/// and answered as "internal error".
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// No valid key.
    #[error("missing or invalid bearer key")]
    Unauthenticated,
    /// The key may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// The thing is not in a state that allows this (an invalid transition); the text names both.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A webhook's signature was not accepted; the text says why.
    #[error("{0}")]
    BadSignature(String),
    /// Over a rate limit: retry after this long.
    #[error("rate limited: retry in {} s", crate::limits::retry_after_secs(*.0))]
    TooManyRequests(std::time::Duration),
    /// A dependency (bus, database) is down; retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the detail is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl GatewayError {
    fn log_internal(&self) {
        if let GatewayError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.log_internal();
        let status = match &self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthenticated | GatewayError::BadSignature(_) => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::FailedPrecondition(_) => StatusCode::CONFLICT,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            GatewayError::Unauthenticated => {
                headers.insert(
                    "www-authenticate",
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            GatewayError::TooManyRequests(wait) => {
                headers.insert(
                    "retry-after",
                    axum::http::HeaderValue::from(crate::limits::retry_after_secs(wait)),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<GatewayError> for tonic::Status {
    fn from(error: GatewayError) -> Self {
        error.log_internal();
        let message = error.to_string();
        match error {
            GatewayError::BadRequest(_) => tonic::Status::invalid_argument(message),
            GatewayError::Unauthenticated | GatewayError::BadSignature(_) => {
                tonic::Status::unauthenticated(message)
            }
            GatewayError::TooManyRequests(_) => tonic::Status::resource_exhausted(message),
            GatewayError::Forbidden(_) => tonic::Status::permission_denied(message),
            GatewayError::NotFound(_) => tonic::Status::not_found(message),
            GatewayError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            GatewayError::Unavailable(_) => tonic::Status::unavailable(message),
            GatewayError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl From<actors::store::StoreError> for GatewayError {
    fn from(error: actors::store::StoreError) -> Self {
        GatewayError::Internal(error.to_string())
    }
}

impl From<actors::ApiError> for GatewayError {
    fn from(error: actors::ApiError) -> Self {
        match error {
            actors::ApiError::Bus(e) => GatewayError::Unavailable(format!("bus: {e}")),
            actors::ApiError::Store(e) => e.into(),
            e @ actors::ApiError::TooLarge { .. } => GatewayError::BadRequest(e.to_string()),
        }
    }
}

impl From<actors::domain::Refusal> for GatewayError {
    fn from(refusal: actors::domain::Refusal) -> Self {
        GatewayError::FailedPrecondition(refusal.0)
    }
}
