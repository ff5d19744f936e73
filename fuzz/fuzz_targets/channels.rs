//! Each inbound channel's webhook parser (the first byte picks which).
#![no_main]

use gateways::channels::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let _ = match which % 5 {
        0 => parse::slack(body),
        1 => parse::discord(body),
        2 => parse::telegram(body),
        3 => parse::email(body),
        _ => match serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            Ok(params) => parse::sms(&params),
            Err(_) => return,
        },
    };
});
