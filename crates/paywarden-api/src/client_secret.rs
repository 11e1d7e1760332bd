//! PaymentIntents' client secrets: `{id}_secret_` and [`TAIL_CHARS`] alphanumerics, an HMAC of
//! the id under the data dir's secret key, so nothing is stored and every instance with a copy
//! of the key derives the same one. A response stored for idempotent replay keeps each secret's
//! place with its tail masked ([`strip`]); the replay derives it again ([`restore`]), byte for
//! byte the first response.

use hmac::{Hmac, Mac};

/// Alphanumerics after `_secret_` in a client secret.
pub const TAIL_CHARS: usize = 24;
/// What separates an intent's id from its client secret's tail.
const SECRET_MARK: &[u8] = b"_secret_";

/// The client secret of intent `id` under `key`.
pub(crate) fn derive(key: &[u8; 32], id: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"paywarden client_secret v1\0");
    mac.update(id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let tail: String = digest.iter().take(TAIL_CHARS).map(|b| DIGITS[(*b % 62) as usize] as char).collect();
    format!("{id}_secret_{tail}")
}

/// Whether `given` is intent `id`'s client secret, compared in constant time.
pub(crate) fn matches(key: &[u8; 32], id: &str, given: &str) -> bool {
    let want = derive(key, id);
    given.len() == want.len() && bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), want.as_bytes()))
}

/// A response as stored for idempotent replay: every client secret's tail masked (a secret is
/// never stored; [`restore`] derives it again). Byte for byte otherwise, so a
/// replay is the first response exactly.
pub(crate) fn strip(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    for tail in secret_tails(body) {
        out[tail].fill(MASK);
    }
    out
}

/// A replayed response: each masked client secret derived again under `key`.
pub(crate) fn restore(key: &[u8; 32], mut body: Vec<u8>) -> Vec<u8> {
    for tail in secret_tails(&body) {
        if body[tail.clone()].iter().all(|b| *b == MASK) {
            let id_start = tail.start - SECRET_MARK.len();
            let id = (find(&body[..id_start], VALUE_MARK).map(|at| at + VALUE_MARK.len())).and_then(|from| std::str::from_utf8(&body[from..id_start]).ok()).map(str::to_string);
            if let Some(id) = id {
                let secret = derive(key, &id);
                body[tail.clone()].copy_from_slice(&secret.as_bytes()[secret.len() - TAIL_CHARS..]);
            }
        }
    }
    body
}

/// What a stored client secret's tail is made of.
const MASK: u8 = b'*';
/// Where a client secret's value begins in a serialized object.
const VALUE_MARK: &[u8] = b"\"client_secret\":\"";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The byte ranges of the client secrets' tails in a serialized body.
fn secret_tails(body: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = body[from..].windows(VALUE_MARK.len()).position(|w| w == VALUE_MARK) {
        let value = from + at + VALUE_MARK.len();
        let Some(end) = body[value..].iter().position(|b| *b == b'"').map(|e| value + e) else { break };
        if let Some(mark) = body[value..end].windows(SECRET_MARK.len()).position(|w| w == SECRET_MARK) {
            let tail = value + mark + SECRET_MARK.len();
            if end - tail == TAIL_CHARS {
                out.push(tail..end);
            }
        }
        from = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_body_keeps_no_secret_and_a_restored_one_is_the_original() {
        let key = [7u8; 32];
        let secret = derive(&key, "pi_1");
        assert!(secret.starts_with("pi_1_secret_") && secret.len() == "pi_1_secret_".len() + TAIL_CHARS);
        assert_ne!(derive(&[8u8; 32], "pi_1"), secret, "another key, another secret");
        assert!(matches(&key, "pi_1", &secret) && !matches(&key, "pi_2", &secret) && !matches(&key, "pi_1", "pi_1_secret_"));
        let body = format!(r#"{{"id":"pi_1","client_secret":"{secret}","error":{{"payment_intent":{{"id":"pi_1","client_secret":"{secret}"}}}}}}"#);
        let stored = strip(body.as_bytes());
        assert!(!String::from_utf8_lossy(&stored).contains(&secret[12..]), "{}", String::from_utf8_lossy(&stored));
        assert_eq!(restore(&key, stored), body.as_bytes());
        // A body with no client secret is left as it is.
        assert_eq!(strip(br#"{"id":"re_1"}"#), br#"{"id":"re_1"}"#);
    }
}
