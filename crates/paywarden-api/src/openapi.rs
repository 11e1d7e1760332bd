//! The OpenAPI 3 document at `/v1/openapi.json`, generated from the handlers themselves: each
//! resource module's operations carry their path, their typed parameters (the very types their
//! requests are parsed into, [`crate::params::FromParams`]) and their responses (the wire types
//! in [`crate::wire`] and the modules). This module adds what every operation shares and the
//! schema helpers the parameter types use. Request bodies are documented as
//! `application/x-www-form-urlencoded` (Stripe's format); JSON bodies with the same fields
//! are accepted too.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};

use crate::events::{EventData, EventObject, EventRequest};
use crate::schema::{ErrorEnvelope, ErrorObject};
use crate::webhook_endpoints::{DeletedObject, WebhookDeliveryObject, WebhookEndpointObject};
use crate::wire::{ChargeObject, LastPaymentError, PaymentIntentObject, PaymentMethodObject, PaymentMethodRef, RefundObject};
use crate::{charges, events, ops, payment_intents, payment_methods, refunds, webhook_endpoints};

/// What every operation of one audience shares, added in one place rather than on each path:
/// how it authenticates, the errors any request may meet before its handler runs, and the
/// Idempotency-Key header on a merchant's POSTs.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECRET_KEY,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A merchant's secret key: Authorization: Bearer sk_test_...")).build(),
            ),
        );
        components.add_security_scheme(
            SECRET_KEY_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Basic).description(Some("The secret key as the user name and an empty password, as curl -u sk_test_...: sends it")).build(),
            ),
        );
        components.add_security_scheme(
            PUBLISHABLE_KEY,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A merchant's publishable key, for a browser: Authorization: Bearer pk_test_...; retrieving or confirming a PaymentIntent with it needs the intent's client_secret")).build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("The token given to serve --admin-token (or PAYWARDEN_ADMIN_TOKEN); merchant keys never work here")).build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let merchant = path.starts_with("/v1/") && path != "/v1/openapi.json";
            let admin = path.starts_with("/admin/") || path.starts_with("/debug/");
            let by_id = path.contains('{');
            for (method, op) in [("get", &mut item.get), ("post", &mut item.post), ("delete", &mut item.delete)] {
                let Some(op) = op.as_mut() else { continue };
                if admin {
                    op.security = Some(vec![SecurityRequirement::new(ADMIN_TOKEN, Vec::<String>::new())]);
                }
                if !merchant {
                    continue;
                }
                let mut schemes = vec![
                    SecurityRequirement::new(SECRET_KEY, Vec::<String>::new()),
                    SecurityRequirement::new(SECRET_KEY_BASIC, Vec::<String>::new()),
                ];
                if op.operation_id.as_deref().is_some_and(|id| BROWSER_OPERATIONS.contains(&id)) {
                    schemes.push(SecurityRequirement::new(PUBLISHABLE_KEY, Vec::<String>::new()));
                }
                op.security = Some(schemes);
                let mut errors = vec![
                    ("400", "Invalid parameters: the error names the one to change"),
                    ("401", "No key, or not a valid secret key"),
                    ("429", "Too many requests in flight (Retry-After says when to try again)"),
                    ("503", "Not ready, or the store's writer queue is full (Retry-After)"),
                ];
                if by_id {
                    errors.push(("404", "No such object for this merchant"));
                }
                if method == "post" {
                    errors.extend([
                        ("408", "The body took longer than the body read timeout to arrive"),
                        ("409", "A request with the same Idempotency-Key is still being handled"),
                        ("413", "The body is larger than the server's --body-bytes-max"),
                        ("415", "The body is neither form-encoded nor JSON"),
                    ]);
                    op.parameters.get_or_insert_with(Vec::new).push(
                        ParameterBuilder::new()
                            .name("Idempotency-Key")
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some("Makes a retry safe: the first response to this key is replayed (Idempotent-Replayed: true) for 24 h; reused with other parameters, 400 idempotency_error"))
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(crate::IDEMPOTENCY_KEY_CHARS_MAX)).pattern(Some("^[ -~]+$"))))
                            .build(),
                    );
                }
                for (status, description) in errors {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).build())
                                .build(),
                        )
                    });
                }
            }
        }
    }
}

