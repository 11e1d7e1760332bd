//! Metadata limits at their edges: 50 keys, 40-character keys, 500-character values.

use std::collections::BTreeMap;

use paywarden_core::payment::{IntentUpdate, NewIntent};
use paywarden_core::{Amount, CaptureMethod, Currency, Metadata, MetadataError, PaymentIntent};
use proptest::prelude::*;
use proptest::sample::Index;

use crate::support::{check, check_eq};

const KEYS: usize = Metadata::KEYS_MAX;
const KEY: usize = Metadata::KEY_CHARS_MAX;
const VALUE: usize = Metadata::VALUE_CHARS_MAX;

/// Characters of one to four UTF-8 bytes: limits count characters, not bytes.
fn ch() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        1 => Just('_'),
        1 => Just('é'),
        1 => Just('日'),
        1 => Just('🦀'),
    ]
}

fn text(len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(ch(), len).prop_map(|v| v.into_iter().collect())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![1usize..=8, Just(KEY - 1), Just(KEY)].prop_flat_map(text)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![4 => 1usize..=12, 1 => Just(VALUE - 1), 1 => Just(VALUE)].prop_flat_map(text)
}

/// `n` pairs with distinct keys and non-empty values, in random order.
fn distinct_pairs(n: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map(key(), value(), n).prop_map(|m| m.into_iter().collect::<Vec<_>>()).prop_shuffle()
}

fn as_map(m: &Metadata) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn intent(metadata: Metadata) -> PaymentIntent {
    PaymentIntent::new(NewIntent {
        id: "pi_meta".into(),
        merchant: "acct_a".into(),
        amount: Amount::new(500).unwrap(),
        currency: Currency::USD,
        capture_method: CaptureMethod::Automatic,
        payment_method: None,
        description: None,
        metadata,
        created: 1,
    })
}

/// Applies `pairs` to `base` through both `Metadata::merged` and `PaymentIntent::update`; on
/// refusal, checks that the original is left as it was. Returns the merged result.
fn apply(base: &Metadata, pairs: &[(String, String)]) -> Result<Result<Metadata, MetadataError>, TestCaseError> {
    let snapshot = base.clone();
    let merged = base.merged(pairs.to_vec());
    check_eq(base, &snapshot, || "merged must not touch its receiver".into())?;
    let pi = intent(base.clone());
    let update = IntentUpdate { amount: Some(Amount::new(777).unwrap()), metadata: pairs.to_vec(), ..IntentUpdate::default() };
    match (pi.update(update), &merged) {
        (Ok(next), Ok(m)) => {
            check_eq(&next.metadata, m, || "update applies the same metadata".into())?;
            check_eq(next.amount.get(), 777, || "update applies the other fields".into())?;
        }
        (Err(e), Err(m)) => {
            check_eq(e, paywarden_core::StateError::Metadata(m.clone()), || "update refuses with the metadata error".into())?;
            check_eq(&pi.metadata, &snapshot, || "a refused update leaves the metadata".into())?;
            check_eq((pi.amount.get(), pi.version), (500, 0), || "a refused update leaves the intent".into())?;
        }
        (u, m) => return Err(TestCaseError::fail(format!("update {u:?} disagrees with merged {m:?}"))),
    }
    Ok(merged)
}

#[test]
fn limits_at_their_edges_explicitly() {
    let pairs = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect::<Vec<_>>();
    assert_eq!(Metadata::from_pairs(pairs(KEYS)).unwrap().len(), KEYS);
    assert_eq!(Metadata::from_pairs(pairs(KEYS + 1)), Err(MetadataError::TooManyKeys { count: KEYS + 1 }));
    assert!(Metadata::from_pairs([("🦀".repeat(KEY), "v".to_string())]).is_ok());
    assert!(matches!(Metadata::from_pairs([("🦀".repeat(KEY + 1), "v".into())]), Err(MetadataError::KeyTooLong { len: 41, .. })));
    assert!(Metadata::from_pairs([("k".to_string(), "日".repeat(VALUE))]).is_ok());
    assert!(matches!(Metadata::from_pairs([("k".into(), "日".repeat(VALUE + 1))]), Err(MetadataError::ValueTooLong { len: 501, .. })));
    assert_eq!(Metadata::from_pairs([(String::new(), "v".into())]), Err(MetadataError::EmptyKey));
    for key in ["a[b", "a]b", "[]", "order]"] {
        assert_eq!(Metadata::from_pairs([(key.to_string(), "v".into())]), Err(MetadataError::KeyHasBrackets { key: key.into() }));
        // Not even to remove a key: no such key can exist.
        assert_eq!(Metadata::default().merged([(key.to_string(), String::new())]), Err(MetadataError::KeyHasBrackets { key: key.into() }));
    }
}

