//! Amounts and currencies.

use paywarden_core::{Amount, AmountError, Currency};
use proptest::prelude::*;

use crate::support::{check, check_eq};

/// What `Amount::parse` should accept: optional surrounding whitespace, an optional `+`, then
/// ASCII digits only, with a value in 1..=MAX.
fn oracle(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u128 = match digits.trim_start_matches('0') {
        "" => 0,
        d if d.len() > 30 => return None,
        d => d.parse().unwrap(),
    };
    (1..=u128::from(Amount::MAX)).contains(&v).then_some(v as u64)
}

fn edge_amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..=Amount::MAX,
        Just(1u64),
        Just(Amount::MAX),
        (Amount::MAX / 2 - 2)..=(Amount::MAX / 2 + 2),
    ]
}

/// A character that is neither a digit, a sign, a decimal point, nor whitespace.
fn junk_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("non-digit", |c| !c.is_ascii_digit() && !c.is_whitespace() && !matches!(c, '+' | '-' | '.'))
}

#[test]
fn amount_edges_explicitly() {
    for v in [1, 9, 10, 99, 100, 1_000, 12_345_678, Amount::MAX - 1, Amount::MAX] {
        assert_eq!(Amount::parse(&v.to_string()).map(Amount::get), Ok(v));
    }
    for s in ["0", "00", "-0", "+0", "-1", "-99999999"] {
        assert_eq!(Amount::parse(s), Err(AmountError::NotPositive), "{s}");
    }
    for s in ["100000000", "18446744073709551615", "18446744073709551616", "99999999999999999999999999"] {
        assert_eq!(Amount::parse(s), Err(AmountError::TooLarge), "{s}");
    }
}

proptest! {
    #![proptest_config(crate::support::cases(2048))]

    #[test]
    fn parse_round_trips_every_valid_amount(v in edge_amount(), zeros in 0usize..3, pad in prop::bool::ANY) {
        let text = format!("{}{v}", "0".repeat(zeros));
        check_eq(Amount::parse(&text).map(Amount::get), Ok(v), || format!("parse({text:?})"))?;
        let padded = if pad { format!(" +{v}\t") } else { v.to_string() };
        check_eq(Amount::parse(&padded).map(Amount::get), Ok(v), || format!("parse({padded:?})"))?;
        check_eq(Amount::new(v).map(Amount::get), Ok(v), || format!("new({v})"))?;
    }

    #[test]
    fn parse_refuses_above_max(v in (Amount::MAX + 1)..=u64::MAX, extra in "[0-9]{0,20}") {
        check_eq(Amount::parse(&v.to_string()), Err(AmountError::TooLarge), || format!("{v}"))?;
        let long = format!("{v}{extra}");
        check_eq(Amount::parse(&long), Err(AmountError::TooLarge), || long.clone())?;
        check_eq(Amount::new(v), Err(AmountError::TooLarge), || format!("new({v})"))?;
    }

    #[test]
    fn parse_refuses_zero_and_negatives(zeros in 1usize..25, v in any::<u64>()) {
        check_eq(Amount::parse(&"0".repeat(zeros)), Err(AmountError::NotPositive), || format!("{zeros} zeros"))?;
        check_eq(Amount::parse(&format!("-{v}")), Err(AmountError::NotPositive), || format!("-{v}"))?;
        check_eq(Amount::new(0), Err(AmountError::NotPositive), || "new(0)".into())?;
    }

    #[test]
    fn parse_refuses_fractions(int in any::<u64>(), frac in "[0-9]{0,6}", neg in prop::bool::ANY) {
        let text = format!("{}{int}.{frac}", if neg { "-" } else { "" });
        check(matches!(Amount::parse(&text), Err(AmountError::Fractional(_))), || format!("{text:?} -> {:?}", Amount::parse(&text)))?;
    }

    #[test]
    fn parse_refuses_non_digits(v in edge_amount(), junk in junk_char(), at in any::<prop::sample::Index>()) {
        let mut chars: Vec<char> = v.to_string().chars().collect();
        chars.insert(at.index(chars.len() + 1), junk);
        let text: String = chars.into_iter().collect();
        check(matches!(Amount::parse(&text), Err(AmountError::NotInteger(_))), || format!("{text:?} -> {:?}", Amount::parse(&text)))?;
    }

    #[test]
    fn parse_matches_oracle_on_arbitrary_text(text in prop_oneof!["[ 0-9+\\-.a]{0,14}", any::<String>()]) {
        let got = Amount::parse(&text).map(Amount::get).ok();
        check_eq(got, oracle(&text), || format!("parse({text:?})"))?;
    }

    #[test]
    fn checked_add_never_wraps(a in edge_amount(), b in edge_amount()) {
        let (x, y) = (Amount::new(a).unwrap(), Amount::new(b).unwrap());
        let sum = a + b; // cannot overflow u64: both are at most MAX
        let want = if sum <= Amount::MAX { Ok(sum) } else { Err(AmountError::Overflow) };
        check_eq(x.checked_add(y).map(Amount::get), want.clone(), || format!("{a} + {b}"))?;
        check_eq(y.checked_add(x).map(Amount::get), want, || format!("{b} + {a}"))?;
    }

    #[test]
    fn amount_new_and_serde_accept_exactly_one_to_max(v in prop_oneof![any::<u64>(), 0u64..=2, (Amount::MAX - 1)..=(Amount::MAX + 1)]) {
        let ok = (1..=Amount::MAX).contains(&v);
        check_eq(Amount::new(v).is_ok(), ok, || format!("new({v})"))?;
        let de: Result<Amount, _> = serde_json::from_str(&v.to_string());
        check_eq(de.ok().map(Amount::get), ok.then_some(v), || format!("deserialize {v}"))?;
    }

    #[test]
    fn currency_parse_is_case_insensitive(i in any::<prop::sample::Index>(), mask in 0u8..8) {
        let all: Vec<Currency> = Currency::all().collect();
        let c = all[i.index(all.len())];
        let mixed: String = c.code().chars().enumerate()
            .map(|(k, ch)| if mask & (1 << k) != 0 { ch.to_ascii_uppercase() } else { ch })
            .collect();
        check_eq(Currency::parse(&mixed), Ok(c), || mixed.clone())?;
    }

    #[test]
    fn currency_parse_refuses_unknown_codes(code in "[a-zA-Z]{0,5}") {
        let known = Currency::all().any(|c| c.code().eq_ignore_ascii_case(&code));
        check_eq(Currency::parse(&code).is_ok(), known, || code.clone())?;
    }
}

