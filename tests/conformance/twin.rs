//! Twin databases and their comparison: scratch folders, journal prefixes ("the first k
//! migrations"), the state of a database (`pg_dump` plus tracking rows) and a readable diff.

use crate::{kit, run, support};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default tracking table, as drizzle writes it.
pub const TRACKING: &str = "\"drizzle\".\"__drizzle_migrations\"";

/// A scratch folder under `target/tmp/conformance-work/`, removed on drop. Folders left behind
/// by a killed run (and the process-wide generated folder) are removed by the next run.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Scratch {
    /// Keeps the folder for the rest of the process (for process-wide fixtures).
    pub fn keep(self) -> PathBuf {
        let path = self.0.clone();
        std::mem::forget(self);
        path
    }
}

pub fn scratch(label: &str) -> Scratch {
    static N: AtomicUsize = AtomicUsize::new(0);
    static SWEEP: Once = Once::new();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-work");
    SWEEP.call_once(|| {
        // `<pid>-<n>-<label>` of processes that are gone.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().unwrap_or_default();
                if pid != std::process::id().to_string() && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
    let dir = base.join(format!(
        "{}-{}-{label}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    Scratch(dir)
}

/// The journal of `folder`, parsed.
pub fn journal(folder: &Path) -> serde_json::Value {
    let path = folder.join("meta/_journal.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The journal's tags, in order.
pub fn tags(folder: &Path) -> Vec<String> {
    journal(folder)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["tag"].as_str().expect("tag").to_string())
        .collect()
}

/// A copy of `folder` whose journal holds only its first `k` entries (and only their files): how
/// a deploy of an older commit sees the folder, and how one tool is given "the first k".
pub fn prefix(folder: &Path, k: usize) -> Scratch {
    let out = scratch(&format!("prefix{k}"));
    std::fs::create_dir_all(out.join("meta")).unwrap();
    let mut journal = journal(folder);
    let entries = journal["entries"].as_array_mut().expect("entries");
    assert!(
        k <= entries.len(),
        "prefix {k} of {} entries",
        entries.len()
    );
    entries.truncate(k);
    for e in entries.iter() {
        let file = format!("{}.sql", e["tag"].as_str().expect("tag"));
        let dest = out.join(&file);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(folder.join(&file), &dest).unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
    // drizzle-kit's own format: 2-space JSON, no trailing newline.
    std::fs::write(
        out.join("meta/_journal.json"),
        serde_json::to_string_pretty(&journal).unwrap(),
    )
    .unwrap();
    out
}

/// Everything a migration run can leave behind in one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `pg_dump` (schema and data), normalised by [`normalise_dump`].
    pub dump: String,
    /// The tracking rows as (hash, created_at::text), in id order.
    pub rows: Vec<(String, String)>,
}

/// The state of `url`'s database, with the default tracking table.
pub fn state(url: &str) -> State {
    state_of(url, TRACKING)
}

/// The state with the tracking table `table` (already quoted). No tracking table: no rows.
pub fn state_of(url: &str, table: &str) -> State {
    let exists = support::query(
        url,
        &format!("select to_regclass('{}')::text", table.replace('\'', "''")),
    )[0][0]
        .is_some();
    State {
        dump: dump(url),
        rows: if exists {
            run::rows_of(url, table)
        } else {
            Vec::new()
        },
    }
}

/// `pg_dump` of the whole database, normalised. Schema *and* data: custom migrations run DML,
/// so the data is compared too (nothing in these migrations writes a time or random value), and
/// so are the sequences' positions and the tracking table's ids.
pub fn dump(url: &str) -> String {
    let bin = support::pg_bin_dir()
        .unwrap_or_else(|e| panic!("no PostgreSQL client binaries for pg_dump: {e}"))
        .join("pg_dump");
    let out = std::process::Command::new(&bin)
        .arg("--no-password")
        .arg(format!("--dbname={url}"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "pg_dump {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    normalise_dump(&String::from_utf8(out.stdout).expect("pg_dump prints UTF-8"))
}

/// Removes what legitimately differs between two dumps of equivalent databases, and nothing
/// else:
/// - `--` comment lines: the header names the server and pg_dump versions, and the per-object
///   `-- Name: ...; Type: ...; Schema: ...; Owner: ...` lines only repeat the statement below;
/// - `\restrict <key>` / `\unrestrict <key>` (pg_dump 15.14+, CVE-2025-8714): a random key per
///   run;
/// - blank lines (left over from the removed comments).
///
/// The database name never appears (no `--create`). Everything else (every statement, every
/// `SET`, every row of data, `setval` of every sequence, owners and privileges) must match.
pub fn normalise_dump(dump: &str) -> String {
    dump.lines()
        .filter(|l| {
            !(l.starts_with("--")
                || l.starts_with("\\restrict ")
                || l.starts_with("\\unrestrict ")
                || l.trim().is_empty())
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Panics with a readable difference unless `got` equals `want`.
#[track_caller]
pub fn assert_same(what: &str, got: &State, want: &State) {
    if got.rows != want.rows {
        panic!(
            "{what}: the tracking rows differ from drizzle-kit's\n--- drizzle-kit alone ({} rows)\n{}\n--- this database ({} rows)\n{}",
            want.rows.len(),
            show_rows(&want.rows),
            got.rows.len(),
            show_rows(&got.rows)
        );
    }
    if got.dump != want.dump {
        panic!(
            "{what}: pg_dump differs from the database drizzle-kit migrated alone\n{}",
            first_difference(&want.dump, &got.dump)
        );
    }
}

fn show_rows(rows: &[(String, String)]) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, (h, c))| format!("  {}: {h} {c}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first differing line of two texts, with context, as `-` (want) / `+` (got).
pub fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let at = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    let from = at.saturating_sub(4);
    let mut out = format!(
        "first difference at line {} ({} lines from drizzle-kit alone, {} here)\n",
        at + 1,
        w.len(),
        g.len()
    );
    for l in &w[from..at] {
        out.push_str(&format!("   {l}\n"));
    }
    for l in w.iter().skip(at).take(8) {
        out.push_str(&format!(" - {l}\n"));
    }
    for l in g.iter().skip(at).take(8) {
        out.push_str(&format!(" + {l}\n"));
    }
    out
}

/// A fresh database on the shared cluster; returns its URL.
pub fn fresh_db(prefix: &str) -> String {
    run::fresh_db(prefix)
}

/// Migrates a fresh database with `drizzle-kit migrate` alone and checks (by the tracking rows,
/// not the exit code) that every entry of the journal was recorded.
pub fn drizzle_alone(prefix: &str, folder: &Path) -> State {
    let url = fresh_db(prefix);
    kit_migrate_all(&url, folder, "drizzle-kit alone");
    state(&url)
}

/// `drizzle-kit migrate` that must succeed and leave one row per journal entry.
#[track_caller]
pub fn kit_migrate_all(url: &str, folder: &Path, what: &str) {
    let out = kit::migrate(url, folder);
    let want = tags(folder).len();
    let got = run::rows(url).len();
    assert!(
        out.code == 0 && got == want,
        "{what}: drizzle-kit migrate of {} should have recorded {want} migrations, it recorded \
         {got} (exit {}):\n{}",
        folder.display(),
        out.code,
        out.all()
    );
}

/// `portcullis migrate` that must succeed.
#[track_caller]
pub fn portcullis_migrate(url: &str, folder: &Path) -> run::Output {
    let out = run::migrate(url, folder);
    out.expect(0);
    out
}
