//! Seeds: finding, ordering, checking and hashing the seed scripts, and choosing which of them a
//! run executes. Pure functions of names, bytes and recorded rows, plus [`load`], the thin disk
//! loader that runs them before any connection. Running them is `db::seeds`.
//!
//! A seed's name is its path under the seeds folder with `/` (`1_roles.sql`,
//! `staging/1_demo.sql`); that is what the tracking table records. The hash is the one drizzle
//! gives migrations (sha256 of the text, `source::split::hash`), so both read the same way.

use crate::config::{SeedMode, Seeds};
use crate::error::Error;
use crate::source::lexer;
use crate::source::split;
use std::cmp::Ordering;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The tracking table, created beside drizzle's in the migrations schema.
pub const TABLE: &str = "__portcullis_seeds";

/// One seed script, read and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The name recorded in the tracking table: its path under the seeds folder, with `/`.
    pub name: String,
    /// The file, under the configured folder (for messages).
    pub path: PathBuf,
    /// The file's text, exactly as read (a BOM is kept here and stripped before sending).
    pub text: String,
    /// Lowercase hex sha256 of `text`.
    pub hash: String,
}

impl Seed {
    pub fn new(name: &str, path: PathBuf, text: String) -> Seed {
        let hash = split::hash(&text);
        Seed {
            name: name.to_string(),
            path,
            text,
            hash,
        }
    }

    /// The file path for messages.
    pub fn file(&self) -> String {
        self.path.display().to_string()
    }

    /// What is sent to the server: the text without a leading BOM (which the server would
    /// reject as a syntax error), and how many bytes were left out in front.
    pub fn sendable(&self) -> (&str, usize) {
        match self.text.strip_prefix('\u{feff}') {
            Some(rest) => (rest, '\u{feff}'.len_utf8()),
            None => (&self.text, 0),
        }
    }
}

/// The seeds of one run, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSet {
    pub dir: PathBuf,
    pub env: Option<String>,
    /// Whether the seeds folder exists at all.
    pub exists: bool,
    pub seeds: Vec<Seed>,
    /// Lines worth an info log (a missing folder, a missing env folder).
    pub notes: Vec<String>,
    /// Lines worth a warning (a seed that changes the seeds' timeouts).
    pub warnings: Vec<String>,
}

/// A row of the tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub hash: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS UTC`.
    pub first_applied_at: String,
    pub last_applied_at: String,
    pub run_count: i64,
}

/// A seed file compared with its tracking row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No row: it never ran here.
    New,
    /// A row with another hash: the file was edited since it last ran.
    Changed,
    /// A row with this hash.
    Applied,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::New => "new",
            State::Changed => "changed",
            State::Applied => "applied",
        }
    }
}

/// The state of `seed` against the recorded rows.
pub fn state(seed: &Seed, records: &[Record]) -> State {
    match records.iter().find(|r| r.name == seed.name) {
        None => State::New,
        Some(r) if r.hash == seed.hash => State::Applied,
        Some(_) => State::Changed,
    }
}

/// Whether `mode` runs a seed in `state`: `always` runs every file, `changed` only new and
/// edited ones (like Flyway's repeatable scripts).
pub fn runs(mode: SeedMode, state: State) -> bool {
    mode == SeedMode::Always || state != State::Applied
}

/// The seeds this run executes, in order, each with its state.
pub fn select<'a>(seeds: &'a [Seed], records: &[Record], mode: SeedMode) -> Vec<(&'a Seed, State)> {
    seeds
        .iter()
        .map(|s| (s, state(s, records)))
        .filter(|(_, st)| runs(mode, *st))
        .collect()
}

