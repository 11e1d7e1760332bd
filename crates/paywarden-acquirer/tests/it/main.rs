//! The sandbox acquirer against Stripe's test cards, and the card types' validation rules.

use std::time::Duration;

use paywarden_acquirer::{
    AuthorizeRequest, CardError, CardInput, Connector, ConnectorError, Cvc, Pan, SandboxAcquirer, SandboxConfig,
    Tokenized,
};
use paywarden_core::{AuthOutcome, Currency, Timestamp};

#[path = "../../../paywarden-core/tests/it/valgrind.rs"]
mod valgrind;

#[test]
fn memcheck_under_valgrind_finds_no_leak_or_memory_error() {
    valgrind::rerun_under_valgrind(&[]);
}

/// 2026-03-15T12:00:00Z.
const NOW: Timestamp = 1_773_576_000;

fn sandbox_with(key: [u8; 32], latency: Duration) -> SandboxAcquirer {
    SandboxAcquirer::new(SandboxConfig { latency, fingerprint_key: key })
}

fn sandbox() -> SandboxAcquirer {
    sandbox_with([1; 32], Duration::ZERO)
}

fn card(number: &str) -> CardInput {
    CardInput::parse(number, "12", "2030", Some("123")).unwrap()
}

async fn tokenize(s: &SandboxAcquirer, number: &str) -> Tokenized {
    s.tokenize(card(number), NOW).await.unwrap()
}

async fn authorize(s: &SandboxAcquirer, token: &str) -> Result<AuthOutcome, ConnectorError> {
    s.authorize(AuthorizeRequest { token, amount: 2000, currency: Currency::USD, reference: "ch_test" }).await
}

fn assert_approved(outcome: &AuthOutcome) -> &str {
    match outcome {
        AuthOutcome::Approved { authorization } => {
            assert!(authorization.starts_with("sbxauth_"), "{authorization}");
            authorization
        }
        other => panic!("expected approval, got {other:?}"),
    }
}

fn assert_declined(outcome: &AuthOutcome, code: &str, decline_code: &str, message: &str) {
    match outcome {
        AuthOutcome::Declined(d) => {
            assert_eq!(d.code, code);
            assert_eq!(d.decline_code.as_deref(), Some(decline_code));
            assert_eq!(d.message, message);
        }
        other => panic!("expected decline {decline_code}, got {other:?}"),
    }
}

