//! Admin endpoints: the admin token only, never a merchant key; off without a token.

use std::time::Duration;

use paywarden_api::ApiConfig;

use crate::support::*;

const REPORT: &str = "/admin/memory/leak-report";

#[tokio::test]
async fn admin_endpoints_are_off_without_a_token() {
    let h = Harness::new().await;
    let r = h.call("GET", REPORT, &[("authorization", "Bearer anything")], "").await;
    assert_eq!(r.status, 404);
    assert!(r.err()["message"].as_str().unwrap().contains("--admin-token"));
}

#[tokio::test]
async fn admin_endpoints_take_the_admin_token_and_nothing_else() {
    let cfg = ApiConfig { admin_token: Some("adm_secret_token".into()), ..ApiConfig::default() };
    let h = Harness::with(Duration::ZERO, cfg).await;
    let merchant_key = format!("Bearer {}", h.key);
    for auth in [NO_AUTH, merchant_key.as_str(), "Bearer adm_secret_toke", "Bearer adm_secret_token2", "Basic YWRtX3NlY3JldF90b2tlbjo="] {
        let r = h.call("GET", REPORT, &[("authorization", auth)], "").await;
        assert_eq!(r.status, 401, "{auth}: {}", r.text());
    }
    let ok = [("authorization", "Bearer adm_secret_token")];
    let r = h.call("GET", REPORT, &ok, "").await;
    assert_eq!(r.status, 404, "no memory guard installed yet");
    h.app.set_leak_report(Box::new(|| serde_json::json!({"state": "ok"})));
    let r = h.call("GET", REPORT, &ok, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["state"], "ok");
}
