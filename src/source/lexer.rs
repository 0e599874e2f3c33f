//! A small PostgreSQL lexer: it splits SQL text into code, comments, string literals, quoted
//! identifiers and dollar-quoted bodies, which is all the checks need to tell a real statement
//! from text that only looks like one. Pure; never fails (unterminated regions run to the end).

use super::Migration;
use super::split::BREAKPOINT;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Code,
    /// `-- ...` to the end of the line.
    LineComment,
    /// `/* ... */`, nested as PostgreSQL nests them.
    BlockComment,
    /// `'...'` or `E'...'`.
    String,
    /// `"..."`.
    QuotedIdent,
    /// `$tag$ ... $tag$`.
    DollarBody,
}

/// The regions of `text` in order; together they cover it exactly.
pub fn regions(text: &str) -> Vec<(Kind, Range<usize>)> {
    let b = text.as_bytes();
    let mut out: Vec<(Kind, Range<usize>)> = Vec::new();
    let mut push = |kind: Kind, range: Range<usize>| {
        if range.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((k, r)) if *k == kind && kind == Kind::Code && r.end == range.start => {
                r.end = range.end
            }
            _ => out.push((kind, range)),
        }
    };
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n);
                push(Kind::LineComment, start..i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                push(Kind::BlockComment, start..i.min(b.len()));
            }
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                i += 1;
                while i < b.len() {
                    if escapes && b[i] == b'\\' {
                        i += 2;
                    } else if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                push(Kind::String, start..i.min(b.len()));
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                push(Kind::QuotedIdent, start..i.min(b.len()));
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => match dollar_tag(&text[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = text[body..]
                        .find(tag)
                        .map_or(b.len(), |n| body + n + tag.len());
                    push(Kind::DollarBody, start..i);
                }
                None => {
                    i += 1;
                    push(Kind::Code, start..i);
                }
            },
            _ => {
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                push(Kind::Code, start..i);
            }
        }
    }
    out
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// `$$` or `$tag$` at the start of `s` (a tag cannot start with a digit: `$1` is a parameter).
fn dollar_tag(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut j = 1;
    if b.get(1).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then(|| &s[..=j])
}

/// What kind of region the byte at `at` lies in.
pub fn kind_at(regions: &[(Kind, Range<usize>)], at: usize) -> Kind {
    // The regions are sorted and contiguous: a binary search, so that checking every marker of a
    // 50 MB file stays linear-ish instead of markers x regions.
    let i = regions.partition_point(|(_, r)| r.end <= at);
    regions
        .get(i)
        .filter(|(_, r)| r.contains(&at))
        .map_or(Kind::Code, |(k, _)| *k)
}

/// `sql` with every string literal (`'...'`, `E'...'` with its escapes, `$tag$...$tag$`)
/// replaced by `'…'` and every comment by a space: what may be shown of SQL in a log. A
/// literal may hold a password (`ALTER ROLE ... PASSWORD '...'`, `CREATE SUBSCRIPTION ...
/// CONNECTION '...'`) or personal data, and so may a comment. A query cut short (as the
/// server cuts them at track_activity_query_size) leaves its last literal open: the lexer runs
/// it to the end, so it is masked too.
fn masked(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for (kind, range) in regions(sql) {
        match kind {
            Kind::Code | Kind::QuotedIdent => out.push_str(&sql[range]),
            Kind::String | Kind::DollarBody => out.push_str("'…'"),
            Kind::LineComment | Kind::BlockComment => out.push(' '),
        }
    }
    out
}

/// At most `max_chars` characters of `text`, the last one `…` when it was cut.
fn shorten(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some(_) => {
            let keep = text
                .char_indices()
                .nth(max_chars.saturating_sub(1))
                .map_or(text.len(), |(at, _)| at);
            format!("{}…", &text[..keep])
        }
        None => text.to_string(),
    }
}

/// Another session's query, fit to print in our log: [`masked`], on one line (runs of
/// whitespace become one space), at most `max_chars` characters.
pub fn mask_literals(query: &str, max_chars: usize) -> String {
    let one_line = masked(query)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    shorten(&one_line, max_chars)
}

/// A statement of ours, for orientation in a message (which also gives its file and line):
/// its first line that is not blank once comments are left out, [`masked`], at most
/// `max_chars` characters.
pub fn excerpt(statement: &str, max_chars: usize) -> String {
    let masked = masked(statement);
    let line = masked
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    shorten(line, max_chars)
}

