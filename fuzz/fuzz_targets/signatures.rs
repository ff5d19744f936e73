//! Each webhook signature check, with the signature, timestamp and body from the input
//! (split at the first two NUL bytes): a refusal or an acceptance, never a panic; a forged
//! signature is never accepted.
#![no_main]

use gateways::channels::verify;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let signature = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let timestamp = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let now = timestamp.trim().parse::<u64>().unwrap_or(0);
    if verify::slack(SECRET, &timestamp, body, &signature, now).is_ok() {
        let expected = verify::slack_signature(SECRET, timestamp.trim(), body);
        assert_eq!(signature.trim().to_ascii_lowercase(), expected);
    }
    let params = vec![(
        "Body".to_owned(),
        String::from_utf8_lossy(body).into_owned(),
    )];
    let url = "https://example.org/v1/channels/sms";
    if verify::twilio(SECRET, url, &params, &signature).is_ok() {
        assert_eq!(
            signature.trim(),
            verify::twilio_signature(SECRET, url, &params)
        );
    }
    if let Ok(key) = verify::discord_key(&timestamp) {
        let _ = verify::discord(&key, &timestamp, body, &signature);
    }
    if verify::telegram(SECRET, &signature).is_ok() {
        assert_eq!(signature, SECRET);
    }
    let _ = verify::hmac_relay(SECRET, body, &signature);
});
