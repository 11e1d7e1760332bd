//! `expand[]` on retrieve and list: ids answered with their objects, paths checked first.

use crate::support::*;

#[tokio::test]
async fn ids_on_an_asked_path_come_back_as_their_objects() {
    let h = Harness::new().await;
    let pi = h.succeeded().await;
    let refund = h.post("/v1/refunds", &format!("payment_intent={pi}&amount=100")).await.ok().json;
    let re = refund["id"].as_str().unwrap();

    let plain = h.get(&format!("/v1/payment_intents/{pi}")).await.ok().json;
    let ch = plain["latest_charge"].as_str().expect("an id unless expanded").to_string();
    let v = h.get(&format!("/v1/payment_intents/{pi}?expand[]=latest_charge&expand[]=payment_method")).await.ok().json;
    assert_eq!((v["latest_charge"]["object"].as_str(), v["latest_charge"]["id"].as_str()), (Some("charge"), Some(ch.as_str())), "{v}");
    assert_eq!(v["payment_method"]["object"], "payment_method", "{v}");
    assert_eq!(v["client_secret"], plain["client_secret"], "the rest is the same object");
    // Through the charge back to the intent: two levels.
    let v = h.get(&format!("/v1/payment_intents/{pi}?expand[0]=latest_charge.payment_intent")).await.ok().json;
    assert_eq!(v["latest_charge"]["payment_intent"]["id"], pi.as_str(), "{v}");
    // A list expands each object's fields under data.
    let l = h.get("/v1/payment_intents?expand[]=data.latest_charge").await.ok().json;
    assert_eq!(l["data"][0]["latest_charge"]["object"], "charge", "{l}");
    // Charges and refunds.
    let c = h.get(&format!("/v1/charges/{ch}?expand[]=payment_intent")).await.ok().json;
    assert_eq!(c["payment_intent"]["object"], "payment_intent", "{c}");
    let r = h.get(&format!("/v1/refunds/{re}?expand[]=charge&expand[]=payment_intent")).await.ok().json;
    assert_eq!((r["charge"]["object"].as_str(), r["payment_intent"]["id"].as_str()), (Some("charge"), Some(pi.as_str())), "{r}");
    let rl = h.get(&format!("/v1/refunds?payment_intent={pi}&expand[]=data.charge")).await.ok().json;
    assert_eq!(rl["data"][0]["charge"]["id"], ch.as_str(), "{rl}");
    // An intent with no charge yet keeps its null.
    let fresh = h.intent("amount=100&currency=usd").await;
    let v = h.get(&format!("/v1/payment_intents/{}?expand[]=latest_charge", fresh["id"].as_str().unwrap())).await.ok().json;
    assert!(v["latest_charge"].is_null(), "{v}");
}

#[tokio::test]
async fn a_path_that_cannot_be_expanded_is_a_400_naming_it() {
    let h = Harness::new().await;
    let pi = h.succeeded().await;
    let deep = "latest_charge.payment_intent.latest_charge.payment_intent";
    assert_eq!(h.get(&format!("/v1/payment_intents/{pi}?expand[]={deep}")).await.ok().json["id"], pi.as_str(), "four levels: the limit");
    for (path, hint) in [
        (format!("/v1/payment_intents/{pi}?expand[]=latest_chrage"), "cannot be expanded (latest_chrage)"),
        (format!("/v1/payment_intents/{pi}?expand[]={deep}.latest_charge"), "more than 4 levels"),
        (format!("/v1/payment_intents/{pi}?expand[]=latest_charge.refunds"), "A charge can expand: payment_intent"),
        ("/v1/payment_intents?expand[]=latest_charge".to_string(), "data.latest_charge"),
        ("/v1/refunds?expand[]=data.customer".to_string(), "cannot be expanded (customer)"),
        (format!("/v1/payment_methods?expand[]=data.card"), "Received unknown parameter: expand"),
    ] {
        let r = h.get(&path).await;
        let code = if hint.starts_with("Received") { "parameter_unknown" } else { "parameter_invalid" };
        assert_error(&r, bad(code, "expand", hint), &path);
    }
}
