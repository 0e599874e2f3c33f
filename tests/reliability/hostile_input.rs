//! Hostile input through the real binary: awkward identifiers, a 50 MB migration, a journal of
//! 100k entries, symbolic links out of the folder and to endless files, non-UTF-8 bytes, tags
//! that climb out of the folder or carry control characters. Each gets a clear error (with its
//! documented exit code) or correct handling; never a panic (exit 1 from the panic hook, 101 or
//! 134) and never a hang (every run has a time limit).

use crate::capture::{Captured, figure, portcullis};
use crate::run::{Folder, advisory_locks, rows, rows_of, table_exists};
use crate::support::{Cluster, PASSWORD, execute, free_port, query, scratch_root};
use portcullis::source::split;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A closed port: for inputs refused before any connection.
fn nowhere() -> String {
    format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port())
}

fn fresh() -> (String, String) {
    let cluster = Cluster::shared();
    let db = cluster.create_database("hostile");
    (cluster.url(&db), cluster.socket_url(&db))
}

#[track_caller]
fn within(out: Captured, limit: Duration) -> Captured {
    assert!(
        out.elapsed <= limit,
        "took {:?} (limit {limit:?})\n{}",
        out.elapsed,
        out.stderr
    );
    assert!(
        !out.stderr.contains("internal error") && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    out
}

/// A scratch directory, removed on drop (tmpfs when roomy: 100k files are fast there).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = scratch_root().join(format!("portcullis-rel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("meta")).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn identifiers_with_quotes_spaces_and_unicode_are_quoted_never_injected() {
    let (url, sock) = fresh();
    execute(
        &sock,
        "create table canary (id int); insert into canary values (1)",
    );
    let schema = "Sch \"ema\"; DROP TABLE canary; --";
    let table = "Tä'ble \"x\" 🚀 $$; drop table canary";
    assert!(schema.len() <= 63 && table.len() <= 63);
    let dir = crate::run::example_dir();
    let cmd = |args: &[&str]| {
        within(
            portcullis(&url, &dir)
                .env("PORTCULLIS_MIGRATIONS_SCHEMA", schema)
                .env("PORTCULLIS_MIGRATIONS_TABLE", table)
                .args(args)
                .spawn()
                .finish(Duration::from_secs(120)),
            Duration::from_secs(120),
        )
    };
    cmd(&["status"]).expect(0);
    cmd(&["plan"]).expect(0);
    cmd(&["migrate"]).expect(0);
    let qualified = format!(
        "{}.{}",
        portcullis::db::quote_ident(schema),
        portcullis::db::quote_ident(table)
    );
    assert_eq!(rows_of(&sock, &qualified).len(), 4);
    for args in [
        &["migrate"][..],
        &["status", "--format", "json"],
        &["validate"],
        &["baseline"],
        &["repair"],
        &["await"],
    ] {
        let out = cmd(args);
        out.expect(0);
    }
    let status = cmd(&["status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["table"].as_str(), Some(qualified.as_str()));
    assert_eq!(
        rows_of(&sock, &qualified).len(),
        4,
        "nothing recorded twice"
    );
    assert_eq!(
        query(&sock, "select count(*) from canary")[0][0].as_deref(),
        Some("1"),
        "the canary survived"
    );
    assert!(!table_exists(&sock, "drizzle.__drizzle_migrations"));
    assert_eq!(advisory_locks(&sock), 0);
    // Longer than PostgreSQL keeps (63 bytes): refused before connecting, not truncated.
    let out = portcullis(&nowhere(), &dir)
        .env("PORTCULLIS_MIGRATIONS_TABLE", "é".repeat(32))
        .run();
    out.expect(2);
    out.says("63 bytes");
}

/// A 50 MB migration (90 statements, 700k rows, text that looks like comments and dollar
/// quotes) is read, checked, planned and applied; the next run is a no-op.
#[test]
fn a_50_mb_migration_is_applied() {
    let (url, sock) = fresh();
    let scratch = Scratch::new("huge");
    let mut parts = vec![
        "CREATE TABLE \"huge_rows\" (\"id\" integer PRIMARY KEY, \"note\" text);\n".to_string(),
    ];
    let (mut size, mut id) = (0, 0u64);
    while size < 50 << 20 {
        let mut stmt = String::from("INSERT INTO \"huge_rows\" VALUES\n");
        for k in 0..8000 {
            if k > 0 {
                stmt.push_str(",\n");
            }
            stmt.push_str(&format!(
                "({id}, 'row {id} -- not a comment; $$ not a body $$ /* nor this */ é')"
            ));
            id += 1;
        }
        stmt.push_str(";\n");
        size += stmt.len();
        parts.push(stmt);
    }
    let sql = parts.join("--> statement-breakpoint\n");
    std::fs::write(scratch.0.join("0000_huge.sql"), &sql).unwrap();
    std::fs::write(
        scratch.0.join("meta/_journal.json"),
        r#"{"version":"7","dialect":"postgresql","entries":[{"idx":0,"version":"7","when":1700000000000,"tag":"0000_huge","breakpoints":true}]}"#,
    )
    .unwrap();
    let limit = Duration::from_secs(240);
    let validate = within(
        portcullis(&nowhere(), &scratch.0)
            .args(&["validate", "--offline"])
            .spawn()
            .finish(limit),
        limit,
    );
    validate.expect(0);
    let plan = within(
        portcullis(&url, &scratch.0)
            .args(&["plan"])
            .spawn()
            .finish(limit),
        limit,
    );
    plan.expect(0);
    assert!(plan.stdout.len() > 50 << 20, "the plan prints all of it");
    let out = within(portcullis(&url, &scratch.0).spawn().finish(limit), limit);
    out.expect(0);
    assert_eq!(
        query(&sock, "select count(*) from huge_rows")[0][0].as_deref(),
        Some(id.to_string().as_str())
    );
    let r = rows(&sock);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].0,
        split::hash(&sql),
        "the hash of the whole 50 MB file"
    );
    let again = within(portcullis(&url, &scratch.0).spawn().finish(limit), limit);
    again.expect(0);
    assert!(again.stderr.contains("up to date"), "{}", again.stderr);
    figure(
        "hostile input",
        format!(
            "{:.1} MB migration ({} statements, {id} rows): validate --offline {:.1}s, plan {:.1}s, \
             migrate {:.1}s, no-op re-run {:.1}s (debug build)",
            sql.len() as f64 / (1 << 20) as f64,
            parts.len(),
            validate.elapsed.as_secs_f64(),
            plan.elapsed.as_secs_f64(),
            out.elapsed.as_secs_f64(),
            again.elapsed.as_secs_f64()
        ),
    );
}

