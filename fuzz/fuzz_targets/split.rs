//! drizzle's breakpoint split, decoding and position mapping on arbitrary bytes: N markers make
//! N+1 chunks that rebuild the text exactly, each at its offset; positions never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::source::{BREAKPOINT, split};

fuzz_target!(|bytes: &[u8]| {
    let text = split::decode(bytes);
    let chunks = split::split(&text);
    assert_eq!(chunks.len(), text.matches(BREAKPOINT).count() + 1);
    let joined: Vec<&str> = chunks.iter().map(|c| c.text).collect();
    assert_eq!(joined.join(BREAKPOINT), text);
    for c in &chunks {
        assert_eq!(&text[c.offset..c.offset + c.text.len()], c.text);
        let _ = c.is_blank();
    }
    let n = bytes.len();
    let _ = split::line_col(&text, n.wrapping_mul(7) % (text.len() + 2));
    let pos = bytes.first().map_or(0, |b| u32::from(*b) * 3);
    assert!(split::position_to_byte(&text, pos) <= text.len());
    let _ = split::cosmetic_variant_hashes(&text);
});
