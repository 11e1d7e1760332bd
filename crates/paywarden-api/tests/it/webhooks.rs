//! Events and webhook endpoints through the API: which events each change makes, in Stripe's
//! shape and in the change's own transaction; endpoints' validation, secret shown once (and
//! again on an idempotent replay, never stored), filters, isolation; deliveries queued per
//! matching endpoint.

use paywarden_api::webhooks::EVENT_TYPES;
use serde_json::Value;

use crate::support::*;

async fn types_of(h: &Harness, path: &str) -> Vec<String> {
    let r = h.get(path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut t: Vec<String> = r.json["data"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect();
    t.reverse(); // oldest first
    t
}

#[tokio::test]
async fn each_change_makes_its_events_in_stripes_shape() {
    let h = Harness::new().await;
    let pi = h.succeeded().await;
    assert_eq!(types_of(&h, "/v1/events").await, ["payment_intent.created", "payment_intent.succeeded"]);
    let auth = h.authorized().await;
    h.post(&format!("/v1/payment_intents/{auth}/capture"), "amount_to_capture=600").await.ok();
    let cancel = h.authorized().await;
    h.post(&format!("/v1/payment_intents/{cancel}/cancel"), "").await.ok();
    h.post("/v1/refunds", &format!("payment_intent={pi}&amount=300")).await.ok();
    let declined = h.post("/v1/payment_intents", "amount=1000&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true").await;
    assert_eq!(declined.status, 402);
    let unconfirmed = h.unconfirmed().await;
    h.post(&format!("/v1/payment_intents/{unconfirmed}"), "description=no%20event").await.ok();
    assert_eq!(
        types_of(&h, "/v1/events?limit=100").await,
        [
            "payment_intent.created",
            "payment_intent.succeeded",
            "payment_intent.created",
            "payment_intent.amount_capturable_updated",
            "payment_intent.succeeded",
            "payment_intent.created",
            "payment_intent.amount_capturable_updated",
            "payment_intent.canceled",
            "charge.refunded",
            "refund.created",
            "payment_intent.created",
            "payment_intent.payment_failed",
            "payment_intent.created",
        ],
        "an update of fields makes no event"
    );
    // Shape, and the object as it was after the change.
    let list = h.get("/v1/events?type=refund.created").await;
    let e = &list.json["data"][0];
    assert_eq!(e["object"], "event");
    assert!(e["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(e["type"], "refund.created");
    assert_eq!(e["api_version"], paywarden_api::webhooks::API_VERSION);
    assert_eq!(e["livemode"], false);
    assert!(e["created"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(e["data"]["object"]["object"], "refund");
    assert_eq!(e["data"]["object"]["amount"], 300);
    let one = h.get(&format!("/v1/events/{}", e["id"].as_str().unwrap())).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json["pending_webhooks"], 0, "no endpoint, nothing to deliver");
    assert_eq!(list.json["data"].as_array().unwrap().len(), 1, "filtered by type");
}

#[tokio::test]
async fn an_idempotent_retry_makes_no_second_event() {
    let h = Harness::new().await;
    let form = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";
    h.post_idem("/v1/payment_intents", "k-1", form).await.ok();
    let again = h.post_idem("/v1/payment_intents", "k-1", form).await;
    assert!(again.is_replay());
    assert_eq!(types_of(&h, "/v1/events").await, ["payment_intent.created", "payment_intent.succeeded"]);
    let r = h.get("/v1/events").await;
    assert_eq!(r.json["data"][0]["request"]["idempotency_key"], "k-1");
}

#[tokio::test]
async fn endpoints_show_their_secret_once_and_queue_deliveries_for_matching_events() {
    let h = Harness::new().await;
    let created = h.post_idem("/v1/webhook_endpoints", "we-1", "url=https://example.com/hook&enabled_events[]=payment_intent.succeeded&description=shop").await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.id();
    assert!(id.starts_with("we_"));
    let secret = created.json["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created.json["status"], "enabled");
    assert_eq!(created.json["enabled_events"], serde_json::json!(["payment_intent.succeeded"]));
    // Never shown again, never stored: a retrieve and the list have no secret...
    assert!(h.get(&format!("/v1/webhook_endpoints/{id}")).await.json["secret"].is_null());
    assert!(h.get("/v1/webhook_endpoints").await.json["data"][0]["secret"].is_null());
    // ...but a retry of the creating request gets the same one back (derived again).
    let replay = h.post_idem("/v1/webhook_endpoints", "we-1", "url=https://example.com/hook&enabled_events[]=payment_intent.succeeded&description=shop").await;
    assert!(replay.is_replay());
    assert_eq!(replay.json["secret"], secret.as_str());

    // A succeeded payment is pending for the endpoint (the created events are filtered out);
    // its delivery is queued when the delivery loop claims it (none runs in this harness).
    h.succeeded().await;
    h.authorized().await;
    let events = h.get("/v1/events?limit=100").await.json["data"].as_array().unwrap().clone();
    for e in &events {
        let pending = h.get(&format!("/v1/events/{}", e["id"].as_str().unwrap())).await;
        let wanted = e["type"] == "payment_intent.succeeded";
        assert_eq!(pending.json["pending_webhooks"], if wanted { 1 } else { 0 }, "{}", pending.text());
        assert_eq!(pending.json["delivery_attempts"], serde_json::json!([]));
    }
    assert_eq!(events.iter().filter(|e| e["type"] == "payment_intent.succeeded").count(), 1);
    let d = h.get(&format!("/v1/webhook_endpoints/{id}/deliveries")).await;
    assert_eq!(d.status, 200, "{}", d.text());
    assert!(d.json["data"].as_array().unwrap().is_empty(), "{}", d.text());

    // Update and delete.
    let u = h.post(&format!("/v1/webhook_endpoints/{id}"), "enabled_events[]=*&disabled=true").await;
    assert_eq!(u.status, 200, "{}", u.text());
    assert_eq!(u.json["status"], "disabled");
    assert_eq!(u.json["enabled_events"], serde_json::json!(["*"]));
    let del = h.call("DELETE", &format!("/v1/webhook_endpoints/{id}"), &[], "").await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json["deleted"], true);
    assert_eq!(h.get(&format!("/v1/webhook_endpoints/{id}")).await.status, 404);
    assert_eq!(h.call("DELETE", &format!("/v1/webhook_endpoints/{id}"), &[], "").await.status, 404);
}

#[tokio::test]
async fn bad_endpoints_get_a_clear_4xx_and_write_nothing() {
    let h = Harness::new().await;
    let long = format!("url=https://h/{}&enabled_events[]=*", "a".repeat(paywarden_api::webhooks::URL_CHARS_MAX));
    for (form, param) in [
        ("enabled_events[]=*", "url"),
        ("url=https://example.com", "enabled_events"),
        ("url=ftp://example.com&enabled_events[]=*", "url"),
        ("url=https://user:pw@example.com&enabled_events[]=*", "url"),
        ("url=https://example.com&enabled_events[]=charge.exploded", "enabled_events"),
        ("url=https://example.com&enabled_events[]=*&enabled_events[]=refund.created", "enabled_events"),
        (long.as_str(), "url"),
        ("url=https://example.com&enabled_events[]=*&colour=red", "colour"),
    ] {
        let r = h.post("/v1/webhook_endpoints", form).await;
        assert_eq!(r.status, 400, "{form}: {}", r.text());
        assert_eq!(r.err()["param"], param, "{form}: {}", r.text());
        assert!(r.err()["message"].as_str().unwrap().len() > 20, "says what to change");
    }
    assert!(h.get("/v1/webhook_endpoints").await.json["data"].as_array().unwrap().is_empty(), "nothing written");
    // Every type paywarden sends is accepted, duplicates folded.
    let all: String = EVENT_TYPES.iter().chain(EVENT_TYPES.iter()).map(|t| format!("enabled_events[]={t}&")).collect();
    let r = h.post("/v1/webhook_endpoints", &format!("{all}url=http://127.0.0.1:9/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json["enabled_events"].as_array().unwrap().len(), EVENT_TYPES.len());
    // The limit per merchant, at its edge.
    for _ in 1..paywarden_api::webhooks::ENDPOINTS_PER_MERCHANT_MAX {
        h.post("/v1/webhook_endpoints", "url=https://example.com&enabled_events[]=*").await.ok();
    }
    let r = h.post("/v1/webhook_endpoints", "url=https://example.com&enabled_events[]=*").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.err()["code"], "webhook_endpoints_limit");
    // Unknown event type in a list filter.
    assert_eq!(h.get("/v1/events?type=nope").await.status, 400);
}

#[tokio::test]
async fn merchants_see_only_their_own_events_and_endpoints() {
    let h = Harness::new().await;
    let (_, other) = h.add_merchant("second").await;
    let ep = h.post("/v1/webhook_endpoints", "url=https://example.com&enabled_events[]=*").await.id();
    h.succeeded().await;
    let event = h.get("/v1/events").await.json["data"][0]["id"].as_str().unwrap().to_string();
    for path in [format!("/v1/events/{event}"), format!("/v1/webhook_endpoints/{ep}"), format!("/v1/webhook_endpoints/{ep}/deliveries")] {
        assert_eq!(h.get_as(&other, &path).await.status, 404, "{path}");
    }
    let r = h.call("DELETE", &format!("/v1/webhook_endpoints/{ep}"), &[("authorization", &format!("Bearer {other}"))], "").await;
    assert_eq!(r.status, 404);
    let list: Value = h.get_as(&other, "/v1/events").await.json;
    assert!(list["data"].as_array().unwrap().is_empty());
    // The other merchant's payment is pending for nobody (this merchant's endpoint does not get it).
    h.post_as(&other, "/v1/payment_intents", "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true").await.ok();
    let theirs = h.get_as(&other, "/v1/events").await.json["data"].as_array().unwrap().clone();
    assert_eq!(theirs.len(), 2, "created and succeeded");
    for e in theirs {
        let r = h.get_as(&other, &format!("/v1/events/{}", e["id"].as_str().unwrap())).await;
        assert_eq!(r.json["pending_webhooks"], 0, "{}", r.text());
    }
    let r = h.get(&format!("/v1/events/{event}")).await;
    assert_eq!(r.json["pending_webhooks"], 1, "this merchant's own, for its endpoint");
}
