//! The CBOR envelope decoder: any bytes give an envelope or a `DecodeError`, never a panic;
//! what decodes encodes again and decodes to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = schemas::decode(data) {
        let again = schemas::encode(&envelope);
        assert_eq!(schemas::decode(&again).ok(), Some(envelope));
    }
});
