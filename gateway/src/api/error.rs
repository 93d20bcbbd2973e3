//! The one place where domain errors become protocol errors. Clients get `{"error": "..."}` with the status from
//! this table; server-side faults are logged with their full message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;

/// HTTP status for each error.
pub fn http_status(e: &GatewayError) -> StatusCode {
    match e {
        GatewayError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        GatewayError::ModelNotFound(_) | GatewayError::VersionNotFound { .. } => StatusCode::NOT_FOUND,
        GatewayError::NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        GatewayError::Conflict(_) => StatusCode::CONFLICT,
        GatewayError::LoadFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
        GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        GatewayError::Overloaded(_) | GatewayError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        GatewayError::Inference(_) | GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Wrapper so handlers can `?` domain errors into responses.
#[derive(Debug)]
pub struct ApiError(pub GatewayError);

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = http_status(&self.0);
        if status.is_server_error() && !matches!(self.0, GatewayError::Overloaded(_) | GatewayError::NotReady { .. }) {
            tracing::error!(error = %self.0, "request failed on the server side");
        } else {
            tracing::debug!(error = %self.0, status = status.as_u16(), "request refused");
        }
        let retry = matches!(self.0, GatewayError::Overloaded(_) | GatewayError::ShuttingDown);
        let mut resp = (status, Json(serde_json::json!({ "error": self.0.to_string() }))).into_response();
        if retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_mistakes_are_4xx_and_overload_is_503() {
        assert_eq!(http_status(&GatewayError::invalid("x")), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(&GatewayError::ModelNotFound("m".into())), StatusCode::NOT_FOUND);
        assert_eq!(http_status(&GatewayError::PayloadTooLarge { limit: 1 }), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(http_status(&GatewayError::Overloaded("q".into())), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(&GatewayError::Timeout(5)), StatusCode::GATEWAY_TIMEOUT);
    }
}
