#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickmesh_fuzz::deflate(data));
