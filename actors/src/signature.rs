//! The HMAC-SHA256 body signature switchyard shares with its webhook peers, both ways: an
//! email relay signs what it posts to the node, and the node signs what it posts to a
//! notification webhook. `sha256=` and the hex MAC of the raw body under the shared secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header the signature travels in.
pub const HEADER: &str = "X-Switchyard-Signature";

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadSignature {
    /// Not `sha256=` and hex.
    #[error("malformed `{HEADER}`")]
    Malformed,
    /// The MAC does not match the body.
    #[error("bad signature")]
    Mismatch,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

/// Checks `signature` over `body` under `secret`, in constant time.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> Result<(), BadSignature> {
    let expected = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(BadSignature::Malformed)?;
    mac(secret, body)
        .verify_slice(&expected)
        .map_err(|_| BadSignature::Mismatch)
}

fn mac(secret: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_own_body_and_secret() {
        let signature = sign("s3cret", b"{\"a\":1}");
        assert_eq!(verify("s3cret", b"{\"a\":1}", &signature), Ok(()));
        assert_eq!(
            verify("s3cret", b"{\"a\":2}", &signature),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify("other", b"{\"a\":1}", &signature),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify("s3cret", b"", "md5=00"),
            Err(BadSignature::Malformed)
        );
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
