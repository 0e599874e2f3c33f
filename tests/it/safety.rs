//! Production safety on a real PostgreSQL: statements that refuse a transaction, DDL that waits
//! politely for locks, SIGTERM, the termination log, TLS like libpq, multiple hosts.

use crate::run::*;
use crate::support::{Cluster, PASSWORD, execute, free_port, query};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn index_valid(url: &str, name: &str) -> Option<bool> {
    query(
        url,
        &format!(
            "select i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid \
             where c.relname = '{name}'"
        ),
    )
    .first()
    .map(|r| r[0].as_deref() == Some("t"))
}

// ---- statements that refuse a transaction ----------------------------------------------------

#[test]
fn create_index_concurrently_runs_outside_the_batch_and_the_index_is_valid() {
    let url = fresh_db("concurrently");
    let mut folder = Folder::new();
    folder
        .add("0000_t", 1, "CREATE TABLE \"ci_t\" (\n\t\"c\" integer\n);")
        .add(
            "0001_idx",
            2,
            "CREATE INDEX CONCURRENTLY \"ci_idx\" ON \"ci_t\" USING btree (\"c\");",
        )
        .add(
            "0002_after",
            3,
            "ALTER TABLE \"ci_t\" ADD COLUMN \"d\" text;",
        );
    let out = migrate(&url, folder.path());
    out.expect(0);
    out.says("running 0001_idx outside a transaction");
    out.says("CREATE INDEX CONCURRENTLY");
    assert_eq!(index_valid(&url, "ci_idx"), Some(true));
    assert_eq!(rows(&url).len(), 3);
    assert!(table_exists(&url, "ci_t"));
    let plan = run(command(&url, folder.path()).arg("plan"));
    plan.expect(0);
    migrate(&url, folder.path()).expect(0);
    assert_eq!(rows(&url).len(), 3);
}

/// A `transaction_timeout` (PostgreSQL 17 and later) set on the database or role for the app
/// does not end a long migration's or seeds' transaction midway: portcullis turns it off for
/// its own session, as it sets statement_timeout itself. A migration that sets it anyway is
/// ended by the server, and the message says that, not "Fix the SQL". On an older server,
/// which has no such setting, the version check keeps portcullis from asking for it.
#[test]
fn a_database_transaction_timeout_does_not_end_a_long_migration() {
    let url = fresh_db("txn_timeout");
    let known = query(
        &url,
        "select count(*) from pg_settings where name = 'transaction_timeout'",
    )[0][0]
        .as_deref()
        == Some("1");
    let version: i32 = query(&url, "show server_version_num")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(known, version >= 170000, "server_version_num {version}");
    if known {
        set_for_database(&url, "transaction_timeout = '1s'");
    }
    let mut folder = Folder::new();
    folder.add(
        "0000_slow",
        1,
        "CREATE TABLE \"slow\" (\"id\" integer);\n--> statement-breakpoint\n\
         SELECT pg_sleep(1.5);",
    );
    let seeds = folder.path().join("seeds");
    std::fs::create_dir(&seeds).unwrap();
    std::fs::write(
        seeds.join("1_slow.sql"),
        "select pg_sleep(1.5);\ninsert into slow values (1);\n",
    )
    .unwrap();
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", &seeds)
        .arg("migrate"));
    out.expect(0);
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(
        query(&url, "select count(*) from slow")[0][0].as_deref(),
        Some("1")
    );
    // Nothing pending: the seeds' transaction is the first, and turns the limit off itself.
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", &seeds)
        .arg("seed"));
    out.expect(0);
    assert_eq!(
        query(&url, "select count(*) from slow")[0][0].as_deref(),
        Some("2")
    );
    if !known {
        return;
    }
    // The session's own setting, made by a migration, still applies: the server ends it.
    folder.add(
        "0001_sets_it",
        2,
        "SET transaction_timeout = '500ms';\n--> statement-breakpoint\nSELECT pg_sleep(1.5);",
    );
    let out = migrate(&url, folder.path());
    out.advises(
        8,
        &[
            "ERROR 25P04 terminating connection due to transaction timeout",
            "a statement of the migrations or seeds set it (SET transaction_timeout)",
        ],
    );
    assert_eq!(rows(&url).len(), 1);
}

#[test]
fn the_marker_comment_lets_an_added_enum_value_be_used_in_the_same_run() {
    // drizzle runs everything in one transaction, where a value added by ALTER TYPE cannot be
    // used (55P04, drizzle-orm #3466). With the marker, the ADD VALUE commits on its own. The
    // type comes from an earlier deploy (PostgreSQL 18 lets a transaction use the new values
    // of a type it created itself).
    let steps = |url: &str, marker: bool| {
        let mut f = Folder::new();
        f.add("0000_enum", 1, "CREATE TYPE \"mood\" AS ENUM('ok');");
        migrate(url, f.path()).expect(0);
        f.add(
                "0001_add",
                2,
                &format!(
                    "{}ALTER TYPE \"mood\" ADD VALUE 'great';",
                    if marker {
                        "-- portcullis: no-transaction\n"
                    } else {
                        ""
                    }
                ),
            )
            .add(
                "0002_use",
                3,
                "CREATE TABLE \"feel\" (\"m\" \"mood\" DEFAULT 'great');\n--> statement-breakpoint\nINSERT INTO \"feel\" VALUES ('great');",
            );
        f
    };
    let url = fresh_db("enum_plain");
    let out = migrate(&url, steps(&url, false).path());
    out.expect(8);
    out.says("55P04");
    assert_eq!(rows(&url).len(), 1);

    let url = fresh_db("enum_marked");
    let folder = steps(&url, true);
    let out = migrate(&url, folder.path());
    out.expect(0);
    out.says("marked `-- portcullis: no-transaction`");
    assert_eq!(rows(&url).len(), 3);
    assert_eq!(
        query(&url, "select count(*) from feel")[0][0].as_deref(),
        Some("1")
    );
}

