//! Message decode (plain and with a fixed key) never panics and accepted input re-encodes to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| beets_core::fuzzing::message(data));