/// Problems `validate` reports for one migration file: breakpoint markers that drizzle's split
/// cuts in the middle of a comment, string or dollar-quoted body (E4, drizzle #2126: an
/// introspected baseline wrapped in `/* */`), and marker look-alikes that it does not split on
/// (E5: the statements on both sides stay one chunk).
pub fn marker_problems(m: &Migration) -> Vec<String> {
    let text = &m.text;
    let regions = regions(text);
    let mut problems = Vec::new();
    // Line numbers counted incrementally: from the start of the file for each marker would be
    // quadratic in a large file.
    let (mut line, mut counted) = (1, 0);
    for (at, _) in text.match_indices(BREAKPOINT) {
        line += text[counted..at].matches('\n').count();
        counted = at;
        let inside = match kind_at(&regions, at) {
            Kind::BlockComment => Some("a /* */ comment"),
            Kind::String => Some("a string literal"),
            Kind::DollarBody => Some("a dollar-quoted body"),
            Kind::QuotedIdent => Some("a quoted identifier"),
            Kind::Code | Kind::LineComment => None,
        };
        if let Some(inside) = inside {
            problems.push(format!(
                "{}:{line}: a `{BREAKPOINT}` marker sits inside {inside}; drizzle (and \
                 portcullis) split there anyway, so the statement is cut in two and fails (an \
                 introspected baseline wrapped in /* */ does this: drizzle-orm #2126)",
                m.file()
            ));
        }
    }
    for (n, line) in text.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        if lower.contains("statement-breakpoint") && !line.contains(BREAKPOINT) {
            problems.push(format!(
                "{}:{}: `{}` looks like a breakpoint marker but is not exactly `{BREAKPOINT}`, so \
                 drizzle does not split there and the statements around it run as one query",
                m.file(),
                n + 1,
                line.trim()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        regions(text)
            .into_iter()
            .map(|(k, r)| (k, &text[r]))
            .collect()
    }

    #[test]
    fn a_failed_statement_is_told_by_its_first_words() {
        for (text, command) in [
            (
                "-- add it\nALTER TABLE \"a\" ADD COLUMN b int",
                Command::AlterTable,
            ),
            (
                "/* x */ alter domain d add check (value > 0)",
                Command::AlterDomain,
            ),
            ("CREATE UNIQUE INDEX i ON t (a)", Command::CreateIndex),
            ("create index concurrently i on t (a)", Command::CreateIndex),
            (
                "CREATE EXTENSION IF NOT EXISTS \"vector\"",
                Command::CreateExtension,
            ),
            ("CREATE TABLE t (a int)", Command::Other),
            ("INSERT INTO t VALUES ('ALTER TABLE')", Command::Other),
            ("", Command::Other),
        ] {
            assert_eq!(Command::of(text), command, "{text}");
        }
        // Several statements in one query: the one at the server's position, else the one
        // they all share, else none.
        let two = "ALTER TABLE t ADD a int;\nINSERT INTO t VALUES (1);";
        assert_eq!(Command::failed_in(two, Some(3)), Command::AlterTable);
        assert_eq!(Command::failed_in(two, Some(30)), Command::Other);
        assert_eq!(Command::failed_in(two, None), Command::Other);
        let alters = "ALTER TABLE t ADD a int;\nALTER TABLE t ADD b int;";
        assert_eq!(Command::failed_in(alters, None), Command::AlterTable);
    }
    #[test]
    fn splits_code_comments_and_literals() {
        assert_eq!(
            kinds("select 'a''b', \"x\"\"y\" -- c\n/* d /* e */ f */ $$g$$ $t$h$t$ $1"),
            vec![
                (Kind::Code, "select "),
                (Kind::String, "'a''b'"),
                (Kind::Code, ", "),
                (Kind::QuotedIdent, "\"x\"\"y\""),
                (Kind::Code, " "),
                (Kind::LineComment, "-- c"),
                (Kind::Code, "\n"),
                (Kind::BlockComment, "/* d /* e */ f */"),
                (Kind::Code, " "),
                (Kind::DollarBody, "$$g$$"),
                (Kind::Code, " "),
                (Kind::DollarBody, "$t$h$t$"),
                (Kind::Code, " $1"),
            ]
        );
        assert_eq!(
            kinds("E'it\\'s' x"),
            vec![
                (Kind::Code, "E"),
                (Kind::String, "'it\\'s'"),
                (Kind::Code, " x")
            ]
        );
        // Unterminated regions run to the end instead of failing.
        assert_eq!(kinds("/* open"), vec![(Kind::BlockComment, "/* open")]);
        assert_eq!(kinds("'open"), vec![(Kind::String, "'open")]);
        // A `$` inside an identifier is not a dollar quote.
        assert_eq!(kinds("a$b$ c"), vec![(Kind::Code, "a$b$ c")]);
    }

    fn mig(sql: &str) -> Migration {
        Migration::new(
            0,
            "0000_x",
            1,
            PathBuf::from("m/0000_x.sql"),
            sql.as_bytes(),
        )
    }

    #[test]
    fn masks_every_kind_of_literal_and_comment_in_a_query() {
        let q = "SELECT count(*)  FROM \"T\"\n WHERE a = 'pw1' AND b = E'it\\'s pw2' \
                 AND c = $$pw3$$ AND d = $x$pw4 $$ x$x$ -- pw5\n AND e = 1 /* pw6 */;";
        assert_eq!(
            mask_literals(q, 500),
            "SELECT count(*) FROM \"T\" WHERE a = '…' AND b = E'…' AND c = '…' AND d = '…' \
             AND e = 1 ;"
        );
        // A query the server cut inside a literal: the rest is masked.
        assert_eq!(
            mask_literals("UPDATE t SET p = 'pw7 and mo", 500),
            "UPDATE t SET p = '…'"
        );
        // At most max_chars characters, cut on a character boundary.
        assert_eq!(mask_literals("SELECT é, é", 9), "SELECT é…");
        assert_eq!(mask_literals("SELECT 1", 8), "SELECT 1");
    }

    #[test]
    fn excerpts_are_short_masked_first_lines() {
        assert_eq!(excerpt("\n\n  ALTER TABLE x\n ADD y;", 80), "ALTER TABLE x");
        assert_eq!(
            excerpt(
                "-- set the app's password\nALTER ROLE app PASSWORD 'hunter2';",
                80
            ),
            "ALTER ROLE app PASSWORD '…';"
        );
        assert_eq!(
            excerpt("INSERT INTO t VALUES ($$a\nb$$, 1);", 80),
            "INSERT INTO t VALUES ('…', 1);"
        );
        assert_eq!(excerpt(&"x".repeat(200), 80).chars().count(), 80);
        assert!(excerpt(&"x".repeat(200), 80).ends_with('…'));
    }

    #[test]
    fn finds_markers_that_cut_comments_or_strings() {
        let baseline = "-- Current sql file was generated after introspecting the database\n\
                        /*\nCREATE TABLE a (id int);\n--> statement-breakpoint\nCREATE TABLE b (id int);\n*/";
        let p = marker_problems(&mig(baseline));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("m/0000_x.sql:4:"), "{p:?}");
        assert!(p[0].contains("/* */ comment"));
        let p = marker_problems(&mig("select '--> statement-breakpoint';"));
        assert!(p[0].contains("string literal"), "{p:?}");
        // The normal layout has no problem.
        assert!(marker_problems(&mig("a;\n--> statement-breakpoint\nb;")).is_empty());
    }

    #[test]
    fn every_marker_in_a_comment_gets_its_own_line() {
        let text = "a;\n/*\n--> statement-breakpoint\nb;\n--> statement-breakpoint\n*/\n\
                    --> statement-breakpoint\nc;";
        let p = marker_problems(&mig(text));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("m/0000_x.sql:3:"), "{p:?}");
        assert!(p[1].starts_with("m/0000_x.sql:5:"), "{p:?}");
    }

    #[test]
    fn finds_marker_look_alikes() {
        let p = marker_problems(&mig(
            "a;\n-->statement-breakpoint\nb;\n--> Statement-Breakpoint\n",
        ));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("m/0000_x.sql:2:"));
        assert!(p[1].starts_with("m/0000_x.sql:4:"));
    }
}

