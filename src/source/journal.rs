//! Parsing `meta/_journal.json` the way drizzle-orm 0.x reads it (drizzle-compat.md 1.2, 1.3,
//! E14-E16, E20), with every problem collected instead of only the first.

use serde_json::Value;

/// One journal entry as the migrator uses it: the file stem and the `when` that becomes
/// `created_at`. `position` is the 0-based index in the `entries` array (application order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub position: usize,
    pub tag: String,
    pub when: i64,
}

/// A parsed journal, with the things worth a warning that drizzle would accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    pub entries: Vec<JournalEntry>,
    pub warnings: Vec<String>,
}

/// Parses journal bytes. `name` is how to refer to the file in messages. On failure returns every
/// problem found, each a sentence naming the entry.
pub fn parse(bytes: &[u8], name: &str) -> Result<Journal, Vec<String>> {
    let mut warnings = Vec::new();
    let text = String::from_utf8_lossy(bytes);
    // Drizzle's JSON.parse fails on a BOM; an editor adds one easily, so accept it, loudly (E8).
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            warnings.push(format!(
                "{name} starts with a UTF-8 byte order mark, which drizzle-kit cannot parse; \
                 portcullis ignores it, but save the file without a BOM to keep drizzle-kit working"
            ));
            rest.to_string()
        }
        None => text.into_owned(),
    };
    // Value first, so duplicate keys behave like JSON.parse (last one wins) (E16).
    let root: Value = serde_json::from_str(&text).map_err(|e| {
        vec![format!(
            "{name}:{}:{}: malformed JSON: {}. drizzle-kit writes this file; if you edited it by \
             hand or resolved a merge conflict in it, fix the syntax at that line (git conflict \
             markers, trailing commas and comments are not allowed)",
            e.line(),
            e.column(),
            describe_json_error(&e)
        )]
    })?;
    let Some(entries) = root.get("entries") else {
        return Err(vec![format!(
            "{name}: no \"entries\" array; this does not look like a drizzle-kit journal"
        )]);
    };
    let Some(entries) = entries.as_array() else {
        return Err(vec![format!(
            "{name}: \"entries\" is not an array; this does not look like a drizzle-kit journal"
        )]);
    };

    let mut problems = Vec::new();
    // drizzle's migrator never reads `dialect`; but a folder generated for another database
    // holds that database's SQL, which would fail part-way. (`postgresql`, and `pg` from older
    // kits, are PostgreSQL; an unknown value is left alone.)
    if let Some(Value::String(dialect)) = root.get("dialect") {
        let other = match dialect.as_str() {
            "mysql" => Some("MySQL"),
            "sqlite" | "turso" | "libsql" => Some("SQLite"),
            "singlestore" => Some("SingleStore"),
            "mssql" => Some("SQL Server"),
            _ => None,
        };
        if let Some(other) = other {
            problems.push(format!(
                "{name} says \"dialect\": \"{dialect}\": drizzle-kit generated these migrations \
                 for {other}, not PostgreSQL, and their SQL would fail here. Point \
                 PORTCULLIS_MIGRATIONS_DIR at the `out` folder of the drizzle.config whose \
                 dialect is 'postgresql'"
            ));
        }
    }
    let mut parsed = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        // Messages only: built when there is something to say, not for every entry.
        let label = || format!("{name}: entry {position}");
        let Some(obj) = entry.as_object() else {
            problems.push(format!("{} is not an object", label()));
            continue;
        };
        let tag = match obj.get("tag") {
            Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
            Some(Value::String(_)) => {
                problems.push(format!("{} has an empty \"tag\"", label()));
                None
            }
            None | Some(Value::Null) => {
                problems.push(format!(
                    "{} has no \"tag\" (drizzle would look for a file named undefined.sql); \
                     add the tag, the file name without .sql",
                    label()
                ));
                None
            }
            Some(other) => {
                problems.push(format!(
                    "{} has a \"tag\" that is not a string: {other}",
                    label()
                ));
                None
            }
        };
        if let Some(tag) = &tag {
            if let Some(why) = unsafe_tag(tag) {
                problems.push(format!("{} (tag {tag:?}): {why}", label()));
            } else if tag.contains('/') {
                warnings.push(format!(
                    "{} (tag {tag:?}) contains '/', so its file lives in a subfolder",
                    label()
                ));
            }
        }
        let label = || match &tag {
            // Escaped, so that a tag cannot put a newline or an escape code into a message.
            Some(t) if t.chars().any(char::is_control) => format!("{} (tag {t:?})", label()),
            Some(t) => format!("{} (tag {t})", label()),
            None => label(),
        };
        let when = match obj.get("when") {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(w) if i64::try_from(w).is_ok() => Some(w as i64),
                _ => {
                    problems.push(format!(
                        "{}: \"when\" is {n}, but it must be a non-negative whole number of \
                         milliseconds (drizzle-kit writes Date.now())",
                        label()
                    ));
                    None
                }
            },
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                warnings.push(format!(
                    "{}: \"when\" is the string \"{s}\"; drizzle compares it as a number, \
                     and so does portcullis, but it should be written as a number",
                    label()
                ));
                s.parse().ok()
            }
            None | Some(Value::Null) => {
                problems.push(format!(
                    "{} has no \"when\"; drizzle would record it with a NULL created_at, \
                     which makes it re-run every migration later. Add the generation time in \
                     milliseconds",
                    label()
                ));
                None
            }
            Some(other) => {
                problems.push(format!(
                    "{}: \"when\" is {other}, but it must be a non-negative whole number of \
                     milliseconds (drizzle-kit writes Date.now())",
                    label()
                ));
                None
            }
        };
        if let (Some(tag), Some(when)) = (tag, when) {
            parsed.push(JournalEntry {
                position,
                tag,
                when,
            });
        }
    }

    // Duplicate tags: the same file would run twice in one batch (E14). A map, not a scan of the
    // entries before each one: a journal of 100k entries must not take minutes.
    let mut first_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for e in &parsed {
        if let Some(first) = first_of.get(e.tag.as_str()) {
            problems.push(format!(
                "{name}: entries {} and {} have the same tag {}; the same file would be applied \
                 twice. Remove the duplicate entry (a leftover of a merge?)",
                first, e.position, e.tag
            ));
        } else {
            first_of.insert(&e.tag, e.position);
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Order quirks drizzle accepts: worth a warning, since they hide migrations later (E18).
    for pair in parsed.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.when < a.when {
            warnings.push(format!(
                "{name}: entry {} ({}) has an older \"when\" than entry {} ({}) before it; \
                 drizzle skips such entries once a newer one is applied (usually the result of \
                 merging branches)",
                b.position, b.tag, a.position, a.tag
            ));
        } else if b.when == a.when {
            warnings.push(format!(
                "{name}: entries {} ({}) and {} ({}) have the same \"when\" {}; drizzle tells \
                 migrations apart by \"when\", so give each a distinct value",
                a.position, a.tag, b.position, b.tag, a.when
            ));
        }
    }
    Ok(Journal {
        entries: parsed,
        warnings,
    })
}

