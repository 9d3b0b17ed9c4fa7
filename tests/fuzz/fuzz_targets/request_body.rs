#![no_main]
//! A request body of any bytes, under any of the content types the API meets, through parsing, the schema check
//! and the upload probes: never a panic, only `Ok` or a typed error.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sora_shim::fuzzing::request_body(data));
