//! Each provider's published request-signing scheme, as pure checks over the raw request.
//! Comparisons of secrets and MACs are constant-time (`hmac`'s `verify_slice`, `ed25519`).

use actors::signature;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// Why a request's signature was not accepted; the text is the 401's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    /// A header the scheme needs is missing.
    #[error("missing header `{0}`")]
    Missing(&'static str),
    /// The signature does not match the request.
    #[error("bad signature")]
    Mismatch,
    /// The signature or timestamp is not in the scheme's format.
    #[error("malformed `{0}`")]
    Malformed(&'static str),
    /// The signed timestamp is too far from now.
    #[error("timestamp outside the {0}-second tolerance")]
    Stale(u64),
}

/// Slack's tolerance for a request's timestamp, either way.
pub const SLACK_TOLERANCE_SECS: u64 = 300;

/// Twilio: base64 HMAC-SHA1 with the auth token over the URL Twilio called, then each POST
/// parameter's name and value, sorted by name.
pub fn twilio(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> Result<(), Unsigned> {
    let expected = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|_| Unsigned::Malformed("X-Twilio-Signature"))?;
    twilio_mac(auth_token, url, params)
        .verify_slice(&expected)
        .map_err(|_| Unsigned::Mismatch)
}

fn twilio_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac_sha1(auth_token.as_bytes());
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Slack: `v0=` and the hex HMAC-SHA256 with the signing secret over `v0:<timestamp>:<body>`;
/// the timestamp within five minutes of `now_secs`.
pub fn slack(
    signing_secret: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_secs: u64,
) -> Result<(), Unsigned> {
    let at: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Unsigned::Malformed("X-Slack-Request-Timestamp"))?;
    if at.abs_diff(now_secs) > SLACK_TOLERANCE_SECS {
        return Err(Unsigned::Stale(SLACK_TOLERANCE_SECS));
    }
    let expected = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(Unsigned::Malformed("X-Slack-Signature"))?;
    slack_mac(signing_secret, timestamp.trim(), body)
        .verify_slice(&expected)
        .map_err(|_| Unsigned::Mismatch)
}

fn slack_mac(signing_secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = hmac_sha256(signing_secret.as_bytes());
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    mac
}

/// Discord: a hex Ed25519 signature by the application's public key over timestamp + body.
pub fn discord(
    public_key: &VerifyingKey,
    timestamp: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), Unsigned> {
    let bytes: [u8; 64] = hex::decode(signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(Unsigned::Malformed("X-Signature-Ed25519"))?;
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    public_key
        .verify(&message, &Signature::from_bytes(&bytes))
        .map_err(|_| Unsigned::Mismatch)
}

/// Reads a hex Ed25519 public key, as Discord's developer portal shows it.
pub fn discord_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("public_key must be 64 hex digits (an Ed25519 public key)")?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("public_key: {e}"))
}

/// Telegram: the secret token set with `setWebhook`, echoed in a header.
pub fn telegram(secret_token: &str, header: &str) -> Result<(), Unsigned> {
    // Compared as MACs of both, so the comparison takes the same time wherever they differ.
    let mut mac = hmac_sha256(b"telegram");
    mac.update(header.as_bytes());
    let mut expected = hmac_sha256(b"telegram");
    expected.update(secret_token.as_bytes());
    mac.verify_slice(&expected.finalize().into_bytes())
        .map_err(|_| Unsigned::Mismatch)
}

/// An email relay: `sha256=` and the hex HMAC-SHA256 with the shared secret over the raw body.
pub fn hmac_relay(secret: &str, body: &[u8], signature: &str) -> Result<(), Unsigned> {
    signature::verify(secret, body, signature).map_err(|e| match e {
        signature::BadSignature::Malformed => Unsigned::Malformed(EMAIL_SIGNATURE),
        signature::BadSignature::Mismatch => Unsigned::Mismatch,
    })
}

/// The header an email relay signs its request in.
pub const EMAIL_SIGNATURE: &str = signature::HEADER;

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // HMAC takes a key of any length.
    Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// `sha256=<hex>` of `body` under `secret`: what an email relay sends (and tests sign with).
pub use signature::sign as relay_signature;

/// `v0=<hex>` for a Slack request: what Slack sends (and tests sign with).
pub fn slack_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = slack_mac(secret, timestamp, body).finalize().into_bytes();
    format!("v0={}", hex::encode(mac))
}

