//! drizzle-kit 1.0's folder layout and drizzle 1.0's tracking table on a real PostgreSQL: fresh
//! runs, pending by name, the v0 -> v1 upgrade and its refusal, nameless rows (E43), a journal
//! folder meeting a table drizzle 1.0 wrote, layout detection. The same scenarios against the
//! real drizzle-orm/drizzle-kit 1.0 are in tests/v1.

use crate::run::*;
use crate::support::{PASSWORD, execute, free_port, query};
use portcullis::report::drizzle_up_folder_name;

const T: &str = "\"drizzle\".\"__drizzle_migrations\"";

fn cmd(url: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    run(command(url, dir).args(args))
}

fn sha(sql: &str) -> String {
    portcullis::source::split::hash(sql)
}

/// Three journal entries whose `when` has milliseconds, as drizzle-kit 0.x writes them.
const JOURNAL: [(&str, i64, &str); 3] = [
    (
        "0000_init",
        1_700_000_000_250,
        "create table {p}_a (id int);",
    ),
    (
        "0001_more",
        1_700_000_001_750,
        "create table {p}_b (id int);\n--> statement-breakpoint\nalter table {p}_b add column x int;",
    ),
    (
        "0002_last",
        1_700_000_002_999,
        "create table {p}_c (id int);",
    ),
];

fn journal(p: &str) -> Folder {
    let mut f = Folder::new();
    for (tag, when, sql) in JOURNAL {
        f.add(tag, when, &sql.replace("{p}", p));
    }
    f
}

/// The folder `drizzle-kit up` makes of [`journal`] (same bytes, folder names from `when`).
fn converted(p: &str) -> Folders {
    let mut f = Folders::new();
    for (tag, when, sql) in JOURNAL {
        f.add(&drizzle_up_folder_name(tag, when), &sql.replace("{p}", p));
    }
    f
}

const V1_COLUMNS: [&str; 5] = [
    "id integer",
    "hash text",
    "created_at bigint",
    "name text",
    "applied_at timestamp with time zone",
];

#[test]
fn a_folder_layout_gets_drizzle_1_table_and_rows_then_a_no_op() {
    let url = fresh_db("v1fresh");
    let mut f = Folders::new();
    f.add("20250101000000_init", "create table f_a (id int);")
        .add(
            "20250101000001_more",
            "create table f_b (id int);\n--> statement-breakpoint\ncreate index on f_b (id);",
        )
        .add("20250101000002_last", "create table f_c (id int);");
    let out = migrate(&url, f.path());
    out.expect(0);
    out.says("applied 3 migrations");
    assert_eq!(tracking_columns(&url), V1_COLUMNS);
    let rows = v1_rows(&url);
    let expected: Vec<(String, String, String, bool)> = [
        (
            "create table f_a (id int);",
            "1735689600000",
            "20250101000000_init",
        ),
        (
            "create table f_b (id int);\n--> statement-breakpoint\ncreate index on f_b (id);",
            "1735689601000",
            "20250101000001_more",
        ),
        (
            "create table f_c (id int);",
            "1735689602000",
            "20250101000002_last",
        ),
    ]
    .iter()
    .map(|(sql, at, name)| (sha(sql), at.to_string(), name.to_string(), false))
    .collect();
    assert_eq!(rows, expected);
    // One run, one transaction: applied_at is the same now() for every row (E44).
    assert_eq!(
        query(&url, &format!("select count(distinct applied_at) from {T}"))[0][0].as_deref(),
        Some("1")
    );
    let again = migrate(&url, f.path());
    again.expect(0);
    assert!(
        again.stderr.contains("up to date, 3 migrations applied"),
        "{}",
        again.stderr
    );
    assert_eq!(v1_rows(&url), expected);
}

