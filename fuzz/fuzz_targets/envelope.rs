//! The CBOR envelope decoder: any bytes give an envelope or a `DecodeError`, never a panic;
//! what decodes encodes again and decodes to the same envelope, and reads alike when its body
//! is taken as a CBOR value first (the path the decoder falls back to).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = schemas::decode(data) {
        let again = schemas::encode(&envelope);
        assert_eq!(schemas::decode(&again).ok(), Some(envelope.clone()));
        let value: schemas::CborValue =
            serde_cbor::from_slice(data).expect("an envelope that decodes is CBOR");
        assert_eq!(schemas::decode_value(value).ok(), Some(envelope));
    }
});
