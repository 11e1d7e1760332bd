//! Every kind of bad input to the POST endpoints: each refused with the right status,
//! `type`, `code` and `param`, a message naming what to change, and nothing written.

use paywarden_api::params::{PARAMS_COUNT_MAX, PARAMS_DEPTH_MAX};
use paywarden_api::ApiConfig;
use serde_json::json;

use crate::support::*;

const PI: &str = "/v1/payment_intents";
const PM: &str = "/v1/payment_methods";
const RE: &str = "/v1/refunds";
const CARD: &str = "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2040&card[cvc]=123";

fn s(x: &str) -> String {
    x.to_string()
}

/// The amount cases every endpoint taking an amount shares: (value, code, hint).
const BAD_AMOUNTS: &[(&str, &str, &str)] = &[
    ("0", "amount_too_small", "at least 1"),
    ("-1", "amount_too_small", "at least 1"),
    ("1.5", "parameter_invalid_integer", "whole numbers"),
    ("abc", "parameter_invalid_integer", "whole numbers"),
    ("", "parameter_invalid_integer", "whole numbers"),
    ("100000000", "amount_too_large", "99999999"),
    ("99999999999999999999999", "amount_too_large", "99999999"),
];

#[tokio::test]
async fn create_intent_refuses_bad_parameters() {
    let h = Harness::new().await;
    let base = "amount=100&currency=usd";
    let mut cases: Vec<(String, Expect<'_>)> = vec![
        (s(""), bad("parameter_missing", "amount", "amount")),
        (s("currency=usd"), bad("parameter_missing", "amount", "amount")),
        (s("amount=100"), bad("parameter_missing", "currency", "currency")),
        (s("amount=100&currency="), bad("invalid_currency", "currency", "three-letter")),
        (s("amount=100&currency=xyz"), bad("invalid_currency", "currency", "three-letter ISO 4217")),
        (s("amount=100&currency=dollars"), bad("invalid_currency", "currency", "such as usd")),
        (format!("{base}&capture_method=later"), bad("parameter_invalid", "capture_method", "automatic, automatic_async, manual")),
        (format!("{base}&confirm=maybe"), bad("parameter_invalid_boolean", "confirm", "true or false")),
        (format!("{base}&confirm=true"), bad("parameter_missing", "payment_method", "payment_method")),
        (format!("{base}&foo=1"), bad("parameter_unknown", "foo", "Remove it")),
        (format!("{base}&Amount=1"), bad("parameter_unknown", "Amount", "unknown parameter: Amount")),
        (format!("{base}&automatic_payment_methods[enabled]=true&automatic_payment_methods[foo]=1"),
            bad("parameter_unknown", "automatic_payment_methods[foo]", "automatic_payment_methods[foo]")),
        (format!("{base}&automatic_payment_methods[enabled]=yes"),
            bad("parameter_invalid_boolean", "automatic_payment_methods[enabled]", "true or false")),
        (format!("{base}&{}", metadata_keys(51)), bad("parameter_invalid", "metadata", "up to 50 keys")),
        (format!("{base}&metadata[{}]=v", "k".repeat(41)), bad("parameter_invalid", "metadata", "up to 40 characters")),
        (format!("{base}&metadata[k]={}", "v".repeat(501)), bad("parameter_invalid", "metadata", "up to 500 characters")),
        (format!("{base}&metadata=abc"), bad("parameter_invalid", "metadata", "metadata[key]=value")),
        (format!("{base}&metadata[a][b]=c"), bad("parameter_invalid_string", "metadata[a]", "single value")),
        (format!("{base}&description={}", "d".repeat(1001)), bad("parameter_invalid_string", "description", "at most 1000")),
        (format!("{base}&description={}", "d".repeat(5001)), bad("parameter_invalid_string", "description", "at most 5000")),
        (format!("{base}&payment_method=card_123"), bad("resource_missing", "payment_method", "starts with pm_")),
        (format!("{base}&payment_method=pm_doesnotexist"), bad("resource_missing", "payment_method", "pm_doesnotexist")),
        (format!("{base}&payment_method=pm_doesnotexist&confirm=true"), bad("resource_missing", "payment_method", "pm_doesnotexist")),
        (format!("{base}&payment_method_types[]=sepa_debit"), bad("parameter_invalid", "payment_method_types", "only \"card\"")),
        (format!("{base}&payment_method_types[x]=card"), bad("parameter_invalid", "payment_method_types", "payment_method_types[]=value")),
        (format!("{base}&payment_method_types="), bad("parameter_invalid", "payment_method_types", "only \"card\"")),
        (format!("{base}&metadata[a%5Bb]=v"), bad("parameter_invalid", "metadata", "square brackets")),
        // A repeated scalar key arrives as a list, which a scalar parameter refuses.
        (s("amount=100&currency=usd&currency=eur"), bad("parameter_invalid_string", "currency", "single value")),
        (s("amount=100&amount=200&currency=usd"), bad("parameter_invalid_integer", "amount", "send amount once")),
        (s("amount[]=100&currency=usd"), bad("parameter_invalid_integer", "amount", "single whole number")),
        (s("amount[value]=100&currency=usd"), bad("parameter_invalid_integer", "amount", "single whole number")),
        // Nothing is written when validation fails after a test payment method was resolved.
        (format!("amount=100&currency=usd&payment_method=pm_card_visa&confirm=true&{}", metadata_keys(51)), bad("parameter_invalid", "metadata", "up to 50 keys")),
        (s("amount=100&currency=usd&confirm=true&confirm=false&payment_method=pm_card_visa"),
            bad("parameter_invalid_string", "confirm", "single value")),
        // Deeper than PARAMS_DEPTH_MAX.
        (format!("{base}&metadata[a][b][c]=1"), bad("parameters_invalid", "body", "at most 3 levels")),
        (format!("{base}&a[b][c][d][e][f]=1"), bad("parameters_invalid", "body", "at most 3 levels")),
        // A key that is not valid percent-encoding is kept as it is, and unknown.
        (s("amount=100&currency=usd&%ZZ=1"), bad("parameter_unknown", "%ZZ", "Remove it")),
    ];
    assert_eq!(PARAMS_DEPTH_MAX, 3, "the depth cases above are written for 3 levels");
    for (v, code, hint) in BAD_AMOUNTS {
        cases.push((format!("amount={v}&currency=usd"), bad(code, "amount", hint)));
    }
    cases.push((params_body(PARAMS_COUNT_MAX + 1), bad("parameters_invalid", "body", "at most 256")));
    h.refuses_all(PI, &cases).await;
    assert!(h.snapshot().await.intents.is_empty());
}