/// The comment that marks a whole migration as one to run outside a transaction. drizzle ignores
/// comments, so the folder stays valid for drizzle-kit.
pub const NO_TRANSACTION_MARKER: &str = "portcullis: no-transaction";

/// Words one of which every refusing statement, and the marker, contains (upper case).
const PREFILTER: &[&str] = &[
    "CONCURRENTLY",
    "VACUUM",
    "DATABASE",
    "TABLESPACE",
    "SYSTEM",
    "SUBSCRIPTION",
    "PORTCULLIS",
];

/// Whether `text` has one of [`PREFILTER`]'s words as a whole word: a run of ASCII letters,
/// digits and `_`, bounded by anything else, equal to it ignoring ASCII case. One pass, no
/// allocation. Never misses a word the lexer would find: the lexer's words are runs of
/// alphanumerics and `_`, so one equal to an (ASCII) keyword is bounded by characters that are
/// not ASCII word characters, which bound it here too (given one chunk: drizzle's split also
/// ends a word, see [`transaction_refusal`]). It may say yes for a word in a comment
/// or a string, or a name like `"subscription"`; the lexer then decides.
pub fn mentions_prefilter_word(text: &str) -> bool {
    mentions_any(text, PREFILTER, 6..=12)
}

/// Whether `text` has one of `words` (upper-case ASCII, their lengths within `lengths`) as a
/// whole word, ignoring ASCII case; see [`mentions_prefilter_word`].
fn mentions_any(text: &str, words: &[&str], lengths: std::ops::RangeInclusive<usize>) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &bytes[start..i];
        if lengths.contains(&word.len())
            && words
                .iter()
                .any(|k| k.as_bytes().eq_ignore_ascii_case(word))
        {
            return true;
        }
    }
    false
}

/// The statements that end a transaction block: `COMMIT` (and `COMMIT PREPARED`), `END`,
/// `ROLLBACK`, `ABORT`, `PREPARE TRANSACTION`.
const ENDS_TRANSACTION: &[&str] = &["COMMIT", "END", "ROLLBACK", "ABORT", "PREPARE"];

