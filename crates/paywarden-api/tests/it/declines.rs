//! The sandbox's declining test payment methods: 402 card_error, the intent stored in
//! requires_payment_method with last_payment_error, and a retry with a good card succeeds.

use crate::support::*;

const PI: &str = "/v1/payment_intents";

/// (test payment method, code, decline_code, a piece of the message)
const DECLINES: &[(&str, &str, &str, &str)] = &[
    ("pm_card_chargeDeclined", "card_declined", "generic_decline", "declined"),
    ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds", "insufficient funds"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card", "expired"),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc", "security code"),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error", "Try again"),
];

async fn assert_declined(h: &Harness, r: &Resp, code: &str, decline_code: &str, hint: &str, ctx: &str) -> String {
    assert_error(r, Expect { status: 402, kind: "card_error", code: Some(code), param: None, hint }, ctx);
    let e = r.err();
    assert_eq!(e["decline_code"], decline_code, "[{ctx}]");
    let pi = &e["payment_intent"];
    assert_eq!(pi["status"], "requires_payment_method", "[{ctx}]");
    assert_eq!(pi["last_payment_error"]["code"], code, "[{ctx}]");
    assert_eq!(pi["last_payment_error"]["decline_code"], decline_code, "[{ctx}]");
    assert_eq!(pi["payment_method"], serde_json::Value::Null, "[{ctx}]");
    let charge = e["charge"].as_str().unwrap_or_else(|| panic!("[{ctx}] no charge: {}", r.text())).to_string();
    assert_eq!(pi["latest_charge"], charge.as_str());
    assert_eq!(e["payment_method"]["object"], "payment_method");
    // Stored as the error shows it.
    let id = pi["id"].as_str().unwrap().to_string();
    let stored = h.get(&format!("{PI}/{id}")).await.ok();
    assert_eq!(&stored.json, pi, "[{ctx}] the stored intent is the one in the error");
    let c = h.get(&format!("/v1/charges/{charge}")).await.ok();
    assert_eq!((c.json["status"].as_str(), c.json["failure_code"].as_str(), c.json["paid"].as_bool()), (Some("failed"), Some(code), Some(false)), "[{ctx}]");
    id
}

#[tokio::test]
async fn every_declining_card_is_a_402_and_a_retry_succeeds() {
    let h = Harness::new().await;
    for (pm, code, decline_code, hint) in DECLINES {
        // Declined at create-and-confirm.
        let r = h.post(PI, &format!("amount=1500&currency=usd&payment_method={pm}&confirm=true")).await;
        let id = assert_declined(&h, &r, code, decline_code, hint, &format!("create {pm}")).await;
        // Confirming again with nothing: the declined method was detached.
        h.refuses("POST", &format!("{PI}/{id}/confirm"), &[], "", bad("parameter_missing", "payment_method", "payment_method"), "confirm bare").await;
        // Confirming again with a declining card: 402 again, a second failed charge.
        let r = h.post(&format!("{PI}/{id}/confirm"), &format!("payment_method={pm}")).await;
        assert_declined(&h, &r, code, decline_code, hint, &format!("confirm {pm}")).await;
        // And with pm_card_visa it succeeds.
        let ok = h.post(&format!("{PI}/{id}/confirm"), "payment_method=pm_card_visa").await.ok();
        assert_eq!(ok.json["status"], "succeeded");
        assert_eq!(ok.json["amount_received"], 1500);
        assert_eq!(ok.json["last_payment_error"], serde_json::Value::Null);

        // Declined at a separate confirm, on a manual-capture intent.
        let id = h.intent(&format!("amount=700&currency=eur&capture_method=manual&payment_method={pm}")).await["id"].as_str().unwrap().to_string();
        let r = h.post(&format!("{PI}/{id}/confirm"), "").await;
        assert_declined(&h, &r, code, decline_code, hint, &format!("confirm later {pm}")).await;
        let ok = h.post(&format!("{PI}/{id}/confirm"), "payment_method=pm_card_mastercard").await.ok();
        assert_eq!(ok.json["status"], "requires_capture");
        // A declined intent can also be canceled.
        let id = h.intent(&format!("amount=700&currency=eur&payment_method={pm}")).await["id"].as_str().unwrap().to_string();
        assert_eq!(h.post(&format!("{PI}/{id}/confirm"), "").await.status, 402);
        assert_eq!(h.post(&format!("{PI}/{id}/cancel"), "").await.ok().json["status"], "canceled");
    }
    let audit = h.store().audit().await.unwrap();
    assert!(audit.balanced(), "{audit}");
}