#[test]
fn a_failed_concurrent_index_names_the_invalid_index_and_what_ran() {
    let url = fresh_db("ci_fail");
    let mut folder = Folder::new();
    folder
        .add(
            "0000_t",
            1,
            "CREATE TABLE \"dup\" (\"c\" integer);\n--> statement-breakpoint\nINSERT INTO \"dup\" VALUES (1), (1);",
        )
        .add(
            "0001_idx",
            2,
            "CREATE INDEX CONCURRENTLY \"dup_plain\" ON \"dup\" (\"c\");\n--> statement-breakpoint\nCREATE UNIQUE INDEX CONCURRENTLY \"dup_c_unique\" ON \"dup\" (\"c\");\n--> statement-breakpoint\nDROP INDEX CONCURRENTLY \"dup_plain\";",
        );
    let out = migrate(&url, folder.path());
    out.expect(8);
    let e = &out.stderr;
    assert!(e.contains("23505"), "{e}");
    assert!(e.contains("statement(s) 1 ran and are committed"), "{e}");
    assert!(e.contains("statement 2 failed"), "{e}");
    assert!(e.contains("statement(s) 3 did not run"), "{e}");
    assert!(e.contains("INVALID index public.dup_c_unique"), "{e}");
    assert!(
        e.contains("DROP INDEX CONCURRENTLY IF EXISTS public.dup_c_unique;"),
        "{e}"
    );
    // The batch before it was committed; the failed migration is not recorded.
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(index_valid(&url, "dup_c_unique"), Some(false));
    assert_eq!(index_valid(&url, "dup_plain"), Some(true));
}

#[test]
fn a_non_transactional_statement_sharing_its_chunk_is_refused_before_connecting() {
    let mut folder = Folder::new();
    folder.add(
        "0000_mixed",
        1,
        "CREATE TABLE \"m\" (\"c\" int);\nCREATE INDEX CONCURRENTLY \"m_i\" ON \"m\" (\"c\");",
    );
    let closed = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let out = migrate(&closed, folder.path());
    out.expect(3);
    out.says("alone in its chunk");
}

// ---- DDL that waits politely ------------------------------------------------------------------

/// An open transaction that read `table` (so it holds ACCESS SHARE, which blocks ALTER TABLE),
/// from a session named `blocker-test`, until released (it then commits).
fn hold_table(url: &str, table: &str) -> SessionHolder {
    hold_session(
        &format!("{url}&application_name=blocker-test"),
        &format!(
            "BEGIN; SELECT count(*) FROM {table} WHERE 'token-s3cret' <> '' \
             AND E'it\\'s s3cret' <> $q$s3cret$q$ /* s3cret */;"
        ),
        "COMMIT",
    )
}

/// `migrate` with a 300 ms lock_timeout and 2 retries while `holder` blocks it; the holder is
/// released once the run has ended.
fn migrate_held(url: &str, folder: &Folder, holder: SessionHolder) -> Output {
    let out = run(command(url, folder.path())
        .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "300ms")
        .env("PORTCULLIS_DDL_LOCK_RETRIES", "2")
        .arg("migrate"));
    holder.release();
    out
}

/// Holds `table` for `hold`, then releases it (for tests that only need a short-lived lock).
fn hold_lock(url: &str, table: &str, hold: Duration) -> std::thread::JoinHandle<()> {
    let holder = hold_table(url, table);
    std::thread::spawn(move || {
        std::thread::sleep(hold);
        holder.release();
    })
}

/// A statement without an answer for 10 s gets an info line saying what it waits for (then
/// one every 30 s): with `PORTCULLIS_DDL_LOCK_TIMEOUT=0` nothing else would ever say why the
/// run is taking so long. Here the app holds a lock the migration's `ALTER TABLE` needs.
#[test]
fn a_statement_waiting_long_names_the_session_that_holds_its_lock() {
    let url = fresh_db("progress");
    let mut folder = Folder::new();
    folder.add("0000_t", 1, "CREATE TABLE pr_t (id int);");
    migrate(&url, folder.path()).expect(0);
    folder.add("0001_alter", 2, "ALTER TABLE pr_t ADD COLUMN note text;");
    let app = hold_session(
        &url,
        "begin; lock table pr_t in access share mode",
        "commit",
    );
    let started = Instant::now();
    let child = spawn(
        command(&url, folder.path())
            .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "0")
            .arg("migrate"),
    );
    wait_until_blocked(&url);
    // The line comes 10 s after the statement was sent, which was before it was seen blocked.
    std::thread::sleep(Duration::from_secs(12));
    app.release();
    let out = finish(child, started, Duration::from_secs(60));
    out.expect(0);
    out.says("still running statement 1 of 1 of 0001_alter (");
    out.says("after 10s without an answer: it waits for a lock held by pid ");
    out.says("query `begin; lock table pr_t in access share mode`");
    assert_eq!(rows(&url).len(), 2);
}

/// A migration that deadlocks with the app (each holds a table the other then asks for) is
/// rolled back and retried like a lock timeout, not failed as if its SQL were wrong. The app's
/// session here checks for deadlocks only after 10 s, so PostgreSQL (1 s by default for the
/// migration's session) cancels the migration's side; the app's transaction then finishes and
/// the retry goes through.
#[test]
fn a_migration_that_deadlocks_with_the_app_is_rolled_back_and_retried() {
    let url = fresh_db("deadlock");
    execute(
        &url,
        "create table dl_a (id int); create table dl_b (id int)",
    );
    let mut folder = Folder::new();
    folder.add(
        "0000_dl",
        1,
        "ALTER TABLE dl_a ADD COLUMN x int;\n--> statement-breakpoint\nALTER TABLE dl_b ADD COLUMN y int;",
    );
    // The app: holds dl_b, and when told, reads dl_a in the same transaction, then commits.
    let app = AppTransaction::start(
        &url,
        "LOCK TABLE dl_b IN SHARE MODE",
        "SELECT count(*) FROM dl_a",
    );
    let started = Instant::now();
    let child = spawn(command(&url, folder.path()).arg("migrate"));
    // The migration holds dl_a and waits for dl_b; now the app asks for dl_a.
    wait_until_blocked(&url);
    app.then();
    let out = finish(child, started, Duration::from_secs(60));
    let app_read = app.finish();
    out.expect(0);
    out.says("statement 2 of 0000_dl deadlocked with another session, so PostgreSQL cancelled it");
    // The server's DETAIL, its relations named.
    out.says("waits for AccessExclusiveLock on relation dl_b; blocked by process ");
    out.says("waits for AccessShareLock on relation dl_a; blocked by process ");
    out.says("retry 1 of 10");
    assert_eq!(app_read, Ok(()), "the app's side was not the one cancelled");
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(
        query(
            &url,
            "select count(*) from information_schema.columns \
             where table_name in ('dl_a', 'dl_b') and column_name in ('x', 'y')"
        )[0][0]
            .as_deref(),
        Some("2")
    );
}

