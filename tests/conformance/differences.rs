//! Where portcullis deliberately does not do what drizzle does (drizzle-compat.md section 6,
//! "Guard"), each shown next to what the real drizzle-kit does to the same database. Where
//! portcullis applies something drizzle-kit would not, the test also checks that drizzle-kit run
//! afterwards on that database applies nothing more (the tools can still take turns).
//!
//! | case | drizzle-kit 0.31 | portcullis |
//! |---|---|---|
//! | BOM at the start of a migration (E8) | sends U+FEFF, syntax error, run rolled back | strips it before sending, hashes the whole file, warns |
//! | BOM at the start of the journal (E8) | `JSON.parse` fails before connecting | accepts it, warns |
//! | entry older than the newest row, never applied (E18, E17) | skips it silently, forever | exit 4, nothing applied; `PORTCULLIS_OUT_OF_ORDER=skip` does exactly what drizzle does, `=apply` applies it |
//! | applied file edited afterwards (E7) | ignores the edit | exit 4; an edit of line endings only is a warning |
//! | a row with `created_at` NULL (E19) | re-runs every migration | exit 4 with the UPDATE that repairs the row |
//! | journal entry without `when` (E20) | runs the SQL, then fails at the tracking insert (`values($1, )`) and rolls back | exit 3 before connecting, naming the entry |
//! | the same tag twice in the journal (E14) | runs the file twice | exit 3 before connecting |
//! | a statement that refuses a transaction block, e.g. `CREATE INDEX CONCURRENTLY` (E34) | fails (25001), the whole run rolled back | commits the batch before it, runs that migration's chunks in autocommit, records the same row |
//! | such a statement sharing its chunk with others | fails at run time (25001) | exit 3 before connecting |
//! | a file marked `-- portcullis: no-transaction` (E34) | an ordinary migration (a comment) | runs outside the batch like the above, so an enum value added there can be used by the next migration of the run |
//! | `COPY ... FROM STDIN` in a migration (pg_dump's data) | fails at run time (57014 "No source stream defined", or a syntax error at the first row), the run rolled back | exit 3 before applying anything, naming file:line:column and the INSERT form to use |
//! | `COPY ... TO STDOUT` in a pending migration | runs it, discarding the rows | exit 3 before applying anything; one drizzle-kit applied already is accepted as it is |
//! | a psql meta-command line (`\restrict`, which pg_dump writes since 2025-08) | fails at run time (syntax error at `\`), the run rolled back | exit 3 before applying anything, naming the line |

use crate::run::{self, Folder};
use crate::twin::{self, TRACKING};
use crate::{kit, support};

