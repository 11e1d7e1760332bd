//! Idempotency-Key: replays, reuse with other parameters, concurrent duplicates, declines,
//! per-merchant scope, and refusals that are not stored.

use std::time::Duration;

use paywarden_api::ApiConfig;

use crate::support::*;

const PI: &str = "/v1/payment_intents";

#[tokio::test]
async fn a_retry_replays_the_first_response_byte_for_byte() {
    let h = Harness::new().await;
    let body = "amount=2000&currency=usd&payment_method=pm_card_visa&confirm=true&metadata[order]=1042";
    let first = h.post_idem(PI, "order-1042", body).await.ok();
    assert!(!first.is_replay());
    assert!(first.headers.get("idempotent-replayed").is_none());
    for _ in 0..2 {
        let again = h.post_idem(PI, "order-1042", body).await.ok();
        assert!(again.is_replay());
        assert_eq!(again.bytes, first.bytes);
        assert_eq!(again.headers.get("content-type").unwrap(), "application/json");
    }
    // The same parameters in another order and as JSON are the same request.
    let reordered = "metadata[order]=1042&confirm=true&payment_method=pm_card_visa&currency=usd&amount=2000";
    assert_eq!(h.post_idem(PI, "order-1042", reordered).await.ok().bytes, first.bytes);
    let snap = h.snapshot().await;
    assert_eq!(snap.intents.len(), 1);
    assert_eq!(snap.charges.len(), 1);

    // Refunds and captures replay without acting twice.
    let pi = first.id();
    let r1 = h.post_idem("/v1/refunds", "refund-1", &format!("payment_intent={pi}&amount=300")).await.ok();
    let r2 = h.post_idem("/v1/refunds", "refund-1", &format!("payment_intent={pi}&amount=300")).await.ok();
    assert!(r2.is_replay());
    assert_eq!(r1.bytes, r2.bytes);
    assert_eq!(h.snapshot().await.refunds.len(), 1);
    let auth = h.authorized().await;
    let c1 = h.post_idem(&format!("{PI}/{auth}/capture"), "cap-1", "amount_to_capture=500").await.ok();
    let c2 = h.post_idem(&format!("{PI}/{auth}/capture"), "cap-1", "amount_to_capture=500").await.ok();
    assert!(c2.is_replay());
    assert_eq!(c1.bytes, c2.bytes);
}

#[tokio::test]
async fn the_same_key_with_other_parameters_is_refused() {
    let h = Harness::new().await;
    h.post_idem(PI, "k1", "amount=100&currency=usd").await.ok();
    let reused = Expect { status: 400, kind: "idempotency_error", code: Some("idempotency_key_reused"), param: None, hint: "Try using a key other than 'k1'" };
    let pi = h.snapshot().await.intents[0].id.clone();
    for (path, body) in [
        (PI.to_string(), "amount=101&currency=usd"),
        (PI.to_string(), "amount=100&currency=usd&description=x"),
        (PI.to_string(), "amount=100"),
        (format!("{PI}/{pi}"), "amount=100&currency=usd"),
        (format!("{PI}/{pi}/cancel"), ""),
    ] {
        h.refuses("POST", &path, &[("idempotency-key", "k1")], body, reused, &format!("k1 on {path} {body}")).await;
    }
    // The original still replays.
    assert!(h.post_idem(PI, "k1", "amount=100&currency=usd").await.ok().is_replay());
}

#[tokio::test]
async fn the_same_key_while_the_first_request_runs_is_a_409() {
    let h = Harness::with(Duration::from_millis(300), ApiConfig::default()).await;
    let body = "amount=2000&currency=usd&payment_method=pm_card_visa&confirm=true";
    // The second starts 50 ms after the first, well inside the first's 300 ms at the acquirer.
    let second = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.post_idem(PI, "dup", body).await
    };
    let (ok, conflict) = tokio::join!(h.post_idem(PI, "dup", body), second);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_error(
        &conflict,
        Expect { status: 409, kind: "idempotency_error", code: Some("idempotency_key_in_use"), param: None, hint: "Retry after it has finished" },
        "concurrent duplicate",
    );
    let snap = h.snapshot().await;
    assert_eq!(snap.intents.len(), 1, "only one intent exists");
    assert_eq!(snap.charges.len(), 1);
    // Once the first has finished, the retry is its replay.
    let retry = h.post_idem(PI, "dup", body).await.ok();
    assert!(retry.is_replay());
    assert_eq!(retry.bytes, ok.bytes);
}