#[test]
fn ddl_blocked_for_three_seconds_succeeds_after_retries_and_names_the_blocker() {
    let url = fresh_db("ddl_retry");
    execute(&url, "create table busy (id int)");
    let mut folder = Folder::new();
    folder.add("0000_alter", 1, "ALTER TABLE busy ADD COLUMN note text;");
    let holder = hold_table(&url, "busy");
    let started = Instant::now();
    let child = spawn(
        command(&url, folder.path())
            .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "500ms")
            .env("PORTCULLIS_DDL_LOCK_RETRIES", "20")
            .arg("migrate"),
    );
    // Keep blocking for 3 s from the moment the ALTER first waits: several lock timeouts.
    wait_until_blocked(&url);
    // Meanwhile the second connection, which names the blockers, says what it is for (it opens
    // in the background when the migrations start, so it may take a moment to appear).
    let blocked = Instant::now();
    while query(
        &url,
        "select count(*) from pg_stat_activity \
         where application_name = 'portcullis@it-runner (lock observer)' \
         and datname = current_database()",
    )[0][0]
        .as_deref()
        != Some("1")
    {
        assert!(
            blocked.elapsed() < Duration::from_secs(2),
            "no connection named 'portcullis@it-runner (lock observer)'"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3).saturating_sub(blocked.elapsed()));
    holder.release();
    let out = finish(child, started, Duration::from_secs(120));
    out.expect(0);
    out.says("waited longer than lock_timeout (500ms)");
    out.says("\"blocker-test\"");
    out.says("SELECT count(*) FROM busy");
    out.says("retry 1 of 20");
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(
        query(
            &url,
            "select count(*) from information_schema.columns where table_name = 'busy'"
        )[0][0]
            .as_deref(),
        Some("2")
    );
}

#[test]
fn ddl_lock_retries_exhausted_exit_8_with_the_story() {
    let url = fresh_db("ddl_giveup");
    execute(&url, "create table busy2 (id int)");
    let mut folder = Folder::new();
    folder.add("0000_a", 1, "create table calm (id int);").add(
        "0001_alter",
        2,
        "ALTER TABLE busy2 ADD COLUMN note text;",
    );
    // Held until portcullis has given up.
    let out = migrate_held(&url, &folder, hold_table(&url, "busy2"));
    out.expect(8);
    out.says("55P03");
    out.says("3 times in a row");
    out.says("blocked by pid");
    out.says("blocker-test");
    // The blocker's query is shown with its string literals (escaped, dollar-quoted) masked
    // and its comments left out.
    out.says("SELECT count(*) FROM busy2 WHERE '…' <> '…' AND E'…' <> '…' ;");
    out.never_says("s3cret");
    out.says("PORTCULLIS_DDL_LOCK_RETRIES");
    assert!(!table_exists(&url, "calm"), "the batch was rolled back");
    assert!(rows(&url).is_empty());
}

// ---- signals and the termination log ---------------------------------------------------------