#[test]
fn a_late_branch_migration_is_applied_by_name() {
    let url = fresh_db("v1late");
    let mut f = Folders::new();
    f.add("20250101000000_a", "create table l_a (id int);")
        .add("20250101000002_c", "create table l_c (id int);");
    migrate(&url, f.path()).expect(0);
    f.add("20250101000001_b", "create table l_b (id int);");
    // drizzle 1.0 applies it: no PORTCULLIS_OUT_OF_ORDER needed, whatever its default.
    let plan = cmd(&url, f.path(), &["plan"]);
    plan.expect(0);
    assert!(plan.stdout.contains("20250101000001_b"), "{}", plan.stdout);
    let status = cmd(&url, f.path(), &["status"]);
    assert!(
        status.stdout.contains("drizzle 1.0 applies it too"),
        "{}",
        status.stdout
    );
    let out = migrate(&url, f.path());
    out.expect(0);
    out.says("merged late");
    assert!(table_exists(&url, "l_b"));
    let names: Vec<String> = v1_rows(&url).into_iter().map(|r| r.2).collect();
    assert_eq!(
        names,
        ["20250101000000_a", "20250101000002_c", "20250101000001_b"]
    );
    migrate(&url, f.path()).expect(0);
}

#[test]
fn folders_of_one_second_run_in_locale_compare_order_not_byte_order() {
    let url = fresh_db("v1order");
    let mut f = Folders::new();
    // Byte order puts addIndex ('I' 0x49) before add_index ('_' 0x5f); drizzle's localeCompare
    // puts add_index first, and addIndex depends on it.
    f.add(
        "20250101000000_addIndex",
        "create index o_first_id on o_first (id);",
    )
    .add("20250101000000_add_index", "create table o_first (id int);");
    let out = migrate(&url, f.path());
    out.expect(0);
    out.says("not byte order");
    let names: Vec<String> = v1_rows(&url).into_iter().map(|r| r.2).collect();
    assert_eq!(
        names,
        ["20250101000000_add_index", "20250101000000_addIndex"]
    );
}

#[test]
fn a_0x_table_is_upgraded_the_way_drizzle_1_does_it() {
    let url = fresh_db("v1up");
    migrate(&url, journal("u").path()).expect(0);
    let before = rows(&url);
    let mut f = converted("u");
    f.add("20250101000000_new", "create table u_new (id int);");

    // Read-only commands show the upgrade and change nothing.
    let plan = cmd(&url, f.path(), &["plan"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("upgraded to drizzle 1.0's shape"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!(
            "UPDATE {T} SET \"name\" = '20231114221320_init', \"applied_at\" = NULL WHERE \"id\" = 1"
        )),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("'20250101000000_new')"),
        "{}",
        plan.stdout
    );
    let status = cmd(&url, f.path(), &["status", "--format", "json"]);
    status.expect(0);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["layout"], "folders");
    assert_eq!(doc["table_shape"], "0.x");
    assert_eq!(doc["counts"]["applied"], 3);
    assert_eq!(doc["counts"]["pending"], 1);
    assert!(doc["notes"][0].as_str().unwrap().contains("names 3 row(s)"));
    assert_eq!(
        tracking_columns(&url).len(),
        3,
        "read-only commands changed the table"
    );

    let out = migrate(&url, f.path());
    out.expect(0);
    out.says("upgraded");
    out.says("applied 1 migration");
    assert_eq!(tracking_columns(&url), V1_COLUMNS);
    let after = v1_rows(&url);
    for (i, (tag, when, _)) in JOURNAL.iter().enumerate() {
        // Upgraded rows keep hash and millisecond created_at, get the name, and applied_at NULL.
        assert_eq!((&after[i].0, &after[i].1), (&before[i].0, &before[i].1));
        assert_eq!(after[i].2, drizzle_up_folder_name(tag, *when));
        assert!(after[i].3, "applied_at of an upgraded row is NULL");
    }
    assert_eq!(after[3].1, "1735689600000");
    assert_eq!(after[3].2, "20250101000000_new");
    assert!(!after[3].3);
    migrate(&url, f.path()).expect(0);
    assert_eq!(v1_rows(&url), after);
}