#[test]
fn every_currency_parses_in_both_cases_with_its_exponent() {
    let all: Vec<Currency> = Currency::all().collect();
    assert!(all.len() >= 30);
    for c in &all {
        assert_eq!(c.code().len(), 3);
        assert_eq!(Currency::parse(c.code()), Ok(*c));
        assert_eq!(Currency::parse(&c.code().to_ascii_uppercase()), Ok(*c));
        assert!(c.exponent() <= 3, "{c}");
    }
    let exp = |code: &str| Currency::parse(code).unwrap().exponent();
    assert_eq!((exp("jpy"), exp("JPY"), exp("krw"), exp("KRW")), (0, 0, 0, 0));
    assert_eq!((exp("kwd"), exp("KWD"), exp("bhd"), exp("BHD")), (3, 3, 3, 3));
    assert_eq!(exp("usd"), 2);
    assert_eq!((Currency::USD.code(), Currency::JPY.code(), Currency::KWD.code(), Currency::EUR.code()), ("usd", "jpy", "kwd", "eur"));
}

// The amount-and-currency fuzz target's body (fuzz/fuzz_targets/amount_currency.rs) on
// random inputs and on the shapes that matter: numbers around the limits, signs, fractions,
// exponents, whitespace, and codes in any case.
proptest::proptest! {
    #![proptest_config(crate::support::cases(4000))]
    #[test]
    fn fuzz_amount_and_currency_on_random_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
        paywarden_core::fuzzing::amount_and_currency(&data);
    }

    #[test]
    fn fuzz_amount_and_currency_on_number_shapes(text in r"[ +-]?[0-9]{0,12}([.eE][0-9+-]{0,4})?[ ]?\x00[a-zA-Z]{0,4}") {
        paywarden_core::fuzzing::amount_and_currency(text.as_bytes());
    }
}
