//! Bodies of the fuzz targets (`fuzz/fuzz_targets/`), shared with the property tests that
//! run them in CI: each takes arbitrary bytes and panics only when an invariant breaks.

use crate::money::{Amount, Currency};

/// Amount and currency parsing: anything is answered (no panic); an accepted amount is whole,
/// positive, at most [`Amount::MAX`] and parses back to itself; an accepted currency is one of
/// the table's, with its exponent, and parses back from its code.
pub fn amount_and_currency(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (amount_text, currency_text) = text.split_once('\u{0}').unwrap_or((&text, &text));
    if let Ok(a) = Amount::parse(amount_text) {
        let minor = a.get();
        assert!((1..=Amount::MAX).contains(&minor), "{amount_text:?} accepted as {minor}");
        assert_eq!(Amount::parse(&minor.to_string()), Ok(a), "{minor} must parse back");
        let sum = a.checked_add(a);
        assert_eq!(sum.is_ok(), minor * 2 <= Amount::MAX, "checked_add of {minor} twice");
    }
    if let Ok(c) = Currency::parse(currency_text) {
        assert!(Currency::all().any(|x| x == c));
        assert_eq!(c.code().len(), 3);
        assert!(c.exponent() <= 3);
        assert_eq!(Currency::parse(c.code()), Ok(c));
        assert_eq!(Currency::parse(&c.code().to_ascii_uppercase()), Ok(c));
        let shown = c.display(i128::from(data.len() as u32) * 1001);
        assert!(!shown.is_empty());
    }
}
