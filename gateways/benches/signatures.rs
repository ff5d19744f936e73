//! What checking a webhook's signature costs per request, by scheme, for a 1 KiB body; beside
//! it, reading the same body as JSON (the work every webhook does anyway).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use gateways::channels::verify::{self, relay_signature, slack_signature, twilio_signature};

fn body() -> Vec<u8> {
    let text = "x".repeat(900);
    serde_json::to_vec(&serde_json::json!({
        "type": "event_callback", "event_id": "Ev1",
        "event": {"type": "message", "channel": "C1", "user": "U1", "text": text}
    }))
    .expect("a JSON value serializes")
}

fn signatures(c: &mut Criterion) {
    let body = body();
    let mut group = c.benchmark_group("webhook signature");
    group.throughput(Throughput::Elements(1));

    let signature = slack_signature("secret", "1700000000", &body);
    group.bench_function("slack hmac-sha256", |b| {
        b.iter(|| verify::slack("secret", "1700000000", &body, &signature, 1_700_000_000))
    });

    let params: Vec<(String, String)> = (0..12)
        .map(|i| (format!("Param{i}"), "v".repeat(64)))
        .collect();
    let url = "https://example.org/v1/channels/sms";
    let signature = twilio_signature("token", url, &params);
    group.bench_function("twilio hmac-sha1", |b| {
        b.iter(|| verify::twilio("token", url, &params, &signature))
    });

    let key = SigningKey::from_bytes(&[3; 32]);
    let public =
        verify::discord_key(&hex::encode(key.verifying_key().as_bytes())).expect("a valid key");
    let mut signed = b"1700000000".to_vec();
    signed.extend_from_slice(&body);
    let signature = hex::encode(key.sign(&signed).to_bytes());
    group.bench_function("discord ed25519", |b| {
        b.iter(|| verify::discord(&public, "1700000000", &body, &signature))
    });

    group.bench_function("telegram secret token", |b| {
        b.iter(|| verify::telegram("a-secret-token", "a-secret-token"))
    });

    let signature = relay_signature("secret", &body);
    group.bench_function("email relay hmac-sha256", |b| {
        b.iter(|| verify::hmac_relay("secret", &body, &signature))
    });

    group.bench_function("reading the body as JSON", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(&body))
    });
    group.finish();
}

criterion_group!(benches, signatures);
criterion_main!(benches);
