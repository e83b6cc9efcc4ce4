//! Refusals as HTTP responses: a 4xx (or 5xx) with a JSON body naming the code, the field at
//! fault, the rule, and the limit when one applies. Segment's clients read `code` and `message`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use junction_model::RequestError;
use junction_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
    pub limit: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            field: None,
            message: message.into(),
            limit: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn bad_request(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message).field(field)
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: error.code(),
            field: Some(error.field().to_owned()),
            message: error.to_string(),
            limit: error.limit(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidQuery(rule) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rule)
            }
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; retry",
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    "the event store failed; nothing was acknowledged, retry",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "success": false,
            "code": self.code,
            "message": self.message,
        });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        if let Some(limit) = self.limit {
            body["limit"] = limit.into();
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// A panic in a handler is a bug; the client still gets JSON, and nothing was acknowledged.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error; nothing was acknowledged, retry",
    )
    .into_response()
}
