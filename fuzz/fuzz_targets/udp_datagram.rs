//! UDP datagram decode never panics and accepted datagrams re-encode to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| beets_core::fuzzing::udp_datagram(data));
