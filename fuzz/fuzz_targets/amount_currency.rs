#![no_main]
//! See paywarden_core::fuzzing::amount_and_currency.
libfuzzer_sys::fuzz_target!(|data: &[u8]| paywarden_core::fuzzing::amount_and_currency(data));