/// Natural order: runs of digits compare as numbers (`2_x` before `10_y`), everything else byte
/// by byte; names equal that way (`01_a`, `1_a`) fall back to plain byte order, so the order is
/// total and never depends on the file system.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let n = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let m = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let strip = |digits: &'_ [u8]| -> usize {
                    digits.iter().take_while(|&&c| c == b'0').count()
                };
                let (dx, dy) = (&x[strip(&x[..n])..n], &y[strip(&y[..m])..m]);
                let by_value = dx.len().cmp(&dy.len()).then_with(|| dx.cmp(dy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                x = &x[n..];
                y = &y[m..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// Statements that would end or restart the seeds' transaction (`BEGIN`, `START
/// TRANSACTION`, `COMMIT`, `END`, `ABORT`, `PREPARE TRANSACTION`, `ROLLBACK` but not
/// `ROLLBACK [WORK | TRANSACTION] TO` a savepoint), with their ranges: a seed that commits
/// half-way would break "all the reference data or none", and lose the transaction's
/// lock_timeout and seed variables. The words are the lexer's (comments, strings and bodies
/// left out); the `END` that closes a `BEGIN ATOMIC` function body is not one of them.
pub fn transaction_control(text: &str) -> Vec<(Range<usize>, String)> {
    let mut controls = lexer::BlockControls::default();
    lexer::statement_ranges(text)
        .into_iter()
        .filter_map(|r| {
            let words = lexer::statement_words(&text[r.clone()]).concat();
            controls.next(&words).map(|_| (r, words[0].clone()))
        })
        .collect()
}

/// One `*.sql` entry of a seeds folder: its name under the seeds folder, its path, and its
/// bytes or why they could not be read.
pub type SeedFile = (String, PathBuf, Result<Vec<u8>, String>);

/// Checks and orders the files of one folder: `files` are (name under the seeds folder, file
/// path, bytes or the read error). Returns the seeds in natural order, or every problem.
pub fn build(files: Vec<SeedFile>) -> Result<Vec<Seed>, Vec<String>> {
    let mut files = files;
    files.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    let mut seeds = Vec::new();
    let mut problems = Vec::new();
    for (name, path, bytes) in files {
        let shown = path.display().to_string();
        let stem = name.rsplit('/').next().unwrap_or(&name);
        if stem
            .trim()
            .strip_suffix(".sql")
            .unwrap_or(stem)
            .trim()
            .is_empty()
        {
            problems.push(format!(
                "{shown}: a seed file needs a name before .sql (e.g. 1_roles.sql), which is what \
                 the tracking table records; rename it"
            ));
            continue;
        }
        let bytes = match bytes {
            Ok(b) => b,
            Err(why) => {
                problems.push(format!(
                    "{shown}: cannot read the seed file ({why}). A seed must be a regular file \
                     the user portcullis runs as can read: fix its permissions (or what its \
                     link points to), or remove it"
                ));
                continue;
            }
        };
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let (line, column) = split::line_col(
                    &String::from_utf8_lossy(e.as_bytes()),
                    e.utf8_error().valid_up_to(),
                );
                problems.push(format!(
                    "{shown}:{line}:{column}: the seed file is not valid UTF-8; save it as UTF-8"
                ));
                continue;
            }
        };
        let seed = Seed::new(&name, path, text);
        let (sent, skipped) = seed.sendable();
        for (range, word) in transaction_control(sent) {
            let (line, column) = split::line_col(&seed.text, skipped + range.start);
            problems.push(format!(
                "{shown}:{line}:{column}: {word} would end the transaction all seeds run in, so \
                 a later failure could no longer roll this seed back; remove it (portcullis runs \
                 the seeds in one transaction of its own)"
            ));
        }
        for (at, item) in lexer::client_only(sent) {
            let (line, column) = split::line_col(&seed.text, skipped + at);
            problems.push(format!("{shown}:{line}:{column}: {}", item.explain()));
        }
        seeds.push(seed);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(seeds)
}

/// Reads the seeds folder (and its `<env>/` subfolder) before any connection. A missing folder
/// means no seeds; an unreadable file, a file without a name, invalid UTF-8 or transaction
/// control in a seed is a folder error (exit 3), all listed together.
pub fn load(cfg: &Seeds) -> Result<SeedSet, Error> {
    let dir = &cfg.dir;
    let mut set = SeedSet {
        dir: dir.clone(),
        env: cfg.env.clone(),
        exists: false,
        seeds: Vec::new(),
        notes: Vec::new(),
        warnings: Vec::new(),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => set.exists = true,
        Ok(_) => {
            return Err(Error::Source(format!(
                "the seeds folder {} is not a directory. Point PORTCULLIS_SEEDS_DIR (or \
                 --seeds-dir) at the folder that holds the seed .sql files.",
                dir.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            set.notes.push(format!(
                "no seeds: {} does not exist (PORTCULLIS_SEEDS_DIR), so there is nothing to seed",
                dir.display()
            ));
            return Ok(set);
        }
        Err(e) => {
            return Err(Error::Source(format!(
                "the seeds folder {} cannot be read ({e}). Make it readable by the user \
                 portcullis runs as, or point PORTCULLIS_SEEDS_DIR elsewhere.",
                dir.display()
            )));
        }
    }
    let mut problems = Vec::new();
    let mut seeds = build(read_sql_files(dir, "")?).unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    if let Some(env) = &cfg.env {
        let sub = dir.join(env);
        if sub.is_dir() {
            match build(read_sql_files(&sub, &format!("{env}/"))?) {
                Ok(specific) => seeds.extend(specific),
                Err(p) => problems.extend(p),
            }
        } else {
            set.notes.push(format!(
                "no seeds for PORTCULLIS_SEED_ENV={env}: {} does not exist, so only the common \
                 seeds run",
                sub.display()
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Source(crate::source::problems_message(
            "seeds", &problems,
        )));
    }
    for seed in &seeds {
        let (sent, skipped) = seed.sendable();
        for (at, setting) in session_settings(sent) {
            let (line, column) = split::line_col(&seed.text, skipped + at);
            set.warnings.push(format!(
                "{}:{line}:{column}: {}",
                seed.file(),
                setting.explain()
            ));
        }
    }
    set.seeds = seeds;
    Ok(set)
}

/// A setting a seed changes for the seeds after it in the same transaction (what pg_dump's
/// header sets), which a seed author rarely means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSetting {
    LockTimeout,
    StatementTimeout,
    SearchPath,
}

impl SessionSetting {
    /// The warning's text, after the file:line:column.
    pub fn explain(self) -> String {
        match self {
            SessionSetting::LockTimeout | SessionSetting::StatementTimeout => {
                let (setting, variable) = if self == SessionSetting::LockTimeout {
                    ("lock_timeout", "PORTCULLIS_DDL_LOCK_TIMEOUT")
                } else {
                    ("statement_timeout", "PORTCULLIS_STATEMENT_TIMEOUT")
                };
                format!(
                    "SET {setting} replaces the {setting} portcullis gives the seeds' \
                     transaction ({variable}) for every seed that runs after it; pg_dump writes \
                     it as 0 (no limit), and then a seed that waits for a lock the app holds \
                     waits without bound. Remove the line unless that is meant"
                )
            }
            SessionSetting::SearchPath => "this sets search_path for every seed that runs \
                 after it (pg_dump sets it to '', so that only schema-qualified names resolve), \
                 and a later seed's unqualified table name then fails with \"relation does not \
                 exist\". Remove the line unless that is meant, or qualify the names"
                .to_string(),
        }
    }
}

/// The top-level statements of `text` that change a [`SessionSetting`]: `SET [SESSION | LOCAL]
/// lock_timeout`, `statement_timeout` or `search_path`, and pg_dump's `SELECT
/// pg_catalog.set_config('search_path', ...)`; where each starts.
pub fn session_settings(text: &str) -> Vec<(usize, SessionSetting)> {
    let mentions = |needle: &[u8]| {
        text.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    // Most seeds mention none of them: skip the lexer for those.
    if !mentions(b"_timeout") && !mentions(b"search_path") {
        return Vec::new();
    }
    lexer::statement_ranges(text)
        .into_iter()
        .filter_map(|r| {
            let words = lexer::statement_words(&text[r.clone()]).concat();
            let word = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
            // SET [SESSION | LOCAL] <name>
            let set_name = if matches!(word(1), "SESSION" | "LOCAL") {
                word(2)
            } else {
                word(1)
            };
            let setting = match (word(0), set_name) {
                ("SET", "LOCK_TIMEOUT") => SessionSetting::LockTimeout,
                ("SET", "STATEMENT_TIMEOUT") => SessionSetting::StatementTimeout,
                ("SET", "SEARCH_PATH") => SessionSetting::SearchPath,
                // The setting's name is a literal here: read it from the statement itself.
                ("SELECT", _)
                    if words.iter().any(|w| w == "SET_CONFIG")
                        && sets_search_path(&text[r.clone()].to_ascii_lowercase()) =>
                {
                    SessionSetting::SearchPath
                }
                _ => return None,
            };
            Some((r.start, setting))
        })
        .collect()
}

/// A seed that cannot find a name (a table, function or type) after a seed before it in this
/// transaction, or an earlier statement of its own, changed search_path (pg_dump's header sets
/// it to ''): the advice names that line, which "fix the SQL in <this file>" would not lead to.
/// `ran` are the seeds sent in this transaction, in order, the failed one last; a seed that
/// `changed` mode left out changed nothing and is not among them.
pub fn search_path_changed_before<'a>(e: Error, ran: impl IntoIterator<Item = &'a Seed>) -> Error {
    let Error::SeedFailed(mut failure) = e else {
        return e;
    };
    // A failure that already has its own advice (a seed variable not given, also 42704) keeps it.
    if failure.advice.is_some() || !matches!(failure.sqlstate.as_str(), "42P01" | "42883" | "42704")
    {
        return Error::SeedFailed(failure);
    }
    let changed = ran
        .into_iter()
        .flat_map(|s| {
            let (sent, skipped) = s.sendable();
            session_settings(sent)
                .into_iter()
                .filter(|(_, setting)| *setting == SessionSetting::SearchPath)
                .map(move |(at, _)| (s, skipped + at))
        })
        .find(|(s, at)| {
            // In the failed seed itself, only a line before the failed statement counts.
            s.name != failure.name || split::line_col(&s.text, *at).0 < failure.line
        });
    if let Some((s, at)) = changed {
        let (line, column) = split::line_col(&s.text, at);
        failure.advice = Some(format!(
            "{}:{line}:{column} sets search_path for what runs after it in the seeds' \
             transaction (pg_dump writes that line), so this unqualified name no longer \
             resolves. Remove that line, or qualify the name (public.<name>), then deploy again.",
            s.file()
        ));
    }
    Error::SeedFailed(failure)
}

/// Whether a (lower-cased) statement calls `set_config('search_path', ...)`: the setting is its
/// first argument.
fn sets_search_path(statement: &str) -> bool {
    statement.match_indices("set_config").any(|(i, _)| {
        statement[i + "set_config".len()..]
            .trim_start()
            .strip_prefix('(')
            .is_some_and(|args| args.trim_start().starts_with("'search_path'"))
    })
}

/// The `*.sql` entries of one folder as (name, path, bytes or error). Subfolders are not seeds
/// (except the env folder, read separately); an entry named `*.sql` that cannot be read as a
/// file is reported by `build`.
fn read_sql_files(dir: &Path, prefix: &str) -> Result<Vec<SeedFile>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Source(format!(
            "the seeds folder {} cannot be listed ({e}). Make it readable by the user portcullis \
             runs as.",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::Source(format!(
                "the seeds folder {} cannot be listed ({e}).",
                dir.display()
            ))
        })?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            if entry.file_name().as_encoded_bytes().ends_with(b".sql") {
                files.push((
                    format!("{prefix}{}", entry.file_name().to_string_lossy()),
                    path,
                    Err("its name is not valid UTF-8, so it cannot be recorded; rename it".into()),
                ));
            }
            continue;
        };
        if !name.ends_with(".sql") {
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                Err("it is a directory".to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("it is a broken symbolic link".to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        files.push((format!("{prefix}{name}"), path, bytes));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_changing_the_session_is_found_and_other_settings_are_not() {
        use SessionSetting::*;
        let dump = "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET \
                    idle_in_transaction_session_timeout = 0;\nSELECT \
                    pg_catalog.set_config('search_path', '', false);\n";
        assert_eq!(
            session_settings(dump),
            [(0, StatementTimeout), (27, LockTimeout), (94, SearchPath)]
        );
        assert_eq!(
            session_settings(
                "set local lock_timeout to '1s'; SET SESSION statement_timeout = 5; set \
                 search_path = app;"
            ),
            [(0, LockTimeout), (32, StatementTimeout), (67, SearchPath)]
        );
        for no in [
            "-- SET lock_timeout = 0;\nselect 1;",
            "insert into t values ('SET lock_timeout = 0');",
            "RESET lock_timeout;",
            "SET work_mem = '64MB';",
            "select set_config('portcullis.x', 'search_path', true);",
            "select current_setting('search_path');",
        ] {
            assert_eq!(session_settings(no), [], "{no}");
        }
    }

    fn file(name: &str, sql: &str) -> SeedFile {
        (
            name.to_string(),
            PathBuf::from(format!("seeds/{name}")),
            Ok(sql.as_bytes().to_vec()),
        )
    }

    fn names(seeds: &[Seed]) -> Vec<&str> {
        seeds.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut v = vec![
            "10_y.sql",
            "2_x.sql",
            "1_b.sql",
            "1_a.sql",
            "01_a.sql",
            "b.sql",
            "a10.sql",
            "a9.sql",
            "20240101_z.sql",
            "3.sql",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "01_a.sql",
                "1_a.sql",
                "1_b.sql",
                "2_x.sql",
                "3.sql",
                "10_y.sql",
                "20240101_z.sql",
                "a9.sql",
                "a10.sql",
                "b.sql"
            ]
        );
        assert_eq!(natural_cmp("2_x", "10_y"), Ordering::Less);
        assert_eq!(natural_cmp("x", "x"), Ordering::Equal);
        // Longer than any integer type: still compared by value.
        assert_eq!(
            natural_cmp("99999999999999999999999_a", "100000000000000000000000_a"),
            Ordering::Less
        );
    }

    #[test]
    fn build_orders_hashes_and_keeps_the_text() {
        let seeds = build(vec![
            file("10_y.sql", "select 10;"),
            file("2_x.sql", "\u{feff}select 2;"),
        ])
        .unwrap();
        assert_eq!(names(&seeds), ["2_x.sql", "10_y.sql"]);
        assert_eq!(seeds[0].hash, split::hash("\u{feff}select 2;"));
        assert_eq!(seeds[0].sendable(), ("select 2;", 3));
        assert_eq!(seeds[1].sendable(), ("select 10;", 0));
    }

    #[test]
    fn build_lists_every_problem() {
        let problems = build(vec![
            file(".sql", "select 1;"),
            file("staging/.sql", "select 1;"),
            (
                "1_gone.sql".into(),
                PathBuf::from("seeds/1_gone.sql"),
                Err("permission denied".into()),
            ),
            (
                "2_latin1.sql".into(),
                PathBuf::from("seeds/2_latin1.sql"),
                Ok(b"select 1;\nselect 'caf\xe9';".to_vec()),
            ),
            file(
                "3_commit.sql",
                "insert into t values (1);\n  COMMIT;\nrollback to savepoint a;",
            ),
            file("4_ok.sql", "select 1;"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("seeds/.sql: a seed file needs a name"));
        assert!(
            problems[1].contains("seeds/1_gone.sql: cannot read the seed file (permission denied)")
        );
        assert!(
            problems[2].starts_with("seeds/2_latin1.sql:2:12: the seed file is not valid UTF-8")
        );
        assert!(
            problems[3].starts_with("seeds/3_commit.sql:2:3: COMMIT would end the transaction")
        );
        assert!(problems[4].starts_with("seeds/staging/.sql"));
    }

    #[test]
    fn transaction_control_is_found_outside_strings_and_bodies() {
        let found: Vec<String> = transaction_control(
            "begin;\nselect 'commit;';\ndo $$ begin perform 1; end $$;\nstart transaction;\n\
             rollback to savepoint s;\nrollback work to s;\nrollback transaction to savepoint s;\n\
             rollback;\nabort;\ncommit;\nstart_x();\n-- commit;\nend;\nprepare transaction 'x';\n\
             prepare q as select 1;\ncreate function f() returns int language sql\n\
             begin atomic select 1; select 2; end;\nselect 'begin atomic';\nend work;",
        )
        .into_iter()
        .map(|(_, w)| w)
        .collect();
        assert_eq!(
            found,
            [
                "BEGIN", "START", "ROLLBACK", "ABORT", "COMMIT", "END", "PREPARE", "END"
            ]
        );
    }

    fn record(name: &str, hash: &str) -> Record {
        Record {
            name: name.into(),
            hash: hash.into(),
            first_applied_at: String::new(),
            last_applied_at: String::new(),
            run_count: 1,
        }
    }

    #[test]
    fn modes_choose_what_runs() {
        let seeds = build(vec![
            file("1_a.sql", "select 1;"),
            file("2_b.sql", "select 2;"),
            file("3_c.sql", "select 3;"),
        ])
        .unwrap();
        let records = vec![
            record("1_a.sql", &seeds[0].hash),
            record("2_b.sql", "0000"),
            record("9_gone.sql", "1111"),
        ];
        let states: Vec<State> = seeds.iter().map(|s| state(s, &records)).collect();
        assert_eq!(states, [State::Applied, State::Changed, State::New]);
        let always: Vec<&str> = select(&seeds, &records, SeedMode::Always)
            .iter()
            .map(|(s, _)| s.name.as_str())
            .collect();
        assert_eq!(always, ["1_a.sql", "2_b.sql", "3_c.sql"]);
        let changed: Vec<&str> = select(&seeds, &records, SeedMode::Changed)
            .iter()
            .map(|(s, _)| s.name.as_str())
            .collect();
        assert_eq!(changed, ["2_b.sql", "3_c.sql"]);
    }
}