const SECRET_KEY: &str = "secret_key";
const SECRET_KEY_BASIC: &str = "secret_key_basic";
const ADMIN_TOKEN: &str = "admin_token";
const PUBLISHABLE_KEY: &str = "publishable_key";
/// The operations a publishable key may call (each is `PUBLISHABLE` in its module).
const BROWSER_OPERATIONS: &[&str] = &["create_payment_method", "retrieve_payment_intent", "confirm_payment_intent"];

#[derive(OpenApi)]
#[openapi(
    modifiers(&Conventions),
    info(title = "paywarden", description = "A Stripe-compatible payments API: payment methods, payment intents, charges and refunds. Authenticate with `Authorization: Bearer sk_test_...`; send an `Idempotency-Key` header with every POST. Bodies are form-encoded as Stripe's: nested objects in brackets (card[number]=..., the deepObject style), lists indexed (enabled_events[0]=...); a JSON object with the same fields is accepted too."),
    paths(
        payment_methods::create, payment_methods::retrieve, payment_methods::list,
        payment_intents::create, payment_intents::retrieve, payment_intents::update, payment_intents::confirm,
        payment_intents::capture, payment_intents::cancel, payment_intents::list,
        charges::retrieve, refunds::create, refunds::retrieve, refunds::list,
        webhook_endpoints::create, webhook_endpoints::list, webhook_endpoints::retrieve, webhook_endpoints::update, webhook_endpoints::delete,
        webhook_endpoints::deliveries, events::list, events::retrieve, serve, ops::healthz, ops::readyz, ops::metrics,
        ops::leak_report, ops::mark_heap, ops::heap_diff, ops::alerts, ops::pprof_heap
    ),
    components(schemas(ErrorEnvelope, ErrorObject, PaymentIntentObject, PaymentMethodObject, ChargeObject, RefundObject, LastPaymentError, PaymentMethodRef,
        WebhookEndpointObject, EventObject, EventData, EventRequest, WebhookDeliveryObject, DeletedObject))
)]
pub struct ApiDoc;

/// The document, rendered once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
        camel_case_links(&mut doc);
        bracket_encoding(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// Stripe's form bodies nest with brackets (`card[number]=...`, `metadata[order]=...`); in
/// OpenAPI that is the `deepObject` style, which a form body declares per property in its
/// media type's `encoding`. Without it a tool would flatten `card`'s fields to the top level.
/// Lists are sent indexed (`enabled_events[0]=...`), which OpenAPI has no style for; the
/// document's description says so. A body none of whose fields is required is marked optional.
fn bracket_encoding(doc: &mut serde_json::Value) {
    let schemas = doc.pointer("/components/schemas").cloned().unwrap_or_default();
    let resolve = |schema: &serde_json::Value| -> serde_json::Value {
        match schema.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/components/schemas/")) {
            Some(name) => schemas.get(name).cloned().unwrap_or_default(),
            None => schema.clone(),
        }
    };
    let is_object = |schema: &serde_json::Value| match schema.get("type") {
        Some(serde_json::Value::String(t)) => t == "object",
        Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    for op in paths.values_mut().filter_map(|item| item.as_object_mut()).flat_map(|item| item.values_mut()) {
        let Some(form) = op.pointer_mut("/requestBody/content/application~1x-www-form-urlencoded") else { continue };
        let body = resolve(form.get("schema").unwrap_or(&serde_json::Value::Null));
        let Some(properties) = body.get("properties").and_then(|p| p.as_object()) else { continue };
        let encoding: serde_json::Map<String, serde_json::Value> = properties
            .iter()
            .filter(|(_, schema)| is_object(&resolve(schema)))
            .map(|(name, _)| (name.clone(), serde_json::json!({"style": "deepObject", "explode": true})))
            .collect();
        if !encoding.is_empty() {
            form["encoding"] = serde_json::Value::Object(encoding);
        }
        // A body with no required field may be left out altogether (POST .../capture captures all).
        let required = body.get("required").and_then(|r| r.as_array()).is_some_and(|r| !r.is_empty());
        if let Some(request_body) = op.get_mut("requestBody") {
            request_body["required"] = serde_json::Value::Bool(required);
        }
    }
}

/// utoipa 5.5 writes a Link Object's fields in snake case (`operation_id`, `request_body`);
/// OpenAPI names them `operationId`, `operationRef` and `requestBody`, and tools that follow
/// links (schemathesis' stateful phase) ignore the others.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    let operations = paths.values_mut().filter_map(|item| item.as_object_mut()).flat_map(|item| item.values_mut());
    let responses = operations.filter_map(|op| op.get_mut("responses")?.as_object_mut()).flat_map(|r| r.values_mut());
    for link in responses.filter_map(|r| r.get_mut("links")?.as_object_mut()).flat_map(|l| l.values_mut()) {
        let Some(link) = link.as_object_mut() else { continue };
        for (snake, camel) in [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")] {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.to_string(), v);
            }
        }
    }
}