/// `amount`, `currency` and `n - 2` items of `payment_method_types`: `n` parameters, all valid.
fn params_body(n: usize) -> String {
    let mut parts = vec![s("amount=100"), s("currency=usd")];
    parts.extend((0..n - 2).map(|_| s("payment_method_types[]=card")));
    parts.join("&")
}

#[tokio::test]
async fn create_intent_accepts_every_limit_exactly() {
    let h = Harness::new().await;
    let base = "amount=100&currency=usd";
    let accepted = [
        s("amount=99999999&currency=usd"),
        s("amount=1&currency=usd"),
        s("amount=100&currency=USD"),
        s("amount=100&currency=jpy&capture_method=automatic_async"),
        format!("{base}&{}", metadata_keys(50)),
        format!("{base}&metadata[{}]=v", "k".repeat(40)),
        format!("{base}&metadata[k]={}", "v".repeat(500)),
        format!("{base}&metadata[k]={}", "é".repeat(500)),
        format!("{base}&description={}", "d".repeat(1000)),
        format!("{base}&automatic_payment_methods[enabled]=true&payment_method_types[0]=card"),
        params_body(PARAMS_COUNT_MAX),
    ];
    for (i, body) in accepted.iter().enumerate() {
        let r = h.post(PI, body).await;
        assert_eq!(r.status, 200, "[{}] {}", short(body), r.text());
        assert_eq!(h.snapshot().await.intents.len(), i + 1);
    }
    let r = h.post(PI, "amount=99999999&currency=usd").await.ok();
    assert_eq!(r.json["amount"], 99_999_999);
    let r = h.post(PI, &format!("{base}&{}", metadata_keys(50))).await.ok();
    assert_eq!(r.json["metadata"].as_object().unwrap().len(), 50);
}

