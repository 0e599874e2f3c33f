//! The SQL lexer and the transaction-refusing-statement detector on arbitrary bytes: regions
//! tile the text on character boundaries, and no check panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::source::Migration;
use portcullis::source::lexer;
use std::path::PathBuf;

fuzz_target!(|bytes: &[u8]| {
    let m = Migration::new(
        0,
        "0000_fuzz",
        1,
        PathBuf::from("fuzz/0000_fuzz.sql"),
        bytes,
    );
    let text = &m.text;
    let regions = lexer::regions(text);
    let mut at = 0;
    for (kind, r) in &regions {
        assert_eq!(r.start, at);
        assert!(r.end > r.start);
        assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        assert_eq!(lexer::kind_at(&regions, r.start), *kind);
        at = r.end;
    }
    assert_eq!(at, text.len());
    let _ = lexer::statement_words(text);
    let _ = lexer::transaction_refusal(&m);
    let _ = lexer::marker_problems(&m);
    let _ = lexer::has_no_transaction_marker(text);
});
