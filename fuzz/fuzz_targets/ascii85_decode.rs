//! Ascii85 decode never panics and only canonical text is accepted (decode → encode gives the same text).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| beets_core::fuzzing::ascii85(data));