#[test]
fn the_upgrade_refuses_rows_that_match_no_folder_and_changes_nothing() {
    let url = fresh_db("v1refuse");
    migrate(&url, journal("r").path()).expect(0);
    execute(
        &url,
        &format!("insert into {T} (hash, created_at) values (repeat('e', 64), 1600000000123)"),
    );
    let mut f = converted("r");
    f.add("20250101000000_new", "create table r_new (id int);");
    let out = migrate(&url, f.path());
    out.expect(4);
    out.says("ids 4");
    out.says("Nothing was changed");
    out.says("2020-09-13 12:26:40 UTC");
    assert_eq!(tracking_columns(&url).len(), 3);
    assert!(!table_exists(&url, "r_new"));
    let validate = cmd(&url, f.path(), &["validate"]);
    validate.expect(4);
    assert!(
        validate.stderr.contains("matches no folder"),
        "{}",
        validate.stderr
    );
    // Listed once, as the upgrade's refusal, not again as a row matching no migration.
    validate.says("found 1 problem");
    assert!(
        !validate.stderr.contains("matches no migration"),
        "{}",
        validate.stderr
    );
    let status = cmd(&url, f.path(), &["status"]);
    status.expect(0);
    assert!(status.stdout.contains("refuses it"), "{}", status.stdout);
}

#[test]
fn a_nameless_row_is_refused_not_rerun_and_repair_names_it() {
    // E43: the table is in 1.0's shape, then an older image with drizzle 0.x recorded the last
    // journal entry with name NULL (and created it).
    let url = fresh_db("v1null");
    let mut f = converted("n");
    let last = drizzle_up_folder_name(JOURNAL[2].0, JOURNAL[2].1);
    f.remove(&last);
    migrate(&url, f.path()).expect(0);
    let sql = JOURNAL[2].2.replace("{p}", "n");
    execute(
        &url,
        &format!(
            "{sql} insert into {T} (hash, created_at) values ('{}', {})",
            sha(&sql),
            JOURNAL[2].1
        ),
    );
    let f = converted("n");
    let out = migrate(&url, f.path());
    out.expect(4);
    out.says(&format!("UPDATE {T} SET name = '{last}' WHERE id = 3;"));
    let status = cmd(&url, f.path(), &["status"]);
    assert!(
        status.stdout.contains("recorded-without-name"),
        "{}",
        status.stdout
    );
    cmd(&url, f.path(), &["validate"]).expect(4);

    let dry = cmd(&url, f.path(), &["repair"]);
    dry.expect(0);
    assert!(
        dry.stdout.contains("set name of row id 3"),
        "{}",
        dry.stdout
    );
    cmd(&url, f.path(), &["repair", "--apply"]).expect(0);
    let out = migrate(&url, f.path());
    out.expect(0);
    out.says("up to date, 3 migrations applied");
    assert_eq!(v1_rows(&url)[2].2, last);
}

