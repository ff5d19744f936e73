//! `switchyard replay --from`'s parser: what it reads, shown again, reads back alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::replay::{parse_from, show_from};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(from) = parse_from(text)
    {
        assert_eq!(parse_from(&show_from(&from)), Ok(from));
    }
});