/// Whether one chunk may end the transaction block it runs in: a top-level statement starting
/// with one of [`ENDS_TRANSACTION`]'s words. Errs on the side of yes (an SQL-standard function
/// body's closing `END;` counts). A PL/pgSQL body cannot end the block (PostgreSQL refuses a
/// COMMIT in a procedure called inside one), and words in strings, comments and dollar bodies
/// do not count.
pub fn may_end_transaction(text: &str) -> bool {
    mentions_any(text, ENDS_TRANSACTION, 3..=8)
        && statement_words(text).iter().any(|s| {
            s.first()
                .is_some_and(|w| ENDS_TRANSACTION.contains(&w.as_str()))
        })
}

/// What a top-level statement does to the transaction block it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockControl {
    /// `BEGIN`, `START TRANSACTION`.
    Opens,
    /// `COMMIT`, `END`, `ABORT`, `PREPARE TRANSACTION`, and `ROLLBACK` except `ROLLBACK [WORK |
    /// TRANSACTION] TO` a savepoint.
    Ends,
}

/// Reads a file's top-level statements in order (their words, from [`statement_words`]) and
/// says which open or end the transaction block. The statements of a `BEGIN ATOMIC` function
/// body run when the function is called, so they and the `END` that closes the body are
/// neither. (Unlike [`may_end_transaction`], which errs on the side of yes, this is exact.)
#[derive(Debug, Default)]
pub struct BlockControls {
    atomic_body: bool,
}

impl BlockControls {
    /// What the next statement, given by its words, does to the block.
    pub fn next(&mut self, words: &[String]) -> Option<BlockControl> {
        let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        if self.atomic_body {
            self.atomic_body = word(0) != "END";
            return None;
        }
        if words
            .windows(2)
            .any(|w| w[0] == "BEGIN" && w[1] == "ATOMIC")
        {
            self.atomic_body = true;
            return None;
        }
        match word(0) {
            "BEGIN" => Some(BlockControl::Opens),
            "START" if word(1) == "TRANSACTION" => Some(BlockControl::Opens),
            "COMMIT" | "END" | "ABORT" => Some(BlockControl::Ends),
            "PREPARE" if word(1) == "TRANSACTION" => Some(BlockControl::Ends),
            "ROLLBACK" => {
                let next = if matches!(word(1), "WORK" | "TRANSACTION") {
                    word(2)
                } else {
                    word(1)
                };
                (next != "TO").then_some(BlockControl::Ends)
            }
            _ => None,
        }
    }
}

/// Whether running `chunks` one by one outside a transaction leaves a transaction block open:
/// the last top-level statement that opens or ends one opens it. A file written for drizzle's
/// single transaction often ends its `CREATE INDEX CONCURRENTLY` with `COMMIT; ... BEGIN;`; run
/// on its own, that `BEGIN` would leave what follows (the tracking row) in a block nobody
/// commits.
pub fn leaves_transaction_open<'a>(chunks: impl IntoIterator<Item = &'a str>) -> bool {
    let mut controls = BlockControls::default();
    let mut open = false;
    for chunk in chunks {
        for words in statement_words(chunk) {
            match controls.next(&words) {
                Some(BlockControl::Opens) => open = true,
                Some(BlockControl::Ends) => open = false,
                None => {}
            }
        }
    }
    open
}

/// Top-level statements of `text` as their upper-cased words (comments, strings, quoted
/// identifiers and dollar bodies left out), split on `;` in code.
pub fn statement_words(text: &str) -> Vec<Vec<String>> {
    let mut statements = vec![Vec::new()];
    for (kind, range) in regions(text) {
        match kind {
            Kind::Code => {
                let code = &text[range];
                let mut word = String::new();
                for c in code.chars() {
                    if c.is_alphanumeric() || c == '_' {
                        word.push(c.to_ascii_uppercase());
                        continue;
                    }
                    if !word.is_empty() {
                        statements
                            .last_mut()
                            .expect("never empty")
                            .push(std::mem::take(&mut word));
                    }
                    if c == ';' {
                        statements.push(Vec::new());
                    }
                }
                if !word.is_empty() {
                    statements.last_mut().expect("never empty").push(word);
                }
            }
            // A quoted name or a literal still makes the statement non-empty.
            Kind::String | Kind::QuotedIdent | Kind::DollarBody => {
                statements
                    .last_mut()
                    .expect("never empty")
                    .push("<literal>".into());
            }
            Kind::LineComment | Kind::BlockComment => {}
        }
    }
    statements.retain(|s| !s.is_empty());
    statements
}

/// What a statement does, told from its first words: enough to know what some SQLSTATEs mean
/// without reading the server's message, which comes in the language of the server's
/// `lc_messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Command {
    AlterTable,
    AlterDomain,
    /// `CREATE [UNIQUE] INDEX`.
    CreateIndex,
    CreateExtension,
    #[default]
    Other,
}