#[test]
fn sigterm_mid_statement_exits_143_within_two_seconds_leaving_nothing() {
    let url = fresh_db("sigterm");
    let mut folder = Folder::new();
    folder.add("0000_a", 1, "create table st_a (id int);").add(
        "0001_slow",
        2,
        "create table st_b (id int);\n--> statement-breakpoint\nselect pg_sleep(30);",
    );
    let log = std::env::temp_dir().join(format!("portcullis-term-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let (out, took) = terminate_while_running(
        command(&url, folder.path())
            .env("PORTCULLIS_TERMINATION_LOG", &log)
            .arg("migrate"),
        &url,
        "pg_sleep(30)",
    );
    out.expect(143);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    out.says("interrupted by SIGTERM while running statement 2");
    out.says("0001_slow");
    assert_eq!(
        query(
            &url,
            "select count(*) from pg_stat_activity where query like '%pg_sleep(30)%' \
             and datname = current_database() and pid <> pg_backend_pid()"
        )[0][0]
            .as_deref(),
        Some("0"),
        "the statement was cancelled"
    );
    assert_eq!(advisory_locks(&url), 0);
    assert!(!table_exists(&url, "st_a") && !table_exists(&url, "st_b"));
    assert!(rows(&url).is_empty());
    let reason = std::fs::read_to_string(&log).expect("termination log written");
    assert!(
        reason.starts_with("exit 143: interrupted by SIGTERM"),
        "{reason}"
    );
    assert_eq!(reason.lines().count(), 1);
    let _ = std::fs::remove_file(&log);
}

/// When the tracking row of a migration that ran outside a transaction cannot be written (here
/// the migration itself makes the insert fail), the statements stay committed: the message says
/// so first, and how to record the migration, instead of only the row's own failure.
#[test]
fn a_failed_row_after_a_migration_outside_a_transaction_says_its_statements_are_committed() {
    let url = fresh_db("nt_row");
    let mut folder = Folder::new();
    folder.add(
        "0000_nt",
        1,
        "-- portcullis: no-transaction\ncreate table nt_c (id int);\n--> statement-breakpoint\n\
         alter table drizzle.__drizzle_migrations add column blocker int not null;",
    );
    let out = run(command(&url, folder.path()).arg("migrate"));
    out.expect(1);
    out.says("0000_nt ran outside a transaction and all its statements are committed");
    out.says("record it with `portcullis baseline --to 0000_nt`");
    out.says("23502");
    assert!(table_exists(&url, "nt_c"));
    assert!(rows(&url).is_empty());
    assert_eq!(advisory_locks(&url), 0);
}

/// A SIGTERM in the middle of a migration that runs outside a transaction cannot roll back the
/// statements that ran: the message says which are committed and that the next run starts the
/// migration again, instead of promising that nothing half-done was committed.
#[test]
fn sigterm_outside_a_transaction_says_what_stays_committed() {
    let url = fresh_db("sigterm_nt");
    let mut folder = Folder::new();
    folder.add(
        "0000_nt",
        1,
        "-- portcullis: no-transaction\ncreate table nt_a (id int);\n--> statement-breakpoint\n\
         select pg_sleep(30);\n--> statement-breakpoint\ncreate table nt_b (id int);",
    );
    let (out, took) = terminate_while_running(
        command(&url, folder.path()).arg("migrate"),
        &url,
        "pg_sleep(30)",
    );
    out.expect(143);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    out.says("interrupted by SIGTERM while running statement 2 of 3 of 0000_nt");
    out.says(
        "statement(s) 1 ran and are committed; statement 2 failed; statement(s) 3 did not run",
    );
    out.says("the next run starts it again from its first statement");
    out.never_says("nothing half-done was committed");
    assert!(table_exists(&url, "nt_a") && !table_exists(&url, "nt_b"));
    assert!(rows(&url).is_empty());
    assert_eq!(advisory_locks(&url), 0);
}

/// A migration's statements are sent together, so a cancel request can miss: here statement 1
/// swallows it (an exception handler for query_canceled) and completes, and statement 3, a
/// 60 s sleep, is already at the server. portcullis keeps cancelling until the migration
/// stops, so the run still ends within seconds with nothing applied, as when each statement
/// was sent only after the previous one answered.
#[test]
fn sigterm_ends_a_migration_whose_statement_swallows_the_cancel() {
    let url = fresh_db("sigterm_swallow");
    let mut folder = Folder::new();
    folder.add(
        "0000_swallow",
        1,
        "create table sw_a (id int);\n--> statement-breakpoint\n\
         DO $$ BEGIN PERFORM pg_sleep(5); EXCEPTION WHEN query_canceled THEN NULL; END $$;\n\
         --> statement-breakpoint\nselect pg_sleep(60);",
    );
    let (out, took) = terminate_while_running(
        command(&url, folder.path()).arg("migrate"),
        &url,
        "pg_sleep(5)",
    );
    out.expect(143);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    out.says("interrupted by SIGTERM");
    assert_eq!(advisory_locks(&url), 0);
    assert!(!table_exists(&url, "sw_a"));
    assert!(rows(&url).is_empty());
}

/// A statement that swallows every cancel for a minute (a PL/pgSQL handler for
/// query_canceled), and a piece of its text to find its session by.
const STUBBORN: &str = "DO $$ BEGIN FOR i IN 1..120 LOOP BEGIN PERFORM pg_sleep(0.5); \
                        EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$;";
const STUBBORN_NEEDLE: &str = "FOR i IN 1..120";

/// A second SIGTERM during the wind-down ends the run at once (here the statement swallows
/// every cancel, so the first alone would wait out its 1.5 s deadline), and the server still ends
/// the session: the statement does not loop on for a minute with the lock held.
#[test]
fn a_second_sigterm_leaves_at_once_and_the_server_ends_the_session() {
    let url = fresh_db("sigterm_twice");
    let mut folder = Folder::new();
    folder.add(
        "0000_stubborn",
        1,
        &format!("create table twice_a (id int);\n--> statement-breakpoint\n{STUBBORN}"),
    );
    let (out, ended) = terminate_twice(
        command(&url, folder.path()).arg("migrate"),
        &url,
        STUBBORN_NEEDLE,
    );
    out.expect(143);
    out.says("received a second SIGTERM: leaving without waiting for the cancel");
    out.says("interrupted by SIGTERM");
    // The first alone would wait out its 1.5 s deadline (the statement swallows every cancel).
    assert!(ended < Duration::from_secs(5), "took {ended:?}");
    server_let_go(&url, STUBBORN_NEEDLE, Instant::now());
    assert!(!table_exists(&url, "twice_a"));
    assert!(rows(&url).is_empty());
}

/// The same, for a migration outside a transaction: abandoned after the second signal, the run
/// says which statements stay committed, not that nothing half-done was.
#[test]
fn a_second_sigterm_outside_a_transaction_says_what_stays_committed() {
    let url = fresh_db("sigterm_twice_nt");
    let mut folder = Folder::new();
    folder.add(
        "0000_nt",
        1,
        &format!(
            "-- portcullis: no-transaction\ncreate table twice_nt (id int);\n\
             --> statement-breakpoint\n{STUBBORN}"
        ),
    );
    let (out, _) = terminate_twice(
        command(&url, folder.path()).arg("migrate"),
        &url,
        STUBBORN_NEEDLE,
    );
    out.expect(143);
    out.says("received a second SIGTERM");
    out.says(
        "0000_nt runs outside a transaction, so nothing was rolled back: the statements before \
         statement 2 are committed, and whether statement 2 completed is unknown",
    );
    out.says("the next run starts it again from its first statement");
    out.never_says("nothing half-done was committed");
    server_let_go(&url, STUBBORN_NEEDLE, Instant::now());
    assert!(
        table_exists(&url, "twice_nt"),
        "statement 1 stays committed"
    );
    assert!(rows(&url).is_empty());
}

/// As PID 1 of its own PID namespace (a container without an init), where the kernel drops
/// every signal its process has no handler for, a SIGTERM still interrupts the run: exit 143,
/// the statement cancelled, nothing applied, the lock released.
#[test]
fn sigterm_reaches_portcullis_running_as_pid_1() {
    // As root a PID namespace needs nothing else; otherwise a user namespace of its own.
    let unshare: &[&str] = [
        &["--pid", "--fork", "--kill-child"][..],
        &["--user", "--map-root-user", "--pid", "--fork", "--kill-child"],
    ]
    .into_iter()
    .find(|args| {
        Command::new("unshare")
            .args(*args)
            .arg("true")
            .output()
            .expect("unshare (util-linux) is needed for this test")
            .status
            .success()
    })
    .expect("unshare --pid failed, with and without --user: this test needs root or unprivileged user namespaces");
    let url = fresh_db("pid1");
    let mut folder = Folder::new();
    folder.add(
        "0000_a",
        1,
        "create table p1_a (id int);\n--> statement-breakpoint\nselect pg_sleep(30);",
    );
    let inner = command(&url, folder.path());
    let mut cmd = Command::new("unshare");
    cmd.args(unshare)
        .args(["--", BIN, "migrate"])
        .env_clear()
        .stdin(std::process::Stdio::null());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let started = Instant::now();
    let child = spawn(&mut cmd);
    wait_for_statement(&url, "pg_sleep(30)");
    // The runner is unshare's one child; inside its namespace it is pid 1.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let runner = children.split_whitespace().next().expect("unshare's child");
    let status = std::fs::read_to_string(format!("/proc/{runner}/status")).unwrap();
    let nspid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap_or_default();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "not pid 1: {nspid}"
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", runner])
            .status()
            .unwrap()
            .success()
    );
    let out = finish(child, started, Duration::from_secs(20));
    out.expect(143);
    out.says("interrupted by SIGTERM while running statement 2");
    assert_eq!(advisory_locks(&url), 0);
    assert!(!table_exists(&url, "p1_a"));
    assert!(rows(&url).is_empty());
}