#[utoipa::path(get, operation_id = "openapi_document", path = "/v1/openapi.json", responses((status = 200, description = "This OpenAPI 3 document", content_type = "application/json")))]
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use crate::params::{parse, FromParams, NoParams, Params};
    use crate::{charges, events, payment_intents, payment_methods, refunds, webhook_endpoints};

    /// Parses `example` as `T` and returns every name the parser asked for.
    fn asked<T: FromParams>(example: &str) -> Result<BTreeSet<String>, String> {
        let p = Params::from_form(example.as_bytes()).map_err(|e| e.message)?;
        // A clone shares the record of names asked for.
        let recorder = p.clone();
        parse::<T>(p).map_err(|e| format!("{example}: {} ({:?})", e.message, e.param))?;
        Ok(recorder.asked().into_iter().filter(|n| !n.starts_with("metadata[")).collect())
    }

    /// The names an operation's document lists: its form body's properties (an object's own
    /// properties in brackets, `card[number]`; metadata's keys are the merchant's) and its
    /// query parameters.
    fn documented(doc: &Value, method: &str, path: &str) -> BTreeSet<String> {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the document");
        let resolve = |s: &Value| -> Value {
            match s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
                Some(name) => doc["components"]["schemas"][name].clone(),
                None => s.clone(),
            }
        };
        let mut names = BTreeSet::new();
        let body = resolve(&op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]);
        for (name, schema) in body["properties"].as_object().into_iter().flatten() {
            names.insert(name.clone());
            let schema = resolve(schema);
            let inner = schema.get("oneOf").and_then(|o| o.as_array()).and_then(|o| o.iter().find(|s| s.get("$ref").is_some())).map(&resolve).unwrap_or(schema);
            for child in inner["properties"].as_object().into_iter().flat_map(|m| m.keys()) {
                names.insert(format!("{name}[{child}]"));
            }
        }
        for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "query") {
            names.insert(p["name"].as_str().unwrap_or_default().to_string());
        }
        names
    }

    type Probe = fn(&str) -> Result<BTreeSet<String>, String>;

    /// Every operation: how it is parsed, and a request it accepts (the parser asks for every
    /// name it knows, given or not, so a minimal one is enough once each object is present).
    const OPERATIONS: &[(&str, &str, Probe, &str)] = &[
        ("post", "/v1/payment_methods", asked::<payment_methods::CreatePaymentMethodParams>, "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2034"),
        ("get", "/v1/payment_methods", asked::<payment_methods::ListPaymentMethodsQuery>, ""),
        ("get", "/v1/payment_methods/{id}", asked::<NoParams>, ""),
        ("post", "/v1/payment_intents", asked::<payment_intents::CreatePaymentIntentParams>, "amount=100&currency=usd&automatic_payment_methods[enabled]=true"),
        ("get", "/v1/payment_intents", asked::<payment_intents::ListPaymentIntentsQuery>, ""),
        ("get", "/v1/payment_intents/{id}", asked::<payment_intents::RetrievePaymentIntentQuery>, ""),
        ("post", "/v1/payment_intents/{id}", asked::<payment_intents::UpdatePaymentIntentParams>, ""),
        ("post", "/v1/payment_intents/{id}/confirm", asked::<payment_intents::ConfirmPaymentIntentParams>, ""),
        ("post", "/v1/payment_intents/{id}/capture", asked::<payment_intents::CapturePaymentIntentParams>, ""),
        ("post", "/v1/payment_intents/{id}/cancel", asked::<payment_intents::CancelPaymentIntentParams>, ""),
        ("get", "/v1/charges/{id}", asked::<charges::RetrieveChargeQuery>, ""),
        ("post", "/v1/refunds", asked::<refunds::CreateRefundParams>, "payment_intent=pi_1"),
        ("get", "/v1/refunds", asked::<refunds::ListRefundsQuery>, ""),
        ("get", "/v1/refunds/{id}", asked::<refunds::RetrieveRefundQuery>, ""),
        ("get", "/v1/events", asked::<events::ListEventsQuery>, ""),
        ("get", "/v1/events/{id}", asked::<NoParams>, ""),
        ("post", "/v1/webhook_endpoints", asked::<webhook_endpoints::CreateWebhookEndpointParams>, "url=https://example.com/hook&enabled_events[0]=*"),
        ("get", "/v1/webhook_endpoints", asked::<webhook_endpoints::ListWebhookEndpointsQuery>, ""),
        ("get", "/v1/webhook_endpoints/{id}", asked::<NoParams>, ""),
        ("post", "/v1/webhook_endpoints/{id}", asked::<webhook_endpoints::UpdateWebhookEndpointParams>, ""),
        ("delete", "/v1/webhook_endpoints/{id}", asked::<NoParams>, ""),
        ("get", "/v1/webhook_endpoints/{id}/deliveries", asked::<webhook_endpoints::ListDeliveriesQuery>, ""),
    ];

    #[test]
    fn every_operation_takes_what_its_schema_lists() {
        let doc: Value = serde_json::from_str(super::document()).unwrap();
        for (method, path, probe, example) in OPERATIONS {
            let taken = probe(example).unwrap_or_else(|e| panic!("{method} {path}: the example is refused: {e}"));
            let listed = documented(&doc, method, path);
            assert_eq!(taken, listed, "{method} {path}: parsed (left) against documented (right)");
        }
        // And the table covers every merchant operation in the document.
        let covered: BTreeSet<(String, String)> = OPERATIONS.iter().map(|(m, p, _, _)| (m.to_string(), p.to_string())).collect();
        for (path, item) in doc["paths"].as_object().unwrap().iter().filter(|(p, _)| p.starts_with("/v1/") && *p != "/v1/openapi.json") {
            for method in item.as_object().unwrap().keys() {
                assert!(covered.contains(&(method.clone(), path.clone())), "{method} {path} is not in OPERATIONS");
            }
        }
    }

    #[test]
    fn a_parameter_the_schema_does_not_list_is_refused_by_name() {
        let p = Params::from_form(b"amount=100&currency=usd&colour=red").unwrap();
        let e = parse::<payment_intents::CreatePaymentIntentParams>(p).err().expect("refused");
        assert_eq!((e.code.as_deref(), e.param.as_deref()), (Some("parameter_unknown"), Some("colour")));
    }
}
