//! The one place where domain errors become protocol errors: HTTP clients get `{"error": "..."}` with the status
//! from this table, gRPC clients the table's code with the same message; server-side faults are logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;

/// The table: each error's HTTP status and gRPC code. Both front ends read it; neither invents its own mapping.
pub fn codes(e: &GatewayError) -> (StatusCode, tonic::Code) {
    use tonic::Code;
    match e {
        GatewayError::InvalidInput(_) => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
        GatewayError::ModelNotFound(_) | GatewayError::VersionNotFound { .. } | GatewayError::NotFound(_) => {
            (StatusCode::NOT_FOUND, Code::NotFound)
        }
        GatewayError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, Code::DeadlineExceeded),
        GatewayError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
        GatewayError::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
        GatewayError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Code::ResourceExhausted),
        GatewayError::Conflict(_) => (StatusCode::CONFLICT, Code::FailedPrecondition),
        GatewayError::LoadFailed(_) => (StatusCode::UNPROCESSABLE_ENTITY, Code::FailedPrecondition),
        GatewayError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, Code::Unauthenticated),
        GatewayError::Forbidden(_) => (StatusCode::FORBIDDEN, Code::PermissionDenied),
        GatewayError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, Code::ResourceExhausted),
        GatewayError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable),
        GatewayError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, Code::DeadlineExceeded),
        GatewayError::Upstream(_) => (StatusCode::BAD_GATEWAY, Code::Unavailable),
        GatewayError::Inference(_) | GatewayError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
    }
}

/// HTTP status for each error.
pub fn http_status(e: &GatewayError) -> StatusCode {
    codes(e).0
}

/// The gRPC status for an error: the table's code and the same message HTTP clients get.
pub fn grpc_status(e: &GatewayError) -> tonic::Status {
    log(e);
    tonic::Status::new(codes(e).1, e.to_string())
}

/// Server-side faults are logged with their message; client mistakes and load shedding only at debug.
fn log(e: &GatewayError) {
    let status = http_status(e);
    if status.is_server_error() && !matches!(e, GatewayError::Overloaded(_) | GatewayError::NotReady { .. }) {
        tracing::error!(error = %e, "request failed on the server side");
    } else {
        tracing::debug!(error = %e, status = status.as_u16(), "request refused");
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
        log(&self.0);
        let retry = matches!(
            self.0,
            GatewayError::Overloaded(_) | GatewayError::ShuttingDown | GatewayError::StoreUnavailable(_)
        );
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
        assert_eq!(codes(&GatewayError::invalid("x")).1, tonic::Code::InvalidArgument);
        assert_eq!(codes(&GatewayError::Overloaded("q".into())).1, tonic::Code::ResourceExhausted);
        assert_eq!(codes(&GatewayError::ShuttingDown).1, tonic::Code::Unavailable);
        assert_eq!(codes(&GatewayError::Timeout(5)).1, tonic::Code::DeadlineExceeded);
        assert_eq!(codes(&GatewayError::ModelNotFound("m".into())).1, tonic::Code::NotFound);
    }

    /// The domain's own classification and this table agree on every variant: server faults are 5xx, client
    /// mistakes 4xx, and shed load a 503 with RESOURCE_EXHAUSTED or UNAVAILABLE.
    #[test]
    fn the_status_table_agrees_with_the_fault_of_every_error() {
        use crate::error::Fault;
        for e in GatewayError::examples() {
            let (status, code) = codes(&e);
            match e.fault() {
                Fault::Server => assert!(status.is_server_error(), "{e:?} -> {status}"),
                Fault::Client => assert!(status.is_client_error(), "{e:?} -> {status}"),
                Fault::Shed => {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{e:?}");
                    assert!(matches!(code, tonic::Code::ResourceExhausted | tonic::Code::Unavailable), "{e:?}");
                }
            }
        }
    }
}
