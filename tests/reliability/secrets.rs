//! Secrets: every command through every kind of failure of this suite, in text and JSON logs at
//! the most talkative level, with the password given in the URL, in PGPASSWORD, in
//! DATABASE_URL_FILE and on the command line: the password never appears in stdout, stderr or
//! the termination log. (Every other run of this suite goes through `capture::record` too, which
//! fails its test at once on the password; this test reports how much was checked in all.)

use crate::capture::{CHECKED_BYTES, CHECKED_RUNS, Captured, figure, poll, portcullis};
use crate::proxy::Proxy;
use crate::run::hold_lock;
use crate::run::{Folder, example_dir};
use crate::support::{Cluster, PASSWORD, execute, free_port, query};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

const COMMANDS: &[&[&str]] = &[
    &["migrate"],
    &["migrate", "--dry-run"],
    &["plan"],
    &["status"],
    &["status", "--format", "json"],
    &["validate"],
    &["validate", "--offline"],
    &["baseline"],
    &["repair"],
    &["repair", "--apply"],
    &["wait"],
    &["await"],
];

/// How the password reaches portcullis.
#[derive(Clone, Copy, Debug)]
enum Given {
    Url,
    PgPassword,
    UrlFile,
    Flag,
}

struct Case<'a> {
    name: &'a str,
    /// A URL with the password in it.
    url: String,
    dir: &'a Path,
    env: Vec<(&'a str, String)>,
    /// What `migrate` exits with in this case, however the password is given.
    exit: i32,
}

/// Runs `args` for `case` with the password given `how`, logs at trace in `format`.
fn run(case: &Case<'_>, args: &[&str], how: Given, format: &str) -> Captured {
    let without = case.url.replacen(&format!(":{PASSWORD}@"), "@", 1);
    let url_file = std::env::temp_dir().join(format!("portcullis-rel-url-{}", std::process::id()));
    let mut inv = match how {
        Given::Url => portcullis(&case.url, case.dir),
        Given::PgPassword => portcullis(&without, case.dir).env("PGPASSWORD", PASSWORD),
        Given::UrlFile => {
            std::fs::write(&url_file, &case.url).unwrap();
            portcullis("", case.dir).env("DATABASE_URL_FILE", &url_file)
        }
        Given::Flag => portcullis("", case.dir),
    }
    .env("PORTCULLIS_LOG_LEVEL", "trace")
    .env("PORTCULLIS_LOG_FORMAT", format);
    for (k, v) in &case.env {
        inv = inv.env(k, v);
    }
    let mut all: Vec<&str> = args.to_vec();
    if matches!(how, Given::Flag) {
        all.extend(["--database-url", case.url.as_str()]);
    }
    let out = inv.args(&all).spawn().finish(Duration::from_secs(120));
    // The file holds the password: never leave it behind.
    let _ = std::fs::remove_file(&url_file);
    if format == "json" {
        for line in out.stderr.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{}: {args:?}: a log line that is not JSON: {line}",
                case.name
            );
        }
    }
    out
}

