//! The order drizzle-orm 1.0 gives migration folders: `a.name.localeCompare(b.name)`, which is
//! ICU collation (CLDR root, as Node's default `en-US` has it for ASCII), not byte order
//! (drizzle-compat.md 4.3, E40). Pure.
//!
//! For ASCII this is a three-level comparison, reproduced here exactly:
//!
//! 1. primary: each character's base weight, in this order: the whitespace controls
//!    `\t \n \v \f \r`, space, then punctuation and symbols as listed in [`PUNCTUATION`], then the
//!    digits, then the letters with case ignored (`a` = `A` < `b` = `B` ...);
//! 2. tertiary (case): at the first difference, lowercase sorts before uppercase;
//! 3. the other control characters are ignored entirely.
//!
//! Strings still equal after that keep the order `readdirSync` gave them, which is byte order
//! (libuv sorts directory entries with `strcmp`), because `Array.prototype.sort` is stable.
//!
//! Non-ASCII characters are placed after every ASCII letter, by code point. ICU orders them by
//! its full tables, so for such names the order is an approximation, and [`exact_for`] says so.
//!
//! The order only matters between folders created within the same second: the 14-digit
//! timestamp prefix decides everything else.

use std::cmp::Ordering;

/// ASCII punctuation and symbols in ICU root order (after the whitespace controls and space,
/// before the digits). Read from Node 20's `localeCompare`.
pub const PUNCTUATION: &str = "_-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$";

/// Primary weight of a character, or `None` when ICU ignores it completely.
fn primary(c: char) -> Option<u32> {
    const WHITESPACE: &str = "\t\n\u{b}\u{c}\r ";
    if let Some(i) = WHITESPACE.find(c) {
        return Some(1 + i as u32);
    }
    if let Some(i) = PUNCTUATION.find(c) {
        return Some(10 + i as u32);
    }
    match c {
        '0'..='9' => Some(100 + (c as u32 - '0' as u32)),
        'a'..='z' => Some(200 + (c as u32 - 'a' as u32)),
        'A'..='Z' => Some(200 + (c as u32 - 'A' as u32)),
        '\0'..='\u{1f}' | '\u{7f}' => None,
        _ => Some(1000 + c as u32),
    }
}

/// Tertiary weight: uppercase letters sort after their lowercase form.
fn tertiary(c: char) -> u8 {
    u8::from(c.is_ascii_uppercase())
}

/// `a.localeCompare(b)` for the names drizzle sorts, with byte order as the last resort (see the
/// module comment).
pub fn compare(a: &str, b: &str) -> Ordering {
    // Iterators, not collected weights: sorting 100k folder names allocates nothing.
    primaries(a)
        .cmp(primaries(b))
        .then_with(|| tertiaries(a).cmp(tertiaries(b)))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn primaries(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(primary)
}

fn tertiaries(s: &str) -> impl Iterator<Item = u8> + '_ {
    s.chars().filter(|&c| primary(c).is_some()).map(tertiary)
}

/// Whether [`compare`] is exactly ICU's order for these names (printable ASCII only).
pub fn exact_for(name: &str) -> bool {
    name.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(names: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        v.sort_by(|a, b| compare(a, b));
        v
    }

    #[test]
    fn the_spec_example_punctuation_before_letters() {
        // Byte order puts `aB` first ('B' is 0x42, '_' is 0x5f); localeCompare puts `a_b` first.
        assert!("aB" < "a_b");
        assert_eq!(compare("a_b", "aB"), Ordering::Less);
    }

    #[test]
    fn punctuation_then_digits_then_letters_case_insensitive_first() {
        // What Node 20 prints for
        // ["a b","a_b","a-b","a.b","a1","ab","aB","Ab","AB"].sort((x, y) => x.localeCompare(y))
        let node = ["a b", "a_b", "a-b", "a.b", "a1", "ab", "aB", "Ab", "AB"];
        let mut shuffled = node;
        shuffled.reverse();
        assert_eq!(sorted(&shuffled), node);
    }

    #[test]
    fn every_printable_ascii_character_in_icu_order() {
        // Node 20: the printable ASCII characters sorted with localeCompare.
        let node = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789\
                    aAbBcCdDeEfFgGhHiIjJkKlLmMnNoOpPqQrRsStTuUvVwWxXyYzZ";
        let mut chars: Vec<String> = (0x20u8..0x7f).map(|b| (b as char).to_string()).collect();
        chars.sort_by(|a, b| compare(a, b));
        assert_eq!(chars.concat(), node);
    }

    #[test]
    fn case_decides_only_after_all_letters_compare_equal() {
        // Primary first over the whole string: `ab` < `Ac` although `a` < `A` does not matter.
        assert_eq!(compare("Ab", "ac"), Ordering::Less);
        assert_eq!(compare("aB", "Ab"), Ordering::Less);
        assert_eq!(compare("add_user", "Add_user"), Ordering::Less);
        assert_eq!(compare("add_Users", "add_user"), Ordering::Greater);
        // Shorter prefix first.
        assert_eq!(compare("add", "add_user"), Ordering::Less);
        assert_eq!(compare("x", "x"), Ordering::Equal);
    }

    #[test]
    fn drizzle_folder_names_within_one_second() {
        // Node 20's order for these names (localeCompare).
        let names = [
            "20250101000000_users",
            "20250101000000_Add_index",
            "20250101000000_add-index",
            "20250101000000_add_index",
            "20250101000000_add2",
            "20250101000000_addIndex",
            "20241231235959_zzz",
        ];
        assert_eq!(
            sorted(&names),
            [
                "20241231235959_zzz",
                "20250101000000_add_index",
                "20250101000000_Add_index",
                "20250101000000_add-index",
                "20250101000000_add2",
                "20250101000000_addIndex",
                "20250101000000_users",
            ]
        );
    }

    #[test]
    fn ignorable_controls_fall_back_to_byte_order() {
        assert_eq!(compare("a\u{1}b", "ab"), Ordering::Less);
        assert_eq!(compare("ab", "a\u{1}b"), Ordering::Greater);
        assert!(!exact_for("a\u{1}b"));
        assert!(!exact_for("café"));
        assert!(exact_for("20250101000000_add_index"));
    }
}
