//! Headers stored as one blob: length-prefixed name and value pairs.

use crate::bus::Header;

pub(crate) fn encode(headers: &[Header]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        for part in [name, value] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

/// Reads what `encode` wrote; a damaged blob yields the pairs before the damage.
pub(crate) fn decode(mut bytes: &[u8]) -> Vec<Header> {
    let mut next = || -> Option<String> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let text = String::from_utf8(bytes.get(4..4 + len)?.to_vec()).ok()?;
        bytes = &bytes[4 + len..];
        Some(text)
    };
    let mut out = Vec::new();
    while let (Some(name), Some(value)) = (next(), next()) {
        out.push((name, value));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_survives_damage() {
        let headers = vec![
            ("ce_id".to_owned(), "x".to_owned()),
            ("empty".to_owned(), String::new()),
        ];
        let bytes = super::encode(&headers);
        assert_eq!(super::decode(&bytes), headers);
        assert_eq!(super::decode(&bytes[..bytes.len() - 1]), headers[..1]);
        assert!(super::decode(&[0xff; 3]).is_empty());
    }
}
