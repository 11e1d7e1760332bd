#![no_main]
//! See paywarden_api::fuzzing::stripe_signature.
libfuzzer_sys::fuzz_target!(|data: &[u8]| paywarden_api::fuzzing::stripe_signature(data));