/// Waits until process `pid` handles SIGINT itself (its SigCgt mask in /proc has bit 2).
fn catches_sigint(pid: u32) {
    let started = Instant::now();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0);
        if caught & (1 << (libc::SIGINT - 1)) != 0 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "portcullis never installed its SIGINT handler"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigint_while_waiting_for_the_database_exits_130_at_once() {
    let closed = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let started = Instant::now();
    let child = spawn(
        command(&closed, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
            .arg("migrate"),
    );
    // Signalled once its handler is installed (before that, SIGINT's default would end it).
    catches_sigint(child.id());
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = finish(child, started, Duration::from_secs(10));
    out.expect(130);
    // Long before the 60 s wait would have ended.
    assert!(signalled.elapsed() < Duration::from_secs(10));
    out.says("interrupted by SIGINT while waiting for the database");
}

#[test]
fn the_termination_log_gets_the_one_line_reason() {
    let url = fresh_db("termlog");
    let mut folder = Folder::new();
    folder.add("0000_bad", 1, "select nonsense_column from nowhere;");
    let log = std::env::temp_dir().join(format!("portcullis-term2-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_TERMINATION_LOG", &log)
        .arg("migrate"));
    out.expect(8);
    let reason = std::fs::read_to_string(&log).unwrap();
    assert!(
        reason.starts_with("exit 8: migration 0000_bad failed"),
        "{reason}"
    );
    assert!(reason.contains("42P01"), "{reason}");
    assert!(!reason.contains(PASSWORD));
    assert_eq!(reason.lines().count(), 1);
    // A success leaves it alone; a configuration error is reported there too.
    std::fs::remove_file(&log).unwrap();
    run(command(&url, &example_dir())
        .env("PORTCULLIS_TERMINATION_LOG", &log)
        .env("PORTCULLIS_LOG_LEVEL", "loud")
        .arg("migrate"))
    .expect(2);
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .starts_with("exit 2: PORTCULLIS_LOG_LEVEL")
    );
    // So is a command-line usage error, which the argument parser reports before any
    // configuration is read.
    std::fs::remove_file(&log).unwrap();
    run(command(&url, &example_dir())
        .env("PORTCULLIS_TERMINATION_LOG", &log)
        .args(["migrate", "--no-such-flag"]))
    .expect(2);
    let reason = std::fs::read_to_string(&log).unwrap();
    assert!(
        reason.starts_with("exit 2: unexpected argument '--no-such-flag' found"),
        "{reason}"
    );
    assert_eq!(reason.lines().count(), 1);
    let _ = std::fs::remove_file(&log);
}

// ---- TLS ---------------------------------------------------------------------------------------