#[test]
fn a_journal_folder_never_reapplies_what_drizzle_1_applied() {
    // drizzle 1.0 (here: portcullis on the converted folder) applied the first two with
    // second-precision created_at; an older image with the journal then deploys (a rollback,
    // a branch). drizzle 0.x would re-run 0001_more: its `when` ...001750 is above the mark
    // ...001000.
    let url = fresh_db("v1mixed");
    let mut f = converted("x");
    f.remove(&drizzle_up_folder_name(JOURNAL[2].0, JOURNAL[2].1));
    migrate(&url, f.path()).expect(0);
    let out = migrate(&url, journal("x").path());
    out.expect(0);
    out.says("applied 1 migration");
    out.says("0002_last");
    let rows = v1_rows(&url);
    assert_eq!(rows.len(), 3);
    // The journal run writes the row drizzle 0.x would, plus the name `drizzle-kit up` gives it.
    assert_eq!(rows[2].1, JOURNAL[2].1.to_string());
    assert_eq!(
        rows[2].2,
        drizzle_up_folder_name(JOURNAL[2].0, JOURNAL[2].1)
    );
    // So drizzle 1.0 on the converted folder finds everything applied.
    let out = migrate(&url, converted("x").path());
    out.expect(0);
    out.says("up to date, 3 migrations applied");
    let status = cmd(&url, journal("x").path(), &["status", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["counts"]["applied"], 3, "{}", status.stdout);
}

#[test]
fn baseline_writes_drizzle_1_rows_for_folders() {
    let url = fresh_db("v1base");
    let f = converted("b");
    let first = drizzle_up_folder_name(JOURNAL[0].0, JOURNAL[0].1);
    execute(&url, &JOURNAL[0].2.replace("{p}", "b"));
    cmd(&url, f.path(), &["baseline", "--to", &first]).expect(0);
    assert_eq!(
        v1_rows(&url),
        vec![(
            sha(&JOURNAL[0].2.replace("{p}", "b")),
            "1700000000000".to_string(),
            first,
            false
        )]
    );
    migrate(&url, f.path()).expect(0);
    assert_eq!(v1_rows(&url).len(), 3);
}

/// Folder errors exit 3 before connecting.
fn folder_error(dir: &std::path::Path) -> Output {
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let out = run(command(&url, dir).arg("migrate"));
    out.expect(3);
    out
}

#[test]
fn exit_3_for_both_layouts_neither_or_a_folder_without_timestamp() {
    let both = journal("z");
    std::fs::create_dir_all(both.path().join("20250101000000_x")).unwrap();
    both.write("20250101000000_x/migration.sql", b"select 1;");
    let out = folder_error(both.path());
    out.says("holds both");
    out.says("drizzle-kit up");

    let mut bad = Folders::new();
    bad.add("20250101000000_ok", "select 1;")
        .add("init", "select 1;");
    let out = folder_error(bad.path());
    out.says("14-digit timestamp");
    out.says("init");

    let neither = Folders::new();
    let out = folder_error(neither.path());
    out.says("no meta/_journal.json");
    out.says("migration.sql");

    // Validated offline too.
    let out =
        run(command("postgres://x@127.0.0.1:1/x", bad.path()).args(["validate", "--offline"]));
    out.expect(3);
}

#[test]
fn nameless_rows_under_a_journal_are_warned_about_and_repair_names_them() {
    // A 1.0-shaped table where drizzle 0.x (not portcullis) recorded the journal's entries.
    let url = fresh_db("v1warn");
    execute(
        &url,
        &format!(
            "create schema drizzle; create table {T} (id serial primary key, hash text not null, \
             created_at bigint, name text, applied_at timestamp with time zone default now())"
        ),
    );
    let j = journal("w");
    for (_, when, sql) in JOURNAL {
        let sql = sql.replace("{p}", "w");
        execute(
            &url,
            &format!(
                "{sql}; insert into {T} (hash, created_at) values ('{}', {when})",
                sha(&sql)
            ),
        );
    }
    let out = migrate(&url, j.path());
    out.expect(0);
    out.says("have no name");
    cmd(&url, j.path(), &["repair", "--apply"]).expect(0);
    let out = migrate(&url, j.path());
    out.expect(0);
    out.never_says("have no name");
    let out = migrate(&url, converted("w").path());
    out.expect(0);
    out.says("up to date, 3 migrations applied");
}

#[test]
fn a_non_transactional_folder_migration_runs_on_its_own() {
    // The checks for statements that refuse a transaction block cover the folder layout too.
    let url = fresh_db("v1conc");
    let mut f = Folders::new();
    f.add("20250101000000_t", "create table conc_t (id int);")
        .add(
            "20250101000001_idx",
            "CREATE INDEX CONCURRENTLY conc_t_id ON conc_t (id);",
        )
        .add("20250101000002_u", "create table conc_u (id int);");
    migrate(&url, f.path()).expect(0);
    assert_eq!(
        query(
            &url,
            "select indisvalid::text from pg_index where indexrelid = 'conc_t_id'::regclass"
        )[0][0]
            .as_deref(),
        Some("true")
    );
    let names: Vec<String> = v1_rows(&url).into_iter().map(|r| r.2).collect();
    assert_eq!(
        names,
        ["20250101000000_t", "20250101000001_idx", "20250101000002_u"]
    );
    // Two such statements in one chunk cannot work, in this layout as in the journal one.
    let mut bad = Folders::new();
    bad.add(
        "20250101000000_two",
        "CREATE INDEX CONCURRENTLY a ON conc_t (id); CREATE INDEX CONCURRENTLY b ON conc_t (id);",
    );
    folder_error(bad.path());
}

#[test]
fn exit_3_for_a_folder_name_with_a_control_character() {
    let mut f = Folders::new();
    f.add("20250101000000_a\nINFO forged", "select 1;");
    let out = folder_error(f.path());
    out.says("control character");
    out.never_says("\nINFO forged");
}

/// Holds the migration lock from a test session while `runner` queues behind it, then releases
/// it and returns the runner's output.
fn queued_behind_a_holder(url: &str, runner: &mut std::process::Command) -> Output {
    let holder = hold_lock(url);
    let started = std::time::Instant::now();
    let child = spawn(runner);
    wait_for_statement(url, "pg_advisory_lock_shared");
    drop(holder);
    finish(child, started, std::time::Duration::from_secs(30))
}

/// A runner queued behind another reads the table in whichever shape it has (it guesses the
/// shape from the folder's layout, one round trip, and reads again when the guess was wrong),
/// and leaves when nothing is left: a journal folder with drizzle 0.x's table and with drizzle
/// 1.0's, and a folder layout with 1.0's.
#[test]
fn a_queued_runner_leaves_when_done_whatever_the_table_shape() {
    for (case, p) in [
        ("journal, 0.x table", "q0"),
        ("journal, 1.0 table", "q1"),
        ("folders", "q2"),
    ] {
        let url = fresh_db(&format!("queued_{p}"));
        // Both kept alive for the runs below (they are removed on drop).
        let (journal_folder, folders) = (journal(p), converted(p));
        let path = if case == "folders" {
            folders.path()
        } else {
            journal_folder.path()
        };
        migrate(&url, path).expect(0);
        if case == "journal, 1.0 table" {
            execute(
                &url,
                &format!(
                    "alter table {T} add column name text, \
                     add column applied_at timestamp with time zone default now()"
                ),
            );
        }
        let out = queued_behind_a_holder(&url, command(&url, path).arg("migrate"));
        out.expect(0);
        assert!(
            out.stderr
                .contains("the runner this one waited for left nothing to do"),
            "{case}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("up to date, 3 migrations applied"),
            "{case}: {}",
            out.stderr
        );
        assert_eq!(advisory_locks(&url), 0, "{case}");
    }
}

/// A run with nothing to do reads the table with COPY, not through the catalogs: names with a
/// backslash, a quote, spaces and non-ASCII letters come back exactly as written (COPY escapes
/// the backslash), so every migration counts as applied without a second read.
#[test]
fn a_no_op_reads_odd_names_back_exactly_with_copy() {
    let url = fresh_db("v1copy");
    let mut f = Folders::new();
    f.add("20250101000000_back\\slash", "create table c_a (id int);")
        .add("20250101000001_it's ünïcode", "create table c_b (id int);")
        .add("20250101000002_tab\\t not", "create table c_c (id int);");
    migrate(&url, f.path()).expect(0);
    let again = migrate_debug(&url, f.path());
    again.expect(0);
    again.says(&format!("read {T} with COPY: 3 rows"));
    again.says("up to date, 3 migrations applied, nothing pending");
    assert!(
        !again.stderr.contains("the usual way"),
        "the quick read was not used to the end:\n{}",
        again.stderr
    );
    // The normal read (status) agrees.
    let status = cmd(&url, f.path(), &["status", "--format", "json"]);
    status.expect(0);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(doc["counts"]["pending"], 0, "{doc}");
    assert_eq!(doc["counts"]["applied"], 3, "{doc}");
}
