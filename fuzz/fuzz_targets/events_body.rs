//! The `/v1/events` body parser, JSON and CBOR (the first byte picks which).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = match which % 3 {
        0 => "application/json",
        1 => "application/cbor",
        _ => "application/json; charset=utf-8",
    };
    let defaults = gateways::Defaults {
        id: "fuzz".into(),
        time: 1,
    };
    let _ = gateways::parse_events_body(content_type, body, defaults);
});