proptest! {
    #![proptest_config(crate::support::cases(128))]

    /// Up to 50 distinct keys are accepted, 51 are not.
    #[test]
    fn key_count_limit(pairs in prop_oneof![Just(KEYS), Just(KEYS + 1), 0..=KEYS + 1].prop_flat_map(distinct_pairs)) {
        let n = pairs.len();
        match Metadata::from_pairs(pairs.clone()) {
            Ok(m) => {
                check(n <= KEYS, || format!("{n} keys accepted"))?;
                check_eq(as_map(&m), pairs.into_iter().collect::<BTreeMap<_, _>>(), || "stored pairs".into())?;
            }
            Err(e) => {
                check(n > KEYS, || format!("{n} keys refused: {e}"))?;
                check_eq(e, MetadataError::TooManyKeys { count: n }, || "error".into())?;
            }
        }
    }

    /// A key of 40 characters and a value of 500 are accepted, one more is refused, whatever the
    /// other pairs and wherever the edge pair sits.
    #[test]
    fn key_and_value_length_limits(
        others in prop::collection::btree_map("[a-z]{1,6}", value(), 0..5),
        key_len in prop_oneof![Just(KEY), Just(KEY + 1), 1usize..=KEY + 1],
        value_len in prop_oneof![Just(VALUE), Just(VALUE + 1), 0usize..=VALUE + 1],
        at in any::<Index>(),
        seed in (text(KEY + 1), text(VALUE + 1)),
    ) {
        let k: String = seed.0.chars().take(key_len).collect();
        let v: String = seed.1.chars().take(value_len).collect();
        let mut pairs: Vec<(String, String)> = others.into_iter().collect();
        // Other keys are at most 6 ASCII letters; the edge key is long or non-ASCII, or equal
        // to one of them (then it simply replaces it).
        pairs.insert(at.index(pairs.len() + 1), (k.clone(), v.clone()));
        let got = apply(&Metadata::default(), &pairs)?;
        match (key_len > KEY, value_len > VALUE) {
            (true, _) => check(matches!(&got, Err(MetadataError::KeyTooLong { len, .. }) if *len == key_len), || format!("{got:?}"))?,
            (false, true) => check(matches!(&got, Err(MetadataError::ValueTooLong { len, .. }) if *len == value_len), || format!("{got:?}"))?,
            (false, false) => {
                let m = got.map_err(|e| TestCaseError::fail(format!("refused at the limit: {e}")))?;
                let mut want = BTreeMap::new();
                for (k, v) in &pairs {
                    if v.is_empty() { want.remove(k); } else { want.insert(k.clone(), v.clone()); }
                }
                check_eq(as_map(&m), want, || "merged pairs".into())?;
            }
        }
    }

    /// An update that removes `r` existing keys and adds new ones, in either order, is accepted
    /// exactly when at most 50 keys remain, and a refused one leaves the original unchanged.
    #[test]
    fn update_key_count_at_the_edge(
        base_n in 0..=KEYS,
        removed in 0usize..=5,
        target in prop_oneof![Just(KEYS), Just(KEYS + 1), 0..=KEYS + 2],
        values in prop::collection::vec(value(), KEYS + 2),
    ) {
        let base = Metadata::from_pairs((0..base_n).map(|i| (format!("b{i}"), values[i].clone()))).unwrap();
        let removed = removed.min(base_n);
        let added = target.saturating_sub(base_n - removed);
        let mut pairs: Vec<(String, String)> = (0..removed).map(|i| (format!("b{i}"), String::new())).collect();
        pairs.extend((0..added).map(|j| (format!("n{j}"), values[j].clone())));
        if values[0].len() % 2 == 1 {
            // Additions first: the limit is on the result, not on the way there.
            pairs.reverse();
        }
        let fin = base_n - removed + added;
        let got = apply(&base, &pairs)?;
        if fin <= KEYS {
            let m = got.map_err(|e| TestCaseError::fail(format!("{fin} keys refused: {e}")))?;
            check_eq(m.len(), fin, || "key count".into())?;
            check(m.get("b0").is_none() || removed == 0, || "removed key still there".into())?;
        } else {
            check_eq(got, Err(MetadataError::TooManyKeys { count: fin }), || format!("{fin} keys"))?;
        }
    }

    /// One bad pair anywhere in an update refuses the whole update.
    #[test]
    fn one_bad_pair_refuses_everything(
        base in prop::collection::btree_map("[a-z]{1,6}", "[a-z]{1,6}", 0..10),
        good in prop::collection::vec(("[a-z]{1,6}", prop_oneof![Just(String::new()), "[a-z]{1,6}".boxed()]), 0..6),
        bad in prop_oneof![
            Just(("x".repeat(KEY + 1), "v".to_string())),
            Just(("x".to_string(), "v".repeat(VALUE + 1))),
            Just((String::new(), "v".to_string())),
            Just(("x".repeat(KEY + 1), String::new())),
        ],
        at in any::<Index>(),
    ) {
        let base = Metadata::from_pairs(base).unwrap();
        let mut pairs = good;
        pairs.insert(at.index(pairs.len() + 1), bad);
        let got = apply(&base, &pairs)?;
        check(got.is_err(), || format!("{pairs:?} accepted"))?;
    }
}