/// Regression: a journal of 100k entries took minutes (9 min for `validate --offline`, more than
/// 5 for `migrate` and `status` on a database with every row): duplicate tags, unlisted files
/// and row matching compared every entry with every other. Now each is a few seconds.
#[test]
fn a_journal_with_100k_entries_is_read_in_seconds_not_minutes() {
    const N: usize = 100_000;
    let (url, sock) = fresh();
    let scratch = Scratch::new("100k");
    let mut entries = Vec::with_capacity(N);
    for i in 0..N {
        let tag = format!("{i:06}_m");
        std::fs::write(scratch.0.join(format!("{tag}.sql")), format!("select {i};")).unwrap();
        entries.push(format!(
            r#"{{"idx":{i},"version":"7","when":{},"tag":"{tag}","breakpoints":true}}"#,
            1_700_000_000_000u64 + i as u64
        ));
    }
    std::fs::write(
        scratch.0.join("meta/_journal.json"),
        format!(
            r#"{{"version":"7","dialect":"postgresql","entries":[{}]}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
    // Every migration already applied: the rows drizzle would have written.
    execute(
        &sock,
        &format!(
            "create schema drizzle; create table drizzle.__drizzle_migrations (id serial primary \
             key, hash text not null, created_at bigint); insert into drizzle.__drizzle_migrations \
             (hash, created_at) select encode(sha256(convert_to('select ' || i || ';', 'UTF8')), \
             'hex'), 1700000000000 + i from generate_series(0, {}) i",
            N - 1
        ),
    );
    // Generous for a loaded machine; before the fix each of these took more than 5 minutes.
    let limit = Duration::from_secs(180);
    let mut took = Vec::new();
    for args in [
        &["validate", "--offline"][..],
        &["migrate"],
        &["status", "--format", "json"],
        &["validate"],
    ] {
        let target = if args == ["validate", "--offline"] {
            nowhere()
        } else {
            url.clone()
        };
        let out = within(
            portcullis(&target, &scratch.0)
                .args(args)
                .spawn()
                .finish(limit),
            limit,
        );
        out.expect(0);
        took.push(format!(
            "{} {:.1}s",
            args.join(" "),
            out.elapsed.as_secs_f64()
        ));
    }
    assert_eq!(rows(&sock).len(), N, "nothing applied twice");
    // The same journal with every file missing: one clear exit 3 listing them all.
    for i in 0..N {
        std::fs::remove_file(scratch.0.join(format!("{i:06}_m.sql"))).unwrap();
    }
    let out = within(
        portcullis(&nowhere(), &scratch.0).spawn().finish(limit),
        limit,
    );
    out.expect(3);
    assert!(
        out.stderr.contains(&format!("has {N} problems")),
        "{}",
        out.stderr.chars().take(500).collect::<String>()
    );
    took.push(format!(
        "all files missing: exit 3 in {:.1}s",
        out.elapsed.as_secs_f64()
    ));
    figure(
        "hostile input",
        format!("journal of 100k entries (debug build): {}", took.join(", ")),
    );
}

fn journal(dir: &Path, tags: &[&str]) {
    let entries: Vec<String> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"idx":{i},"version":"7","when":{},"tag":{},"breakpoints":true}}"#,
                1_700_000_000_000u64 + i as u64,
                serde_json::to_string(t).unwrap()
            )
        })
        .collect();
    std::fs::write(
        dir.join("meta/_journal.json"),
        format!(
            r#"{{"version":"7","dialect":"postgresql","entries":[{}]}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
}

/// Decision: symbolic links are followed, as drizzle (Node's readFileSync) follows them;
/// Kubernetes ConfigMaps, Bazel and Nix lay folders out as links. A migration that resolves
/// outside the folder is applied with a warning naming where it points.
#[test]
fn a_migration_symlinked_outside_the_folder_is_followed_with_a_warning() {
    let (url, sock) = fresh();
    let folder = Scratch::new("links");
    let outside = Scratch::new("links-target");
    let target = outside.0.join("shared.sql");
    std::fs::write(&target, "CREATE TABLE \"linked\" (\"id\" integer);").unwrap();
    std::fs::write(
        folder.0.join("0000_local.sql"),
        "CREATE TABLE \"local\" (\"id\" integer);",
    )
    .unwrap();
    std::os::unix::fs::symlink(&target, folder.0.join("0001_linked.sql")).unwrap();
    journal(&folder.0, &["0000_local", "0001_linked"]);
    let out = within(
        portcullis(&url, &folder.0)
            .spawn()
            .finish(Duration::from_secs(60)),
        Duration::from_secs(60),
    );
    out.expect(0);
    out.says("resolve (through symbolic links) to files outside");
    out.says("shared.sql");
    assert!(!out.stderr.contains("0000_local.sql ->"), "{}", out.stderr);
    assert!(table_exists(&sock, "linked"));
    assert_eq!(
        rows(&sock)[1].0,
        split::hash("CREATE TABLE \"linked\" (\"id\" integer);")
    );
}

/// Regression: a migration (or the journal) that is a link to /dev/zero was read forever, growing
/// until the process ran out of memory, and a FIFO blocked the run forever. Both are now refused
/// before anything is read: exit 3 in milliseconds.
#[test]
fn a_link_to_dev_zero_or_a_fifo_is_refused_instead_of_read_forever() {
    let folder = Scratch::new("endless");
    std::os::unix::fs::symlink("/dev/zero", folder.0.join("0000_zero.sql")).unwrap();
    let fifo = folder.0.join("0001_fifo.sql");
    let path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    journal(&folder.0, &["0000_zero", "0001_fifo"]);
    let limit = Duration::from_secs(20);
    let out = within(
        portcullis(&nowhere(), &folder.0).spawn().finish(limit),
        limit,
    );
    out.expect(3);
    out.says("0000_zero.sql");
    out.says("0001_fifo.sql");
    out.says("not a regular file");
    // The journal itself as an endless file.
    std::fs::remove_file(folder.0.join("meta/_journal.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", folder.0.join("meta/_journal.json")).unwrap();
    let out = within(
        portcullis(&nowhere(), &folder.0).spawn().finish(limit),
        limit,
    );
    out.expect(3);
    out.says("cannot read the journal");
    out.says("not a regular file");
}

#[test]
fn tags_that_leave_the_folder_or_carry_control_characters_are_refused() {
    let folder = Scratch::new("tags");
    // A real file next to the folder, which a `../` tag would reach (removed on drop, even when
    // the test fails).
    let beside = Scratch::new("escape");
    std::fs::write(beside.0.join("outside.sql"), "select 'outside the folder';").unwrap();
    let escape = format!(
        "../{}/outside",
        beside.0.file_name().unwrap().to_string_lossy()
    );
    let limit = Duration::from_secs(20);
    for (tag, needle) in [
        (escape.as_str(), "contains '..'"),
        ("sub/../../x", "contains '..'"),
        ("/etc/passwd", "absolute path"),
        (
            "0001_a\n2026-01-01T00:00:00Z INFO forged log line",
            "control character",
        ),
        ("0001_\u{1b}[31mred", "control character"),
    ] {
        journal(&folder.0, &[tag]);
        let out = within(
            portcullis(&nowhere(), &folder.0).spawn().finish(limit),
            limit,
        );
        out.expect(3);
        assert!(out.stderr.contains(needle), "{tag:?}: {}", out.stderr);
        assert!(
            !out.stderr
                .lines()
                .any(|l| l.starts_with("2026-01-01T00:00:00Z")),
            "a tag cannot forge a log line: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains('\u{1b}'),
            "no escape codes reach the terminal"
        );
    }
    // A tag naming a directory.
    std::fs::create_dir_all(folder.0.join("dir.sql")).unwrap();
    journal(&folder.0, &["dir"]);
    let out = within(
        portcullis(&nowhere(), &folder.0).spawn().finish(limit),
        limit,
    );
    out.expect(3);
    out.says("it is a directory");
}

/// Invalid UTF-8 inside a migration is decoded as drizzle (Node) decodes it and hashed the same
/// way; in the journal it is a clear exit 3.
#[test]
fn non_utf8_bytes_in_files_are_handled_like_drizzle() {
    let (url, sock) = fresh();
    let mut folder = Folder::new();
    let bytes = b"-- caf\xe9 \xff\xfe\nCREATE TABLE \"bytes\" (\"note\" text DEFAULT 'x\xc3');";
    folder.add_raw("0000_bytes", "1700000000000", bytes);
    let out = within(
        portcullis(&url, folder.path())
            .spawn()
            .finish(Duration::from_secs(60)),
        Duration::from_secs(60),
    );
    out.expect(0);
    assert_eq!(rows(&sock)[0].0, split::hash(&split::decode(bytes)));
    assert_eq!(
        query(
            &sock,
            "select column_default from information_schema.columns where table_name = 'bytes'"
        )[0][0]
            .as_deref(),
        Some("'x\u{fffd}'::text")
    );
    // Invalid bytes in the journal: inside a tag they name a file that does not exist; outside
    // a string they are malformed JSON. Both exit 3, naming the file.
    let scratch = Scratch::new("badjournal");
    for journal in [
        &b"{\"entries\":[{\"idx\":0,\"when\":1,\"tag\":\"0000_\xff\"}]}"[..],
        b"{\"entries\":[\xff]}",
    ] {
        std::fs::write(scratch.0.join("meta/_journal.json"), journal).unwrap();
        let out = within(
            portcullis(&nowhere(), &scratch.0)
                .spawn()
                .finish(Duration::from_secs(20)),
            Duration::from_secs(20),
        );
        out.expect(3);
        assert!(
            out.stderr.contains("_journal.json") || out.stderr.contains("0000_"),
            "{}",
            out.stderr
        );
    }
}

/// Regression: a PORTCULLIS_* (or DATABASE_URL, PG*) value that is not UTF-8 was dropped
/// silently, so PORTCULLIS_MIGRATIONS_DIR fell back to ./migrations, which in the working
/// directory of this test is the example app's folder: the wrong migrations would have run.
#[test]
fn a_non_utf8_setting_is_refused_not_silently_replaced_by_the_default() {
    let (url, sock) = fresh();
    let bad = OsStr::from_bytes(b"/tmp/migr\xe9tions");
    let started = Instant::now();
    let out = portcullis(&url, Path::new("unused"))
        .env("PORTCULLIS_MIGRATIONS_DIR", bad)
        .run();
    out.expect(2);
    out.says("PORTCULLIS_MIGRATIONS_DIR");
    out.says("not valid UTF-8");
    assert!(
        !table_exists(&sock, "drizzle.__drizzle_migrations"),
        "nothing ran"
    );
    let out = portcullis(&url, &crate::run::example_dir())
        .env(
            "DATABASE_URL",
            OsStr::from_bytes(b"postgres://postgres@127.0.0.1:1/\xff"),
        )
        .run();
    out.expect(2);
    out.says("DATABASE_URL");
    assert!(started.elapsed() < Duration::from_secs(30));
}