#[tokio::test]
async fn json_bodies_are_validated_like_forms() {
    let h = Harness::new().await;
    let ct = [("content-type", "application/json")];
    let cases: Vec<(String, Expect<'_>)> = vec![
        (s("{\"amount\": "), bad("parameters_invalid", "body", "JSON object")),
        (s("not json"), bad("parameters_invalid", "body", "JSON object")),
        (s("[1, 2]"), bad("parameters_invalid", "body", "one JSON object")),
        (s("[{\"amount\": 100, \"currency\": \"usd\"}]"), bad("parameters_invalid", "body", "one JSON object")),
        (s("\"amount=100\""), bad("parameters_invalid", "body", "one JSON object")),
        (s("null"), bad("parameters_invalid", "body", "one JSON object")),
        (json!({"currency": "usd"}).to_string(), bad("parameter_missing", "amount", "amount")),
        (json!({"amount": 1.5, "currency": "usd"}).to_string(), bad("parameter_invalid_integer", "amount", "whole numbers")),
        (json!({"amount": -1, "currency": "usd"}).to_string(), bad("amount_too_small", "amount", "at least 1")),
        (json!({"amount": 0, "currency": "usd"}).to_string(), bad("amount_too_small", "amount", "at least 1")),
        (json!({"amount": 100000000, "currency": "usd"}).to_string(), bad("amount_too_large", "amount", "99999999")),
        (json!({"amount": "abc", "currency": "usd"}).to_string(), bad("parameter_invalid_integer", "amount", "whole numbers")),
        (json!({"amount": [100], "currency": "usd"}).to_string(), bad("parameter_invalid_integer", "amount", "single whole number")),
        (json!({"amount": {"value": 100}, "currency": "usd"}).to_string(), bad("parameter_invalid_integer", "amount", "single whole number")),
        (json!({"amount": true, "currency": "usd"}).to_string(), bad("parameter_invalid_integer", "amount", "Invalid integer: true")),
        (json!({"amount": 1e30, "currency": "usd"}).to_string(), bad("parameter_invalid_integer", "amount", "whole numbers")),
        (json!({"amount": 100, "currency": ["usd"]}).to_string(), bad("parameter_invalid_string", "currency", "single value")),
        (json!({"amount": 100, "currency": "usd", "confirm": "maybe"}).to_string(), bad("parameter_invalid_boolean", "confirm", "true or false")),
        (json!({"amount": 100, "currency": "usd", "foo": 1}).to_string(), bad("parameter_unknown", "foo", "Remove it")),
        (json!({"amount": 100, "currency": "usd", "payment_method_types": []}).to_string(), bad("parameter_invalid", "payment_method_types", "only \"card\"")),
        (json!({"amount": 100, "currency": "usd", "metadata": {"a[b": "c"}}).to_string(), bad("parameter_invalid", "metadata", "square brackets")),
        (json!({"amount": 100, "currency": "usd", "metadata": {"a": {"b": {"c": "d"}}}}).to_string(),
            bad("parameters_invalid", "body", "at most 3 levels")),
    ];
    for (body, e) in &cases {
        h.refuses("POST", PI, &ct, body.as_str(), *e, &format!("json {}", short(body))).await;
    }
    let too_many: serde_json::Map<String, serde_json::Value> =
        (0..=PARAMS_COUNT_MAX).map(|i| (format!("k{i}"), json!("v"))).collect();
    let body = serde_json::Value::Object(too_many).to_string();
    h.refuses("POST", PI, &ct, body, bad("parameters_invalid", "body", "at most 256"), "json too many").await;

    // JSON with native types is accepted.
    let body = json!({"amount": 100, "currency": "usd", "confirm": true, "payment_method": "pm_card_visa", "metadata": {"n": 1}});
    let r = h.call("POST", PI, &ct, body.to_string()).await.ok();
    assert_eq!(r.json["status"], "succeeded");
    assert_eq!(r.json["metadata"]["n"], "1");
    // A charset parameter on the Content-Type is fine.
    let r = h.call("POST", PI, &[("content-type", "application/json; charset=utf-8")], r#"{"amount":5,"currency":"eur"}"#).await;
    r.ok();
}

#[tokio::test]
async fn content_type_body_size_and_idempotency_key_are_checked() {
    let h = Harness::new().await;
    let ok_body = "amount=100&currency=usd";
    let ct415 = Expect {
        status: 415,
        kind: "invalid_request_error",
        code: Some("unsupported_content_type"),
        param: None,
        hint: "application/x-www-form-urlencoded",
    };
    h.refuses("POST", PI, &[("content-type", "text/plain")], ok_body, ct415, "text/plain").await;
    h.refuses("POST", PI, &[("content-type", "multipart/form-data; boundary=x")], ok_body, ct415, "multipart").await;
    h.refuses("POST", RE, &[("content-type", "text/plain")], "payment_intent=pi_x", ct415, "refund text/plain").await;
    h.refuses("POST", PM, &[("content-type", "application/xml")], "<card/>", ct415, "pm xml").await;
    // No body and no Content-Type: just no parameters.
    h.refuses("POST", PI, &[], "", bad("parameter_missing", "amount", "amount"), "empty body").await;
    h.refuses("POST", PI, &[("content-type", "text/plain")], "", bad("parameter_missing", "amount", "amount"), "empty text/plain").await;

    // Body size: exactly body_bytes_max is read, one byte more is a 413.
    let max = ApiConfig::default().body_bytes_max;
    let exact = pad_json(r#"{"amount":100,"currency":"usd"}"#, max);
    assert_eq!(exact.len(), max);
    let json = [("content-type", "application/json")];
    let over = pad_json(r#"{"amount":100,"currency":"usd"}"#, max + 1);
    let e413 = Expect { status: 413, kind: "invalid_request_error", code: Some("body_too_large"), param: None, hint: "65536 bytes" };
    h.refuses("POST", PI, &json, over.clone(), e413, "body max + 1").await;
    h.refuses("POST", RE, &json, over.clone(), e413, "refund body max + 1").await;
    let form_over = format!("amount=100&currency=usd&description={}", "d".repeat(max));
    h.refuses("POST", PI, &[], form_over, e413, "form body over").await;
    let r = h.call("POST", PI, &json, exact).await;
    assert_eq!(r.status, 200, "a body of exactly body_bytes_max: {}", r.text());

    // Idempotency-Key length: 255 accepted, 256 and empty refused.
    let k256 = "k".repeat(256);
    h.refuses("POST", PI, &[("idempotency-key", &k256)], ok_body,
        bad("idempotency_key_invalid", "Idempotency-Key", "the limit is 255"), "key 256").await;
    h.refuses("POST", PI, &[("idempotency-key", "")], ok_body,
        bad("idempotency_key_invalid", "Idempotency-Key", "empty"), "empty key").await;
    h.refuses("POST", PI, &[("idempotency-key", "é")], ok_body,
        bad("idempotency_key_invalid", "Idempotency-Key", "printable ASCII"), "non-ascii key").await;
    h.refuses("POST", PI, &[("idempotency-key", "a\tb")], ok_body,
        bad("idempotency_key_invalid", "Idempotency-Key", "no tabs"), "a tab in the key").await;
    let k255 = "k".repeat(255);
    let r = h.call("POST", PI, &[("idempotency-key", &k255)], ok_body).await.ok();
    let again = h.call("POST", PI, &[("idempotency-key", &k255)], ok_body).await.ok();
    assert!(again.is_replay());
    assert_eq!(r.bytes, again.bytes);
}

/// `prefix` (a JSON object) with spaces appended to exactly `len` bytes.
fn pad_json(prefix: &str, len: usize) -> Vec<u8> {
    let mut v = prefix.as_bytes().to_vec();
    v.resize(len, b' ');
    v
}

#[tokio::test]
async fn confirm_capture_cancel_refuse_bad_parameters() {
    let h = Harness::new().await;
    let unconfirmed = h.unconfirmed().await;
    let bare = h.intent("amount=100&currency=usd").await["id"].as_str().unwrap().to_string();
    let authorized = h.authorized().await;

    let confirm = format!("{PI}/{unconfirmed}/confirm");
    h.refuses_all(&confirm, &[
        (s("foo=1"), bad("parameter_unknown", "foo", "foo")),
        (s("payment_method=card_123"), bad("resource_missing", "payment_method", "starts with pm_")),
        (s("payment_method=pm_doesnotexist"), bad("resource_missing", "payment_method", "pm_doesnotexist")),
        (s("payment_method[id]=pm_card_visa"), bad("parameter_invalid_string", "payment_method", "single value")),
        (s("return_url=https://example.com"), bad("parameter_unknown", "return_url", "return_url")),
    ]).await;
    h.refuses("POST", &confirm, &[("content-type", "application/json")], "{", bad("parameters_invalid", "body", "JSON"), "confirm json").await;
    // An intent without a payment method cannot be confirmed without one.
    h.refuses_all(&format!("{PI}/{bare}/confirm"), &[
        (s(""), bad("parameter_missing", "payment_method", "payment_method")),
    ]).await;

    let capture = format!("{PI}/{authorized}/capture");
    let mut cases = vec![
        (s("foo=1"), bad("parameter_unknown", "foo", "foo")),
        (s("amount=500"), bad("parameter_unknown", "amount", "amount")),
    ];
    for (v, code, hint) in BAD_AMOUNTS {
        cases.push((format!("amount_to_capture={v}"), bad(code, "amount_to_capture", hint)));
    }
    h.refuses_all(&capture, &cases).await;

    let cancel = format!("{PI}/{authorized}/cancel");
    h.refuses_all(&cancel, &[
        (s("cancellation_reason=bored"), bad("parameter_invalid", "cancellation_reason", "requested_by_customer")),
        (s("reason=duplicate"), bad("parameter_unknown", "reason", "reason")),
        (s("cancellation_reason=duplicate&foo=1"), bad("parameter_unknown", "foo", "foo")),
    ]).await;

    let update = format!("{PI}/{unconfirmed}");
    let mut cases = vec![
        (s("foo=1"), bad("parameter_unknown", "foo", "foo")),
        (s("currency=xyz"), bad("invalid_currency", "currency", "three-letter")),
        (s("capture_method=later"), bad("parameter_invalid", "capture_method", "manual")),
        (format!("description={}", "d".repeat(1001)), bad("parameter_invalid_string", "description", "at most 1000")),
        (metadata_keys(51), bad("parameter_invalid", "metadata", "up to 50 keys")),
        (s("payment_method=pm_doesnotexist"), bad("resource_missing", "payment_method", "pm_doesnotexist")),
        (format!("payment_method=pm_card_visa&{}", metadata_keys(51)), bad("parameter_invalid", "metadata", "up to 50 keys")),
        (format!("payment_method=pm_card_visa&metadata[{}]=v", "k".repeat(41)), bad("parameter_invalid", "metadata", "up to 40 characters")),
    ];
    for (v, code, hint) in BAD_AMOUNTS {
        cases.push((format!("amount={v}"), bad(code, "amount", hint)));
    }
    h.refuses_all(&update, &cases).await;

    // The intents are as they were: the targets still work.
    h.post(&capture, "amount_to_capture=400").await.ok();
    h.post(&confirm, "").await.ok();
}

#[tokio::test]
async fn create_refund_refuses_bad_parameters() {
    let h = Harness::new().await;
    let pi = h.succeeded().await;
    let ch = h.get(&format!("{PI}/{pi}")).await.json["latest_charge"].as_str().unwrap().to_string();
    let mut cases = vec![
        (s(""), bad("parameter_missing", "payment_intent", "payment_intent (or charge)")),
        (s("amount=100"), bad("parameter_missing", "payment_intent", "payment_intent (or charge)")),
        (format!("payment_intent={pi}&foo=1"), bad("parameter_unknown", "foo", "foo")),
        (format!("payment_intent={pi}&metadata[a][b]=c"), bad("parameter_invalid_string", "metadata[a]", "single value")),
        (format!("payment_intent={ch}"), bad("resource_missing", "payment_intent", "starts with pi_")),
        (format!("charge={pi}"), bad("resource_missing", "charge", "starts with ch_")),
        (format!("payment_intent={pi}&charge={ch}"), bad("parameter_invalid", "charge", "not both")),
        (format!("payment_intent={pi}&reason=bored"), bad("parameter_invalid", "reason", "requested_by_customer")),
        (format!("payment_intent={pi}&{}", metadata_keys(51)), bad("parameter_invalid", "metadata", "up to 50 keys")),
        (format!("payment_intent={pi}&metadata[{}]=v", "k".repeat(41)), bad("parameter_invalid", "metadata", "up to 40 characters")),
        (format!("payment_intent={pi}&metadata[k]={}", "v".repeat(501)), bad("parameter_invalid", "metadata", "up to 500 characters")),
        (s("payment_intent=pi_doesnotexist"), bad("resource_missing", "payment_intent", "pi_doesnotexist")),
        (s("charge=ch_doesnotexist"), bad("resource_missing", "charge", "ch_doesnotexist")),
        (format!("payment_intent={pi}&payment_intent=pi_other"), bad("parameter_invalid_string", "payment_intent", "single value")),
    ];
    for (v, code, hint) in BAD_AMOUNTS {
        cases.push((format!("payment_intent={pi}&amount={v}"), bad(code, "amount", hint)));
    }
    h.refuses_all(RE, &cases).await;
    assert!(h.snapshot().await.refunds.is_empty());
    // Edges accepted: metadata at its limits, refund by charge.
    let r = h.post(RE, &format!("charge={ch}&amount=1&reason=duplicate&{}", metadata_keys(50))).await.ok();
    assert_eq!(r.json["payment_intent"], pi.as_str());
    assert_eq!(r.json["metadata"].as_object().unwrap().len(), 50);
}

#[tokio::test]
async fn create_payment_method_refuses_bad_parameters() {
    let h = Harness::new().await;
    let card_err = |code, param, hint| Expect { status: 402, kind: "card_error", code: Some(code), param: Some(param), hint };
    let card = |number: &str, month: &str, year: &str, cvc: &str| {
        format!("type=card&card[number]={number}&card[exp_month]={month}&card[exp_year]={year}&card[cvc]={cvc}")
    };
    let cases = vec![
        (s(""), bad("parameter_missing", "type", "type")),
        (s("card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2040"), bad("parameter_missing", "type", "type")),
        (CARD.replace("type=card", "type=sepa_debit"), bad("parameter_invalid", "type", "one of: card")),
        (s("type=card"), bad("parameter_missing", "card", "card")),
        (s("type=card&card=4242424242424242"), bad("parameter_invalid", "card", "card[key]=value")),
        (s("type=card&card[exp_month]=12&card[exp_year]=2040"), bad("parameter_missing", "card[number]", "card[number]")),
        (s("type=card&card[number]=4242424242424242&card[exp_year]=2040"), bad("parameter_missing", "card[exp_month]", "card[exp_month]")),
        (s("type=card&card[number]=4242424242424242&card[exp_month]=12"), bad("parameter_missing", "card[exp_year]", "card[exp_year]")),
        (s("type=card&card[number]=&card[exp_month]=12&card[exp_year]=2040"), bad("parameter_invalid_empty", "card[number]", "non-empty value")),
        (format!("{CARD}&card[foo]=1"), bad("parameter_unknown", "card[foo]", "card[foo]")),
        (format!("{CARD}&card[number][x]=1"), bad("parameters_invalid", "body", "each key once")),
        (format!("{CARD}&foo=1"), bad("parameter_unknown", "foo", "foo")),
        (format!("{CARD}&billing_details[name]=x"), bad("parameter_unknown", "billing_details", "billing_details")),
        (format!("{CARD}&{}", metadata_keys(51)), bad("parameter_invalid", "metadata", "up to 50 keys")),
        (card("4242424242424241", "12", "2040", "123"), card_err("incorrect_number", "card[number]", "card number")),
        (card("4242", "12", "2040", "123"), card_err("incorrect_number", "card[number]", "card number")),
        (card("4242x424242424242", "12", "2040", "123"), card_err("incorrect_number", "card[number]", "card number")),
        (card("4242424242424242", "13", "2040", "123"), card_err("invalid_expiry_month", "card[exp_month]", "expiration month")),
        (card("4242424242424242", "0", "2040", "123"), card_err("invalid_expiry_month", "card[exp_month]", "expiration month")),
        (card("4242424242424242", "12", "2001", "123"), card_err("invalid_expiry_year", "card[exp_year]", "expiration year")),
        (card("4242424242424242", "12", "20400", "123"), card_err("invalid_expiry_year", "card[exp_year]", "expiration year")),
        (card("4242424242424242", "12", "2040", "12"), card_err("invalid_cvc", "card[cvc]", "security code")),
        (card("4242424242424242", "12", "2040", "12a"), card_err("invalid_cvc", "card[cvc]", "security code")),
    ];
    h.refuses_all(PM, &cases).await;
    assert!(h.snapshot().await.payment_methods.is_empty());
    // The same card, correct, is accepted; without a CVC too.
    let r = h.post(PM, CARD).await.ok();
    assert_eq!(r.json["card"]["last4"], "4242");
    h.post(PM, "type=card&card[number]=4242+4242+4242+4242&card[exp_month]=1&card[exp_year]=40").await.ok();
}