#[tokio::test]
async fn a_declined_confirmation_replays_its_402() {
    let h = Harness::new().await;
    let body = "amount=2000&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true";
    let first = h.post_idem(PI, "declined-1", body).await;
    assert_eq!(first.status, 402, "{}", first.text());
    assert_eq!(first.err()["type"], "card_error");
    let again = h.post_idem(PI, "declined-1", body).await;
    assert_eq!(again.status, 402);
    assert!(again.is_replay());
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(h.snapshot().await.intents.len(), 1);

    // The same on /confirm of an existing intent.
    let pi = h.intent("amount=500&currency=eur").await["id"].as_str().unwrap().to_string();
    let path = format!("{PI}/{pi}/confirm");
    let c1 = h.post_idem(&path, "confirm-1", "payment_method=pm_card_chargeDeclinedInsufficientFunds").await;
    let c2 = h.post_idem(&path, "confirm-1", "payment_method=pm_card_chargeDeclinedInsufficientFunds").await;
    assert_eq!((c1.status, c2.status), (402, 402));
    assert!(c2.is_replay());
    assert_eq!(c1.bytes, c2.bytes);
}

#[tokio::test]
async fn keys_are_scoped_per_merchant() {
    let h = Harness::new().await;
    let (other_merchant, other) = h.add_merchant("second").await;
    let body = "amount=100&currency=usd";
    let auth_b = format!("Bearer {other}");
    let a = h.post_idem(PI, "shared-key", body).await.ok();
    let b = h.call("POST", PI, &[("idempotency-key", "shared-key"), ("authorization", &auth_b)], body).await.ok();
    assert!(!b.is_replay());
    assert_ne!(a.id(), b.id());
    assert_eq!(h.snapshot().await.intents.len(), 1);
    assert_eq!(h.snapshot_of(&other_merchant).await.intents.len(), 1);
    // B's retry replays B's own response.
    let b2 = h.call("POST", PI, &[("idempotency-key", "shared-key"), ("authorization", &auth_b)], body).await.ok();
    assert!(b2.is_replay());
    assert_eq!(b2.bytes, b.bytes);
}

#[tokio::test]
async fn refused_requests_are_not_stored() {
    let h = Harness::new().await;
    let key = [("idempotency-key", "fix-me")];
    h.refuses("POST", PI, &key, "amount=0&currency=usd", bad("amount_too_small", "amount", "at least 1"), "first try").await;
    h.refuses("POST", PI, &key, "amount=100&currency=usd&foo=1", bad("parameter_unknown", "foo", "foo"), "second try").await;
    // 404s and 401s are not stored either.
    h.refuses("POST", &format!("{PI}/pi_doesnotexist/confirm"), &key, "",
        Expect { status: 404, kind: "invalid_request_error", code: Some("resource_missing"), param: Some("id"), hint: "pi_doesnotexist" }, "404").await;
    let r = h.call("POST", PI, &[("idempotency-key", "fix-me"), ("authorization", "Bearer sk_test_nope")], "amount=100&currency=usd").await;
    assert_eq!(r.status, 401);
    // Corrected, the same key succeeds, and then replays.
    let ok = h.post_idem(PI, "fix-me", "amount=100&currency=usd").await.ok();
    assert!(!ok.is_replay());
    let again = h.post_idem(PI, "fix-me", "amount=100&currency=usd").await.ok();
    assert!(again.is_replay());
    assert_eq!(h.snapshot().await.intents.len(), 1);
    // A refused card (402 at tokenization) is not stored either: the corrected card succeeds.
    let bad_card = "type=card&card[number]=4242424242424241&card[exp_month]=12&card[exp_year]=2040";
    let r = h.post_idem("/v1/payment_methods", "card-1", bad_card).await;
    assert_eq!(r.status, 402);
    let r = h.post_idem("/v1/payment_methods", "card-1", &bad_card.replace("4241", "4242")).await.ok();
    assert!(!r.is_replay());
}