fn count(url: &str, sql: &str) -> usize {
    support::query(url, sql)[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn exists(url: &str, relation: &str) -> bool {
    run::table_exists(url, relation)
}

/// E8: a migration file that starts with a UTF-8 BOM.
#[test]
fn bom_file_fails_under_drizzle_kit_and_is_stripped_by_portcullis() {
    let mut f = Folder::new();
    f.add(
        "0000_plain",
        1_000,
        "CREATE TABLE \"plain\" (\"id\" integer);",
    )
    .add_raw(
        "0001_bom",
        "2000",
        b"\xef\xbb\xbfCREATE TABLE \"bom\" (\"id\" integer);",
    );

    // drizzle-kit: U+FEFF reaches the server, syntax error, the whole run is rolled back.
    let twin_url = twin::fresh_db("conf_diff_bom_kit");
    let out = kit::migrate(&twin_url, f.path());
    eprintln!("drizzle-kit on a BOM file: exit {}", out.code);
    assert_eq!(run::rows(&twin_url).len(), 0, "{}", out.all());
    assert!(!exists(&twin_url, "plain") && !exists(&twin_url, "bom"));

    // portcullis: strips it, applies both, records the hash of the whole file (BOM included).
    let url = twin::fresh_db("conf_diff_bom");
    let run = twin::portcullis_migrate(&url, f.path());
    assert!(run.all().contains("byte order mark"), "{}", run.all());
    assert!(exists(&url, "plain") && exists(&url, "bom"));
    let node = kit::read_migrations(f.path());
    let hashes: Vec<String> = run::rows(&url).into_iter().map(|(h, _)| h).collect();
    assert_eq!(
        hashes,
        vec![node[0].crypto_hash.clone(), node[1].crypto_hash.clone()]
    );

    // Safe for drizzle-kit afterwards: it never looks at the file again.
    let before = twin::state(&url);
    let out = kit::migrate(&url, f.path());
    assert_eq!(out.code, 0, "{}", out.all());
    twin::assert_same(
        "drizzle-kit after portcullis applied a BOM file",
        &twin::state(&url),
        &before,
    );
}

/// E8: a journal that starts with a UTF-8 BOM.
#[test]
fn bom_journal_fails_under_drizzle_kit_and_is_accepted_by_portcullis() {
    let mut f = Folder::new();
    f.add("0000_a", 1_000, "CREATE TABLE \"a\" (\"id\" integer);");
    let journal = std::fs::read(f.path().join("meta/_journal.json")).unwrap();
    f.write(
        "meta/_journal.json",
        &[b"\xef\xbb\xbf".as_slice(), journal.as_slice()].concat(),
    );

    let twin_url = twin::fresh_db("conf_diff_bom_journal_kit");
    let out = kit::migrate(&twin_url, f.path());
    eprintln!("drizzle-kit on a BOM journal: exit {}", out.code);
    assert!(
        !exists(&twin_url, TRACKING) && !exists(&twin_url, "a"),
        "drizzle-kit should fail before connecting:\n{}",
        out.all()
    );

    let url = twin::fresh_db("conf_diff_bom_journal");
    let run = twin::portcullis_migrate(&url, f.path());
    assert!(run.all().contains("byte order mark"), "{}", run.all());
    assert_eq!(run::rows(&url).len(), 1);
}

/// E18/E17: a branch merged after a newer migration was deployed. drizzle-kit skips the older
/// entry silently, forever; portcullis refuses by default, mirrors drizzle with `skip`, and
/// applies it with `apply` (drizzle-kit then still applies nothing more).
#[test]
fn out_of_order_is_refused_by_default_and_skip_mirrors_drizzle_kit() {
    let mut deployed = Folder::new();
    deployed
        .add("0000_a", 1_000, "CREATE TABLE \"a\" (\"id\" integer);")
        .add("0001_b", 3_000, "CREATE TABLE \"b\" (\"id\" integer);");
    let mut merged = Folder::new();
    merged
        .add("0000_a", 1_000, "CREATE TABLE \"a\" (\"id\" integer);")
        .add(
            "0001_branch",
            2_000,
            "CREATE TABLE \"branch\" (\"id\" integer);",
        )
        .add("0002_b", 3_000, "CREATE TABLE \"b\" (\"id\" integer);")
        .add("0003_d", 4_000, "CREATE TABLE \"d\" (\"id\" integer);");
    let deployed_db = |label: &str| {
        let url = twin::fresh_db(label);
        twin::portcullis_migrate(&url, deployed.path());
        url
    };

    let twin_url = deployed_db("conf_diff_ooo_kit");
    let out = kit::migrate(&twin_url, merged.path());
    assert_eq!(out.code, 0, "{}", out.all());
    let want = twin::state(&twin_url);
    assert_eq!(want.rows.len(), 3, "drizzle-kit applies 0003_d only");
    assert!(!exists(&twin_url, "branch") && exists(&twin_url, "d"));

    // Default: refuse, change nothing, say why and what to do.
    let url = deployed_db("conf_diff_ooo");
    let before = twin::state(&url);
    let out = run::migrate(&url, merged.path());
    out.expect(4);
    assert!(
        out.all().contains("0001_branch") && out.all().contains("PORTCULLIS_OUT_OF_ORDER"),
        "{}",
        out.all()
    );
    twin::assert_same("out of order, refused", &twin::state(&url), &before);

    // skip: exactly drizzle-kit's result.
    run::run(
        run::command(&url, merged.path())
            .env("PORTCULLIS_OUT_OF_ORDER", "skip")
            .arg("migrate"),
    )
    .expect(0);
    twin::assert_same("out of order, skip", &twin::state(&url), &want);

    // apply: the branch migration runs too; drizzle-kit afterwards applies nothing.
    let url = deployed_db("conf_diff_ooo_apply");
    run::run(
        run::command(&url, merged.path())
            .env("PORTCULLIS_OUT_OF_ORDER", "apply")
            .arg("migrate"),
    )
    .expect(0);
    assert!(exists(&url, "branch") && exists(&url, "d"));
    let applied = twin::state(&url);
    assert_eq!(applied.rows.len(), 4);
    let out = kit::migrate(&url, merged.path());
    assert_eq!(out.code, 0, "{}", out.all());
    twin::assert_same(
        "drizzle-kit after out-of-order apply",
        &twin::state(&url),
        &applied,
    );

    // E17: a new entry whose `when` equals the newest row's: drizzle's `<` skips it.
    let mut same_when = Folder::new();
    same_when
        .add("0000_a", 1_000, "CREATE TABLE \"a\" (\"id\" integer);")
        .add("0001_b", 3_000, "CREATE TABLE \"b\" (\"id\" integer);")
        .add(
            "0002_same_when",
            3_000,
            "CREATE TABLE \"same\" (\"id\" integer);",
        );
    let twin_url = deployed_db("conf_diff_same_when_kit");
    let out = kit::migrate(&twin_url, same_when.path());
    assert_eq!(out.code, 0, "{}", out.all());
    let want = twin::state(&twin_url);
    assert_eq!(want.rows.len(), 2, "drizzle-kit skips an equal `when`");
    let url = deployed_db("conf_diff_same_when");
    run::migrate(&url, same_when.path()).expect(4);
    run::run(
        run::command(&url, same_when.path())
            .env("PORTCULLIS_OUT_OF_ORDER", "skip")
            .arg("migrate"),
    )
    .expect(0);
    twin::assert_same("equal `when`, skip", &twin::state(&url), &want);
}

/// E7: a migration edited after it was applied. drizzle-kit never compares hashes; portcullis
/// refuses a real edit, and only warns when the line endings alone changed.
#[test]
fn edited_migration_is_refused_unless_only_line_endings_changed() {
    let original = "CREATE TABLE \"a\" (\n\t\"id\" integer\n);";
    let mut deployed = Folder::new();
    deployed.add("0000_a", 1_000, original);

    for (label, edited, refused) in [
        (
            "conf_diff_edited",
            "CREATE TABLE \"a\" (\n\t\"id\" integer,\n\t\"note\" text\n);".to_string(),
            true,
        ),
        ("conf_diff_crlf", original.replace('\n', "\r\n"), false),
    ] {
        let mut next = Folder::new();
        next.add("0000_a", 1_000, &edited).add(
            "0001_b",
            2_000,
            "CREATE TABLE \"b\" (\"id\" integer);",
        );

        let twin_url = twin::fresh_db(&format!("{label}_kit"));
        twin::portcullis_migrate(&twin_url, deployed.path());
        let out = kit::migrate(&twin_url, next.path());
        assert_eq!(out.code, 0, "{}", out.all());
        let want = twin::state(&twin_url);
        assert_eq!(
            want.rows.len(),
            2,
            "drizzle-kit ignores the edit, applies 0001_b"
        );

        let url = twin::fresh_db(label);
        twin::portcullis_migrate(&url, deployed.path());
        let before = twin::state(&url);
        let out = run::migrate(&url, next.path());
        if refused {
            out.expect(4);
            assert!(out.all().contains("edited"), "{}", out.all());
            twin::assert_same("edited migration, refused", &twin::state(&url), &before);
        } else {
            out.expect(0);
            assert!(out.all().contains("line endings"), "{}", out.all());
            twin::assert_same("CRLF-only edit", &twin::state(&url), &want);
        }
    }
}

/// E19: a row whose created_at is NULL. drizzle-kit sorts it first and re-runs every migration
/// (here, idempotent ones: the data is duplicated); portcullis refuses and shows the repair.
#[test]
fn null_created_at_makes_drizzle_kit_rerun_everything_and_portcullis_refuse() {
    let mut f = Folder::new();
    f.add(
        "0000_counter",
        1_000,
        "CREATE TABLE IF NOT EXISTS \"counter\" (\"n\" integer);",
    )
    .add("0001_insert", 2_000, "INSERT INTO \"counter\" VALUES (1);");
    let poisoned = |label: &str| {
        let url = twin::fresh_db(label);
        twin::portcullis_migrate(&url, f.path());
        support::execute(
            &url,
            &format!("UPDATE {TRACKING} SET created_at = NULL WHERE id = 1"),
        );
        url
    };

    let twin_url = poisoned("conf_diff_null_kit");
    let out = kit::migrate(&twin_url, f.path());
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(count(&twin_url, "select count(*) from counter"), 2);
    assert_eq!(run::rows(&twin_url).len(), 4, "drizzle-kit re-ran both");

    let url = poisoned("conf_diff_null");
    let before = twin::state(&url);
    let out = run::migrate(&url, f.path());
    out.expect(4);
    assert!(
        out.all().contains("created_at NULL") && out.all().contains("SET created_at = 1000"),
        "{}",
        out.all()
    );
    twin::assert_same("NULL created_at, refused", &twin::state(&url), &before);
    assert_eq!(count(&url, "select count(*) from counter"), 1);
}

/// E20/E14: journal entries drizzle accepts and mishandles. portcullis rejects the folder (exit 3)
/// before connecting: the database is not touched at all.
#[test]
fn journal_problems_are_rejected_before_connecting() {
    let sql = b"CREATE TABLE IF NOT EXISTS \"t\" (\"n\" integer);--> statement-breakpoint\nINSERT INTO \"t\" VALUES (1);";

    // No `when`. drizzle-compat.md E20 expects drizzle to record created_at NULL; drizzle-orm
    // 0.45.4 really builds `values($1, )` (the undefined parameter vanishes from its sql
    // template), so the run fails with a syntax error after the migration's SQL ran, and rolls
    // back, leaving only the empty tracking table. portcullis names the entry instead.
    let f = Folder::new();
    f.write("0000_t.sql", sql);
    f.write(
        "meta/_journal.json",
        br#"{"version":"7","dialect":"postgresql","entries":[{"idx":0,"version":"7","tag":"0000_t","breakpoints":true}]}"#,
    );
    let twin_url = twin::fresh_db("conf_diff_no_when_kit");
    let out = kit::migrate(&twin_url, f.path());
    eprintln!("drizzle-kit on an entry without `when`: exit {}", out.code);
    assert!(
        exists(&twin_url, TRACKING) && run::rows(&twin_url).is_empty() && !exists(&twin_url, "t"),
        "drizzle-kit should have failed at the tracking insert and rolled back:\n{}",
        out.all()
    );
    let url = twin::fresh_db("conf_diff_no_when");
    let out = run::migrate(&url, f.path());
    out.expect(3);
    assert!(out.all().contains("no \"when\""), "{}", out.all());
    assert!(!exists(&url, TRACKING) && !exists(&url, "t"));

    // The same tag twice: drizzle-kit runs the file twice.
    let f = Folder::new();
    f.write("0000_t.sql", sql);
    f.write(
        "meta/_journal.json",
        br#"{"version":"7","dialect":"postgresql","entries":[{"idx":0,"version":"7","when":1000,"tag":"0000_t","breakpoints":true},{"idx":1,"version":"7","when":2000,"tag":"0000_t","breakpoints":true}]}"#,
    );
    let twin_url = twin::fresh_db("conf_diff_duplicate_kit");
    let out = kit::migrate(&twin_url, f.path());
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(count(&twin_url, "select count(*) from t"), 2);
    let url = twin::fresh_db("conf_diff_duplicate");
    let out = run::migrate(&url, f.path());
    out.expect(3);
    assert!(out.all().contains("same tag"), "{}", out.all());
    assert!(!exists(&url, TRACKING) && !exists(&url, "t"));
}

/// E34: statements that refuse a transaction block. drizzle-kit runs them in its batch
/// transaction and fails; portcullis runs such a migration on its own, in autocommit, and records
/// exactly the rows drizzle-kit would have recorded.
#[test]
fn non_transactional_migrations_run_outside_the_batch() {
    let mut f = Folder::new();
    f.add("0000_table", 1_000, "CREATE TABLE \"c\" (\"id\" integer);")
        .add(
            "0001_concurrently",
            2_000,
            "CREATE INDEX CONCURRENTLY \"c_id_idx\" ON \"c\" (\"id\");",
        )
        .add(
            "0002_after",
            3_000,
            "CREATE TABLE \"after_c\" (\"id\" integer);",
        );

    let twin_url = twin::fresh_db("conf_diff_concurrently_kit");
    let out = kit::migrate(&twin_url, f.path());
    eprintln!(
        "drizzle-kit on CREATE INDEX CONCURRENTLY: exit {}",
        out.code
    );
    assert!(
        run::rows(&twin_url).is_empty() && !exists(&twin_url, "c"),
        "drizzle-kit should fail (25001) and roll back everything:\n{}",
        out.all()
    );

    let url = twin::fresh_db("conf_diff_concurrently");
    let run = twin::portcullis_migrate(&url, f.path());
    assert!(run.all().contains("outside a transaction"), "{}", run.all());
    assert!(exists(&url, "c_id_idx") && exists(&url, "after_c"));
    let node = kit::read_migrations(f.path());
    let want: Vec<(String, String)> = node
        .iter()
        .map(|m| (m.crypto_hash.clone(), m.folder_millis.clone()))
        .collect();
    assert_eq!(run::rows(&url), want, "the rows drizzle would write");
    let before = twin::state(&url);
    let out = kit::migrate(&url, f.path());
    assert_eq!(out.code, 0, "{}", out.all());
    twin::assert_same(
        "drizzle-kit after portcullis ran CONCURRENTLY",
        &twin::state(&url),
        &before,
    );

    // The same statement sharing its chunk: portcullis refuses before connecting.
    let mut shared = Folder::new();
    shared.add(
        "0000_shared",
        1_000,
        "CREATE TABLE \"s\" (\"id\" integer);\nCREATE INDEX CONCURRENTLY \"s_id_idx\" ON \"s\" (\"id\");",
    );
    let url = twin::fresh_db("conf_diff_concurrently_shared");
    let out = run::migrate(&url, shared.path());
    out.expect(3);
    assert!(
        !exists(&url, TRACKING) && !exists(&url, "s"),
        "{}",
        out.all()
    );

    // The marker: an enum value added in one migration used by the next, in one deploy.
    let setup = "CREATE TYPE \"level\" AS ENUM ('low')";
    let mut marked = Folder::new();
    marked
        .add(
            "0000_add_value",
            1_000,
            "-- portcullis: no-transaction\nALTER TYPE \"level\" ADD VALUE 'high';",
        )
        .add(
            "0001_use_value",
            2_000,
            "CREATE TABLE \"levels\" (\"l\" \"level\" DEFAULT 'high');",
        );
    let twin_url = twin::fresh_db("conf_diff_marker_kit");
    support::execute(&twin_url, setup);
    let out = kit::migrate(&twin_url, marked.path());
    assert!(
        run::rows(&twin_url).is_empty() && !exists(&twin_url, "levels"),
        "drizzle-kit should fail with 55P04:\n{}",
        out.all()
    );
    let url = twin::fresh_db("conf_diff_marker");
    support::execute(&url, setup);
    twin::portcullis_migrate(&url, marked.path());
    assert!(exists(&url, "levels"));
    assert_eq!(run::rows(&url).len(), 2);
}

/// `portcullis repair --apply` on a damaged table (text-typed created_at, a NULL, a duplicate row)
/// leaves a table that the real drizzle-kit accepts: it applies nothing and re-runs nothing, and
/// the rows equal those of a twin migrated by drizzle-kit alone.
#[test]
fn repair_apply_leaves_a_table_drizzle_kit_and_portcullis_accept() {
    let mut f = Folder::new();
    f.add(
        "0000_counter",
        1_000,
        "CREATE TABLE IF NOT EXISTS \"rep_counter\" (\"n\" integer);",
    )
    .add(
        "0001_insert",
        2_000,
        "INSERT INTO \"rep_counter\" VALUES (1);",
    );
    let url = twin::fresh_db("conf_repair");
    twin::portcullis_migrate(&url, f.path());
    support::execute(
        &url,
        &format!(
            "ALTER TABLE {TRACKING} ALTER COLUMN created_at TYPE text; \
             UPDATE {TRACKING} SET created_at = NULL WHERE id = 2; \
             INSERT INTO {TRACKING} (hash, created_at) SELECT hash, created_at FROM {TRACKING} WHERE id = 1;"
        ),
    );
    run::run(run::command(&url, f.path()).args(["repair", "--apply"])).expect(0);

    let out = kit::migrate(&url, f.path());
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        count(&url, "select count(*) from rep_counter"),
        1,
        "nothing re-ran"
    );
    let out = run::migrate(&url, f.path());
    out.expect(0);
    assert!(
        out.stderr.contains("up to date, 2 migrations"),
        "{}",
        out.stderr
    );

    let twin_state = twin::drizzle_alone("conf_repair_twin", f.path());
    assert_eq!(
        twin::state(&url).rows,
        twin_state.rows,
        "rows as drizzle-kit writes them"
    );
}

/// What only psql can run, in a migration. `COPY ... FROM STDIN` and a meta-command fail under
/// drizzle-kit too, after the migrations before them ran in its transaction; `COPY ... TO
/// STDOUT` drizzle-kit runs, throwing the rows away. portcullis can run none of them from a file
/// sent as SQL and refuses each before applying anything; a `TO STDOUT` that drizzle-kit applied
/// already is history, so the tools can still take turns on that database.
#[test]
fn what_only_psql_can_run_is_refused_before_anything_is_applied() {
    let mut f = Folder::new();
    f.add("0000_t", 1_000, "CREATE TABLE \"t\" (\"n\" integer);")
        .add("0001_load", 2_000, "COPY \"t\" (\"n\") FROM stdin;");
    let twin_url = twin::fresh_db("conf_diff_copy_in_kit");
    let out = kit::migrate(&twin_url, f.path());
    eprintln!("drizzle-kit on COPY FROM STDIN: exit {}", out.code);
    assert!(out.code != 0, "{}", out.all());
    assert!(run::rows(&twin_url).is_empty() && !exists(&twin_url, "t"));
    let url = twin::fresh_db("conf_diff_copy_in");
    let out = run::migrate(&url, f.path());
    out.expect(3);
    out.says("0001_load.sql:1:1: COPY ... FROM STDIN reads its rows from the client's input");
    out.says("Nothing was applied");
    assert!(run::rows(&url).is_empty() && !exists(&url, "t"));

    let mut f = Folder::new();
    f.add("0000_t", 1_000, "CREATE TABLE \"t\" (\"n\" integer);")
        .add("0001_show", 2_000, "COPY (SELECT 1) TO STDOUT;");
    let twin_url = twin::fresh_db("conf_diff_copy_out_kit");
    let out = kit::migrate(&twin_url, f.path());
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(run::rows(&twin_url).len(), 2);
    let url = twin::fresh_db("conf_diff_copy_out");
    let out = run::migrate(&url, f.path());
    out.expect(3);
    out.says("0001_show.sql:1:1: COPY ... TO STDOUT sends its rows to the client");
    assert!(run::rows(&url).is_empty() && !exists(&url, "t"));
    // Applied by drizzle-kit: nothing to do, and nothing to refuse.
    let out = run::migrate(&twin_url, f.path());
    out.expect(0);
    assert_eq!(run::rows(&twin_url).len(), 2);

    // A psql meta-command, as a recent pg_dump writes one first.
    let mut f = Folder::new();
    f.add("0000_t", 1_000, "CREATE TABLE \"t\" (\"n\" integer);")
        .add(
            "0001_dumped",
            2_000,
            "\\restrict k1\nCREATE TABLE \"u\" (\"n\" integer);\n",
        );
    let twin_url = twin::fresh_db("conf_diff_meta_kit");
    let out = kit::migrate(&twin_url, f.path());
    assert!(out.code != 0, "{}", out.all());
    assert!(run::rows(&twin_url).is_empty() && !exists(&twin_url, "t"));
    let url = twin::fresh_db("conf_diff_meta");
    let out = run::migrate(&url, f.path());
    out.expect(3);
    out.says("0001_dumped.sql:1:1: `\\restrict` is a psql meta-command");
    assert!(run::rows(&url).is_empty() && !exists(&url, "t"));
}