/// Why a tag must not be used as a path, if it must not: absolute paths and `..` components
/// would read files outside the migrations folder (E15).
fn unsafe_tag(tag: &str) -> Option<&'static str> {
    if tag.starts_with('/') || tag.starts_with('\\') {
        return Some("is an absolute path; tags must name a file inside the migrations folder");
    }
    if tag.split(['/', '\\']).any(|part| part == "..") {
        return Some("contains '..'; tags must name a file inside the migrations folder");
    }
    if tag.contains('\0') {
        return Some("contains a NUL character");
    }
    // A newline or an escape sequence in a tag would forge log lines, break the one-line
    // termination message and put control codes on the operator's terminal.
    if tag.chars().any(char::is_control) {
        return Some(
            "contains a control character (a newline, tab or escape); tags are file names",
        );
    }
    None
}

fn describe_json_error(e: &serde_json::Error) -> String {
    // serde_json's Display appends "at line L column C", which we already put in front.
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "migrations/meta/_journal.json";

    fn ok(json: &str) -> Journal {
        parse(json.as_bytes(), NAME).unwrap()
    }

    fn problems(json: &str) -> Vec<String> {
        parse(json.as_bytes(), NAME).unwrap_err()
    }

    #[test]
    fn reads_entries_in_array_order() {
        let j = ok(r#"{"version":"7","dialect":"postgresql","entries":[
            {"idx":1,"version":"7","when":1700000000002,"tag":"0001_b","breakpoints":true},
            {"idx":0,"version":"7","when":1700000000001,"tag":"0000_a","breakpoints":true,"extra":1}
        ]}"#);
        let tags: Vec<_> = j.entries.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(tags, ["0001_b", "0000_a"]);
        assert_eq!(j.entries[0].when, 1700000000002);
        assert_eq!(j.entries[1].position, 1);
        // Decreasing `when` is accepted, with a warning naming both entries.
        assert_eq!(j.warnings.len(), 1);
        assert!(j.warnings[0].contains("0000_a"), "{:?}", j.warnings);
    }

    #[test]
    fn a_journal_for_another_database_is_refused_and_postgres_ones_are_not() {
        let journal = |dialect: &str| {
            format!(
                r#"{{"version":"7","dialect":"{dialect}","entries":[{{"idx":0,"version":"7","when":1,"tag":"0000_a","breakpoints":true}}]}}"#
            )
        };
        let p = problems(&journal("mysql"));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with(&format!(
                "{NAME} says \"dialect\": \"mysql\": drizzle-kit generated these migrations for \
                 MySQL, not PostgreSQL"
            )),
            "{}",
            p[0]
        );
        assert!(problems(&journal("sqlite"))[0].contains("for SQLite"));
        for postgres in ["postgresql", "pg", "cockroach", "something new"] {
            assert_eq!(ok(&journal(postgres)).entries.len(), 1, "{postgres}");
        }
    }

    #[test]
    fn empty_entries_are_fine() {
        assert!(ok(r#"{"entries":[]}"#).entries.is_empty());
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let p = problems("{\n  \"entries\": [\n    {\"tag\": \"a\", \"when\": 1,},\n  ]\n}");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with(&format!("{NAME}:3:")), "{}", p[0]);
        assert!(p[0].contains("malformed JSON"));
        let p = problems("<<<<<<< HEAD\n{}");
        assert!(p[0].starts_with(&format!("{NAME}:1:1")), "{}", p[0]);
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let p = problems(
            r#"{"entries":[
            {"when":1},
            {"tag":"0001_x","when":"soon"},
            {"tag":"0002_y","when":1.5},
            {"tag":"0003_z","when":-4},
            {"tag":"0004_w"},
            {"tag":"../../etc/passwd","when":5},
            {"tag":"0006_v","when":6},
            {"tag":"0006_v","when":7}
        ]}"#,
        );
        let all = p.join("\n");
        assert!(all.contains("entry 0 has no \"tag\""), "{all}");
        assert!(all.contains("undefined.sql"), "{all}");
        assert!(all.contains("0001_x"), "{all}");
        assert!(all.contains("0002_y"), "{all}");
        assert!(all.contains("0003_z"), "{all}");
        assert!(all.contains("0004_w) has no \"when\""), "{all}");
        assert!(all.contains("'..'"), "{all}");
        assert!(all.contains("same tag 0006_v"), "{all}");
        assert_eq!(p.len(), 7, "{all}");
    }

    #[test]
    fn control_characters_in_tags_are_refused() {
        // A newline would forge a log line; an escape sequence would reach the terminal.
        for tag in [
            "0001_a\\n2026 INFO forged",
            "0001_\\u001b[31mred",
            "0001_\\tx",
        ] {
            let p = problems(&format!(r#"{{"entries":[{{"tag":"{tag}","when":1}}]}}"#));
            assert_eq!(p.len(), 1, "{tag}: {p:?}");
            assert!(p[0].contains("control character"), "{p:?}");
            assert!(!p[0].contains('\n') && !p[0].contains('\u{1b}'), "{p:?}");
        }
        // Other problems of the same entry do not show it raw either.
        let p = problems(r#"{"entries":[{"tag":"a\nb","when":-1}]}"#);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().all(|p| !p.contains('\n')), "{p:?}");
        assert!(
            ok(r#"{"entries":[{"tag":"0001_é_🚀","when":1}]}"#)
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn duplicate_tags_name_the_first_entry() {
        let p = problems(
            r#"{"entries":[{"tag":"a","when":1},{"tag":"b","when":2},{"tag":"a","when":3},{"tag":"a","when":4}]}"#,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("entries 0 and 2"), "{p:?}");
        assert!(p[1].contains("entries 0 and 3"), "{p:?}");
    }

    #[test]
    fn compatibility_quirks_are_accepted_with_warnings() {
        // BOM, numeric-string `when`, duplicate keys (last wins, like JSON.parse).
        let j = ok("\u{feff}{\"entries\":[{\"tag\":\"a\",\"when\":\"17\",\"when\":\"18\"}]}");
        assert_eq!(j.entries[0].when, 18);
        assert_eq!(j.warnings.len(), 2, "{:?}", j.warnings);
    }

    #[test]
    fn structural_problems() {
        assert!(problems(r#"{"version":"7"}"#)[0].contains("no \"entries\""));
        assert!(problems(r#"{"entries":{}}"#)[0].contains("not an array"));
        assert!(problems(r#"{"entries":[3]}"#)[0].contains("not an object"));
    }
}
