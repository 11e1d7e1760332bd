//! Authentication, and the invisibility of other merchants' objects.

use paywarden_api::hash_key;
use paywarden_store::{ApiKeyRecord, Write, WriteBatch};

use crate::support::*;

fn unauthorized(hint: &str) -> Expect<'_> {
    Expect { status: 401, kind: "invalid_request_error", code: None, param: None, hint }
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let h = Harness::new().await;
    // A live-mode key, even one stored for the merchant, is refused: this is a test-mode gateway.
    let live = format!("sk_live_{}", &h.key["sk_test_".len()..]);
    let mut batch = WriteBatch::new();
    batch.push(Write::ApiKey(ApiKeyRecord { hash: hash_key(&live), merchant: h.merchant.clone(), prefix: "sk_live_".into(), created: 0 }));
    h.store().write(batch).await.unwrap();

    let unknown = "sk_test_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL";
    let bearer_unknown = format!("Bearer {unknown}");
    let bearer_live = format!("Bearer {live}");
    let basic_unknown = basic(unknown);
    let basic_live = basic(&live);
    let cases: Vec<(&str, Expect<'_>)> = vec![
        (NO_AUTH, unauthorized("Authorization: Bearer")),
        (&bearer_unknown, unauthorized("Invalid API Key")),
        ("Bearer ", unauthorized("Invalid")),
        ("Bearer pk_test_123", unauthorized("Invalid API Key")),
        (&bearer_live, unauthorized("Invalid API Key")),
        (&basic_unknown, unauthorized("Invalid API Key")),
        (&basic_live, unauthorized("Invalid API Key")),
        ("Basic !!!not-base64!!!", unauthorized("base64")),
        ("Basic /w==", unauthorized("UTF-8")),
        ("Token abc", unauthorized("Bearer YOUR_SECRET_KEY")),
        ("bearer", unauthorized("Bearer YOUR_SECRET_KEY")),
    ];
    let paths = [
        ("POST", "/v1/payment_intents", "amount=100&currency=usd"),
        ("POST", "/v1/payment_methods", "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2040"),
        ("POST", "/v1/refunds", "payment_intent=pi_x"),
        ("GET", "/v1/payment_intents", ""),
        ("GET", "/v1/refunds", ""),
    ];
    for (auth, e) in &cases {
        for (method, path, body) in paths {
            let ctx = format!("{method} {path} with Authorization {auth:?}");
            let r = h.refuses(method, path, &[("authorization", auth)], body, *e, &ctx).await;
            // The key is never echoed whole.
            assert!(!r.text().contains(unknown) && !r.text().contains(&live), "[{ctx}] echoed the key: {}", r.text());
        }
    }
    // The unknown key's last 4 characters identify it in the message.
    let r = h.call("GET", "/v1/payment_intents", &[("authorization", &bearer_unknown)], "").await;
    assert!(r.err()["message"].as_str().unwrap().contains("sk_test_****IJKL"), "{}", r.text());
}

#[tokio::test]
async fn bearer_and_basic_auth_both_work() {
    let h = Harness::new().await;
    let bearer = format!("Bearer {}", h.key);
    let basic_user = basic(&h.key);
    let basic_pw = format!("Basic {}", {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:ignored", h.key))
    });
    for auth in [&bearer, &basic_user, &basic_pw] {
        let r = h.call("POST", "/v1/payment_intents", &[("authorization", auth)], "amount=100&currency=usd").await;
        assert_eq!(r.status, 200, "{auth}: {}", r.text());
        let id = r.id();
        let r = h.call("GET", &format!("/v1/payment_intents/{id}"), &[("authorization", auth)], "").await.ok();
        assert_eq!(r.json["id"], id.as_str());
    }
    assert_eq!(h.snapshot().await.intents.len(), 3);
}

