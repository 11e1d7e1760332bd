//! Card numbers and CVCs never come back, and never reach the database.

use crate::support::*;

const PAN: &str = "4242424242424242";

#[tokio::test]
async fn card_numbers_and_cvcs_are_never_echoed_or_stored() {
    let h = Harness::new().await;
    let cvc = "987";
    let body = format!("type=card&card[number]={PAN}&card[exp_month]=12&card[exp_year]=2040&card[cvc]={cvc}");
    let created = h.post_idem("/v1/payment_methods", "card-1", &body).await.ok();
    let replay = h.post_idem("/v1/payment_methods", "card-1", &body).await.ok();
    assert!(replay.is_replay());
    let pm = created.id();
    let got = h.get(&format!("/v1/payment_methods/{pm}")).await.ok();
    let listed = h.get("/v1/payment_methods").await.ok();
    // Confirm with it, so the number could have travelled to intents, charges and the ledger.
    let pi = h.post("/v1/payment_intents", &format!("amount=100&currency=usd&payment_method={pm}&confirm=true")).await.ok();
    let ch = pi.json["latest_charge"].as_str().unwrap().to_string();
    let charge = h.get(&format!("/v1/charges/{ch}")).await.ok();
    // The same number with JSON and with spaces, and a refused one (wrong CVC format).
    let json = serde_json::json!({"type": "card", "card": {"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2040, "cvc": cvc}});
    let from_json = h.call("POST", "/v1/payment_methods", &[("content-type", "application/json")], json.to_string()).await.ok();
    let refused = h.post("/v1/payment_methods", &format!("type=card&card[number]={PAN}&card[exp_month]=12&card[exp_year]=2040&card[cvc]=98a")).await;
    assert_eq!(refused.status, 402);
    let unknown = h.post("/v1/payment_methods", &format!("{body}&card[pin]={cvc}1")).await;
    assert_eq!(unknown.status, 400);

    for r in [&created, &replay, &got, &listed, &pi, &charge, &from_json, &refused, &unknown] {
        let text = r.text();
        assert!(!text.contains(PAN) && !text.contains("4242 4242"), "the card number came back: {text}");
        // As a value: a bare "987" could occur by chance inside an id or a timestamp.
        assert!(!text.contains(&format!("\"{cvc}\"")) && !text.contains("98a"), "the CVC came back: {text}");
        assert!(!text.contains("\"cvc\"") && !text.contains("\"number\""), "a card field came back: {text}");
    }
    assert_eq!(created.json["card"]["last4"], "4242");
    assert_eq!(created.json["card"]["brand"], "visa");
    assert_eq!(created.json["card"]["fingerprint"], from_json.json["card"]["fingerprint"]);
    assert_eq!(got.json, created.json);

    if let Some(db) = &h.pg {
        // On PostgreSQL: no row of any table holds the number.
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT tablename::TEXT FROM pg_tables WHERE schemaname = 'public'").fetch_all(&mut c).await.unwrap();
        assert!(tables.len() >= 10, "{tables:?}");
        for t in tables {
            let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::TEXT FROM {t} t")).fetch_all(&mut c).await.unwrap();
            for row in rows {
                assert!(!row.contains(PAN) && !row.contains("4242 4242 4242 4242"), "a row of {t} holds the card number: {row}");
                assert!(!row.contains("\\x34323432343234323432343234323432"), "a row of {t} holds the card number as bytes");
            }
        }
        return;
    }
    // Nothing on disk holds the number: the database, its WAL, anything in the data dir.
    let mut scanned = 0;
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        for needle in [PAN.as_bytes(), b"4242 4242 4242 4242"] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds the card number", path.display());
        }
    }
    assert!(scanned >= 2, "expected the database and its WAL, found {scanned} files");
    let names: Vec<String> = std::fs::read_dir(h.dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.ends_with("-wal")), "no WAL file among {names:?}");
}