impl Command {
    /// The command of the first statement in `text` (comments skipped).
    pub fn of(text: &str) -> Command {
        let words = statement_words(text);
        let words: Vec<&str> = words
            .first()
            .map(|w| w.iter().take(3).map(String::as_str).collect())
            .unwrap_or_default();
        match words.as_slice() {
            ["ALTER", "TABLE", ..] => Command::AlterTable,
            ["ALTER", "DOMAIN", ..] => Command::AlterDomain,
            ["CREATE", "INDEX", ..] | ["CREATE", "UNIQUE", "INDEX"] => Command::CreateIndex,
            ["CREATE", "EXTENSION", ..] => Command::CreateExtension,
            _ => Command::Other,
        }
    }

    /// The command of the statement of `text` (sent as one query) that failed: the one holding
    /// byte `position` when the server named one, else the command all its statements share
    /// (`Other` when they differ, since which of them failed is unknown).
    pub fn failed_in(text: &str, position: Option<usize>) -> Command {
        let ranges = statement_ranges(text);
        if let Some(at) = position
            && let Some(r) = ranges.iter().find(|r| at < r.end)
        {
            return Command::of(&text[r.clone()]);
        }
        let mut commands = ranges.iter().map(|r| Command::of(&text[r.clone()]));
        let first = commands.next().unwrap_or_default();
        if commands.all(|c| c == first) {
            first
        } else {
            Command::Other
        }
    }
}

/// Byte ranges of the statements the server runs one after the other when `text` is sent as
/// one simple query: split at `;` outside strings, comments, quoted identifiers and
/// dollar-quoted bodies. Each range starts at the statement's first token; pieces holding only
/// blanks and comments are left out, as the server skips them. Used to point at the statement
/// that failed when the server names no position, and to tell a request of one statement
/// from one of several.
pub fn statement_ranges(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut first: Option<usize> = None;
    for (kind, range) in regions(text) {
        match kind {
            Kind::LineComment | Kind::BlockComment => {}
            Kind::String | Kind::QuotedIdent | Kind::DollarBody => {
                first.get_or_insert(range.start);
            }
            Kind::Code => {
                for (i, c) in text[range.clone()].char_indices() {
                    let at = range.start + i;
                    if c == ';' {
                        if let Some(start) = first.take() {
                            out.push(start..at + 1);
                        }
                    } else if !c.is_whitespace() {
                        first.get_or_insert(at);
                    }
                }
            }
        }
    }
    if let Some(start) = first {
        out.push(start..text.trim_end().len().max(start));
    }
    out
}

/// Something only a client such as psql can run, which a file sent to the server as SQL (what
/// drizzle and portcullis do) cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOnly {
    /// `COPY ... FROM STDIN`: the rows follow in psql's input (pg_dump's data sections).
    CopyFromStdin,
    /// `COPY ... TO STDOUT`: the rows go to the client.
    CopyToStdout,
    /// A psql meta-command line (`\restrict`, `\connect`, `\set`...), by its name.
    MetaCommand(String),
}

