//! The schema pieces the OpenAPI document's operations share, kept apart from the document so
//! that the resource modules, which the document lists, do not depend on it: Stripe's error
//! envelope, the form media type, and the parameter schemas of metadata, currencies and event
//! types (their limits are the ones the parsers enforce).

use paywarden_core::{Currency, Metadata};
use serde::Serialize;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};
use utoipa::ToSchema;

/// Stripe's error envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    /// api_error, card_error, idempotency_error, invalid_request_error.
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: String,
    /// The parameter to change.
    pub param: Option<String>,
}

/// Metadata as sent: Stripe's limits ([`Metadata`]).
pub(crate) fn metadata_param() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "Up to {} keys of 1 to {} characters (no square brackets: the form encoding nests on them), values of at most {}; on update a value \"\" removes its key.",
            Metadata::KEYS_MAX,
            Metadata::KEY_CHARS_MAX,
            Metadata::VALUE_CHARS_MAX
        )))
        .max_properties(Some(Metadata::KEYS_MAX))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(Metadata::KEY_CHARS_MAX))
                .pattern(Some(r"^[^\[\]]*$")),
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(Metadata::VALUE_CHARS_MAX))))
        .build()
}

/// The event types an endpoint receives ([`crate::webhooks::EVENT_TYPES`]), or `*` alone for all.
pub(crate) fn enabled_events_param() -> Array {
    ArrayBuilder::new()
        .description(Some("Event types (see EventObject.type), or `*` alone for all; sent indexed: enabled_events[0]=..."))
        .min_items(Some(1))
        .items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(crate::webhooks::EVENT_TYPES.iter().copied().chain(["*"]))))
        .build()
}

/// The currencies paywarden knows ([`Currency`]), as Stripe writes them; upper case is accepted too.
pub(crate) fn currency_param() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Three-letter ISO 4217 code, lower case."))
        .enum_values(Some(Currency::all().map(Currency::code)))
        .examples([serde_json::json!("usd")])
        .build()
}

/// The request body media type every operation documents (Stripe's); JSON is accepted too.
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// A field that holds an object's id, or the object itself when the request expanded it
/// (`expand[]`); `nullable` when the field may be null.
fn id_or(object: &str, nullable: bool) -> utoipa::openapi::schema::Schema {
    let mut b = utoipa::openapi::schema::OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).description(Some(format!("The id of a {object}"))))
        .item(utoipa::openapi::Ref::from_schema_name(object));
    if nullable {
        b = b.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    utoipa::openapi::schema::Schema::OneOf(b.build())
}

pub(crate) fn charge_or_id_nullable() -> utoipa::openapi::schema::Schema {
    id_or("ChargeObject", true)
}

pub(crate) fn charge_or_id() -> utoipa::openapi::schema::Schema {
    id_or("ChargeObject", false)
}

pub(crate) fn payment_method_or_id_nullable() -> utoipa::openapi::schema::Schema {
    id_or("PaymentMethodObject", true)
}

pub(crate) fn payment_intent_or_id() -> utoipa::openapi::schema::Schema {
    id_or("PaymentIntentObject", false)
}
