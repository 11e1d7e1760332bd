//! Stripe's error object: `{"error": {"type", "code", "decline_code", "message", "param"}}`.
//! Every error a client can cause is one of these with a 4xx status and a message that says
//! what to change. A 500 is a bug in paywarden, never the client's input.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    ApiError,
    CardError,
    IdempotencyError,
    InvalidRequestError,
    AuthenticationError,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(rename = "type")]
    pub kind: ErrorType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Card errors carry the objects they concern, as Stripe's do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<Value>,
    /// Seconds, for 429 and 503.
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorType, code: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            code: code.map(str::to_string),
            decline_code: None,
            message: message.into(),
            param: None,
            charge: None,
            payment_intent: None,
            payment_method: None,
            retry_after: None,
        }
    }

    pub fn invalid(code: &str, param: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, Some(code), message).param(param)
    }

    pub fn missing(param: &str) -> ApiError {
        ApiError::invalid("parameter_missing", param, format!("Missing required param: {param}."))
    }

    pub fn unknown(param: &str) -> ApiError {
        ApiError::invalid(
            "parameter_unknown",
            param,
            format!("Received unknown parameter: {param}. Remove it; see /v1/openapi.json for the parameters this endpoint takes."),
        )
    }

    pub fn no_such(object: &str, id: &str, param: Option<&str>) -> ApiError {
        let status = if param.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::NOT_FOUND };
        let mut e = ApiError::new(
            status,
            ErrorType::InvalidRequestError,
            Some("resource_missing"),
            format!("No such {object}: '{}'", truncate(id, 64)),
        );
        e.param = Some(param.unwrap_or("id").to_string());
        e
    }

    pub fn unexpected_state(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorType::InvalidRequestError, Some("payment_intent_unexpected_state"), message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorType::InvalidRequestError, None, message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorType::ApiError, Some(code), message);
        e.retry_after = Some(1);
        e
    }

    pub fn internal(what: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %what, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            None,
            "An internal error occurred in paywarden; nothing about your request was wrong. Retry with the same Idempotency-Key.",
        )
    }

    pub fn param(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        s.chars().take(max).collect::<String>() + "..."
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: &'a ApiError,
}

impl ApiError {
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope { error: self }).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, [(axum::http::header::CONTENT_TYPE, "application/json")], self.body()).into_response();
        if let Some(s) = self.retry_after {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// A core state machine's refusal: a 400 naming the parameter to change.
pub(crate) fn state_error(e: paywarden_core::StateError) -> ApiError {
    use paywarden_core::StateError;
    match &e {
        StateError::UnexpectedState { .. } => ApiError::unexpected_state(e.to_string()),
        StateError::MissingPaymentMethod => ApiError::invalid("parameter_missing", "payment_method", e.to_string()),
        StateError::CaptureTooLarge { .. } => ApiError::invalid("amount_too_large", "amount_to_capture", e.to_string()),
        StateError::RefundTooLarge { .. } => ApiError::invalid("amount_too_large", "amount", e.to_string()),
        StateError::AlreadyRefunded { .. } => ApiError::invalid("charge_already_refunded", "payment_intent", e.to_string()),
        StateError::NothingToRefund { .. } => ApiError::invalid("charge_not_refundable", "payment_intent", e.to_string()),
        StateError::Metadata(m) => metadata_error(m.clone()),
        StateError::Overflow => ApiError::internal(e),
    }
}

/// A card the acquirer refused to tokenize: 402, naming the card field.
pub(crate) fn card_error(e: paywarden_acquirer::CardError) -> ApiError {
    ApiError::new(StatusCode::PAYMENT_REQUIRED, ErrorType::CardError, Some(e.code()), e.to_string()).param(e.param())
}

/// The acquirer could not be reached: 502, nothing charged.
pub(crate) fn acquirer_error(e: paywarden_acquirer::ConnectorError) -> ApiError {
    tracing::warn!(error = %e, "acquirer call failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorType::ApiError,
        Some("acquirer_unavailable"),
        format!("The acquirer could not be reached ({e}); nothing was charged. Retry with the same Idempotency-Key."),
    )
}

/// Metadata over Stripe's limits: a 400 on `metadata`.
pub fn metadata_error(e: paywarden_core::MetadataError) -> ApiError {
    ApiError::invalid("parameter_invalid", "metadata", e.to_string())
}
