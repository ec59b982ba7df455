#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickmesh_fuzz::client_message(
    tickmesh_core::Format::Json,
    data
));
