//! The fuzz targets' bodies (fuzz/fuzz_targets/) on random inputs in CI: the form and JSON body
//! decoders answer anything with a value or a 4xx, and Stripe-Signature verification answers
//! any header and accepts exactly what was signed. The corpus-guided runs are in
//! RELIABILITY.md; a crash they find is added here as a regression case.

use paywarden_api::fuzzing;
use proptest::prelude::*;

/// Inputs a fuzzer once found or that sit on an edge, kept as regression cases.
const REGRESSIONS: &[&[u8]] = &[
    b"",
    b"=",
    b"&&&",
    b"a[]=1&a[]=2&a[0]=3",
    b"metadata[%ff]=1",
    b"metadata[[[[[[[[[[[x]]]]]]]]]]]=1",
    b"%",
    b"%zz=1",
    b"card[number]=4242424242424242&card[number]=1",
    b"amount=99999999999999999999999999",
    b"\x00\x00\x00",
    b"[{\"a\":",
    b"{\"metadata\":{\"a\":{\"b\":{\"c\":1}}}}",
    b"{\"amount\":1e400}",
    b"t=1,v1=,t=2",
    b"t=-9223372036854775808,v1=00\x00s\x00b",
];

#[test]
fn regression_inputs_are_answered() {
    for r in REGRESSIONS {
        fuzzing::form_body(r);
        fuzzing::json_body(r);
        fuzzing::stripe_signature(r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn form_bodies_of_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::form_body(&data);
    }

    #[test]
    fn form_bodies_of_bracket_notation(text in r"([a-z_\[\]%0-9]{0,12}=[a-z0-9%+\[\]]{0,12}&?){0,12}") {
        fuzzing::form_body(text.as_bytes());
    }

    #[test]
    fn json_bodies_of_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::json_body(&data);
    }

    #[test]
    fn json_bodies_of_json_shapes(text in r#"\{("[a-z\[\]]{0,6}":(-?[0-9]{0,20}(\.[0-9]{0,3})?|"[a-z0-9]{0,8}"|true|null|\{\}|\[\]),?){0,8}\}"#) {
        fuzzing::json_body(text.as_bytes());
    }

    #[test]
    fn stripe_signatures(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::stripe_signature(&data);
    }
}
