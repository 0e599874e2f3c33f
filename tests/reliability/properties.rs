//! Properties of the parsers, checked on generated input (proptest, a few seconds): the journal
//! parser, drizzle-kit 1.0's folder reader, drizzle's breakpoint splitter and the SQL lexer
//! behind the transaction-refusing-statement detector never panic, and keep their invariants on
//! any input.
//! The same functions are fuzzed without bounds by the targets in fuzz/ (see fuzz/README.md).

use portcullis::source::lexer::{self, Kind};
use portcullis::source::{BREAKPOINT, Layout, Migration, collate, folders, journal, split};
use proptest::prelude::*;
use std::cmp::Ordering;
use std::path::PathBuf;

/// SQL-ish text: the pieces the lexer and the splitter care about, glued at random, so that
/// markers, quotes, comments and dollar tags meet in every combination.
fn sqlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(BREAKPOINT.to_string()),
        Just("-->statement-breakpoint".to_string()),
        Just("--> statement-".to_string()),
        Just("breakpoint".to_string()),
        Just("'".to_string()),
        Just("''".to_string()),
        Just("E'".to_string()),
        Just("\\".to_string()),
        Just("\"".to_string()),
        Just("$$".to_string()),
        Just("$a$".to_string()),
        Just("$1".to_string()),
        Just("$".to_string()),
        Just("--".to_string()),
        Just("/*".to_string()),
        Just("*/".to_string()),
        Just(";".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just(" ".to_string()),
        Just("\u{feff}".to_string()),
        Just("é".to_string()),
        Just("🚀".to_string()),
        Just("CREATE INDEX CONCURRENTLY i ON t (c)".to_string()),
        Just("VACUUM".to_string()),
        Just("-- portcullis: no-transaction".to_string()),
        "[a-zA-Z_0-9]{1,8}",
        any::<String>(),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn migration(text: &str) -> Migration {
    Migration::new(
        0,
        "0000_p",
        1,
        PathBuf::from("p/0000_p.sql"),
        text.as_bytes(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// N markers make N+1 chunks that rebuild the text exactly, each at its offset.
    #[test]
    fn split_rebuilds_the_text(text in sqlish()) {
        let chunks = split::split(&text);
        prop_assert_eq!(chunks.len(), text.matches(BREAKPOINT).count() + 1);
        let joined: Vec<&str> = chunks.iter().map(|c| c.text).collect();
        prop_assert_eq!(joined.join(BREAKPOINT), text.clone());
        for c in &chunks {
            prop_assert_eq!(&text[c.offset..c.offset + c.text.len()], c.text);
        }
    }

    /// Regions are non-empty, in order, contiguous, on character boundaries, cover the text,
    /// and `kind_at` agrees with them (it is a binary search now).
    #[test]
    fn lexer_regions_tile_the_text(text in sqlish()) {
        let regions = lexer::regions(&text);
        let mut at = 0;
        for (kind, r) in &regions {
            prop_assert_eq!(r.start, at);
            prop_assert!(r.end > r.start);
            prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
            prop_assert_eq!(lexer::kind_at(&regions, r.start), *kind);
            prop_assert_eq!(lexer::kind_at(&regions, r.end - 1), *kind);
            at = r.end;
        }
        prop_assert_eq!(at, text.len());
        prop_assert_eq!(lexer::kind_at(&regions, text.len()), Kind::Code);
    }

    /// The checks on a migration never panic, whatever the bytes.
    #[test]
    fn migration_checks_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), text in sqlish()) {
        for m in [migration(&text), Migration::new(0, "t", 1, PathBuf::from("t.sql"), &bytes)] {
            let _ = lexer::transaction_refusal(&m);
            let _ = lexer::marker_problems(&m);
            let _ = lexer::statement_words(&m.text);
            let _ = lexer::has_no_transaction_marker(&m.text);
            let _ = m.chunks();
            prop_assert_eq!(m.hash.len(), 64);
        }
    }

    /// The word prefilter never changes the verdict: with or without it, every file gets the
    /// same answer (it only skips the lexer for files without any of the words).
    #[test]
    fn the_prefilter_never_changes_the_verdict(text in sqlish(), word in prefilter_word()) {
        for t in [text.clone(), format!("{text}{word}"), format!("{word}{text}")] {
            let m = migration(&t);
            prop_assert_eq!(
                lexer::transaction_refusal(&m),
                lexer::transaction_refusal_unfiltered(&m)
            );
        }
    }

    /// A statement that refuses a transaction is found when it is code, and never when it is
    /// hidden in a comment, a string, a quoted name or a dollar-quoted body.
    #[test]
    fn refusals_are_found_in_code_only(prefix in "[a-z_ ]{0,12}", wrap in 0usize..5) {
        let stmt = "CREATE INDEX CONCURRENTLY \"i\" ON \"t\" (\"c\")";
        let text = match wrap {
            0 => format!("{stmt};"),
            1 => format!("-- {prefix} {stmt}\nselect 1;"),
            2 => format!("/* {prefix} {stmt} */ select 1;"),
            3 => format!("select '{prefix} {}';", stmt.replace('\'', "''")),
            _ => format!("do $x$ begin perform 1; /* {prefix} */ end $x$; select $q${stmt}$q$;"),
        };
        let refusal = lexer::transaction_refusal(&migration(&text));
        if wrap == 0 {
            prop_assert!(matches!(refusal, Ok(Some(_))), "{:?}", refusal);
        } else {
            prop_assert_eq!(refusal, Ok(None));
        }
    }

    /// Positions from the server map into the file without panicking, on any offset.
    #[test]
    fn positions_never_panic(text in sqlish(), at in 0usize..4096, pos in any::<u32>()) {
        let (line, column) = split::line_col(&text, at);
        prop_assert!(line >= 1 && column >= 1);
        prop_assert!(split::position_to_byte(&text, pos) <= text.len());
    }

    /// Any bytes: the journal parser returns entries or problems, never panics; what it accepts
    /// is safe to use as a path inside the folder.
    #[test]
    fn journal_parser_never_panics_and_accepts_only_safe_tags(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        json in journalish(),
    ) {
        for input in [bytes, json.into_bytes()] {
            if let Ok(j) = journal::parse(&input, "meta/_journal.json") {
                let mut last = None;
                for e in &j.entries {
                    prop_assert!(!e.tag.is_empty());
                    prop_assert!(!e.tag.starts_with('/') && !e.tag.starts_with('\\'));
                    prop_assert!(!e.tag.split(['/', '\\']).any(|p| p == ".."));
                    prop_assert!(!e.tag.chars().any(char::is_control));
                    prop_assert!(e.when >= 0);
                    prop_assert!(last.is_none_or(|l| e.position > l));
                    last = Some(e.position);
                }
            }
        }
    }

    /// A journal as drizzle-kit writes it reads back exactly: order, tags and `when`s.
    #[test]
    fn generated_journals_read_back_exactly(
        entries in proptest::collection::btree_map("[0-9]{4}_[a-z_]{1,12}", 0i64..=i64::MAX, 0..30),
    ) {
        let list: Vec<(String, i64)> = entries.into_iter().collect();
        let json = serde_json::json!({
            "version": "7",
            "dialect": "postgresql",
            "entries": list.iter().enumerate().map(|(i, (tag, when))| serde_json::json!({
                "idx": i, "version": "7", "when": when, "tag": tag, "breakpoints": true
            })).collect::<Vec<_>>(),
        });
        let j = journal::parse(json.to_string().as_bytes(), "j").unwrap();
        let back: Vec<(String, i64)> = j.entries.iter().map(|e| (e.tag.clone(), e.when)).collect();
        prop_assert_eq!(back, list);
    }

    /// The order folders are applied in is total: sorted pairwise, antisymmetric, equal only for
    /// equal names; reading a timestamp never panics and agrees with the calendar check.
    #[test]
    fn folder_order_is_total_and_timestamps_never_panic(
        mut names in proptest::collection::vec(folder_name(), 0..24),
    ) {
        for n in &names {
            if let Some(ms) = folders::folder_millis(n)
                && folders::is_calendar_date(n, ms)
            {
                prop_assert_eq!(folders::folder_millis(&n[..14]), Some(ms));
            }
        }
        folders::sort(&mut names);
        for w in names.windows(2) {
            prop_assert_ne!(collate::compare(&w[0], &w[1]), Ordering::Greater);
        }
        for a in &names {
            for b in &names {
                let ab = collate::compare(a, b);
                prop_assert_eq!(ab, collate::compare(b, a).reverse());
                prop_assert_eq!(ab == Ordering::Equal, a == b);
            }
        }
        let _ = folders::order_warnings(&names);
    }

    /// drizzle-kit 1.0's folder layout on disk with hostile names and bytes: `load` returns the
    /// migrations in drizzle's order, each `created_at` read from its own folder name, or an
    /// error; never a panic.
    #[test]
    fn v1_folders_on_disk_load_or_fail_cleanly(
        entries in proptest::collection::btree_map(folder_name(), proptest::collection::vec(any::<u8>(), 0..64), 1..8),
    ) {
        let dir = Scratch::new();
        let mut written = Vec::new();
        for (name, body) in &entries {
            let folder = dir.0.join(name);
            if name.is_empty() || name == "." || name == ".." || name == "meta"
                || std::fs::create_dir(&folder).is_err()
            {
                continue;
            }
            std::fs::write(folder.join("migration.sql"), body).unwrap();
            written.push(name.clone());
        }
        match portcullis::source::load(&dir.0) {
            Ok(folder) => {
                prop_assert_eq!(folder.layout, Layout::Folders);
                prop_assert_eq!(folder.migrations.len(), written.len());
                for w in folder.migrations.windows(2) {
                    prop_assert_ne!(collate::compare(&w[0].name, &w[1].name), Ordering::Greater);
                }
                for m in &folder.migrations {
                    prop_assert_eq!(Some(m.when), folders::folder_millis(&m.name));
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Decoding is Node's `Buffer.toString()`: UTF-8 with U+FFFD for invalid sequences.
    #[test]
    fn decoding_is_lossy_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(split::decode(&bytes), String::from_utf8_lossy(&bytes).into_owned());
    }
}

/// Journal-shaped JSON with hostile values: odd tags, odd `when`s, duplicates, wrong types.
fn journalish() -> impl Strategy<Value = String> {
    let tag = prop_oneof![
        "[0-9]{4}_[a-z]{1,6}".prop_map(|t| serde_json::to_string(&t).unwrap()),
        Just("\"../x\"".to_string()),
        Just("\"a/../../b\"".to_string()),
        Just("\"/etc/passwd\"".to_string()),
        Just("\"a\\u0000b\"".to_string()),
        Just("\"a\\nb\"".to_string()),
        Just("\"\"".to_string()),
        Just("\"0000_dup\"".to_string()),
        Just("null".to_string()),
        Just("7".to_string()),
        any::<String>().prop_map(|t| serde_json::to_string(&t).unwrap()),
    ];
    let when = prop_oneof![
        any::<u64>().prop_map(|w| w.to_string()),
        any::<i64>().prop_map(|w| w.to_string()),
        Just("1.5".to_string()),
        Just("\"1700000000000\"".to_string()),
        Just("\"soon\"".to_string()),
        Just("1e300".to_string()),
        Just("null".to_string()),
    ];
    proptest::collection::vec((tag, when), 0..8).prop_map(|entries| {
        let list: Vec<String> = entries
            .into_iter()
            .map(|(tag, when)| format!("{{\"tag\":{tag},\"when\":{when}}}"))
            .collect();
        format!("{{\"entries\":[{}]}}", list.join(","))
    })
}

/// Folder names as drizzle-kit 1.0 writes them, and hostile ones: wrong digit counts, rolling
/// dates, unicode, spaces, punctuation, control characters, names that differ only in case.
/// Never `/` or NUL, which no file name can hold.
fn folder_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "20[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|[12][0-9])([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]_[a-z_]{1,10}",
        "[0-9]{14}_[a-zA-Z]{1,4}",
        "[0-9]{10,16}[ _.a-z\\-]{0,6}",
        "20240131120000_[ -~&&[^/]]{0,8}",
        Just("20240131120000_é".to_string()),
        Just("20240131120000_E".to_string()),
        Just("20240131120000_e".to_string()),
        Just("20241399246060_rolls".to_string()),
        Just("20240131120000_a\tb".to_string()),
        Just("2024013112000_short".to_string()),
        Just("..".to_string()),
        any::<String>().prop_map(|s| s.replace(['/', '\0'], "").chars().take(40).collect()),
    ]
}

/// A temp dir removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-prop-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Refusing statements and near-misses around the prefilter's words: case, prefixes, suffixes,
/// non-ASCII neighbours, the marker.
fn prefilter_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("VACUUM".to_string()),
        Just("vacuum;".to_string()),
        Just("VaCuUm full".to_string()),
        Just("éVACUUM".to_string()),
        Just("VACUUMé".to_string()),
        Just("VACUUM…".to_string()),
        Just("create subscriptions".to_string()),
        Just("CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p".to_string()),
        Just("drop database if exists d".to_string()),
        Just("create tablespace t location '/x'".to_string()),
        Just("alter system set x = 1".to_string()),
        Just("reindex system d".to_string()),
        Just("drop index concurrently i".to_string()),
        Just("create index\nconcurrently i on t (c)".to_string()),
        Just("create unique index concurrently_x on t (c)".to_string()),
        Just("-- portcullis: no-transaction\n".to_string()),
        Just("--PORTCULLIS:no-transaction\n".to_string()),
        Just("\"system\"".to_string()),
    ]
}
