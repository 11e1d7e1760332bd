//! What a browser does with Stripe.js: the publishable key creates a PaymentMethod, and
//! retrieves and confirms one PaymentIntent with its client secret; nothing else. Client
//! secrets are derived, never stored, and the same on every read and on replay; CORS headers
//! only on the operations a browser may call.

use paywarden_api::{hash_key, new_publishable_key};
use paywarden_store::{ApiKeyRecord, Write, WriteBatch};

use crate::support::*;

/// A publishable key for the harness's first merchant.
async fn publishable(h: &Harness) -> String {
    let pk = new_publishable_key();
    let mut batch = WriteBatch::new();
    batch.push(Write::ApiKey(ApiKeyRecord { hash: hash_key(&pk), merchant: h.merchant.clone(), prefix: pk[..12].to_string(), created: 0 }));
    h.store().write(batch).await.unwrap();
    pk
}

fn secret_of(v: &serde_json::Value) -> String {
    v["client_secret"].as_str().unwrap_or_else(|| panic!("no client_secret in {v}")).to_string()
}

#[tokio::test]
async fn every_intent_has_one_client_secret_everywhere_and_none_is_stored() {
    let h = Harness::new().await;
    let created = h.call("POST", "/v1/payment_intents", &[("idempotency-key", "cs-1")], "amount=1000&currency=usd").await.ok().json;
    let id = created["id"].as_str().unwrap().to_string();
    let secret = secret_of(&created);
    let tail = secret.strip_prefix(&format!("{id}_secret_")).unwrap_or_else(|| panic!("{secret}"));
    assert!(tail.len() == 24 && tail.bytes().all(|b| b.is_ascii_alphanumeric()), "{secret}");
    // The same on retrieve, in a list, after a confirm, and on an idempotent replay.
    assert_eq!(secret_of(&h.get(&format!("/v1/payment_intents/{id}")).await.ok().json), secret);
    let list = h.get("/v1/payment_intents").await.ok().json;
    assert_eq!(secret_of(&list["data"][0]), secret);
    let confirmed = h.post(&format!("/v1/payment_intents/{id}/confirm"), "payment_method=pm_card_visa").await.ok().json;
    assert_eq!(secret_of(&confirmed), secret);
    let replay = h.call("POST", "/v1/payment_intents", &[("idempotency-key", "cs-1")], "amount=1000&currency=usd").await;
    assert!(replay.is_replay());
    assert_eq!(secret_of(&replay.json), secret);
    // Another intent, another secret.
    assert_ne!(secret_of(&h.intent("amount=1000&currency=usd").await), secret);
    // The stored response holds no secret, only its place: it is derived again on replay.
    let rec = h.store().idempotency(&h.merchant, "cs-1").await.unwrap().unwrap();
    let stored = String::from_utf8_lossy(&rec.body).into_owned();
    assert!(!stored.contains(tail) && stored.contains(&format!("{id}_secret_{}", "*".repeat(24))), "{stored}");
    // A declined confirm's error carries the intent, with its secret too.
    let declined = h.intent("amount=1000&currency=usd").await;
    let did = declined["id"].as_str().unwrap();
    let e = h.post(&format!("/v1/payment_intents/{did}/confirm"), "payment_method=pm_card_chargeDeclined").await;
    assert_eq!(e.status, 402);
    assert_eq!(secret_of(&e.err()["payment_intent"]), secret_of(&declined));
}

