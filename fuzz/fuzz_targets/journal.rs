//! The journal parser on arbitrary bytes: never panics, and whatever it accepts is safe to turn
//! into a path inside the migrations folder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::source::journal;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(j) = journal::parse(bytes, "meta/_journal.json") {
        let mut last = None;
        for e in &j.entries {
            assert!(!e.tag.is_empty());
            assert!(!e.tag.starts_with('/') && !e.tag.starts_with('\\'));
            assert!(!e.tag.split(['/', '\\']).any(|p| p == ".."));
            assert!(!e.tag.chars().any(char::is_control));
            assert!(e.when >= 0);
            assert!(last.is_none_or(|l| e.position > l));
            last = Some(e.position);
        }
    }
});