/// The base64 `X-Twilio-Signature` of a request: what Twilio sends (and tests sign with).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mac = twilio_mac(auth_token, url, params).finalize().into_bytes();
    base64::engine::general_purpose::STANDARD.encode(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The fuzzer's `signatures` seeds named `*_signed` (signature, timestamp and body split
    /// at NULs, under the secret `fuzz-secret`) pass their checks, so fuzzing starts from the
    /// branch where a signature is accepted.
    #[test]
    fn the_fuzzer_s_signed_seeds_pass_their_checks() {
        let seed = |name: &str| -> (String, String, Vec<u8>) {
            let path = format!(
                "{}/../fuzz/seeds/signatures/{name}_signed",
                env!("CARGO_MANIFEST_DIR")
            );
            let data = std::fs::read(&path).unwrap();
            let mut parts = data.splitn(3, |b| *b == 0);
            let mut text = || String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
            let (signature, timestamp) = (text(), text());
            (signature, timestamp, parts.next().unwrap().to_vec())
        };
        let secret = "fuzz-secret";
        let (signature, timestamp, body) = seed("slack");
        let now = timestamp.parse().unwrap();
        assert!(slack(secret, &timestamp, &body, &signature, now).is_ok());
        let (signature, _, body) = seed("twilio");
        let params = pairs(&[("Body", std::str::from_utf8(&body).unwrap())]);
        let url = "https://example.org/v1/channels/sms";
        assert!(twilio(secret, url, &params, &signature).is_ok());
        let (signature, key, body) = seed("discord");
        let key = discord_key(&key).unwrap();
        assert!(discord(&key, &hex::encode(key.as_bytes()), &body, &signature).is_ok());
        assert!(telegram(secret, &seed("telegram").0).is_ok());
        let (signature, _, body) = seed("relay");
        assert!(hmac_relay(secret, &body, &signature).is_ok());
    }

    /// The worked example of Twilio's "Webhooks security" guide.
    #[test]
    fn twilios_published_example_verifies() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = pairs(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ]);
        let published = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert_eq!(twilio("12345", url, &params, published), Ok(()));
        assert_eq!(twilio_signature("12345", url, &params), published);
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert_eq!(
            twilio("12345", other_url, &params, published),
            Err(Unsigned::Mismatch)
        );
        assert_eq!(
            twilio("12345", url, &params, "not base64!"),
            Err(Unsigned::Malformed("X-Twilio-Signature"))
        );
    }

    /// The worked example of Slack's "Verifying requests from Slack".
    #[test]
    fn slacks_published_example_verifies_within_its_tolerance() {
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow\
&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner\
&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands\
%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN\
&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let published = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let at = 1_531_420_618;
        assert_eq!(
            slack(secret, "1531420618", body, published, at + 10),
            Ok(())
        );
        assert_eq!(slack_signature(secret, "1531420618", body), published);
        assert_eq!(
            slack(secret, "1531420618", body, published, at + 301),
            Err(Unsigned::Stale(300))
        );
        assert_eq!(
            slack(secret, "1531420618", body, published, at - 301),
            Err(Unsigned::Stale(300)),
            "a timestamp from the future is out of tolerance too"
        );
        assert_eq!(
            slack(secret, "1531420619", body, published, at),
            Err(Unsigned::Mismatch)
        );
        assert_eq!(
            slack("other", "1531420618", body, published, at),
            Err(Unsigned::Mismatch)
        );
    }

    #[test]
    fn discord_checks_an_ed25519_signature_over_timestamp_and_body() {
        use ed25519_dalek::{Signer, SigningKey};
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = discord_key(&hex::encode(key.verifying_key().as_bytes())).unwrap();
        let signature = hex::encode(key.sign(b"1700000000{\"type\":1}").to_bytes());
        assert_eq!(
            discord(&public, "1700000000", b"{\"type\":1}", &signature),
            Ok(())
        );
        assert_eq!(
            discord(&public, "1700000001", b"{\"type\":1}", &signature),
            Err(Unsigned::Mismatch)
        );
        assert!(discord_key("abcd").is_err());
    }

    #[test]
    fn telegram_and_relays_compare_their_secrets() {
        assert_eq!(telegram("s3cret", "s3cret"), Ok(()));
        assert_eq!(telegram("s3cret", "s3cres"), Err(Unsigned::Mismatch));
        let signature = relay_signature("k", b"mail");
        assert_eq!(hmac_relay("k", b"mail", &signature), Ok(()));
        assert_eq!(
            hmac_relay("k", b"mails", &signature),
            Err(Unsigned::Mismatch)
        );
        assert_eq!(
            hmac_relay("k", b"mail", "md5=00"),
            Err(Unsigned::Malformed(EMAIL_SIGNATURE))
        );
    }
}