/// A CA and a server certificate for DNS name `localhost` only, made with the openssl CLI; and
/// client certificates for the role `certuser`, one from that CA, one from another.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(dir)
                .output()
                .expect("openssl (Debian package openssl) is needed for the TLS tests");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
              -subj /CN=portcullis-test-ca 2>/dev/null
            openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt \
              -days 2 -subj /CN=some-other-ca 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
              -subj /CN=localhost 2>/dev/null
            printf 'subjectAltName=DNS:localhost\\n' > ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
              -out server.crt -days 2 -extfile ext 2>/dev/null
            printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > client-ext
            for ca in ca other-ca; do
              openssl req -newkey rsa:2048 -nodes -keyout $ca-client.key -out $ca-client.csr \
                -subj /CN=certuser 2>/dev/null
              openssl x509 -req -in $ca-client.csr -CA $ca.crt -CAkey $ca.key -CAcreateserial \
                -out $ca-client.crt -days 2 -extfile client-ext 2>/dev/null
            done
            # Without extensions, openssl makes an X.509 version 1 certificate.
            openssl x509 -req -in ca-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
              -out v1-client.crt -days 2 2>/dev/null",
        );
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn postgres_uid() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A private cluster with ssl=on and a pg_hba.conf that accepts TCP only over TLS; the role
/// `certuser` logs in with a client certificate from the test CA (`cert` authentication), and
/// the role `plainuser` only without TLS.
fn tls_cluster(certs: &Certs) -> Cluster {
    let mut cluster = Cluster::init(free_port());
    let data = cluster.dir().expect("local cluster").join("data");
    for f in ["server.crt", "server.key", "ca.crt"] {
        let to = data.join(f);
        std::fs::copy(certs.dir.join(f), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        if unsafe_is_root()
            && let Some((uid, gid)) = postgres_uid()
        {
            std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
        }
    }
    let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
    conf.push_str(
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
         ssl_ca_file = 'ca.crt'\n",
    );
    std::fs::write(data.join("postgresql.conf"), conf).unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all certuser 127.0.0.1/32 cert\n\
         hostssl all plainuser 127.0.0.1/32 reject\n\
         hostnossl all plainuser 127.0.0.1/32 scram-sha-256\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    cluster.start();
    execute(
        &cluster.socket_url("postgres"),
        "create role certuser login",
    );
    execute(
        &cluster.socket_url("postgres"),
        &format!("create role plainuser login password '{PASSWORD}'"),
    );
    execute(
        &cluster.socket_url("postgres"),
        "create database certdb owner certuser",
    );
    cluster
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[test]
fn tls_modes_behave_like_libpq() {
    let dir = std::env::temp_dir().join(format!("portcullis-certs-{}", std::process::id()));
    let certs = Certs::make(&dir);
    let cluster = tls_cluster(&certs);
    let port = cluster.port();
    let url = |host: &str, params: &str| {
        format!("postgres://postgres:{PASSWORD}@{host}:{port}/postgres?{params}")
    };
    let wait = |u: &str| {
        run(command(u, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "5s")
            .arg("wait"))
    };

    // verify-full with the right CA and the certificate's name: accepted.
    let ok = wait(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", certs.path("ca.crt")),
    ));
    ok.expect(0);
    // A wrong CA: refused at once, exit 6, saying why.
    let out = wait(&url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            certs.path("other-ca.crt")
        ),
    ));
    out.expect(6);
    // Refused for good at the first attempt.
    out.never_says("(attempt");
    out.says("TLS failed");
    out.says("invalid peer certificate");
    // The right CA but a name the certificate does not carry (it names only `localhost`).
    let out = wait(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", certs.path("ca.crt")),
    ));
    out.expect(6);
    out.says("not valid for name");
    // verify-ca does not check the name: accepted.
    wait(&url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", certs.path("ca.crt")),
    ))
    .expect(0);
    // require: encrypted without verification, as libpq.
    wait(&url("127.0.0.1", "sslmode=require")).expect(0);
    // libpq's keyword/value form carries the same settings, verify-full included.
    let kv = |host: &str, ca: &str| {
        format!(
            "host={host} port={port} user=postgres password={PASSWORD} dbname=postgres \
             sslmode=verify-full sslrootcert='{}'",
            certs.path(ca)
        )
    };
    wait(&kv("localhost", "ca.crt")).expect(0);
    wait(&kv("localhost", "other-ca.crt")).expect(6);
    // disable against a server that accepts only TLS: refused, exit 6, with the fix.
    let out = wait(&url("127.0.0.1", "sslmode=disable"));
    out.expect(6);
    out.says("only over TLS");
    // And a whole migrate over verify-full.
    let out = run(command(
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", certs.path("ca.crt")),
        ),
        &example_dir(),
    )
    .arg("migrate"));
    out.expect(0);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

