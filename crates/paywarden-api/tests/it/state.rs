//! Operations the intent's state does not allow: 400 with the codes of `state_error`, and
//! nothing written.

use crate::support::*;

const PI: &str = "/v1/payment_intents";
const RE: &str = "/v1/refunds";

fn unexpected(hint: &str) -> Expect<'_> {
    bad_state("payment_intent_unexpected_state", hint)
}

#[tokio::test]
async fn state_errors_are_400_and_write_nothing() {
    let h = Harness::new().await;
    let succeeded = h.succeeded().await;
    let canceled = h.canceled().await;
    let authorized = h.authorized().await;
    let unconfirmed = h.unconfirmed().await;
    let bare = h.intent("amount=1000&currency=usd").await["id"].as_str().unwrap().to_string();
    let refunded = h.succeeded().await;
    h.post(RE, &format!("payment_intent={refunded}")).await.ok();
    let partly = h.succeeded().await;
    h.post(RE, &format!("payment_intent={partly}&amount=600")).await.ok();
    let refunded_ch = h.get(&format!("{PI}/{refunded}")).await.json["latest_charge"].as_str().unwrap().to_string();
    // A declined attempt, then a successful one: the first charge failed.
    let retried = h.post(PI, "amount=1000&currency=usd&payment_method=pm_card_chargeDeclined&confirm=true").await;
    let failed_ch = retried.err()["charge"].as_str().unwrap().to_string();
    let retried = retried.err()["payment_intent"]["id"].as_str().unwrap().to_string();
    h.post(&format!("{PI}/{retried}/confirm"), "payment_method=pm_card_visa").await.ok();

    let cases: Vec<(String, String, Expect<'_>)> = vec![
        // capture
        (format!("{PI}/{succeeded}/capture"), String::new(), unexpected("status of succeeded")),
        (format!("{PI}/{canceled}/capture"), String::new(), unexpected("status of canceled")),
        (format!("{PI}/{unconfirmed}/capture"), String::new(), unexpected("requires_capture")),
        (format!("{PI}/{authorized}/capture"), "amount_to_capture=1001".into(), bad("amount_too_large", "amount_to_capture", "amount capturable (1000)")),
        // confirm
        (format!("{PI}/{canceled}/confirm"), "payment_method=pm_card_visa".into(), unexpected("status of canceled")),
        (format!("{PI}/{canceled}/confirm"), String::new(), unexpected("requires_payment_method, requires_confirmation")),
        (format!("{PI}/{succeeded}/confirm"), String::new(), unexpected("status of succeeded")),
        (format!("{PI}/{authorized}/confirm"), "payment_method=pm_card_visa".into(), unexpected("status of requires_capture")),
        // cancel
        (format!("{PI}/{succeeded}/cancel"), String::new(), unexpected("You cannot cancel this PaymentIntent")),
        (format!("{PI}/{canceled}/cancel"), "cancellation_reason=duplicate".into(), unexpected("status of canceled")),
        (format!("{PI}/{refunded}/cancel"), String::new(), unexpected("status of succeeded")),
        // update
        (format!("{PI}/{succeeded}"), "amount=5".into(), unexpected("You cannot update")),
        (format!("{PI}/{canceled}"), "payment_method=pm_card_visa".into(), unexpected("status of canceled")),
        (format!("{PI}/{authorized}"), "metadata[a]=b".into(), unexpected("status of requires_capture")),
        // refund
        (RE.into(), format!("payment_intent={authorized}"), bad("charge_not_refundable", "payment_intent", "requires_capture")),
        (RE.into(), format!("payment_intent={unconfirmed}"), bad("charge_not_refundable", "payment_intent", "requires_confirmation")),
        (RE.into(), format!("payment_intent={bare}&amount=1"), bad("charge_not_refundable", "payment_intent", "requires_payment_method")),
        (RE.into(), format!("payment_intent={canceled}"), bad("charge_not_refundable", "payment_intent", "canceled")),
        (RE.into(), format!("payment_intent={succeeded}&amount=1001"), bad("amount_too_large", "amount", "unrefunded amount on the charge (1000)")),
        (RE.into(), format!("payment_intent={partly}&amount=401"), bad("amount_too_large", "amount", "(400)")),
        (RE.into(), format!("payment_intent={refunded}"), bad("charge_already_refunded", "payment_intent", "already been refunded")),
        (RE.into(), format!("payment_intent={refunded}&amount=1"), bad("charge_already_refunded", "payment_intent", "already been refunded")),
        (RE.into(), format!("charge={refunded_ch}"), bad("charge_already_refunded", "payment_intent", &refunded_ch)),
        // Refunding by a failed charge does not refund the intent's later, successful one.
        (RE.into(), format!("charge={failed_ch}"), bad("charge_not_refundable", "charge", &retried)),
        (RE.into(), format!("charge={failed_ch}&amount=100"), bad("charge_not_refundable", "charge", "failed attempt")),
    ];
    for (path, body, e) in &cases {
        h.refuses("POST", path, &[], body.as_str(), *e, &format!("POST {path} {body}")).await;
    }

    // What the refusals left in place still works at its edges.
    let r = h.post(RE, &format!("payment_intent={partly}&amount=400")).await.ok();
    assert_eq!(r.json["amount"], 400);
    let r = h.post(&format!("{PI}/{authorized}/capture"), "amount_to_capture=1000").await.ok();
    assert_eq!(r.json["amount_received"], 1000);
    let r = h.post(RE, &format!("payment_intent={succeeded}&amount=1000")).await.ok();
    assert_eq!(r.json["amount"], 1000);
    let latest = h.get(&format!("{PI}/{retried}")).await.json["latest_charge"].as_str().unwrap().to_string();
    let r = h.post(RE, &format!("charge={latest}&amount=100")).await.ok();
    assert_eq!(r.json["charge"], latest.as_str());
    let audit = h.store().audit().await.unwrap();
    assert!(audit.balanced(), "{audit}");
}