/// (number, expected brand, expected decline: (code, decline_code, message) or None).
type Case = (&'static str, &'static str, Option<(&'static str, &'static str, &'static str)>);

const CASES: &[Case] = &[
    ("4242424242424242", "visa", None),
    ("5555555555554444", "mastercard", None),
    ("378282246310005", "amex", None),
    ("6011111111111117", "discover", None),
    ("4000000000000002", "visa", Some(("card_declined", "generic_decline", "Your card was declined."))),
    ("4000000000009995", "visa", Some(("card_declined", "insufficient_funds", "Your card has insufficient funds."))),
    ("4000000000000069", "visa", Some(("expired_card", "expired_card", "Your card has expired."))),
    ("4000000000000127", "visa", Some(("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."))),
    (
        "4000000000000119",
        "visa",
        Some(("processing_error", "processing_error", "An error occurred while processing your card. Try again in a little bit.")),
    ),
];

#[tokio::test]
async fn every_test_card_tokenizes_then_authorizes_as_stripe_does() {
    let s = sandbox();
    assert_eq!(s.name(), "sandbox");
    for &(number, brand, decline) in CASES {
        let t = tokenize(&s, number).await;
        assert_eq!(t.summary.brand, brand, "{number}");
        assert_eq!(t.summary.last4, number[number.len() - 4..]);
        assert_eq!((t.summary.exp_month, t.summary.exp_year), (12, 2030));
        assert_eq!(t.summary.funding, "credit");
        assert_eq!(t.summary.fingerprint.len(), 16);
        assert!(t.summary.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(t.token.starts_with("sbxtok_"), "{}", t.token);
        let outcome = authorize(&s, &t.token).await.unwrap();
        match decline {
            None => {
                assert_approved(&outcome);
            }
            Some((code, decline_code, message)) => assert_declined(&outcome, code, decline_code, message),
        }
    }
}

#[tokio::test]
async fn number_formatting_is_ignored() {
    let s = sandbox();
    let spaced = s.tokenize(card("4000 0000 0000 0002"), NOW).await.unwrap();
    let dashed = s.tokenize(card("4000-0000-0000-0002"), NOW).await.unwrap();
    assert_eq!(spaced.summary.fingerprint, dashed.summary.fingerprint);
    assert_declined(&authorize(&s, &dashed.token).await.unwrap(), "card_declined", "generic_decline", "Your card was declined.");
}

#[tokio::test]
async fn each_test_payment_method_id() {
    let s = sandbox();
    let ids: &[(&str, &str, &str, Option<&str>)] = &[
        ("pm_card_visa", "visa", "4242", None),
        ("pm_card_mastercard", "mastercard", "4444", None),
        ("pm_card_amex", "amex", "0005", None),
        ("pm_card_chargeDeclined", "visa", "0002", Some("generic_decline")),
        ("pm_card_chargeDeclinedInsufficientFunds", "visa", "9995", Some("insufficient_funds")),
        ("pm_card_chargeDeclinedExpiredCard", "visa", "0069", Some("expired_card")),
        ("pm_card_chargeDeclinedIncorrectCvc", "visa", "0127", Some("incorrect_cvc")),
        ("pm_card_chargeDeclinedProcessingError", "visa", "0119", Some("processing_error")),
    ];
    for &(id, brand, last4, decline_code) in ids {
        let t = s.test_payment_method(id, NOW).await.unwrap_or_else(|| panic!("{id}"));
        assert_eq!((t.summary.brand.as_str(), t.summary.last4.as_str()), (brand, last4), "{id}");
        assert_eq!((t.summary.exp_month, t.summary.exp_year), (12, 2027), "{id}");
        match (authorize(&s, &t.token).await.unwrap(), decline_code) {
            (AuthOutcome::Approved { .. }, None) => {}
            (AuthOutcome::Declined(d), Some(code)) => assert_eq!(d.decline_code.as_deref(), Some(code), "{id}"),
            (other, _) => panic!("{id}: unexpected {other:?}"),
        }
    }
    // Same card, same fingerprint as when typed in.
    let typed = tokenize(&s, "4242424242424242").await;
    let pm = s.test_payment_method("pm_card_visa", NOW).await.unwrap();
    assert_eq!(pm.summary.fingerprint, typed.summary.fingerprint);

    for unknown in ["pm_card_unknown", "pm_card_Visa", "", "pm_1234", "4242424242424242"] {
        assert!(s.test_payment_method(unknown, NOW).await.is_none(), "{unknown}");
    }
}

#[test]
fn luhn_failures_are_incorrect_number() {
    for bad in ["4242424242424241", "5555555555554445", "378282246310006", "4000000000000003"] {
        assert_eq!(Pan::parse(bad).unwrap_err(), CardError::IncorrectNumber, "{bad}");
    }
    for bad in ["", "    ", "4242x42424242424", "4242.4242.4242.4242", "４２４２424242424242", "+4242424242424242"] {
        assert_eq!(Pan::parse(bad).unwrap_err(), CardError::IncorrectNumber, "{bad:?}");
    }
}

/// A Luhn-valid number of `len` digits: `len - 1` digits then the check digit.
fn luhn_number(len: usize) -> String {
    let body: Vec<u32> = (0..len - 1).map(|i| (i as u32 * 7 + 4) % 10).collect();
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 0 { let dd = d * 2; if dd > 9 { dd - 9 } else { dd } } else { d })
        .sum();
    let check = (10 - sum % 10) % 10;
    body.iter().chain(std::iter::once(&check)).map(|d| char::from_digit(*d, 10).unwrap()).collect()
}

#[test]
fn length_edges() {
    for len in [11, 12, 13, 18, 19, 20] {
        let n = luhn_number(len);
        assert_eq!(n.len(), len);
        let ok = (12..=19).contains(&len);
        assert_eq!(Pan::parse(&n).is_ok(), ok, "{len} digits: {n}");
        if !ok {
            assert_eq!(Pan::parse(&n).unwrap_err(), CardError::IncorrectNumber);
        }
    }
    // Separators do not count towards the length.
    let twelve = luhn_number(12);
    assert!(Pan::parse(&format!("{} {}", &twelve[..6], &twelve[6..])).is_ok());
}

#[tokio::test]
async fn expiry_edges() {
    let s = sandbox();
    let tok = |m: &str, y: &str| CardInput::parse("4242424242424242", m, y, None);
    // This month (March 2026) is still valid, in either year form and with a leading zero.
    for (m, y) in [("3", "2026"), ("03", "26"), ("12", "2026"), ("1", "2027")] {
        let c = tok(m, y).unwrap();
        assert!(s.tokenize(c, NOW).await.is_ok(), "{m}/{y}");
    }
    // Last month and last year are refused at tokenization.
    assert_eq!(s.tokenize(tok("2", "2026").unwrap(), NOW).await.unwrap_err(), CardError::InvalidExpiryMonth);
    assert_eq!(s.tokenize(tok("12", "2025").unwrap(), NOW).await.unwrap_err(), CardError::InvalidExpiryYear);
    assert_eq!(s.tokenize(tok("12", "25").unwrap(), NOW).await.unwrap_err(), CardError::InvalidExpiryYear);
    // The boundary is the first second of the month, UTC.
    let jan_2026 = CardInput::parse("4242424242424242", "12", "2025", None).unwrap();
    assert!(s.tokenize(jan_2026, 1_767_225_599).await.is_ok());
    let jan_2026 = CardInput::parse("4242424242424242", "12", "2025", None).unwrap();
    assert_eq!(s.tokenize(jan_2026, 1_767_225_600).await.unwrap_err(), CardError::InvalidExpiryYear);

    // Format: month 1..=12, year two or four digits.
    for m in ["0", "00", "13", "99", "", "1a", "-1", "012", "+3"] {
        assert_eq!(tok(m, "2030").unwrap_err(), CardError::InvalidExpiryMonth, "{m:?}");
    }
    for y in ["", "2", "203", "20301", "2o30", "-30"] {
        assert_eq!(tok("12", y).unwrap_err(), CardError::InvalidExpiryYear, "{y:?}");
    }
    assert_eq!(tok("12", "30").unwrap().exp_year, 2030);

    // A hand-built input with an impossible month is refused at tokenization.
    let bad = CardInput { number: Pan::parse("4242424242424242").unwrap(), exp_month: 13, exp_year: 2030, cvc: None };
    assert_eq!(s.tokenize(bad, NOW).await.unwrap_err(), CardError::InvalidExpiryMonth);
}

#[test]
fn fields_are_checked_in_order() {
    assert_eq!(CardInput::parse("1", "0", "1", Some("x")).unwrap_err(), CardError::IncorrectNumber);
    assert_eq!(CardInput::parse("4242424242424242", "0", "1", Some("x")).unwrap_err(), CardError::InvalidExpiryMonth);
    assert_eq!(CardInput::parse("4242424242424242", "1", "1", Some("x")).unwrap_err(), CardError::InvalidExpiryYear);
    assert_eq!(CardInput::parse("4242424242424242", "1", "30", Some("x")).unwrap_err(), CardError::InvalidCvc);
}

#[test]
fn cvc_edges() {
    for ok in ["123", "000", "1234"] {
        assert_eq!(Cvc::parse(ok).unwrap().len(), ok.len());
    }
    for bad in ["", "1", "12", "12345", "12a", "1 3", " 123", "١٢٣"] {
        assert_eq!(Cvc::parse(bad).unwrap_err(), CardError::InvalidCvc, "{bad:?}");
    }
    assert!(CardInput::parse("4242424242424242", "1", "30", None).unwrap().cvc.is_none());
    assert!(CardInput::parse("378282246310005", "1", "30", Some("1234")).unwrap().cvc.is_some());
}

#[test]
fn card_errors_speak_stripe() {
    let all = [
        (CardError::IncorrectNumber, "incorrect_number", "card[number]", "Your card number is incorrect."),
        (CardError::InvalidExpiryMonth, "invalid_expiry_month", "card[exp_month]", "Your card's expiration month is invalid."),
        (CardError::InvalidExpiryYear, "invalid_expiry_year", "card[exp_year]", "Your card's expiration year is invalid."),
        (CardError::InvalidCvc, "invalid_cvc", "card[cvc]", "Your card's security code is invalid."),
    ];
    for (e, code, param, message) in all {
        assert_eq!((e.code(), e.param(), e.to_string().as_str()), (code, param, message));
    }
}

#[test]
fn debug_never_shows_the_number_or_cvc() {
    let pan = Pan::parse("4242 4242 4242 4242").unwrap();
    assert_eq!(format!("{pan:?}"), "Pan(****4242)");
    assert_eq!(format!("{pan:#?}"), "Pan(****4242)");
    assert_eq!(pan.last4(), "4242");
    let cvc = Cvc::parse("987").unwrap();
    assert_eq!(format!("{cvc:?}"), "Cvc(***)");
    let input = CardInput::parse("5555555555554444", "12", "2030", Some("987")).unwrap();
    for rendered in [format!("{input:?}"), format!("{input:#?}")] {
        assert!(!rendered.contains("5555555555554444"), "{rendered}");
        assert!(!rendered.contains("555555"), "{rendered}");
        assert!(!rendered.contains("987"), "{rendered}");
        assert!(rendered.contains("****4444"), "{rendered}");
    }
}

#[tokio::test]
async fn fingerprint_is_stable_per_key_and_differs_across_keys() {
    let a = sandbox_with([1; 32], Duration::ZERO);
    let a_again = sandbox_with([1; 32], Duration::ZERO);
    let b = sandbox_with([2; 32], Duration::ZERO);
    let fa1 = tokenize(&a, "4242424242424242").await.summary.fingerprint;
    let fa2 = tokenize(&a, "4242424242424242").await.summary.fingerprint;
    let fa3 = tokenize(&a_again, "4242424242424242").await.summary.fingerprint;
    let fb = tokenize(&b, "4242424242424242").await.summary.fingerprint;
    let other = tokenize(&a, "5555555555554444").await.summary.fingerprint;
    assert_eq!(fa1, fa2);
    assert_eq!(fa1, fa3);
    assert_ne!(fa1, fb);
    assert_ne!(fa1, other);
    // The expiry is not part of the card's identity.
    let later = a.tokenize(CardInput::parse("4242424242424242", "1", "2031", None).unwrap(), NOW).await.unwrap();
    assert_eq!(later.summary.fingerprint, fa1);
}

#[tokio::test]
async fn token_does_not_carry_the_number() {
    let s = sandbox();
    for &(number, _, _) in CASES {
        let t1 = tokenize(&s, number).await;
        let t2 = tokenize(&s, number).await;
        for t in [&t1, &t2] {
            assert!(!t.token.contains(number), "{}", t.token);
            assert!(!t.token.contains(&number[..6]), "{} holds the BIN", t.token);
            assert!(!t.token.contains(&t.summary.fingerprint), "{}", t.token);
        }
        // Random: two tokenizations of one card give different tokens.
        assert_ne!(t1.token, t2.token);
        assert!(!format!("{t1:?}").contains(number));
    }
}

#[tokio::test]
async fn unknown_or_garbled_tokens_are_refused() {
    let s = sandbox();
    let good = tokenize(&s, "4242424242424242").await.token;
    let truncated = &good[..good.len() - 1];
    let retagged = good.replacen("approve", "approved", 1);
    for bad in ["", "tok_visa", "sbxtok_", "4242424242424242", "pm_card_visa", truncated, retagged.as_str()] {
        assert!(matches!(authorize(&s, bad).await, Err(ConnectorError::Refused(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn capture_void_refund_accept_only_sandbox_authorizations() {
    let s = sandbox();
    let t = tokenize(&s, "4242424242424242").await;
    let outcome = authorize(&s, &t.token).await.unwrap();
    let auth = assert_approved(&outcome);
    s.capture(auth, 2000, Currency::USD).await.unwrap();
    s.refund(auth, 500, Currency::USD).await.unwrap();
    s.void(auth).await.unwrap();
    for bad in ["", "sbxauth_", "auth_1", &t.token] {
        assert!(matches!(s.capture(bad, 1, Currency::USD).await, Err(ConnectorError::Refused(_))), "{bad:?}");
        assert!(matches!(s.refund(bad, 1, Currency::USD).await, Err(ConnectorError::Refused(_))), "{bad:?}");
        assert!(matches!(s.void(bad).await, Err(ConnectorError::Refused(_))), "{bad:?}");
    }
    // Each approval is a new authorization.
    let again = authorize(&s, &t.token).await.unwrap();
    assert_ne!(assert_approved(&again), auth);
}

#[tokio::test(start_paused = true)]
async fn latency_is_applied_to_acquirer_calls() {
    let latency = Duration::from_millis(750);
    let s = sandbox_with([1; 32], latency);
    let start = tokio::time::Instant::now();
    let t = tokenize(&s, "4242424242424242").await;
    assert_eq!(start.elapsed(), Duration::ZERO, "tokenization is local");

    let start = tokio::time::Instant::now();
    let outcome = authorize(&s, &t.token).await.unwrap();
    assert!(start.elapsed() >= latency, "authorize took {:?}", start.elapsed());
    let auth = assert_approved(&outcome).to_string();

    let start = tokio::time::Instant::now();
    s.capture(&auth, 2000, Currency::USD).await.unwrap();
    s.refund(&auth, 2000, Currency::USD).await.unwrap();
    s.void(&auth).await.unwrap();
    assert!(start.elapsed() >= latency * 3, "took {:?}", start.elapsed());

    // Refusals and declines wait too: they are answers from the acquirer.
    let start = tokio::time::Instant::now();
    assert!(authorize(&s, "garbage").await.is_err());
    assert!(start.elapsed() >= latency);

    // No latency, no sleep: time does not move.
    let fast = sandbox();
    let start = tokio::time::Instant::now();
    authorize(&fast, &t.token).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn connector_is_usable_as_a_trait_object() {
    let c: std::sync::Arc<dyn Connector> = std::sync::Arc::new(sandbox());
    let t = c.test_payment_method("pm_card_visa", NOW).await.unwrap();
    assert_approved(&authorize_dyn(&*c, &t.token).await);
}

async fn authorize_dyn(c: &dyn Connector, token: &str) -> AuthOutcome {
    c.authorize(AuthorizeRequest { token, amount: 100, currency: Currency::EUR, reference: "ch_x" }).await.unwrap()
}
