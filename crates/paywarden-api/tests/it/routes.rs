//! Health, unknown routes and methods, and the OpenAPI document.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let h = Harness::new().await;
    let r = h.call("GET", "/healthz", &[("authorization", NO_AUTH)], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "ok");
    assert!(r.headers.get("request-id").is_some());
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let h = Harness::new().await;
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/v1/customers"),
        ("POST", "/v1/charges"),
        ("GET", "/v1/payment_intents/pi_1/confirm"),
        ("GET", "/v1/payment_intents/"),
        ("DELETE", "/v1/payment_intents"),
        ("PUT", "/v1/refunds"),
        ("PATCH", "/v1/payment_intents/pi_1"),
        ("POST", "/v1/charges/ch_1"),
        ("POST", "/healthz"),
        ("POST", "/v1/openapi.json"),
        ("DELETE", "/v1/payment_methods/pm_1"),
    ] {
        let r = h.call(method, path, &[("authorization", NO_AUTH)], "").await;
        let hint = format!("Unrecognized request URL ({method}: {path})");
        let e = Expect { status: 404, kind: "invalid_request_error", code: Some("resource_missing"), param: None, hint: &hint };
        assert_error(&r, e, &format!("{method} {path}"));
        assert!(r.err()["message"].as_str().unwrap().contains("/v1/openapi.json"));
        assert!(r.headers.get("request-id").is_some());
    }
}

#[tokio::test]
async fn ids_that_are_not_utf8_are_json_404s() {
    let h = Harness::new().await;
    let e = Expect { status: 404, kind: "invalid_request_error", code: Some("resource_missing"), param: Some("id"), hint: "UTF-8" };
    for path in ["/v1/payment_intents/%FF", "/v1/payment_methods/%C3", "/v1/charges/%FF%FE", "/v1/refunds/%FF"] {
        h.refuses("GET", path, &[], "", e, &format!("GET {path}")).await;
    }
    for suffix in ["", "/confirm", "/capture", "/cancel"] {
        let path = format!("/v1/payment_intents/%FF{suffix}");
        h.refuses("POST", &path, &[], "amount=1", e, &format!("POST {path}")).await;
    }
    // Other odd ids are just unknown.
    let long = format!("pi_{}", "a".repeat(5000));
    for id in ["%00", "pi_%20", long.as_str()] {
        let r = h.get(&format!("/v1/payment_intents/{id}")).await;
        assert_eq!((r.status, r.err()["code"].as_str()), (404, Some("resource_missing")), "{}", r.text());
        assert!(r.bytes.len() < 1000, "the message truncates the id");
    }
}

