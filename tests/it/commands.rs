//! The operator commands (status, plan, validate, baseline, repair, wait, await) on fresh, partly
//! migrated, fully migrated and damaged databases.

use crate::run::*;
use crate::support::{Cluster, PASSWORD, execute, free_port, query};
use std::time::{Duration, Instant};

fn cmd(url: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    run(command(url, dir).args(args))
}

/// Everything a command could change: tables in every schema and the tracking rows.
fn fingerprint(url: &str) -> Vec<Vec<Option<String>>> {
    let mut all = query(
        url,
        "select table_schema || '.' || table_name from information_schema.tables \
         where table_schema not in ('pg_catalog', 'information_schema') order by 1",
    );
    if table_exists(url, "drizzle.__drizzle_migrations") {
        all.extend(query(
            url,
            "select id::text || hash || coalesce(created_at::text, 'NULL') \
             from drizzle.__drizzle_migrations order by id",
        ));
    }
    all
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn states(doc: &serde_json::Value) -> Vec<String> {
    doc["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_string())
        .collect()
}

fn four() -> Folder {
    let mut f = Folder::new();
    f.add("0000_a", 1_700_000_000_000, "create table c_a (id int);")
        .add("0001_b", 1_700_000_001_000, "create table c_b (id int);")
        .add("0002_c", 1_700_000_002_000, "create table c_c (id int);")
        .add("0003_d", 1_700_000_003_000, "create table c_d (id int);");
    f
}

// ---- status -------------------------------------------------------------------------------

#[test]
fn status_on_fresh_partial_full_and_damaged_databases() {
    let url = fresh_db("status");
    let folder = four();

    // Fresh: everything pending, nothing created (read-only).
    let out = cmd(&url, folder.path(), &["status", "--format", "json"]);
    out.expect(0);
    let doc = json(&out);
    assert_eq!(doc["table_exists"], false);
    assert_eq!(states(&doc), ["pending"; 4]);
    assert!(!table_exists(&url, "drizzle.__drizzle_migrations"));

    // Partly migrated: apply the first two with a shorter journal.
    let mut first_two = Folder::new();
    first_two
        .add("0000_a", 1_700_000_000_000, "create table c_a (id int);")
        .add("0001_b", 1_700_000_001_000, "create table c_b (id int);");
    migrate(&url, first_two.path()).expect(0);
    let doc = json(&cmd(&url, folder.path(), &["status", "--format", "json"]));
    assert_eq!(states(&doc), ["applied", "applied", "pending", "pending"]);
    assert_eq!(doc["counts"]["applied"], 2);
    assert_eq!(doc["counts"]["pending"], 2);
    assert_eq!(doc["summary"], "2 of 4 applied, 2 pending");

    // Text: an aligned table with the summary, no colour when not on a terminal.
    let out = cmd(&url, folder.path(), &["status"]);
    out.expect(0);
    assert!(out.stdout.contains("TAG"), "{}", out.stdout);
    assert!(
        out.stdout.contains("0002_c  2023-11-14 22:13:22  pending"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('\x1b'));
    assert!(out.stdout.contains("2 of 4 applied, 2 pending"));
    assert!(
        out.stdout
            .contains("migration lock: free, no runner is migrating now"),
        "{}",
        out.stdout
    );

    // While a runner holds the migration lock, status says so (text and JSON).
    let runner = hold_lock(&url);
    let out = cmd(&url, folder.path(), &["status"]);
    out.expect(0);
    assert!(
        out.stdout.contains("migration lock: held by pid "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(": a runner is migrating now"),
        "{}",
        out.stdout
    );
    let doc = json(&cmd(&url, folder.path(), &["status", "--format", "json"]));
    assert_eq!(doc["migrating"].as_array().map(Vec::len), Some(1), "{doc}");
    runner.release();
    let doc = json(&cmd(&url, folder.path(), &["status", "--format", "json"]));
    assert_eq!(doc["migrating"], serde_json::json!([]));

    // Fully migrated.
    migrate(&url, folder.path()).expect(0);
    let doc = json(&cmd(&url, folder.path(), &["status", "--format", "json"]));
    assert_eq!(states(&doc), ["applied"; 4]);
    assert_eq!(doc["migrations"][0]["row_id"], 1);
    assert_eq!(doc["migrations"][0]["when_utc"], "2023-11-14 22:13:20 UTC");

    // Damaged: an edited file, an out-of-order entry, an unknown row, a NULL created_at and a
    // text-typed created_at: status still exits 0 and shows each.
    let mut merged = Folder::new();
    merged
        .add("0000_a", 1_700_000_000_000, "create table c_a (id int);")
        .add("0001_b", 1_700_000_001_000, "create table c_b (id bigint);")
        .add("0001_x", 1_700_000_001_500, "create table c_x (id int);")
        .add("0002_c", 1_700_000_002_000, "create table c_c (id int);")
        .add("0003_d", 1_700_000_003_000, "create table c_d (id int);");
    execute(
        &url,
        "insert into drizzle.__drizzle_migrations (hash, created_at) values (repeat('e', 64), 1800000000000);\
         insert into drizzle.__drizzle_migrations (hash, created_at) values (repeat('f', 64), null);",
    );
    let doc = json(&cmd(&url, merged.path(), &["status", "--format", "json"]));
    assert_eq!(
        states(&doc),
        ["applied", "edited", "out-of-order", "applied", "applied"]
    );
    assert_eq!(doc["counts"]["unknown"], 1);
    assert_eq!(doc["unknown_rows"][0]["id"], 5);
    assert!(
        doc["problems"][0].as_str().unwrap().contains("NULL"),
        "{doc}"
    );
    execute(
        &url,
        "alter table drizzle.__drizzle_migrations alter column created_at type text",
    );
    let out = cmd(&url, merged.path(), &["status"]);
    out.expect(0);
    assert!(
        out.stdout
            .contains("problem: its `created_at` column is text"),
        "{}",
        out.stdout
    );
}

// ---- plan ----------------------------------------------------------------------------------

#[test]
fn plan_and_dry_run_show_the_sql_and_change_nothing() {
    let url = fresh_db("plan");
    let folder = four();
    let before = fingerprint(&url);
    let out = cmd(&url, folder.path(), &["plan"]);
    out.expect(0);
    assert!(
        out.stdout
            .contains("4 migrations to apply, in this order, in one transaction")
    );
    assert!(out.stdout.contains("[3/4] 0002_c"), "{}", out.stdout);
    assert!(
        out.stdout.contains("create table c_c (id int);"),
        "{}",
        out.stdout
    );
    let dry = cmd(&url, folder.path(), &["migrate", "--dry-run"]);
    dry.expect(0);
    assert_eq!(dry.stdout, out.stdout);
    assert_eq!(fingerprint(&url), before, "plan changed the database");

    let each = run(command(&url, folder.path())
        .env("PORTCULLIS_TRANSACTION", "each")
        .arg("plan"));
    assert!(
        each.stdout.contains("in its own transaction"),
        "{}",
        each.stdout
    );

    migrate(&url, folder.path()).expect(0);
    let out = cmd(&url, folder.path(), &["plan"]);
    out.expect(0);
    assert!(out.stdout.contains("nothing to apply"), "{}", out.stdout);

    // With an out-of-order entry, plan refuses exactly like migrate would (exit 4).
    let mut merged = four();
    merged.add("0001_x", 1_700_000_001_500, "create table c_x (id int);");
    // (0001_x comes last in the journal but its `when` is below the mark.)
    let out = cmd(&url, merged.path(), &["plan"]);
    out.expect(4);
    out.says("0001_x");
}

// ---- validate ------------------------------------------------------------------------------

/// `validate --offline` needs no connection setting at all (a CI job without a database), but
/// `validate` does.
#[test]
fn validate_offline_runs_without_any_connection_setting() {
    let out = run(command("", &example_dir())
        .env_remove("DATABASE_URL")
        .args(["validate", "--offline"]));
    out.expect(0);
    out.says("offline: the database was not consulted");
    let out = run(command("", &example_dir())
        .env_remove("DATABASE_URL")
        .arg("validate"));
    out.expect(2);
    out.says("no database given");
}

#[test]
fn validate_offline_lists_every_folder_problem() {
    let folder = four();
    let nowhere = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let out = cmd(&nowhere, folder.path(), &["validate", "--offline"]);
    out.expect(0);
    out.says("valid: 4 migrations");

    let mut bad = Folder::new();
    bad.add("0000_a", 2000, "create table v_a (id int);")
        .add("0001_b", 1000, "create table v_b (id int);\n-->statement-breakpoint\nselect 1;")
        .add(
            "0002_baseline",
            3000,
            "-- Current sql file was generated after introspecting the database\n\
             /*\nCREATE TABLE v_c (id int);\n--> statement-breakpoint\nCREATE TABLE v_d (id int);\n*/",
        );
    let out = cmd(&nowhere, bad.path(), &["validate", "--offline"]);
    out.expect(3);
    out.says("3 problems");
    out.says("0001_b has `when` 1000");
    out.says("0001_b.sql:2:");
    out.says("0002_baseline.sql:4:");
    out.says("/* */ comment");
    out.says("Fix them, then run `portcullis validate` again");

    let mut broken = Folder::new();
    broken.add("0000_a", 1, "select 1;");
    broken.write(
        "meta/_journal.json",
        b"{\"entries\": [ {\"tag\": \"0000_a\" } ] }",
    );
    cmd(&nowhere, broken.path(), &["validate", "--offline"]).expect(3);
}

#[test]
fn validate_online_checks_the_table_against_the_folder() {
    let url = fresh_db("validate");
    let folder = four();
    cmd(&url, folder.path(), &["validate"]).expect(0);
    migrate(&url, folder.path()).expect(0);
    cmd(&url, folder.path(), &["validate"]).expect(0);

    // Edit, out-of-order, NULL and unknown rows, all listed in one run.
    folder.write("0001_b.sql", b"create table c_b (id bigint);");
    let mut merged = Folder::new();
    merged
        .add("0000_a", 1_700_000_000_000, "create table c_a (id int);")
        .add("0001_b", 1_700_000_001_000, "create table c_b (id bigint);")
        .add("0001_x", 1_700_000_001_500, "create table c_x (id int);")
        .add("0002_c", 1_700_000_002_000, "create table c_c (id int);")
        .add("0003_d", 1_700_000_003_000, "create table c_d (id int);");
    execute(
        &url,
        "insert into drizzle.__drizzle_migrations (hash, created_at) values (repeat('e', 64), 1800000000000);\
         update drizzle.__drizzle_migrations set created_at = null where id = 3;",
    );
    let out = cmd(&url, merged.path(), &["validate"]);
    out.expect(4);
    for needle in [
        "0001_b",
        "edited",
        "0001_x",
        "out of order",
        "created_at NULL",
        "row id 5",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    // Out of order is a problem only where migrate would refuse it: with the policy `apply`
    // the same run lists every other problem but not that one.
    let out = run(command(&url, merged.path())
        .env("PORTCULLIS_OUT_OF_ORDER", "apply")
        .arg("validate"));
    out.expect(4);
    out.says("edited");
    out.never_says("out of order");
}

// ---- baseline ------------------------------------------------------------------------------

/// The example's SQL run by hand (as `drizzle-kit push` or a restored dump would leave it).
fn push_schema(url: &str, upto: usize) {
    let dir = example_dir();
    let mut tags: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    tags.sort();
    for t in &tags[..upto] {
        let sql = std::fs::read_to_string(dir.join(t)).unwrap();
        execute(url, &sql.replace("--> statement-breakpoint", ""));
    }
}

#[test]
fn baseline_writes_exactly_drizzles_rows_without_running_sql() {
    let url = fresh_db("baseline");
    push_schema(&url, 4);
    let out = cmd(&url, &example_dir(), &["baseline"]);
    out.expect(0);
    assert!(out.stdout.contains("recorded 0000_init"), "{}", out.stdout);
    // Byte-identical to the rows the real drizzle-kit wrote for this folder.
    let expected: Vec<(String, String)> = crate::migrate_basics::DRIZZLE_ROWS
        .iter()
        .map(|(h, w)| (h.to_string(), w.to_string()))
        .collect();
    assert_eq!(rows(&url), expected);
    let out = migrate(&url, &example_dir());
    out.expect(0);
    out.says("up to date, 4 migrations");
    // Idempotent.
    cmd(&url, &example_dir(), &["baseline"]).expect(0);
    assert_eq!(rows(&url).len(), 4);
}

#[test]
fn baseline_to_a_tag_then_migrate_applies_the_rest() {
    let url = fresh_db("baseline_to");
    push_schema(&url, 2);
    cmd(
        &url,
        &example_dir(),
        &["baseline", "--to", "0001_add_user_display_name"],
    )
    .expect(0);
    assert_eq!(rows(&url).len(), 2);
    let out = migrate(&url, &example_dir());
    out.expect(0);
    out.says("applied 2 migrations");
    assert!(table_exists(&url, "invitations"));

    let out = cmd(&url, &example_dir(), &["baseline", "--to", "9999_nope"]);
    out.expect(2);
    out.says("9999_nope");
}

#[test]
fn baseline_refuses_a_table_with_other_rows_unless_forced() {
    let url = fresh_db("baseline_force");
    push_schema(&url, 4);
    migrate(&url, &Folder::new().dir).expect(0); // creates the empty table
    execute(
        &url,
        "insert into drizzle.__drizzle_migrations (hash, created_at) values (repeat('e', 64), 1)",
    );
    let out = cmd(&url, &example_dir(), &["baseline"]);
    out.expect(4);
    out.says("--force");
    assert_eq!(rows(&url).len(), 1);
    cmd(&url, &example_dir(), &["baseline", "--force"]).expect(0);
    assert_eq!(rows(&url).len(), 5);
}

// ---- repair --------------------------------------------------------------------------------

#[test]
fn repair_shows_then_fixes_a_damaged_table_keeping_a_backup() {
    // Damage: text-typed created_at, a NULL, a duplicate row.
    let (url, folder) = four_applied_then(
        "repair",
        "alter table drizzle.__drizzle_migrations alter column created_at type text;\
         update drizzle.__drizzle_migrations set created_at = null where id = 2;\
         insert into drizzle.__drizzle_migrations (hash, created_at) \
           select hash, created_at from drizzle.__drizzle_migrations where id = 3;",
    );
    migrate(&url, folder.path()).expect(4);
    let before = fingerprint(&url);

    let out = cmd(&url, folder.path(), &["repair"]);
    out.expect(0);
    assert!(out.stdout.contains("would: convert"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("set created_at of row id 2 from NULL to 1700000001000"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("delete row id 5, an exact duplicate of row id 3"),
        "{}",
        out.stdout
    );
    assert_eq!(
        fingerprint(&url),
        before,
        "repair without --apply changed something"
    );

    let out = cmd(&url, folder.path(), &["repair", "--apply"]);
    out.expect(0);
    let backup = query(
        &url,
        "select table_name from information_schema.tables \
         where table_schema = 'drizzle' and table_name like '__drizzle_migrations_backup_%'",
    );
    assert_eq!(backup.len(), 1, "one backup table");
    let backup = backup[0][0].clone().unwrap();
    assert_eq!(
        query(&url, &format!("select count(*) from drizzle.\"{backup}\""))[0][0].as_deref(),
        Some("5"),
        "the backup holds the damaged rows"
    );
    assert_eq!(
        query(
            &url,
            "select data_type from information_schema.columns where table_schema = 'drizzle' \
             and table_name = '__drizzle_migrations' and column_name = 'created_at'"
        )[0][0]
            .as_deref(),
        Some("bigint")
    );
    assert_eq!(rows(&url).len(), 4);
    let out = migrate(&url, folder.path());
    out.expect(0);
    out.says("up to date, 4 migrations");
    cmd(&url, folder.path(), &["validate"]).expect(0);
    // Nothing left to do.
    let out = cmd(&url, folder.path(), &["repair"]);
    out.expect(0);
    out.says("needs no repair");
}

/// Rows whose created_at holds seconds (another tool wrote them) made every migration look
/// pending by drizzle's rule: migrate ran them all again (here failing on the first CREATE),
/// and repair said the table needed none. Now migrate refuses, and repair sets the rows.
#[test]
fn rows_in_seconds_are_refused_then_repaired_not_run_again() {
    let (url, folder) = four_applied_then(
        "repair_seconds",
        "update drizzle.__drizzle_migrations set created_at = created_at / 1000",
    );
    let before = fingerprint(&url);
    let out = migrate(&url, folder.path());
    out.expect(4);
    out.says("would run a second time");
    out.says("seconds, not milliseconds");
    assert_eq!(fingerprint(&url), before, "nothing was applied");
    let out = cmd(&url, folder.path(), &["status"]);
    out.says("0 of 4 applied, 4 recorded under an older created_at");
    cmd(&url, folder.path(), &["validate"]).expect(4);
    let out = cmd(&url, folder.path(), &["repair"]);
    out.expect(0);
    assert!(
        out.stdout
            .contains("set created_at of row id 1 from 1700000000 to 1700000000000"),
        "{}",
        out.stdout
    );
    cmd(&url, folder.path(), &["repair", "--apply"]).expect(0);
    let out = migrate(&url, folder.path());
    out.expect(0);
    out.says("up to date, 4 migrations");
    assert_eq!(rows(&url).len(), 4);
}

/// A database with `four()` applied, then damaged by `damage`: a repair to do.
fn four_applied_then(prefix: &str, damage: &str) -> (String, Folder) {
    let url = fresh_db(prefix);
    let folder = four();
    migrate(&url, folder.path()).expect(0);
    execute(&url, damage);
    (url, folder)
}

const TEXT_CREATED_AT: &str =
    "alter table drizzle.__drizzle_migrations alter column created_at type text";

/// drizzle-kit takes no lock of ours: a row it inserts after repair read the table must not
/// lose its `created_at` to a conversion planned without it (the CASE had no ELSE, so the
/// value became NULL). Repair now locks the table, finds it changed, and changes nothing.
#[test]
fn repair_changes_nothing_when_a_row_arrives_after_it_read_the_table() {
    let (url, folder) = four_applied_then("repair_race", TEXT_CREATED_AT);
    // An insert not committed yet: repair's read does not see it, its lock waits for it.
    let writer = hold_session(
        &url,
        "BEGIN; INSERT INTO drizzle.__drizzle_migrations (hash, created_at) \
         VALUES (repeat('f', 64), '1700000009000')",
        "COMMIT",
    );
    let started = Instant::now();
    // connect_timeout=20: up to 10 s for this test to see the wait and commit, however slow
    // the machine.
    let child = spawn(
        command(&format!("{url}&connect_timeout=20"), folder.path()).args(["repair", "--apply"]),
    );
    loop {
        let waiting = query(
            &url,
            "select count(*) from pg_stat_activity where application_name like 'portcullis@%' \
             and datname = current_database() and wait_event_type = 'Lock'",
        );
        if waiting[0][0].as_deref() != Some("0") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "repair never waited for the table lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.release();
    let out = finish(child, started, Duration::from_secs(60));
    out.expect(4);
    out.says("changed while repair was planning");
    out.says("4 row(s) then, 5 now");
    assert_eq!(
        query(
            &url,
            "select created_at from drizzle.__drizzle_migrations where hash = repeat('f', 64)"
        )[0][0]
            .as_deref(),
        Some("1700000009000"),
        "the late row keeps its created_at"
    );
    assert_eq!(
        query(
            &url,
            "select data_type from information_schema.columns where table_schema = 'drizzle' \
             and table_name = '__drizzle_migrations' and column_name = 'created_at'"
        )[0][0]
            .as_deref(),
        Some("text"),
        "nothing was converted"
    );
    assert!(
        query(
            &url,
            "select 1 from information_schema.tables where table_schema = 'drizzle' \
             and table_name like '__drizzle_migrations_backup_%'"
        )
        .is_empty(),
        "no backup was left behind"
    );
    // Run again, it plans for the five rows and converts them all.
    cmd(&url, folder.path(), &["repair", "--apply"]).expect(0);
    assert_eq!(
        query(
            &url,
            "select created_at::text from drizzle.__drizzle_migrations \
             where hash = repeat('f', 64)"
        )[0][0]
            .as_deref(),
        Some("1700000009000")
    );
}

/// A write lock kept on the table (an open transaction of the app or of drizzle-kit) is waited
/// for at most half the connect timeout: exit 4 naming what to look for, nothing changed.
#[test]
fn repair_gives_up_on_a_table_another_session_keeps_locked() {
    let (url, folder) = four_applied_then("repair_locked", TEXT_CREATED_AT);
    // A database's statement_timeout, shorter than the wait, does not cut it short.
    set_for_database(&url, "statement_timeout = '300ms'");
    let _writer = hold_session(
        &url,
        "BEGIN; LOCK TABLE drizzle.__drizzle_migrations IN ROW EXCLUSIVE MODE",
        "ROLLBACK",
    );
    let out = cmd(
        &format!("{url}&connect_timeout=2"),
        folder.path(),
        &["repair", "--apply"],
    );
    out.expect(4);
    out.says("another session kept a lock on \"drizzle\".\"__drizzle_migrations\" for 1s while locking it");
    out.says("nothing was changed");
    assert_eq!(
        query(
            &url,
            "select data_type from information_schema.columns where table_schema = 'drizzle' \
             and table_name = '__drizzle_migrations' and column_name = 'created_at'"
        )[0][0]
            .as_deref(),
        Some("text"),
        "nothing was converted"
    );
}

#[test]
fn repair_refuses_rows_it_cannot_resolve_and_changes_nothing() {
    let (url, folder) = four_applied_then(
        "repair_unres",
        "insert into drizzle.__drizzle_migrations (hash, created_at) values (repeat('e', 64), null)",
    );
    let before = fingerprint(&url);
    let out = cmd(&url, folder.path(), &["repair", "--apply"]);
    out.expect(4);
    out.says("row id 5");
    assert_eq!(fingerprint(&url), before);
}

// ---- wait and await ------------------------------------------------------------------------

#[test]
fn wait_exits_0_5_or_6() {
    let cluster = Cluster::shared();
    let out = cmd(&cluster.url("postgres"), &example_dir(), &["wait"]);
    out.expect(0);
    out.says("accepts connections");
    let closed = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    run(command(&closed, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "1s")
        .arg("wait"))
    .expect(5);
    cmd(
        &cluster.url_with("postgres", "nope", "postgres"),
        &example_dir(),
        &["wait"],
    )
    .expect(6);
}

#[test]
fn await_returns_once_a_peer_has_migrated() {
    let url = fresh_db("await");
    // Nothing migrated and nobody migrating: exit 5 at the timeout, naming what is pending.
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "2s")
        .arg("await"));
    out.expect(5);
    out.says("still pending");
    out.says("0003_add_invitations");
    out.says("no runner is migrating now");
    out.says("No runner holds the migration lock, so none is migrating now: check that the migration Job");
    assert!(
        !table_exists(&url, "drizzle.__drizzle_migrations"),
        "await is read-only"
    );
    // A runner holds the migration lock (a long migration): the message says it is migrating.
    let runner = hold_lock(&url);
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "2s")
        .arg("await"));
    out.expect(5);
    out.says("; migrating: pid ");
    out.says("A runner holds the migration lock and is still migrating: pid ");
    runner.release();

    // An app pod waits; the migration Job runs a moment later; the app pod goes on.
    let started = Instant::now();
    let waiter = spawn(
        command(&url, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "30s")
            .arg("await"),
    );
    // Once it has read the catalog (and found nothing applied), the migration may run.
    wait_for_sent(&url, "format_type(a.atttypid");
    migrate(&url, &example_dir()).expect(0);
    let out = finish(waiter, started, Duration::from_secs(30));
    out.expect(0);
    out.says("schema ready");
    out.says("waiting for 4 pending migration(s)");

    // Already migrated: immediate.
    let out = cmd(&url, &example_dir(), &["await"]);
    out.expect(0);
    out.never_says("waiting for");
}

/// A tracking table that another session keeps locked (a migration Job upgrading it, an
/// `ALTER TABLE` left in an open transaction) is not ready yet for `await`: it says which lock
/// and who holds it, and keeps waiting; once the lock is gone it goes on. Until its deadline:
/// then it exits 7 with the same words.
#[test]
fn await_waits_out_a_locked_tracking_table_naming_who_holds_it() {
    let url = fresh_db("await_locked");
    migrate(&url, &example_dir()).expect(0);
    let quick = format!("{url}&connect_timeout=2");
    let lock = "BEGIN; LOCK TABLE drizzle.__drizzle_migrations IN ACCESS EXCLUSIVE MODE";
    let holder = hold_session(
        &format!("{url}&application_name=await-locker-test"),
        lock,
        "COMMIT",
    );
    let started = Instant::now();
    let waiter = spawn(
        command(&quick, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
            .arg("await"),
    );
    // Past its first look (one connect timeout), the lock goes.
    std::thread::sleep(Duration::from_secs(3));
    holder.release();
    let out = finish(waiter, started, Duration::from_secs(60));
    out.expect(0);
    out.says(
        "while reading the tracking table, the session waited 2s (the connect timeout) for a \
         lock on drizzle.__drizzle_migrations (AccessShareLock), which another session holds: \
         pid ",
    );
    out.says("(\"await-locker-test\", idle in transaction");
    out.says("`await` keeps waiting (");
    out.says("schema ready");
    out.never_says("stopped answering");

    let _holder = hold_session(
        &format!("{url}&application_name=await-locker-test"),
        lock,
        "COMMIT",
    );
    let out = run(command(&quick, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "3s")
        .arg("await"));
    out.expect(7);
    out.says("\"await-locker-test\"");
    out.says("The database is up: the lock, not the network, kept the answer from coming.");
}

/// `await` reads the tracking table the cheap way (COPY) while it can judge it: at every pod
/// start with nothing pending, and on each poll while a migration Job runs, once the usual read
/// has confirmed the pending work. A table that does not exist yet is read the usual way after
/// the first look: one error in the server's log, not one a second.
#[test]
fn await_reads_the_table_with_copy_and_a_missing_one_costs_one_logged_error() {
    let url = fresh_db("await_quick");
    let db = log_statements(&url);
    let app = "portcullis@it-runner";
    let copy = "copy \"drizzle\".\"__drizzle_migrations\" to stdout";
    let catalogs = "format_type(a.atttypid";
    let count =
        |lines: &[String], needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    let mut folder = Folder::new();
    folder.add("0000_aq", 1_700_000_000_000, "CREATE TABLE aq (id int);");

    // No table yet: looks for 2 s, each after the first the usual way.
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_WAIT_TIMEOUT", "2s")
        .arg("await"));
    out.expect(5);
    let looks = server_log(&db, app);
    let missing = "ERROR:  relation \"drizzle.__drizzle_migrations\" does not exist";
    assert_eq!(count(&looks, missing), 1, "{}", looks.join("\n"));
    assert!(count(&looks, catalogs) >= 2, "{}", looks.join("\n"));

    // Everything applied: the cheap read alone.
    migrate(&url, folder.path()).expect(0);
    let before = server_log(&db, app).len();
    cmd(&url, folder.path(), &["await"])
        .expect(0)
        .says("schema ready");
    let look = server_log(&db, app).split_off(before);
    assert_eq!(count(&look, copy), 1, "{}", look.join("\n"));
    assert_eq!(count(&look, catalogs), 0, "{}", look.join("\n"));

    // A new migration that the Job has not applied yet: the usual read confirms it once, then
    // every poll is a COPY.
    folder.add("0001_aq", 1_700_000_001_000, "CREATE TABLE aq2 (id int);");
    let before = server_log(&db, app).len();
    let started = Instant::now();
    let waiter = spawn(
        command(&url, folder.path())
            .env("PORTCULLIS_WAIT_TIMEOUT", "30s")
            .arg("await"),
    );
    let polls = loop {
        let polls = server_log(&db, app).split_off(before);
        if count(&polls, copy) >= 3 {
            break polls;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "await did not poll with COPY:\n{}",
            polls.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(count(&polls, catalogs), 1, "{}", polls.join("\n"));
    migrate(&url, folder.path()).expect(0);
    let out = finish(waiter, started, Duration::from_secs(30));
    out.expect(0);
    out.says("waiting for 1 pending migration(s)");
    out.says("schema ready");
}

/// `seed`, `baseline` and `repair --apply` write under the migration lock too: while another
/// session holds it they wait (polling), give up after PORTCULLIS_LOCK_WAIT_TIMEOUT with exit 7,
/// and change nothing.
#[test]
fn writing_commands_wait_for_the_lock_and_change_nothing_without_it() {
    let url = fresh_db("cmd_locked");
    let seeds = std::env::temp_dir().join(format!("portcullis-cmd-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&seeds);
    std::fs::create_dir_all(&seeds).unwrap();
    std::fs::write(
        seeds.join("1_a.sql"),
        "create table seeded_here (id int);\n",
    )
    .unwrap();
    let before = fingerprint(&url);
    let holder = hold_lock(&url);
    for args in [&["seed"][..], &["baseline"], &["repair", "--apply"]] {
        let out = run(command(&url, &example_dir())
            .env("PORTCULLIS_SEEDS_DIR", &seeds)
            .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "1s")
            .args(args));
        out.expect(7);
        out.says("held the migration lock");
        assert_eq!(fingerprint(&url), before, "{args:?} changed something");
    }
    drop(holder);
    let _ = std::fs::remove_dir_all(&seeds);
}

/// `plan` says how each migration will run: one that must run outside a transaction is not
/// "in the batch transaction".
#[test]
fn plan_names_the_migrations_that_run_outside_a_transaction() {
    let url = fresh_db("plan_outside");
    let mut folder = Folder::new();
    folder.add("0000_table", 1, "CREATE TABLE po (c int);").add(
        "0001_index",
        2,
        "CREATE INDEX CONCURRENTLY \"po_c\" ON \"po\" (\"c\");",
    );
    let out = cmd(&url, folder.path(), &["plan"]);
    out.expect(0);
    assert!(
        out.stdout.contains(
            "2 migrations to apply, in this order, in one transaction, except 1 that runs \
             outside a transaction"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "1 statement, outside a transaction, statement by statement (each commits on its \
             own): CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 statement, in the batch transaction"),
        "{}",
        out.stdout
    );
}

/// `baseline` again after a checkout changed only line endings: the migration is the same one
/// (as `migrate` sees it), so nothing is recorded twice and nothing is refused.
#[test]
fn baseline_again_after_a_line_ending_change_records_nothing() {
    let url = fresh_db("baseline_crlf");
    let mut folder = Folder::new();
    folder.add("0000_a", 1, "CREATE TABLE bc (c int);\n").add(
        "0001_b",
        2,
        "ALTER TABLE bc ADD COLUMN d int;\n",
    );
    cmd(&url, folder.path(), &["baseline"]).expect(0);
    assert_eq!(rows(&url).len(), 2);
    std::fs::write(
        folder.path().join("0001_b.sql"),
        "ALTER TABLE bc ADD COLUMN d int;\r\n",
    )
    .unwrap();
    let out = cmd(&url, folder.path(), &["baseline"]);
    out.expect(0);
    assert_eq!(rows(&url).len(), 2, "{}", out.stderr);
}

/// Two untouched `--custom` files share a hash. With both rows' created_at NULL, repair gives
/// each row its own migration; it used to give both the first one and delete the second row
/// as a "duplicate", after which migrate refused the second migration as out of order.
#[test]
fn repair_gives_rows_of_two_identical_files_one_migration_each() {
    let url = fresh_db("repair_twins");
    let mut folder = Folder::new();
    let custom = "-- Custom SQL migration file, put your code below! --";
    folder
        .add("0000_custom_a", 1_700_000_000_000, custom)
        .add("0001_custom_b", 1_700_000_001_000, custom)
        .add(
            "0002_table",
            1_700_000_002_000,
            "CREATE TABLE twins (c int);",
        );
    migrate(&url, folder.path()).expect(0);
    execute(
        &url,
        "update drizzle.__drizzle_migrations set created_at = null where id in (1, 2)",
    );
    migrate(&url, folder.path()).expect(4);
    let out = cmd(&url, folder.path(), &["repair", "--apply"]);
    out.expect(0);
    assert!(!out.stdout.contains("delete row"), "{}", out.stdout);
    assert_eq!(
        query(
            &url,
            "select id::text, created_at::text from drizzle.__drizzle_migrations order by id"
        ),
        [
            [Some("1".into()), Some("1700000000000".into())],
            [Some("2".into()), Some("1700000001000".into())],
            [Some("3".into()), Some("1700000002000".into())],
        ]
    );
    let out = migrate(&url, folder.path());
    out.expect(0);
    out.never_says("applying");
}