#[tokio::test]
async fn partial_capture_releases_the_rest_and_refunds_stop_at_the_captured_amount() {
    let h = Harness::new().await;
    let pi = h.authorized().await;
    let r = h.post(&format!("{PI}/{pi}/capture"), "amount_to_capture=700").await.ok();
    assert_eq!((r.json["status"].as_str(), r.json["amount_received"].as_u64(), r.json["amount_capturable"].as_u64()), (Some("succeeded"), Some(700), Some(0)));
    h.refuses("POST", RE, &[], format!("payment_intent={pi}&amount=701"), bad("amount_too_large", "amount", "(700)"), "refund past capture").await;
    h.post(RE, &format!("payment_intent={pi}&amount=300")).await.ok();
    h.post(RE, &format!("payment_intent={pi}")).await.ok();
    h.refuses("POST", RE, &[], format!("payment_intent={pi}"), bad("charge_already_refunded", "payment_intent", "already been refunded"), "third refund").await;
    let refunds = h.get(&format!("{RE}?payment_intent={pi}")).await.ok();
    let amounts: Vec<u64> = refunds.json["data"].as_array().unwrap().iter().map(|r| r["amount"].as_u64().unwrap()).collect();
    assert_eq!(amounts, vec![400, 300]);
    let ch = h.get(&format!("{PI}/{pi}")).await.json["latest_charge"].as_str().unwrap().to_string();
    let c = h.get(&format!("/v1/charges/{ch}")).await.ok();
    assert_eq!((c.json["amount_captured"].as_u64(), c.json["amount_refunded"].as_u64(), c.json["refunded"].as_bool()), (Some(700), Some(700), Some(true)));

    // Cancel of an authorized intent releases the hold.
    let pi = h.authorized().await;
    let r = h.post(&format!("{PI}/{pi}/cancel"), "cancellation_reason=requested_by_customer").await.ok();
    assert_eq!(r.json["status"], "canceled");
    assert_eq!(r.json["cancellation_reason"], "requested_by_customer");
    assert_eq!(r.json["amount_capturable"], 0);
    assert!(h.store().audit().await.unwrap().balanced());
}
