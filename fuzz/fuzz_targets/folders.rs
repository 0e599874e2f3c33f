//! drizzle-kit 1.0's folder names on arbitrary input: reading a name's timestamp never panics
//! and agrees with the calendar check, and the order migrations are applied in is a total order
//! (sorted pairwise, antisymmetric, equal only for equal names), so no input can make two runs
//! apply the same folders in different orders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::source::{collate, folders};
use std::cmp::Ordering;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut names: Vec<String> = text.split('\n').map(str::to_string).collect();
    for n in &names {
        if let Some(ms) = folders::folder_millis(n) {
            assert!(n.len() >= 14);
            if folders::is_calendar_date(n, ms) {
                assert_eq!(folders::folder_millis(&n[..14]), Some(ms));
            }
        }
    }
    folders::sort(&mut names);
    for w in names.windows(2) {
        assert_ne!(collate::compare(&w[0], &w[1]), Ordering::Greater);
    }
    for a in names.iter().take(16) {
        for b in names.iter().take(16) {
            let ab = collate::compare(a, b);
            assert_eq!(ab, collate::compare(b, a).reverse());
            assert_eq!(ab == Ordering::Equal, a == b);
        }
    }
    let _ = folders::order_warnings(&names);
});
