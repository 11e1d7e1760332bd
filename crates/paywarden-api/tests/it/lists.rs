//! List endpoints: limits, cursors, pagination in both directions, the refunds filter.

use serde_json::Value;

use crate::support::*;

fn ids(r: &Resp) -> Vec<String> {
    r.json["data"].as_array().unwrap_or_else(|| panic!("no data: {}", r.text())).iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_parameters_are_validated() {
    let h = Harness::new().await;
    let pi = h.succeeded().await;
    for list in ["/v1/payment_intents", "/v1/payment_methods", "/v1/refunds"] {
        let prefix = match list {
            "/v1/payment_intents" => "pi_",
            "/v1/payment_methods" => "pm_",
            _ => "re_",
        };
        let cases: Vec<(String, Expect<'_>)> = vec![
            ("limit=0".into(), bad("parameter_invalid_integer", "limit", "between 1 and 100")),
            ("limit=101".into(), bad("parameter_invalid_integer", "limit", "between 1 and 100")),
            ("limit=-1".into(), bad("parameter_invalid_integer", "limit", "between 1 and 100")),
            ("limit=abc".into(), bad("parameter_invalid_integer", "limit", "from 1 to 100")),
            ("limit=1.5".into(), bad("parameter_invalid_integer", "limit", "from 1 to 100")),
            ("limit=1&limit=2".into(), bad("parameter_invalid_string", "limit", "single value")),
            ("foo=1".into(), bad("parameter_unknown", "foo", "foo")),
            (format!("starting_after={prefix}a&ending_before={prefix}b"), bad("parameter_invalid", "ending_before", "only specify one")),
            (format!("starting_after={prefix}doesnotexist"), bad("resource_missing", "starting_after", "doesnotexist")),
            (format!("ending_before={prefix}doesnotexist"), bad("resource_missing", "ending_before", "doesnotexist")),
            ("starting_after=xx_1".into(), bad("resource_missing", "starting_after", prefix)),
            ("ending_before=xx_1".into(), bad("resource_missing", "ending_before", prefix)),
            ("a[b][c][d]=1".into(), bad("parameters_invalid", "body", "at most 3 levels")),
        ];
        for (q, e) in &cases {
            let path = format!("{list}?{q}");
            h.refuses("GET", &path, &[], "", *e, &format!("GET {path}")).await;
        }
        for limit in [1, 100] {
            let r = h.get(&format!("{list}?limit={limit}")).await.ok();
            assert_eq!(r.json["object"], "list");
            assert_eq!(r.json["url"], list);
            assert!(ids(&r).len() <= limit);
        }
    }
    h.refuses("GET", "/v1/payment_methods?type=sepa_debit", &[], "", bad("parameter_invalid", "type", "one of: card"), "pm type").await;
    h.get("/v1/payment_methods?type=card").await.ok();
    h.refuses("GET", "/v1/refunds?payment_intent=ch_1", &[], "", bad("resource_missing", "payment_intent", "starts with pi_"), "refunds filter").await;
    // An intent with no refunds, or none of this merchant's, lists nothing.
    assert!(ids(&h.get("/v1/refunds?payment_intent=pi_doesnotexist").await.ok()).is_empty());
    assert!(ids(&h.get(&format!("/v1/refunds?payment_intent={pi}")).await.ok()).is_empty());
}

/// Walks a list forward with `starting_after` and backward with `ending_before`, `limit`
/// at a time; both walks must return every one of `expected` (newest first) exactly once.
async fn walk(h: &Harness, list: &str, expected: &[String], limit: usize) {
    let sep = if list.contains('?') { '&' } else { '?' };
    // Forward, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => format!("{list}{sep}limit={limit}"),
            Some(c) => format!("{list}{sep}limit={limit}&starting_after={c}"),
        };
        let r = h.get(&q).await.ok();
        let page = ids(&r);
        assert!(page.len() <= limit);
        seen.extend(page.iter().cloned());
        if !r.json["has_more"].as_bool().unwrap() {
            break;
        }
        assert_eq!(page.len(), limit, "a page with has_more is full");
        cursor = page.last().cloned();
        assert!(seen.len() <= expected.len(), "forward walk does not end");
    }
    assert_eq!(seen, expected, "forward walk of {list}");

    // Backward from the oldest: each page is still newest first.
    let oldest = expected.last().unwrap().clone();
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor = oldest.clone();
    loop {
        let r = h.get(&format!("{list}{sep}limit={limit}&ending_before={cursor}")).await.ok();
        let page = ids(&r);
        let mut sorted = page.clone();
        sorted.sort_by_key(|id| expected.iter().position(|e| e == id).unwrap());
        assert_eq!(page, sorted, "page is newest first");
        pages.push(page.clone());
        if !r.json["has_more"].as_bool().unwrap() {
            break;
        }
        cursor = page.first().unwrap().clone();
        assert!(pages.len() <= expected.len(), "backward walk does not end");
    }
    let mut back: Vec<String> = pages.into_iter().rev().flatten().collect();
    back.push(oldest);
    assert_eq!(back, expected, "backward walk of {list}");
}

#[tokio::test]
async fn pagination_returns_every_object_once_newest_first() {
    let h = Harness::new().await;
    let (_, other) = h.add_merchant("second").await;
    let mut intents = Vec::new();
    for i in 0..7 {
        intents.push(h.intent(&format!("amount={}&currency=usd", 100 + i)).await["id"].as_str().unwrap().to_string());
        // Another merchant's objects interleave, and never show.
        h.post_as(&other, "/v1/payment_intents", "amount=5&currency=usd").await.ok();
    }
    let mut pms = Vec::new();
    for _ in 0..5 {
        let r = h.post("/v1/payment_methods", "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2040").await.ok();
        pms.push(r.id());
    }
    let paid = h.succeeded().await;
    intents.push(paid.clone());
    let other_paid = h.succeeded().await;
    intents.push(other_paid.clone());
    let mut refunds = Vec::new();
    let mut paid_refunds = Vec::new();
    for i in 0..4 {
        let pi = if i % 2 == 0 { &paid } else { &other_paid };
        let id = h.post("/v1/refunds", &format!("payment_intent={pi}&amount=10")).await.ok().id();
        if i % 2 == 0 {
            paid_refunds.push(id.clone());
        }
        refunds.push(id);
    }
    intents.reverse();
    refunds.reverse();
    paid_refunds.reverse();
    // Payment methods also include the ones the test ids made (pm_card_visa on each confirm).
    let all_pms: Vec<String> = ids(&h.get("/v1/payment_methods?limit=100").await.ok());
    assert_eq!(all_pms.len(), 7);
    let mut made = pms.clone();
    made.reverse();
    assert_eq!(&all_pms[2..], &made[..]);

    for limit in [1, 2, 3, 100] {
        walk(&h, "/v1/payment_intents", &intents, limit).await;
        walk(&h, "/v1/payment_methods", &all_pms, limit).await;
        walk(&h, "/v1/refunds", &refunds, limit).await;
        walk(&h, &format!("/v1/refunds?payment_intent={paid}"), &paid_refunds, limit).await;
    }
    // The default page is 10.
    let r = h.get("/v1/payment_intents").await.ok();
    assert_eq!(ids(&r), intents.iter().take(9).cloned().collect::<Vec<_>>());
    assert_eq!(r.json["has_more"], Value::Bool(false));
}
