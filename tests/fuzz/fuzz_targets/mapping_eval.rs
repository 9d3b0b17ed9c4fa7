#![no_main]
//! A provider answer of any shape read through every built-in mapping's expressions, and any text compiled as a
//! mapping file or a jq expression: never a panic, only values or errors.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sora_shim::fuzzing::mapping_eval(data));