#[tokio::test]
async fn another_merchants_objects_are_invisible() {
    let h = Harness::new().await;
    let (other_merchant, other) = h.add_merchant("second").await;
    // Merchant A's objects: a succeeded intent with its charge and a refund, an authorized
    // one, an unconfirmed one, and a tokenized payment method.
    let succeeded = h.succeeded().await;
    let charge = h.get(&format!("/v1/payment_intents/{succeeded}")).await.json["latest_charge"].as_str().unwrap().to_string();
    let refund = h.post("/v1/refunds", &format!("payment_intent={succeeded}&amount=100")).await.ok().id();
    let authorized = h.authorized().await;
    let unconfirmed = h.unconfirmed().await;
    let pm = h
        .post("/v1/payment_methods", "type=card&card[number]=5555555555554444&card[exp_month]=12&card[exp_year]=2040")
        .await
        .ok()
        .id();
    let before_a = h.snapshot().await;

    let missing = |what: &str, id: &str| format!("No such {what}: '{id}'");
    // GET each of A's objects as B: 404, worded as for an id that does not exist.
    for (path, what, id) in [
        ("/v1/payment_intents", "payment_intent", &succeeded),
        ("/v1/payment_intents", "payment_intent", &authorized),
        ("/v1/refunds", "refund", &refund),
        ("/v1/payment_methods", "PaymentMethod", &pm),
        ("/v1/charges", "charge", &charge),
    ] {
        let r = h.get_as(&other, &format!("{path}/{id}")).await;
        let hint = missing(what, id);
        assert_error(&r, Expect { status: 404, kind: "invalid_request_error", code: Some("resource_missing"), param: Some("id"), hint: &hint }, &format!("GET {path}/{id} as B"));
        let fake = format!("{}_doesnotexist", &id[..id.find('_').unwrap()]);
        let r2 = h.get_as(&other, &format!("{path}/{fake}")).await;
        assert_eq!((r.status, &r.err()["code"], &r.err()["param"]), (r2.status, &r2.err()["code"], &r2.err()["param"]));
        // A still sees it.
        h.get(&format!("{path}/{id}")).await.ok();
    }

    // Every POST action on A's intents, as B: 404.
    let auth = format!("Bearer {other}");
    let hdr = [("authorization", auth.as_str())];
    for id in [&succeeded, &authorized, &unconfirmed] {
        for (suffix, body) in [("", "description=x"), ("/confirm", "payment_method=pm_card_visa"), ("/confirm", ""), ("/capture", ""), ("/capture", "amount_to_capture=1"), ("/cancel", "")] {
            let path = format!("/v1/payment_intents/{id}{suffix}");
            let hint = missing("payment_intent", id);
            let e = Expect { status: 404, kind: "invalid_request_error", code: Some("resource_missing"), param: Some("id"), hint: &hint };
            h.refuses("POST", &path, &hdr, body, e, &format!("POST {path} as B")).await;
        }
    }

    // A's objects passed as parameters by B are answered exactly as ids that do not exist:
    // resource_missing naming the parameter.
    let b_intent = h.post_as(&other, "/v1/payment_intents", "amount=100&currency=usd").await.ok().id();
    let by_param = [
        ("/v1/refunds".to_string(), format!("payment_intent={succeeded}"), "payment_intent", "pi_doesnotexist"),
        ("/v1/refunds".to_string(), format!("charge={charge}"), "charge", "ch_doesnotexist"),
        ("/v1/payment_intents".to_string(), format!("amount=100&currency=usd&payment_method={pm}"), "payment_method", "pm_doesnotexist"),
        ("/v1/payment_intents".to_string(), format!("amount=100&currency=usd&confirm=true&payment_method={pm}"), "payment_method", "pm_doesnotexist"),
        (format!("/v1/payment_intents/{b_intent}/confirm"), format!("payment_method={pm}"), "payment_method", "pm_doesnotexist"),
        (format!("/v1/payment_intents/{b_intent}"), format!("payment_method={pm}"), "payment_method", "pm_doesnotexist"),
    ];
    let before_b = h.snapshot_of(&other_merchant).await;
    for (path, body, param, fake) in &by_param {
        let r = h.post_as(&other, path, body).await;
        let real_id = body.rsplit('=').next().unwrap();
        let hint = format!("'{real_id}'");
        assert_error(&r, bad("resource_missing", param, &hint), &format!("POST {path} {body} as B"));
        let r2 = h.post_as(&other, path, &body.replace(real_id, fake)).await;
        assert_eq!((r.status, &r.err()["code"], &r.err()["param"]), (r2.status, &r2.err()["code"], &r2.err()["param"]), "{path} {body}");
        assert_eq!(r.err()["message"].as_str().unwrap().replace(real_id, fake), r2.err()["message"].as_str().unwrap());
    }
    assert_eq!(before_b, h.snapshot_of(&other_merchant).await, "B's refused requests wrote nothing");

    // B's lists show none of A's objects, and A's ids are no cursors for B.
    for path in ["/v1/payment_intents", "/v1/payment_methods", "/v1/refunds", &format!("/v1/refunds?payment_intent={succeeded}")] {
        let r = h.get_as(&other, path).await.ok();
        let ids: Vec<&str> = r.json["data"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
        assert!(ids.iter().all(|id| *id == b_intent), "{path}: {ids:?}");
    }
    let r = h.get_as(&other, &format!("/v1/payment_intents?starting_after={succeeded}")).await;
    assert_error(&r, bad("resource_missing", "starting_after", &succeeded), "A's cursor as B");

    assert_eq!(before_a, h.snapshot().await, "nothing of A's changed");
}