/// sslmode prefer and allow, and client certificates, against a server that takes the
/// superuser only over TLS and `plainuser` only without, and, for prefer, allow and require, one
/// without TLS.
#[test]
fn tls_prefer_allow_and_client_certificates() {
    let dir = std::env::temp_dir().join(format!("portcullis-certs2-{}", std::process::id()));
    let certs = Certs::make(&dir);
    let cluster = tls_cluster(&certs);
    let port = cluster.port();
    let wait = |u: &str, env: &[(&str, String)]| {
        let mut cmd = command(u, &example_dir());
        cmd.env("PORTCULLIS_WAIT_TIMEOUT", "5s").arg("wait");
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    let password_url =
        |params: &str| format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres?{params}");
    // prefer encrypts when the server offers TLS: this server refuses plain TCP.
    let out = wait(&password_url("sslmode=prefer"), &[]);
    out.expect(0);
    out.never_says("once more");
    // allow tries plain TCP first, as libpq does, and TLS once the server refuses that.
    let out = wait(&password_url("sslmode=allow"), &[]);
    out.expect(0);
    // PostgreSQL 14 and later end the server's text with "no encryption", older ones "SSL off".
    let refused = "refused user \"postgres\" over plain TCP (pg_hba.conf rejects connection for \
                   host \"127.0.0.1\", user \"postgres\", database \"postgres\", ";
    let retried = ", SQLSTATE 28000); trying once more with TLS, as libpq does with sslmode=allow";
    assert!(
        ["no encryption", "SSL off"]
            .iter()
            .any(|plain| out.stderr.contains(&format!("{refused}{plain}{retried}"))),
        "{}",
        out.stderr
    );
    out.says("connected to 127.0.0.1");
    // When the encrypted attempt is refused too, its reason is the one reported (here a wrong
    // password), not the plain one's "only over TLS".
    let out = wait(
        &format!("postgres://postgres:wrong@127.0.0.1:{port}/postgres?sslmode=allow"),
        &[],
    );
    out.expect(6);
    out.says("password authentication failed");
    out.never_says("only over TLS");
    // ... and when sslmode is not given at all (libpq's default is prefer).
    let out = wait(&password_url("connect_timeout=5"), &[]);
    out.expect(0);
    out.never_says("without TLS");
    // A user the server refuses over TLS (pg_hba.conf) but takes without: prefer tries once
    // more without TLS, as libpq does; allow is taken at its first, plain, attempt; require
    // does not try plain TCP.
    let plain_user = |params: &str| {
        format!("postgres://plainuser:{PASSWORD}@127.0.0.1:{port}/postgres?{params}")
    };
    for params in ["connect_timeout=5", "sslmode=prefer"] {
        let out = wait(&plain_user(params), &[]);
        out.expect(0);
        out.says("trying once more without TLS");
        out.says("connected to 127.0.0.1");
    }
    let out = wait(&plain_user("sslmode=allow"), &[]);
    out.expect(0);
    out.never_says("once more");
    let out = wait(&plain_user("sslmode=require"), &[]);
    out.expect(6);
    // "SSL encryption" since PostgreSQL 14, "SSL on" before.
    assert!(
        out.stderr.contains("SSL encryption (28000)") || out.stderr.contains("SSL on (28000)"),
        "{}",
        out.stderr
    );
    out.never_says("without TLS");

    // Client certificates: the server checks them against its CA and maps CN=certuser.
    let cert_url =
        |host: &str, params: &str| format!("postgres://certuser@{host}:{port}/certdb?{params}");
    // sslmode=require with a client certificate and key of the test's.
    let pair = |cert: &str, key: &str| {
        format!(
            "sslmode=require&sslcert={}&sslkey={}",
            certs.path(cert),
            certs.path(key)
        )
    };
    // Refused for good: exit 6 at once, not retried until the 5 s wait timeout.
    let refused_at_once = |out: &Output, started: Instant| {
        out.expect(6);
        out.never_says("(attempt");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    };
    let ours = pair("ca-client.crt", "ca-client.key");
    wait(&cert_url("127.0.0.1", &ours), &[]).expect(0);
    // Both ways verified: the server's certificate and name, and ours.
    let both = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        certs.path("ca.crt"),
        certs.path("ca-client.crt"),
        certs.path("ca-client.key")
    );
    wait(&cert_url("localhost", &both), &[]).expect(0);
    // The same pair from libpq's PGSSLCERT / PGSSLKEY.
    wait(
        &cert_url("127.0.0.1", "sslmode=require"),
        &[
            ("PGSSLCERT", certs.path("ca-client.crt")),
            ("PGSSLKEY", certs.path("ca-client.key")),
        ],
    )
    .expect(0);
    // A whole migrate authenticated by certificate.
    let out = run(command(&cert_url("localhost", &both), &example_dir()).arg("migrate"));
    out.expect(0);
    // No certificate: the server refuses the role at once; exit 6, not a wait.
    let started = Instant::now();
    let out = wait(&cert_url("127.0.0.1", "sslmode=require"), &[]);
    refused_at_once(&out, started);
    out.says("certificate");
    // A certificate from a CA the server does not trust: refused, exit 6.
    let theirs = pair("other-ca-client.crt", "other-ca-client.key");
    // The server's refusal comes as a TLS alert after the handshake: at once, not retried as
    // a network blip until the wait timeout.
    let started = Instant::now();
    let out = wait(&cert_url("127.0.0.1", &theirs), &[]);
    refused_at_once(&out, started);
    out.says("the server refused this client's certificate");
    out.says("UnknownCA");
    // A certificate whose key is not its own: a configuration error (exit 2) before connecting.
    let mismatched = pair("ca-client.crt", "other-ca-client.key");
    let out = wait(&cert_url("127.0.0.1", &mismatched), &[]);
    out.expect(2);
    out.says("do not form a usable pair");
    out.says("Check that the key belongs to the certificate");
    // An X.509 version 1 certificate (openssl x509 -req without extensions): named as such.
    let v1 = pair("v1-client.crt", "ca-client.key");
    let out = wait(&cert_url("127.0.0.1", &v1), &[]);
    out.expect(2);
    out.says("X.509 version 1");
    drop(cluster);

    // A server without TLS (the shared one): prefer and allow fall back to plain TCP, require
    // refuses at once with the way out.
    let plain = Cluster::shared();
    let plain_url = |mode: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode={mode}",
            plain.port()
        )
    };
    wait(&plain_url("prefer"), &[]).expect(0);
    wait(&plain_url("allow"), &[]).expect(0);
    let out = wait(&plain_url("require"), &[]);
    out.expect(6);
    out.says("server does not support TLS");
    out.says("sslmode=disable or sslmode=prefer");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- multiple hosts ----------------------------------------------------------------------------

#[test]
fn target_session_attrs_read_write_skips_a_read_only_host() {
    let standby = Cluster::start_new();
    let primary = Cluster::shared();
    let db = primary.create_database("failover");
    // The read-only host has the database too, so the test fails if it were used.
    execute(&standby.url("postgres"), &format!("create database {db}"));
    execute(
        &standby.url("postgres"),
        "alter system set default_transaction_read_only = on",
    );
    execute(&standby.url("postgres"), "select pg_reload_conf()");
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write&sslmode=disable",
        standby.port(),
        primary.port()
    );
    let out = migrate(&url, &example_dir());
    out.expect(0);
    assert_eq!(rows(&primary.url(&db)).len(), 4);
    assert!(!table_exists(&standby.url(&db), "users"));
}

// ---- connection poolers ------------------------------------------------------------------------