#[tokio::test]
async fn a_publishable_key_does_what_stripe_js_does_and_nothing_else() {
    let h = Harness::new().await;
    let pk = publishable(&h).await;
    let before = h.snapshot().await;
    // Refused, with Stripe's message and nothing written: everything a server does.
    let not_allowed = "cannot be made with a publishable API key";
    for (method, path, body) in [
        ("POST", "/v1/payment_intents", "amount=1000&currency=usd"),
        ("GET", "/v1/payment_intents", ""),
        ("POST", "/v1/refunds", "payment_intent=pi_1"),
        ("GET", "/v1/refunds", ""),
        ("GET", "/v1/events", ""),
        ("POST", "/v1/webhook_endpoints", "url=https://example.com/h&enabled_events[0]=*"),
        ("DELETE", "/v1/webhook_endpoints/we_1", ""),
    ] {
        let auth = format!("Bearer {pk}");
        let r = h.call(method, path, &[("authorization", &auth)], body).await;
        assert_error(&r, Expect { status: 401, kind: "invalid_request_error", code: None, param: None, hint: not_allowed }, &format!("{method} {path}"));
    }
    assert_eq!(h.snapshot().await, before, "nothing written");

    // The server creates the intent and hands the browser its client secret.
    let pi = h.intent("amount=1500&currency=eur").await;
    let (id, secret) = (pi["id"].as_str().unwrap().to_string(), secret_of(&pi));
    // The browser: a PaymentMethod from card fields ...
    let pm = h.post_as(&pk, "/v1/payment_methods", "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2034&card[cvc]=123").await.ok().json;
    let pm_id = pm["id"].as_str().unwrap();
    // ... the intent, only with its client secret ...
    let r = h.get_as(&pk, &format!("/v1/payment_intents/{id}")).await;
    assert_error(&r, bad("parameter_missing", "client_secret", "client_secret"), "retrieve without the secret");
    let wrong = format!("{id}_secret_{}", "x".repeat(24));
    let r = h.get_as(&pk, &format!("/v1/payment_intents/{id}?client_secret={wrong}")).await;
    assert_error(&r, bad("parameter_invalid", "client_secret", "does not match"), "retrieve with a wrong secret");
    let other = h.intent("amount=10&currency=usd").await;
    let r = h.get_as(&pk, &format!("/v1/payment_intents/{id}?client_secret={}", secret_of(&other))).await;
    assert_error(&r, bad("parameter_invalid", "client_secret", "does not match"), "another intent's secret");
    assert_eq!(h.get_as(&pk, &format!("/v1/payment_intents/{id}?client_secret={secret}")).await.ok().json["status"], "requires_payment_method");
    // ... and confirms it.
    let r = h.post_as(&pk, &format!("/v1/payment_intents/{id}/confirm"), &format!("payment_method={pm_id}")).await;
    assert_error(&r, bad("parameter_missing", "client_secret", "client_secret"), "confirm without the secret");
    let confirmed = h.post_as(&pk, &format!("/v1/payment_intents/{id}/confirm"), &format!("payment_method={pm_id}&client_secret={secret}")).await.ok().json;
    assert_eq!(confirmed["status"], "succeeded");
    // A secret key may send the client secret too; a wrong one is refused there as well.
    let r = h.get(&format!("/v1/payment_intents/{id}?client_secret={wrong}")).await;
    assert_error(&r, bad("parameter_invalid", "client_secret", "does not match"), "secret key, wrong secret");
    // Another merchant's intent is not found, whatever secret is sent.
    let (_, other_key) = h.add_merchant("other").await;
    let theirs = h.post_as(&other_key, "/v1/payment_intents", "amount=10&currency=usd").await.ok().json;
    let r = h.get_as(&pk, &format!("/v1/payment_intents/{}?client_secret={}", theirs["id"].as_str().unwrap(), secret_of(&theirs))).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn cors_headers_only_where_a_browser_may_call() {
    let h = Harness::new().await;
    let origin = ("origin", "https://shop.example");
    let preflight = |path: &'static str| {
        let h = &h;
        async move {
            h.call("OPTIONS", path, &[origin, ("access-control-request-method", "POST"), ("access-control-request-headers", "authorization, content-type")], "").await
        }
    };
    for path in ["/v1/payment_methods", "/v1/payment_intents/pi_123/confirm", "/v1/payment_intents/pi_123"] {
        let r = preflight(path).await;
        assert!(r.status < 300, "{path}: {} {}", r.status, r.text());
        assert_eq!(r.headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"), "{path}");
        let methods = r.headers.get("access-control-allow-methods").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert!(methods.contains("POST"), "{path}: {methods}");
    }
    for path in ["/v1/payment_intents", "/v1/refunds", "/v1/webhook_endpoints", "/v1/events"] {
        let r = preflight(path).await;
        assert!(r.headers.get("access-control-allow-origin").is_none(), "{path} must not allow a browser: {:?}", r.headers);
    }
    // The answer itself carries the header, so the browser may read it.
    let r = h.call("GET", "/v1/payment_intents/pi_123", &[origin], "").await;
    assert_eq!(r.headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()), Some("*"));
    let r = h.call("GET", "/v1/refunds", &[origin], "").await;
    assert!(r.headers.get("access-control-allow-origin").is_none());
}