#[test]
fn the_password_never_appears_in_any_output() {
    let cluster = Cluster::shared();
    let fresh = |p: &str| {
        let db = cluster.create_database(p);
        (cluster.url(&db), cluster.socket_url(&db))
    };
    let mut failing = Folder::new();
    failing.add("0000_bad", 1, "select nonsense_column from nowhere;");
    let no_journal = Folder::new();
    std::fs::remove_file(no_journal.path().join("meta/_journal.json")).unwrap();
    let mut slow = Folder::new();
    slow.add("0000_slow", 1, "select pg_sleep(30);");
    let example = example_dir();

    let (edited_url, edited_sock) = fresh("sec_edited");
    let mut applied = Folder::new();
    applied.add("0000_a", 1, "create table sec_e (id int);");
    portcullis(&edited_url, applied.path()).run().expect(0);
    // The same tag and `when`, another content: edited after it was applied.
    let mut edited = Folder::new();
    edited.add("0000_a", 1, "create table sec_e (id bigint);");
    assert_eq!(
        query(
            &edited_sock,
            "select count(*) from drizzle.__drizzle_migrations"
        )[0][0]
            .as_deref(),
        Some("1")
    );

    let (locked_url, locked_sock) = fresh("sec_locked");
    let _holder = hold_lock(&locked_sock);
    let proxy = Proxy::start(cluster.port());
    proxy.stall();
    let stalled_db = cluster.create_database("sec_stalled");
    let stalled = cluster.url(&stalled_db).replace(
        &format!(":{}/", cluster.port()),
        &format!(":{}/", proxy.port()),
    );
    let closed = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/x?sslmode=disable",
        free_port()
    );
    let (ok_url, _) = fresh("sec_ok");
    let (fail_url, _) = fresh("sec_fail");

    let cases = [
        Case {
            name: "success",
            url: ok_url,
            dir: &example,
            env: vec![],
            exit: 0,
        },
        Case {
            name: "unreachable (exit 5)",
            url: closed.clone(),
            dir: &example,
            env: vec![("PORTCULLIS_WAIT_TIMEOUT", "1s".into())],
            exit: 5,
        },
        Case {
            name: "stalled connection (exit 5)",
            url: stalled,
            dir: &example,
            env: vec![("PORTCULLIS_WAIT_TIMEOUT", "2s".into())],
            exit: 5,
        },
        Case {
            name: "missing database (exit 6)",
            url: cluster.url("no_such_database"),
            dir: &example,
            env: vec![],
            exit: 6,
        },
        Case {
            name: "bad configuration (exit 2)",
            url: closed.clone(),
            dir: &example,
            env: vec![("PORTCULLIS_WAIT_TIMEOUT", "soon".into())],
            exit: 2,
        },
        Case {
            name: "unknown variable (exit 2)",
            url: closed,
            dir: &example,
            env: vec![("PORTCULLIS_PASWORD", PASSWORD.into())],
            exit: 2,
        },
        Case {
            name: "no journal (exit 3)",
            url: cluster.url("postgres"),
            dir: no_journal.path(),
            env: vec![],
            exit: 3,
        },
        Case {
            name: "edited migration (exit 4)",
            url: edited_url,
            dir: edited.path(),
            env: vec![],
            exit: 4,
        },
        Case {
            name: "lock held (exit 7)",
            url: locked_url,
            dir: &example,
            env: vec![
                ("PORTCULLIS_LOCK_WAIT_TIMEOUT", "1s".into()),
                ("PORTCULLIS_WAIT_TIMEOUT", "2s".into()),
            ],
            exit: 7,
        },
        Case {
            name: "failing migration (exit 8)",
            url: fail_url,
            dir: failing.path(),
            env: vec![("PORTCULLIS_WAIT_TIMEOUT", "2s".into())],
            exit: 8,
        },
    ];
    let mut runs = 0;
    let mut codes = std::collections::BTreeSet::new();
    for case in &cases {
        // migrate first, before `baseline` and `repair --apply` below change what it finds.
        for how in [Given::Url, Given::PgPassword, Given::UrlFile, Given::Flag] {
            let out = run(case, &["migrate"], how, "text");
            assert_eq!(
                out.code, case.exit,
                "{}: migrate with the password given as {how:?}:\n{}",
                case.name, out.stderr
            );
            codes.insert(out.code);
            runs += 1;
        }
        for args in COMMANDS {
            let out = run(case, args, Given::Url, "json");
            codes.insert(out.code);
            runs += 1;
        }
    }
    // Interrupted mid-statement (exit 143), in both log formats.
    for format in ["text", "json"] {
        let (url, sock) = fresh("sec_term");
        let running = portcullis(&url, slow.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .env("PORTCULLIS_LOG_FORMAT", format)
            .spawn();
        poll(Duration::from_secs(30), "the sleep never started", || {
            crate::capture::running(&sock, "%pg_sleep(30)%")
        });
        running.signal(libc::SIGTERM);
        let out = running.finish(Duration::from_secs(30));
        out.expect(143);
        codes.insert(out.code);
        runs += 1;
    }
    for args in [
        &["--help"][..],
        &["--version"],
        &["migrate", "--help"],
        &["no-such-command"],
    ] {
        let out = portcullis(&cluster.url("postgres"), &example)
            .args(args)
            .run();
        codes.insert(out.code);
        runs += 1;
    }
    execute(&cluster.socket_url("postgres"), "select 1");
    for c in [0, 2, 3, 4, 5, 6, 7, 8, 143] {
        assert!(codes.contains(&c), "exit {c} was exercised: {codes:?}");
    }
    figure(
        "secrets",
        format!(
            "{runs} runs of this test ({} commands x {} failure classes in JSON at trace, migrate \
             with the password in the URL, PGPASSWORD, DATABASE_URL_FILE and --database-url, \
             SIGTERM, --help/--version), exit codes {codes:?}: password found 0 times; the whole \
             suite so far: {} runs, {:.1} MB of stdout, stderr and termination logs checked",
            COMMANDS.len(),
            cases.len(),
            CHECKED_RUNS.load(Ordering::SeqCst),
            CHECKED_BYTES.load(Ordering::SeqCst) as f64 / (1 << 20) as f64
        ),
    );
}

/// A connection string given where the command line has no place for it is refused (exit 2)
/// and quoted by the parser's complaint: its password is not, whatever the string's syntax,
/// on stderr or in the termination log.
#[test]
fn a_connection_string_in_the_wrong_place_is_refused_without_its_password() {
    let url = Cluster::shared().url("postgres");
    let example = example_dir();
    let cases: [&[&str]; 5] = [
        // A quote in the password ended the old search for it.
        &["postgres://app:pw'SECRETX@db/x"],
        &["migrate", "postgres://app:pw'SECRETX@db/x"],
        // libpq allows spaces around '='.
        &["host=db password = SECRETX"],
        // Split in two by the shell at a space in the password.
        &["migrate", "postgres://app:pw", "SECRETX@db/x"],
        &["--migrations-dir=postgres://app:SECRETX@db/x", "bogus"],
    ];
    for args in cases {
        let out = portcullis(&url, &example).args(args).run();
        out.expect(2);
        for (what, text) in [("stderr", &out.stderr), ("termination log", &out.termlog)] {
            assert!(!text.contains("SECRETX"), "{args:?}: {what}:\n{text}");
        }
        assert!(
            out.termlog.contains("see --help"),
            "{args:?}: {}",
            out.termlog
        );
    }
}