/// A PgBouncer in transaction mode in front of `port`, handing idle server connections out round
/// robin, so consecutive transactions of one client land on different server sessions.
struct Bouncer {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Bouncer {
    fn start(pg_port: u16) -> Bouncer {
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("pgbouncer is needed for this test: apt-get install -y pgbouncer");
        let dir = std::env::temp_dir().join(format!("portcullis-pgb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"unused\"\n").unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port} user=postgres password={PASSWORD}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\npool_mode = transaction\n\
                 server_round_robin = 1\ndefault_pool_size = 4\nlogfile = {}\n",
                dir.join("users.txt").display(),
                dir.join("pgbouncer.log").display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // PgBouncer refuses to run as root.
        if unsafe_is_root()
            && let Some((uid, gid)) = postgres_uid()
        {
            use std::os::unix::process::CommandExt;
            for f in ["", "users.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid)).unwrap();
            }
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start pgbouncer");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Bouncer { child, dir, port }
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_transaction_mode_pooler_is_detected_and_refused() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("pooler");
    let bouncer = Bouncer::start(cluster.port());
    let url = format!(
        "postgres://postgres:x@127.0.0.1:{}/{db}?sslmode=disable",
        bouncer.port
    );
    // Warm the pool: three clients in open transactions at once make three server sessions.
    let holds: Vec<_> = (0..3)
        .map(|_| hold_lock(&url, "pg_class", Duration::from_millis(800)))
        .collect();
    for h in holds {
        h.join().unwrap();
    }
    let out = migrate(&url, &example_dir());
    out.expect(6);
    out.says("transaction-mode connection pooler");
    out.says("PORTCULLIS_DATABASE_URL");
    assert!(
        !table_exists(&cluster.url(&db), "users"),
        "nothing was applied"
    );
    // Directly, the same database migrates.
    migrate(&cluster.url(&db), &example_dir()).expect(0);
}

// ---- files with their own transaction control --------------------------------------------------

/// An open transaction that wrote to `table` (so it holds ROW EXCLUSIVE, which CREATE INDEX
/// CONCURRENTLY waits out), from a session named `blocker-test`, until released.
fn hold_writes(url: &str, table: &str) -> SessionHolder {
    hold_session(
        &format!("{url}&application_name=blocker-test"),
        &format!("BEGIN; INSERT INTO {table} VALUES (0);"),
        "COMMIT",
    )
}

#[test]
fn a_lock_timeout_after_a_files_own_commit_is_not_retried() {
    let url = fresh_db("own_commit_retry");
    execute(
        &url,
        "create table audit (n int); create table busy3 (id int)",
    );
    let mut folder = Folder::new();
    folder
        .add("0000_audit", 1, "INSERT INTO audit VALUES (1);")
        .add(
            "0001_commit_then_alter",
            2,
            "COMMIT;\n--> statement-breakpoint\nALTER TABLE busy3 ADD COLUMN note text;",
        );
    let out = migrate_held(&url, &folder, hold_table(&url, "busy3"));
    out.expect(8);
    out.says("55P03");
    out.says("may have ended this transaction");
    out.says("is not retried");
    out.never_says("retry 1 of 2");
    // The file's COMMIT committed 0000_audit and its row once; a retry would have run them again.
    assert_eq!(
        query(&url, "select count(*)::text from audit"),
        [[Some("1".into())]]
    );
    assert_eq!(rows(&url).len(), 1);
    // The next run, with the blocker gone, finishes the job.
    let again = run(command(&url, folder.path()).arg("migrate"));
    again.expect(0);
    assert_eq!(
        query(&url, "select count(*)::text from audit"),
        [[Some("1".into())]]
    );
    assert_eq!(rows(&url).len(), 2);
}

#[test]
fn a_concurrent_index_that_timed_out_is_not_retried_into_an_invalid_index() {
    let url = fresh_db("cic_timeout");
    execute(&url, "create table orders (ref int)");
    let mut folder = Folder::new();
    folder.add(
        "0000_index",
        1,
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"orders_ref\" ON \"orders\" (\"ref\");",
    );
    let out = migrate_held(&url, &folder, hold_writes(&url, "orders"));
    out.expect(8);
    out.says("55P03");
    out.says("left the INVALID index public.orders_ref behind");
    out.says("DROP INDEX CONCURRENTLY IF EXISTS public.orders_ref;");
    out.never_says("retry 1 of 2");
    assert!(
        rows(&url).is_empty(),
        "an INVALID index must not be recorded as applied"
    );
    // Dropping it as told, the next run builds it for real.
    execute(&url, "DROP INDEX CONCURRENTLY IF EXISTS public.orders_ref");
    run(command(&url, folder.path()).arg("migrate")).expect(0);
    assert_eq!(
        query(
            &url,
            "select indisvalid::text from pg_index where indexrelid = 'orders_ref'::regclass"
        ),
        [[Some("true".into())]]
    );
    assert_eq!(rows(&url).len(), 1);
}

#[test]
fn a_file_outside_a_transaction_that_ends_with_begin_still_gets_its_row_committed() {
    let url = fresh_db("trailing_begin");
    let mut folder = Folder::new();
    folder.add("0000_table", 1, "CREATE TABLE tb (c int);").add(
        "0001_index",
        2,
        "COMMIT;\n--> statement-breakpoint\nCREATE INDEX CONCURRENTLY \"tb_c\" ON \"tb\" (\"c\");\
             \n--> statement-breakpoint\nBEGIN;",
    );
    let out = run(command(&url, folder.path()).arg("migrate"));
    out.expect(0);
    out.says("outside a transaction");
    assert_eq!(rows(&url).len(), 2, "{}", out.stderr);
    // Recorded for good: the next run has nothing to do (it would fail on the existing index).
    let again = run(command(&url, folder.path()).arg("migrate"));
    again.expect(0);
    assert_eq!(rows(&url).len(), 2);
}

#[test]
fn a_failed_statement_is_shown_without_its_string_literals() {
    let url = fresh_db("excerpt_masked");
    let mut folder = Folder::new();
    folder.add(
        "0000_role",
        1,
        "-- the app's password: SECRETPW\nALTER ROLE no_such_role PASSWORD 'SECRETPW';",
    );
    let out = run(command(&url, folder.path()).arg("migrate"));
    out.expect(8);
    out.says("42704");
    out.says("(`ALTER ROLE no_such_role PASSWORD '…';`)");
    out.never_says("SECRETPW");
}

/// SIGTERM while a migration outside a transaction waits to retry a statement that hit
/// lock_timeout: its first statement stays committed, and the message says so (not "nothing
/// half-done was committed"). The signal lands in the pause between attempts (≥ 500 ms after
/// a 300 ms wait) or, rarely, in the next attempt; either way the message must say it.
#[test]
fn sigterm_while_a_statement_outside_a_transaction_waits_to_retry_says_what_stays() {
    let url = fresh_db("nt_retry_term");
    execute(&url, "create table busy4 (id int)");
    let mut folder = Folder::new();
    folder.add(
        "0000_nt",
        1,
        "-- portcullis: no-transaction\ncreate table nt_first (id int);\n\
         --> statement-breakpoint\nALTER TABLE busy4 ADD COLUMN note text;",
    );
    let holder = hold_table(&url, "busy4");
    let started = Instant::now();
    let child = spawn(
        command(&url, folder.path())
            .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "300ms")
            .env("PORTCULLIS_DDL_LOCK_RETRIES", "20")
            .arg("migrate"),
    );
    wait_until_blocked(&url);
    std::thread::sleep(Duration::from_millis(450));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = finish(child, started, Duration::from_secs(20));
    holder.release();
    out.expect(143);
    out.says("0000_nt runs outside a transaction");
    out.says("statement(s) 1 ran and are committed");
    out.never_says("nothing half-done");
    assert!(table_exists(&url, "nt_first"));
    assert!(rows(&url).is_empty());
}