/// The paths the router declares, read from its source so that a new route cannot be
/// forgotten here: every `.route("...", ...)` in `router`.
fn router_paths() -> BTreeSet<String> {
    let src = include_str!("../../src/lib.rs");
    let body = &src[src.find("pub fn router(").expect("router in lib.rs")..];
    body.match_indices(".route(")
        .map(|(i, m)| {
            let rest = body[i + m.len()..].trim_start();
            let rest = rest.strip_prefix('"').expect("a route path is a string literal");
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// A concrete URL for a route path.
fn concrete(path: &str) -> String {
    path.replace("{id}", "x_1")
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let h = Harness::new().await;
    let r = h.call("GET", "/v1/openapi.json", &[("authorization", NO_AUTH)], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    let doc: Value = serde_json::from_slice(&r.bytes).expect("the document is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "openapi {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");

    let routes = router_paths();
    assert!(routes.len() >= 10, "routes read from the source: {routes:?}");
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(routes, documented, "router paths vs OpenAPI paths");

    // Methods too: a documented operation is served, an undocumented one is the 404 fallback.
    for path in &routes {
        for method in ["get", "post"] {
            let served = h.call(&method.to_uppercase(), &concrete(path), &[], "").await;
            let fallback = served.err()["message"].as_str().is_some_and(|m| m.starts_with("Unrecognized request URL"));
            let in_doc = paths[path.as_str()].get(method).is_some();
            assert_eq!(in_doc, !fallback, "{method} {path}: documented {in_doc}, served {}", !fallback);
            if in_doc {
                let op = &paths[path.as_str()][method];
                assert!(op["responses"]["200"].is_object(), "{method} {path} documents its 200");
            }
        }
    }
    // Every referenced schema exists.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = r.text();
    for (i, _) in text.match_indices("#/components/schemas/") {
        let rest = &text[i + "#/components/schemas/".len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
    // What tools that follow the document (schemathesis, SDK generators) need from it.
    let operation_ids: BTreeSet<&str> =
        paths.values().flat_map(|item| item.as_object().unwrap().values()).filter_map(|op| op["operationId"].as_str()).collect();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let merchant = path.starts_with("/v1/") && path != "/v1/openapi.json";
            if merchant {
                let schemes: Vec<&str> =
                    op["security"].as_array().unwrap().iter().flat_map(|r| r.as_object().unwrap().keys()).map(String::as_str).collect();
                // The publishable key only where a browser may call (tested in browser.rs).
                let browser = ["create_payment_method", "retrieve_payment_intent", "confirm_payment_intent"].contains(&op["operationId"].as_str().unwrap_or(""));
                let want: &[&str] = if browser { &["secret_key", "secret_key_basic", "publishable_key"] } else { &["secret_key", "secret_key_basic"] };
                assert_eq!(schemes, want, "{method} {path} security");
                for status in ["400", "401", "429", "503"] {
                    assert!(op["responses"][status].is_object(), "{method} {path} documents {status}");
                }
            }
            if method == "post" && merchant {
                for status in ["408", "409", "413", "415"] {
                    assert!(op["responses"][status].is_object(), "{method} {path} documents {status}");
                }
                let key = op["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "Idempotency-Key").expect("Idempotency-Key");
                assert_eq!(key["schema"]["maxLength"], 255, "{path}");
            }
            if path.starts_with("/admin/") || path.starts_with("/debug/") {
                assert_eq!(op["security"][0]["admin_token"], serde_json::json!([]), "{method} {path} security");
            }
            // Links name operations that exist, in OpenAPI's spelling (operationId, requestBody).
            for (status, response) in op["responses"].as_object().unwrap() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} {status} link {name}: {link}"));
                    assert!(operation_ids.contains(target), "{method} {path} link {name} -> {target}");
                    assert!(link.get("operation_id").is_none() && link.get("request_body").is_none(), "{name}: {link}");
                }
            }
        }
    }
    // The payment flow is linked end to end: create -> confirm -> capture -> refund.
    let links = |path: &str, method: &str| -> BTreeSet<String> {
        paths[path][method]["responses"]["200"]["links"].as_object().unwrap().values().map(|l| l["operationId"].as_str().unwrap().to_string()).collect()
    };
    assert!(links("/v1/payment_intents", "post").contains("confirm_payment_intent"));
    assert!(links("/v1/payment_intents/{id}/confirm", "post").contains("capture_payment_intent"));
    assert!(links("/v1/payment_intents/{id}/capture", "post").contains("create_refund"));
    assert!(links("/v1/refunds", "post").contains("retrieve_refund"));
    let refund_link = &paths["/v1/payment_intents/{id}/capture"]["post"]["responses"]["200"]["links"]["RefundIntent"];
    assert_eq!(refund_link["requestBody"]["payment_intent"], "$response.body#/id");
    // Nested form fields are declared in Stripe's bracket style, and bodies with no required
    // field may be left out.
    let form = &paths["/v1/payment_methods"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"];
    assert_eq!(form["encoding"]["card"]["style"], "deepObject");
    assert_eq!(form["encoding"]["metadata"]["style"], "deepObject");
    assert_eq!(paths["/v1/payment_methods"]["post"]["requestBody"]["required"], true);
    assert_eq!(paths["/v1/payment_intents/{id}/capture"]["post"]["requestBody"]["required"], false);
    // The limits the handlers enforce, stated where a client reads them.
    let create = &schemas["CreatePaymentIntentParams"]["properties"];
    assert_eq!(create["amount"]["minimum"], 1);
    assert_eq!(create["amount"]["maximum"], 99_999_999);
    assert!(create["currency"]["enum"].as_array().unwrap().iter().any(|c| c == "kwd"));
    assert_eq!(create["metadata"]["maxProperties"], 50);
    assert_eq!(create["metadata"]["propertyNames"]["maxLength"], 40);
    assert_eq!(create["metadata"]["additionalProperties"]["maxLength"], 500);
    assert_eq!(schemas["CreatePaymentIntentParams"]["additionalProperties"], false, "unknown parameters are refused");

    // Served as generated, once.
    let again = h.call("GET", "/v1/openapi.json", &[], "").await;
    assert_eq!(again.bytes, r.bytes);
    assert_eq!(r.text(), paywarden_api::openapi::document());

    insta::assert_json_snapshot!("openapi", doc);
}

#[tokio::test]
async fn readyz_says_ready_when_the_store_answers() {
    let h = Harness::new().await;
    let r = h.call("GET", "/readyz", &[("authorization", NO_AUTH)], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ready\n");
}
