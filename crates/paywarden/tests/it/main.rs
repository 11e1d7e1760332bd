//! End-to-end tests of the `paywarden` binary: real processes, real sockets (loopback, port
//! 0), a fresh data dir each.

mod crash;
mod drill;
mod faults;
mod first_hour;
mod judge;
mod load;
mod memory;
mod overload;
mod prometheus;
mod receiver;
mod replicas;
mod rollout;
mod schemathesis;
mod schema;
mod sdk;
mod server;
mod tls;
mod webhooks;

use server::Server;

/// Tests that drive several gateway processes under load take this, one at a time: on two
/// cores, a neighbour's load would otherwise decide a latency comparison (rollouts) or how fast
/// a benign cache fills (the memory guard's clean build).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn keys_create_while_serving_gives_a_working_key_and_merchants_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path()).await;
    let second = server::create_key(dir.path(), "second-shop");
    let client = reqwest::Client::new();

    let own = srv.create_intent(&client, &srv.key, "k-own", "amount=500&currency=usd").await;
    assert_eq!(own.0, 200, "{}", own.1);
    let id = own.1["id"].as_str().unwrap().to_string();

    // The new key works at once, and cannot see the first merchant's intent: 404, not 403.
    let res = client.get(format!("{}/v1/payment_intents/{id}", srv.url)).bearer_auth(&second).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = client
        .post(format!("{}/v1/payment_intents/{id}/cancel", srv.url))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let list: serde_json::Value = client
        .get(format!("{}/v1/payment_intents", srv.url))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // An unknown key is a 401 with Stripe's error shape.
    let res = client.get(format!("{}/v1/payment_intents", srv.url)).bearer_auth("sk_test_nope").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("Invalid API Key"));
}

#[tokio::test]
async fn ledger_verify_passes_on_a_served_data_dir_and_refuses_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let srv = Server::start(dir.path()).await;
        let client = reqwest::Client::new();
        for (i, body) in [
            "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true",
            "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true&capture_method=manual",
            "amount=800&currency=jpy&payment_method=pm_card_chargeDeclined&confirm=true",
        ]
        .iter()
        .enumerate()
        {
            let (status, _) = srv.create_intent(&client, &srv.key, &format!("k{i}"), body).await;
            assert!(status == 200 || status == 402, "{status}");
        }
    }
    let out = server::paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("BALANCED"), "{text}");
    assert!(text.contains("3 payments"), "{text}");

    let empty = tempfile::tempdir().unwrap();
    let out = server::paywarden(&["ledger", "verify", "--data-dir", empty.path().join("nope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no paywarden database"));
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let ci = std::fs::read_to_string(format!("{root}/.ci/run")).unwrap();
    let blocks: Vec<&str> = readme.split("```sh\n").skip(1).filter_map(|b| b.split("\n```").next()).collect();
    assert!(blocks.len() >= 2, "README must open with the run command and the test command");
    assert!(blocks[0].contains("serve") || blocks[0].contains(" up "), "first command runs paywarden: {}", blocks[0]);
    let test_cmd = blocks[1].trim();
    assert!(ci.lines().any(|l| l.trim() == test_cmd), ".ci/run must run the README's test command: {test_cmd}");
}