impl ClientOnly {
    /// What it is, and what to write instead.
    pub fn explain(&self) -> String {
        match self {
            ClientOnly::CopyFromStdin => {
                "COPY ... FROM STDIN reads its rows from the client's input, as psql does with \
                 the lines after it (pg_dump writes data this way unless told otherwise); a file \
                 sent to the server as SQL has no such input, so it would fail. Write the rows \
                 as INSERT statements (pg_dump --data-only --inserts, or --rows-per-insert=1000, \
                 writes them), or COPY FROM a file on the database server"
                    .to_string()
            }
            ClientOnly::CopyToStdout => {
                "COPY ... TO STDOUT sends its rows to the client, which portcullis cannot \
                 receive in the middle of a file and has no use for. Remove it, or COPY TO a \
                 file on the database server"
                    .to_string()
            }
            ClientOnly::MetaCommand(name) => format!(
                "`\\{name}` is a psql meta-command, which the server, given the file as SQL, \
                 does not know{}. Remove the line",
                if name == "restrict" || name == "unrestrict" {
                    " (pg_dump writes \\restrict and \\unrestrict around its output since the \
                     releases of August 2025: 17.6, 16.10, 15.14, 14.19, 13.22)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Whether a top-level statement, given by its words ([`statement_words`]), is a `COPY` from
/// the client's input or to its output. The direction is the first `FROM` or `TO` after a
/// table (a column list holds no such word: both are reserved), or the last `TO` after a
/// query (`COPY (SELECT ...) TO`), so a table named `stdin` inside the query does not count;
/// a quoted `'stdin'` is a file name, and a literal here.
pub fn client_copy(words: &[String]) -> Option<ClientOnly> {
    if words.first().map(String::as_str) != Some("COPY") {
        return None;
    }
    let query = matches!(
        words.get(1).map(String::as_str),
        Some("SELECT" | "WITH" | "VALUES" | "TABLE" | "INSERT" | "UPDATE" | "DELETE" | "MERGE")
    );
    let direction = if query {
        words.iter().rposition(|w| w == "TO")
    } else {
        words.iter().position(|w| w == "FROM" || w == "TO")
    }?;
    match (
        words[direction].as_str(),
        words.get(direction + 1).map(String::as_str),
    ) {
        ("FROM", Some("STDIN")) => Some(ClientOnly::CopyFromStdin),
        ("TO", Some("STDOUT")) => Some(ClientOnly::CopyToStdout),
        _ => None,
    }
}

/// Everything in `text` that only a client such as psql can run ([`ClientOnly`]), with the byte
/// where it starts: each top-level `COPY` from or to the client, and each psql meta-command, a
/// line whose code starts with a backslash (outside strings, comments and bodies, where SQL
/// has no backslash). Meta-commands count only before the first `COPY ... FROM STDIN`: the
/// lines after it are rows (`\N` is a NULL there), which the lexer cannot read as SQL. Files
/// with neither the words `STDIN` and `STDOUT` nor a backslash skip the lexer.
pub fn client_only(text: &str) -> Vec<(usize, ClientOnly)> {
    let backslash = text.contains('\\');
    if !backslash && !mentions_any(text, &["STDIN", "STDOUT"], 5..=6) {
        return Vec::new();
    }
    let mut found: Vec<(usize, ClientOnly)> = statement_ranges(text)
        .into_iter()
        .filter_map(|r| {
            client_copy(&statement_words(&text[r.clone()]).concat()).map(|c| (r.start, c))
        })
        .collect();
    if backslash {
        let rows_from = found
            .iter()
            .find(|(_, c)| *c == ClientOnly::CopyFromStdin)
            .map_or(text.len(), |(at, _)| *at);
        for (kind, range) in regions(&text[..rows_from]) {
            if kind != Kind::Code {
                continue;
            }
            for (i, _) in text[range.clone()].match_indices('\\') {
                let at = range.start + i;
                let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
                if !text[line_start..at].trim().is_empty() {
                    continue;
                }
                let name: String = text[at + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push((at, ClientOnly::MetaCommand(name)));
                }
            }
        }
        found.sort_by_key(|(at, _)| *at);
    }
    found
}

/// Why a statement cannot run inside a transaction block, if it cannot.
pub fn refuses_transaction(words: &[String]) -> Option<&'static str> {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let has = |x: &str| words.iter().any(|v| v == x);
    match (w(0), w(1)) {
        ("CREATE", "INDEX") if w(2) == "CONCURRENTLY" => Some("CREATE INDEX CONCURRENTLY"),
        ("CREATE", "UNIQUE") if w(2) == "INDEX" && w(3) == "CONCURRENTLY" => {
            Some("CREATE UNIQUE INDEX CONCURRENTLY")
        }
        ("DROP", "INDEX") if w(2) == "CONCURRENTLY" => Some("DROP INDEX CONCURRENTLY"),
        ("REINDEX", _) if has("CONCURRENTLY") => Some("REINDEX CONCURRENTLY"),
        ("REINDEX", _) if has("SYSTEM") || has("DATABASE") => Some("REINDEX DATABASE/SYSTEM"),
        ("VACUUM", _) => Some("VACUUM"),
        ("CREATE", "DATABASE") => Some("CREATE DATABASE"),
        ("DROP", "DATABASE") => Some("DROP DATABASE"),
        ("CREATE", "TABLESPACE") => Some("CREATE TABLESPACE"),
        ("DROP", "TABLESPACE") => Some("DROP TABLESPACE"),
        ("ALTER", "SYSTEM") => Some("ALTER SYSTEM"),
        ("CREATE", "SUBSCRIPTION") => Some("CREATE SUBSCRIPTION"),
        ("DROP", "SUBSCRIPTION") => Some("DROP SUBSCRIPTION"),
        _ => None,
    }
}

/// Whether the file carries the no-transaction marker comment.
pub fn has_no_transaction_marker(text: &str) -> bool {
    regions(text).into_iter().any(|(kind, range)| {
        kind == Kind::LineComment
            && text[range]
                .trim_start_matches('-')
                .trim()
                .eq_ignore_ascii_case(NO_TRANSACTION_MARKER)
    })
}

/// How a migration must run: `None` inside a transaction, or `Some(reason)` on its own, each
/// chunk in autocommit. `Err` when a refusing statement shares its chunk with other statements:
/// a multi-statement query is an implicit transaction, so it would fail even in autocommit.
pub fn transaction_refusal(m: &Migration) -> Result<Option<String>, String> {
    // Almost no file holds any of these words; skipping the lexer for those keeps reading a
    // 1000-migration folder cheap (the lexer was 41% of a no-op's instructions there).
    // Per chunk: the split starts a new word right after a marker (`...breakpointVACUUM`).
    if !m.chunks().iter().any(|c| mentions_prefilter_word(c.text)) {
        return Ok(None);
    }
    transaction_refusal_unfiltered(m)
}

/// [`transaction_refusal`] without the word prefilter (the full lexer on every file); the
/// property tests check that both always agree.
pub fn transaction_refusal_unfiltered(m: &Migration) -> Result<Option<String>, String> {
    let mut reasons: Vec<&'static str> = Vec::new();
    for (n, chunk) in m.chunks().iter().enumerate() {
        let statements = statement_words(chunk.text);
        for s in &statements {
            if let Some(why) = refuses_transaction(s) {
                if statements.len() > 1 {
                    let (line, _) = super::split::line_col(&m.text, chunk.offset);
                    return Err(format!(
                        "{}:{line}: statement chunk {} holds {why} together with {} other \
                         statement(s); PostgreSQL runs a multi-statement query as one implicit \
                         transaction, so {why} fails there. Put `{BREAKPOINT}` lines around it \
                         so that it is alone in its chunk",
                        m.file(),
                        n + 1,
                        statements.len() - 1
                    ));
                }
                if !reasons.contains(&why) {
                    reasons.push(why);
                }
            }
        }
    }
    if !reasons.is_empty() {
        return Ok(Some(format!(
            "{} cannot run inside a transaction block",
            reasons.join(", ")
        )));
    }
    if has_no_transaction_marker(&m.text) {
        return Ok(Some(format!(
            "the file is marked `-- {NO_TRANSACTION_MARKER}`"
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod transaction_tests {
    #[test]
    fn what_only_a_client_can_run_is_found_and_what_the_server_runs_is_not() {
        use ClientOnly::*;
        let found = |text: &str| -> Vec<ClientOnly> {
            client_only(text).into_iter().map(|(_, c)| c).collect()
        };
        let dump = "\\restrict abc\nSET statement_timeout = 0;\n\nCOPY public.a (id, name) FROM stdin;\n\\N\tone\n\\.\n\n\\unrestrict abc\n";
        assert_eq!(
            client_only(dump),
            [(0, MetaCommand("restrict".into())), (42, CopyFromStdin)]
        );
        assert_eq!(
            found("copy a from STDIN with (format csv);"),
            [CopyFromStdin]
        );
        assert_eq!(found("COPY a TO STDOUT;"), [CopyToStdout]);
        assert_eq!(
            found("copy (select * from stdin where x similar to 'y') to stdout;"),
            [CopyToStdout]
        );
        assert_eq!(
            found("select 1;\n  \\connect other\nselect 2;\n\\unrestrict k"),
            [
                MetaCommand("connect".into()),
                MetaCommand("unrestrict".into())
            ]
        );
        for no in [
            "COPY a FROM '/srv/a.csv';",
            "COPY a FROM 'stdin';",
            "COPY (SELECT * FROM stdin) TO '/srv/out.csv';",
            "COPY a FROM PROGRAM 'cat stdin';",
            "-- COPY a FROM stdin;\nselect 1;",
            "insert into t values ('COPY a FROM stdin');",
            "select stdin from stdout;",
            "create table stdin (id int);",
            "insert into t values (E'\\n'), ('\n\\x');",
            "-- \\restrict\nselect $$\n\\x$$;\n/*\n\\y */",
        ] {
            assert_eq!(found(no), [], "{no}");
        }
        assert!(
            CopyFromStdin
                .explain()
                .contains("pg_dump --data-only --inserts")
        );
        assert!(MetaCommand("restrict".into()).explain().contains("15.14"));
        assert!(!MetaCommand("set".into()).explain().contains("15.14"));
    }

    #[test]
    fn statements_split_like_the_server_runs_them() {
        let text = "-- roles\ninsert into r values ('a;b');\n\n/* c; */ ;\nselect $$ x; $$;\n  update \"t;\" set x = 1";
        let got: Vec<&str> = statement_ranges(text)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(
            got,
            [
                "insert into r values ('a;b');",
                "select $$ x; $$;",
                "update \"t;\" set x = 1"
            ]
        );
        assert!(statement_ranges("-- only a comment\n").is_empty());
        let trailing_blank = statement_ranges("select 1;  \n");
        assert_eq!(trailing_blank.len(), 1);
        assert_eq!(trailing_blank[0], 0..9);
    }

    use super::*;
    use std::path::PathBuf;

    #[test]
    fn statements_that_end_the_block_are_found_and_bodies_are_not() {
        for yes in [
            "COMMIT;",
            "commit",
            "CREATE TABLE t (id int);\nCOMMIT;",
            "END;",
            "rollback;",
            "ABORT",
            "PREPARE TRANSACTION 'x';",
            "COMMIT PREPARED 'x'",
            "select 1; /* c */ Commit;",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;",
        ] {
            assert!(may_end_transaction(yes), "{yes}");
        }
        for no in [
            "",
            "CREATE TABLE t (id int)",
            "DO $$ BEGIN CREATE TYPE e AS ENUM ('a'); EXCEPTION WHEN duplicate_object THEN null; END $$;",
            "select case when true then 1 else 2 end",
            "-- COMMIT;\nselect 1",
            "select 'COMMIT; ROLLBACK'",
            "create table \"commit\" (id int)",
            "alter table t add column commits int",
            "create table t (\"end\" int)",
        ] {
            assert!(!may_end_transaction(no), "{no}");
        }
    }

    #[test]
    fn the_prefilter_matches_whole_words_in_any_case_only() {
        for yes in [
            "VACUUM",
            "vacuum;",
            "create index\tConcurrently i",
            "x,SYSTEM,y",
            "-- portcullis: no-transaction",
            "\u{e9}database\u{e9}",
            "drop tablespace t",
            "create subscription s",
        ] {
            assert!(mentions_prefilter_word(yes), "{yes}");
        }
        for no in [
            "",
            "create table subscriptions (id int)",
            "subscription_id",
            "vacuums",
            "xsystem",
            "databases",
            "create index i on t (c)",
        ] {
            assert!(!mentions_prefilter_word(no), "{no}");
        }
    }

    fn mig(sql: &str) -> Migration {
        Migration::new(
            0,
            "0000_x",
            1,
            PathBuf::from("m/0000_x.sql"),
            sql.as_bytes(),
        )
    }

    #[test]
    fn finds_statements_that_refuse_a_transaction() {
        for (sql, why) in [
            (
                "CREATE INDEX CONCURRENTLY \"i\" ON \"t\" (\"c\");",
                "CREATE INDEX CONCURRENTLY",
            ),
            (
                "create unique index concurrently i on t (c)",
                "CREATE UNIQUE INDEX CONCURRENTLY",
            ),
            (
                "DROP INDEX CONCURRENTLY IF EXISTS i;",
                "DROP INDEX CONCURRENTLY",
            ),
            (
                "REINDEX (VERBOSE) TABLE CONCURRENTLY t;",
                "REINDEX CONCURRENTLY",
            ),
            ("VACUUM (ANALYZE) t;", "VACUUM"),
            ("ALTER SYSTEM SET work_mem = '8MB';", "ALTER SYSTEM"),
            ("CREATE DATABASE x;", "CREATE DATABASE"),
        ] {
            let r = transaction_refusal(&mig(sql)).unwrap();
            assert!(r.as_deref().unwrap_or("").contains(why), "{sql}: {r:?}");
        }
    }

    #[test]
    fn ignores_lookalikes_in_comments_strings_and_bodies() {
        for sql in [
            "-- CREATE INDEX CONCURRENTLY i ON t (c)\nselect 1;",
            "/* VACUUM */ select 1;",
            "select 'VACUUM';",
            "CREATE FUNCTION f() RETURNS void AS $$ VACUUM; $$ LANGUAGE sql;",
            "CREATE INDEX i ON t (c);",
            "ALTER TABLE vacuum_log ADD COLUMN x int;",
        ] {
            assert_eq!(transaction_refusal(&mig(sql)), Ok(None), "{sql}");
        }
    }

    #[test]
    fn honours_the_marker_and_refuses_mixed_chunks() {
        let marked = mig("-- portcullis: no-transaction\nALTER TYPE t ADD VALUE 'x';");
        assert!(
            transaction_refusal(&marked)
                .unwrap()
                .unwrap()
                .contains("marked")
        );
        let mixed = mig("CREATE TABLE t (c int);\nCREATE INDEX CONCURRENTLY i ON t (c);");
        let err = transaction_refusal(&mixed).unwrap_err();
        assert!(err.starts_with("m/0000_x.sql:1:"), "{err}");
        assert!(err.contains("alone in its chunk"), "{err}");
        let split = mig(
            "CREATE TABLE t (c int);\n--> statement-breakpoint\nCREATE INDEX CONCURRENTLY i ON t (c);",
        );
        assert!(transaction_refusal(&split).unwrap().is_some());
    }

    #[test]
    fn finds_a_transaction_left_open_at_the_end() {
        let open = |chunks: &[&str]| leaves_transaction_open(chunks.iter().copied());
        assert!(open(&[
            "COMMIT;",
            "CREATE INDEX CONCURRENTLY i ON t (c);",
            "BEGIN;"
        ]));
        assert!(open(&["start transaction isolation level serializable;"]));
        assert!(!open(&["BEGIN;", "select 1;", "COMMIT;"]));
        assert!(!open(&["CREATE INDEX CONCURRENTLY i ON t (c);"]));
        // Not a statement of its own: a comment, a string, a PL/pgSQL body.
        assert!(!open(&["-- BEGIN;\nselect 'BEGIN';"]));
        assert!(!open(&["DO $$ BEGIN PERFORM 1; END $$;"]));
        assert!(!open(&["select 1; START fire;"]));
        // Neither a savepoint's ROLLBACK TO nor a prepared statement ends the block.
        assert!(open(&[
            "BEGIN;",
            "ROLLBACK WORK TO SAVEPOINT s;",
            "PREPARE q AS SELECT 1;"
        ]));
        // A BEGIN ATOMIC body's END closes the body, not the block.
        assert!(open(&[
            "BEGIN;",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;"
        ]));
    }

    #[test]
    fn statement_words_skip_non_code() {
        assert_eq!(
            statement_words("create /* x */ table \"T\" (a int); -- c\n;select 'x'"),
            vec![
                vec!["CREATE", "TABLE", "<literal>", "A", "INT"],
                vec!["SELECT", "<literal>"]
            ]
        );
    }
}
