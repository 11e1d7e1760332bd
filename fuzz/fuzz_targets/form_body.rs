#![no_main]
//! See paywarden_api::fuzzing::form_body.
libfuzzer_sys::fuzz_target!(|data: &[u8]| paywarden_api::fuzzing::form_body(data));
