//! Admin and debug endpoints: the admin token only, never a merchant key; off without a
//! token; answered by the installed hooks.

use std::sync::Arc;
use std::time::Duration;

use paywarden_api::{AdminHooks, ApiConfig};

use crate::support::*;

const REPORT: &str = "/admin/memory/leak-report";
const ENDPOINTS: [(&str, &str); 5] = [
    ("GET", REPORT),
    ("GET", "/admin/alerts"),
    ("GET", "/debug/pprof/heap"),
    ("POST", "/admin/memory/profile/reference"),
    ("GET", "/admin/memory/profile/diff"),
];

struct Fake {
    profile: Result<Vec<u8>, String>,
}

#[async_trait::async_trait]
impl AdminHooks for Fake {
    fn leak_report(&self) -> serde_json::Value {
        serde_json::json!({"state": "ok"})
    }
    fn alerts(&self) -> serde_json::Value {
        serde_json::json!({"active": [], "events": []})
    }
    async fn heap_profile(&self) -> Result<Vec<u8>, String> {
        self.profile.clone()
    }
}

#[tokio::test]
async fn admin_endpoints_are_off_without_a_token() {
    let h = Harness::new().await;
    h.app.set_admin_hooks(Arc::new(Fake { profile: Ok(vec![1]) }));
    for (method, path) in ENDPOINTS {
        let r = h.call(method, path, &[("authorization", "Bearer anything")], "").await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.err()["message"].as_str().unwrap().contains("--admin-token"), "{path}");
    }
}

#[tokio::test]
async fn admin_endpoints_take_the_admin_token_and_nothing_else() {
    let cfg = ApiConfig { admin_token: Some("adm_secret_token".into()), ..ApiConfig::default() };
    let h = Harness::with(Duration::ZERO, cfg).await;
    let merchant_key = format!("Bearer {}", h.key);
    let ok = [("authorization", "Bearer adm_secret_token")];
    for (method, path) in ENDPOINTS {
        for auth in [NO_AUTH, merchant_key.as_str(), "Bearer adm_secret_toke", "Bearer adm_secret_token2", "Basic YWRtX3NlY3JldF90b2tlbjo="] {
            let r = h.call(method, path, &[("authorization", auth)], "").await;
            assert_eq!(r.status, 401, "{path} {auth}: {}", r.text());
        }
        let r = h.call(method, path, &ok, "").await;
        assert_eq!(r.status, 404, "{path}: no memory guard installed yet");
    }
    h.app.set_admin_hooks(Arc::new(Fake { profile: Err("jemalloc profiling is not active".into()) }));
    let r = h.call("GET", REPORT, &ok, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["state"], "ok");
    let r = h.call("GET", "/admin/alerts", &ok, "").await;
    assert_eq!(r.status, 200);
    assert!(r.json["active"].is_array());
    let r = h.call("GET", "/debug/pprof/heap", &ok, "").await;
    assert_eq!(r.status, 409, "profiling off is the operator's setting, not a server error");
    assert!(r.err()["message"].as_str().unwrap().contains("not active"));
    // Hooks that cannot profile answer the diff endpoints 409 too, saying why.
    let r = h.call("POST", "/admin/memory/profile/reference", &ok, "").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.err()["code"], "heap_profiling_off");
    let r = h.call("GET", "/admin/memory/profile/diff", &ok, "").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.err()["message"].as_str().unwrap().contains("cannot take heap profiles"));
}

#[tokio::test]
async fn the_heap_profile_is_served_as_bytes() {
    let cfg = ApiConfig { admin_token: Some("adm_secret_token".into()), ..ApiConfig::default() };
    let h = Harness::with(Duration::ZERO, cfg).await;
    h.app.set_admin_hooks(Arc::new(Fake { profile: Ok(vec![0x1f, 0x8b, 8, 0]) }));
    let r = h.call("GET", "/debug/pprof/heap", &[("authorization", "Bearer adm_secret_token")], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").unwrap(), "application/octet-stream");
    assert_eq!(r.bytes, vec![0x1f, 0x8b, 8, 0]);
}
