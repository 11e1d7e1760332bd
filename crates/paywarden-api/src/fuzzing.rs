//! Bodies of the fuzz targets (`fuzz/fuzz_targets/`), shared with the property tests that run
//! them in CI: each takes arbitrary bytes and panics only when an invariant breaks.

use crate::params::Params;
use crate::webhooks::{signature_header, verify_signature};

/// The form-body decoder (bracket notation, percent-encoding): any bytes are answered, and a
/// refusal is a 4xx that names the problem, never a 5xx.
pub fn form_body(data: &[u8]) {
    if let Err(e) = Params::from_form(data) {
        assert!(e.status.is_client_error(), "a form body refused with {}: {}", e.status, e.message);
        assert!(!e.message.is_empty());
    }
}

/// The JSON body decoder, the same way.
pub fn json_body(data: &[u8]) {
    if let Err(e) = Params::from_json(data) {
        assert!(e.status.is_client_error(), "a JSON body refused with {}: {}", e.status, e.message);
        assert!(!e.message.is_empty());
    }
}

/// `Stripe-Signature` verification: any header is answered; and what [`signature_header`]
/// signs verifies, for any secret, body and timestamp, and fails for another body.
pub fn stripe_signature(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let (header, secret, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or("whsec_x"), parts.next().unwrap_or(""));
    let now = i64::from(u32::from_le_bytes([data.first().copied().unwrap_or(0), data.get(1).copied().unwrap_or(0), 0, 0])) + 1_600_000_000;
    let _ = verify_signature(header, secret, body.as_bytes(), now, 300);
    let signed = signature_header(secret, now, body.as_bytes());
    assert_eq!(verify_signature(&signed, secret, body.as_bytes(), now, 300), Ok(()), "{signed}");
    let mut other = body.as_bytes().to_vec();
    other.push(b'!');
    assert!(verify_signature(&signed, secret, &other, now, 300).is_err(), "a changed body must not verify");
}
