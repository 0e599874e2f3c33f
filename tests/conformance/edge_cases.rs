//! Hand-made folders for the edge cases of drizzle-compat.md section 6 where portcullis must do
//! what drizzle does: each folder is migrated by drizzle-kit alone on one database and by
//! portcullis on a twin, and the two must be identical, whether the run succeeds or fails.

use crate::run::{self, Folder};
use crate::twin;
use crate::{kit, support};

/// `when` of entry `i` in these folders.
fn when(i: usize) -> i64 {
    1_700_000_000_000 + i as i64 * 60_000
}

/// The folder of cases that both tools apply successfully, in one run.
fn successes() -> Folder {
    let cases: &[(&str, &[u8])] = &[
        // E7: CRLF line endings stay in the chunks (and in a string literal) and in the hash.
        (
            "crlf",
            b"CREATE TABLE \"crlf\" (\r\n\t\"id\" integer,\r\n\t\"note\" text DEFAULT 'line 1\r\nline 2'\r\n);\r\n--> statement-breakpoint\r\nCREATE INDEX \"crlf_id_idx\" ON \"crlf\" USING btree (\"id\");\r\n",
        ),
        // E1: two markers in a row, a whitespace-only chunk, a final marker.
        (
            "empty_chunks",
            b"CREATE TABLE \"empty_chunks\" (\"id\" integer);--> statement-breakpoint--> statement-breakpoint\n--> statement-breakpoint\n \t \n--> statement-breakpoint",
        ),
        // E1: an empty file is one empty chunk, still recorded.
        ("empty_file", b""),
        // E2: an untouched `drizzle-kit generate --custom` file.
        (
            "untouched_custom",
            b"-- Custom SQL migration file, put your code below! --",
        ),
        // E2: chunks that hold only comments.
        (
            "comment_only_chunks",
            b"-- only a comment\n--> statement-breakpoint\n/* only a block comment */\n--> statement-breakpoint\nCREATE TABLE \"commented\" (\"id\" integer); -- trailing comment\n--> statement-breakpoint\n-- the last chunk: a comment",
        ),
        // E3: text after a marker starts the next chunk (here a comment, and SQL).
        (
            "text_after_marker",
            b"CREATE TABLE \"after1\" (\"id\" integer);\n--> statement-breakpoint -- a note after the marker\nCREATE TABLE \"after2\" (\"id\" integer);--> statement-breakpoint CREATE TABLE \"after3\" (\"id\" integer);",
        ),
        // E5: near-markers do not split; the lines are comments, the chunk holds 4 statements.
        (
            "marker_variants",
            b"CREATE TABLE \"variant1\" (\"id\" integer);\n-->statement-breakpoint\nCREATE TABLE \"variant2\" (\"id\" integer);\n--> Statement-Breakpoint\nCREATE TABLE \"variant3\" (\"id\" integer);\n-- > statement-breakpoint\nCREATE TABLE \"variant4\" (\"id\" integer);",
        ),
        // E6: no markers at all: several statements (one with `;` inside $$) in one query.
        (
            "multi_statement_chunk",
            b"CREATE TABLE \"multi\" (\"id\" integer);\nINSERT INTO \"multi\" VALUES (1), (2);\nDO $$ BEGIN IF (SELECT count(*) FROM \"multi\") <> 2 THEN RAISE EXCEPTION 'expected 2 rows'; END IF; END $$;\nCREATE VIEW \"multi_view\" AS SELECT \"id\" FROM \"multi\";\n",
        ),
        // E37: `$1`, `?` and `:name` are sent literally, never as parameters.
        (
            "placeholders",
            b"CREATE FUNCTION \"add_one\"(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1';--> statement-breakpoint\nCOMMENT ON FUNCTION \"add_one\"(integer) IS 'sent literally: $1, $2, ?, :name';",
        ),
        // E9: invalid UTF-8 (Latin-1 bytes) becomes U+FFFD, in a comment and in a literal.
        (
            "invalid_utf8",
            b"-- caf\xe9 \xff\xfe\nCREATE TABLE \"latin1\" (\"note\" text DEFAULT 'na\xefve');\n",
        ),
        // Multi-byte UTF-8.
        (
            "emoji",
            "-- \u{1f680} emoji \u{2713}\nCREATE TABLE \"emoji\" (\"note\" text DEFAULT '\u{1f980} \u{2713} \u{e9} \u{6f22}\u{5b57}');".as_bytes(),
        ),
        // E10: trailing whitespace and newlines.
        (
            "trailing_whitespace",
            b"CREATE TABLE \"ws\" (\"id\" integer);   \n\n\t \n",
        ),
        // E35: a user's COMMIT ends drizzle's batch transaction: the enum value can then be used,
        // CONCURRENTLY works, and the later chunks, rows and migrations autocommit.
        (
            "commit_inside",
            b"CREATE TYPE \"mood\" AS ENUM ('ok');--> statement-breakpoint\nALTER TYPE \"mood\" ADD VALUE 'great';--> statement-breakpoint\nCOMMIT;--> statement-breakpoint\nCREATE TABLE \"moods\" (\"m\" \"mood\" DEFAULT 'great' NOT NULL);--> statement-breakpoint\nCREATE INDEX CONCURRENTLY \"moods_m_idx\" ON \"moods\" (\"m\");",
        ),
        ("after_commit", b"CREATE TABLE \"after_commit\" (\"id\" integer);"),
    ];
    let mut f = Folder::new();
    for (i, (name, sql)) in cases.iter().enumerate() {
        f.add_raw(&format!("{i:04}_{name}"), &when(i).to_string(), sql);
    }
    // E20: a numeric string `when`: drizzle compares it as a number and inserts the text.
    let i = cases.len();
    f.add_raw(
        &format!("{i:04}_string_when"),
        &format!("\"{}\"", when(i)),
        b"CREATE TABLE \"string_when\" (\"id\" integer);",
    );
    f
}

/// Index of `commit_inside` in [`successes`].
const COMMIT_INSIDE: usize = 12;

#[test]
fn edge_cases_that_succeed_alone_and_in_turns() {
    let folder = successes();
    assert_eq!(
        twin::tags(folder.path())[COMMIT_INSIDE],
        format!("{COMMIT_INSIDE:04}_commit_inside")
    );
    let want = twin::drizzle_alone("conf_edge_reference", folder.path());

    let url = twin::fresh_db("conf_edge_alone");
    twin::portcullis_migrate(&url, folder.path());
    twin::assert_same("edge cases, portcullis alone", &twin::state(&url), &want);

    // Split right before and right after the migration with a COMMIT in it.
    for k in [COMMIT_INSIDE, COMMIT_INSIDE + 1] {
        let first = twin::prefix(folder.path(), k);
        let url = twin::fresh_db(&format!("conf_edge_kit_first_{k}"));
        twin::kit_migrate_all(&url, &first, &format!("drizzle-kit, first {k}"));
        twin::portcullis_migrate(&url, folder.path());
        twin::assert_same(
            &format!("edge cases, drizzle-kit first {k}, then portcullis"),
            &twin::state(&url),
            &want,
        );

        let url = twin::fresh_db(&format!("conf_edge_portcullis_first_{k}"));
        twin::portcullis_migrate(&url, &first);
        twin::kit_migrate_all(&url, folder.path(), &format!("drizzle-kit after {k}"));
        twin::assert_same(
            &format!("edge cases, portcullis first {k}, then drizzle-kit"),
            &twin::state(&url),
            &want,
        );
    }
}

/// Runs `folder` with both tools on fresh twins prepared by `setup` (SQL run on both first):
/// both must fail, leave `rows` rows, and leave identical databases. Returns portcullis's output.
#[track_caller]
fn both_fail(label: &str, folder: &Folder, setup: &str, rows: usize) -> run::Output {
    let twin_url = twin::fresh_db(&format!("conf_{label}_kit"));
    let url = twin::fresh_db(&format!("conf_{label}"));
    if !setup.is_empty() {
        support::execute(&twin_url, setup);
        support::execute(&url, setup);
    }
    let kit = kit::migrate(&twin_url, folder.path());
    let want = twin::state(&twin_url);
    assert_eq!(
        want.rows.len(),
        rows,
        "{label}: drizzle-kit should have failed leaving {rows} row(s) (exit {}):\n{}",
        kit.code,
        kit.all()
    );
    let out = run::migrate(&url, folder.path());
    out.expect(8);
    twin::assert_same(label, &twin::state(&url), &want);
    out
}

/// E3: text after a marker that is not SQL: a syntax error for both; the whole batch (the good
/// migration before it included) is rolled back, and only the empty tracking table remains.
#[test]
fn text_after_marker_fails_for_both() {
    let mut f = Folder::new();
    f.add(
        "0000_fine",
        when(0),
        "CREATE TABLE \"fine\" (\"id\" integer);",
    )
    .add(
        "0001_note_after_marker",
        when(1),
        "CREATE TABLE \"note_a\" (\"id\" integer);\n--> statement-breakpoint adds the second table\nCREATE TABLE \"note_b\" (\"id\" integer);",
    );
    let out = both_fail("text_after_marker", &f, "", 0);
    assert!(out.all().contains("42601"), "{}", out.all());
}

/// E4: the marker splits inside a dollar-quoted body and inside a block comment (drizzle issue
/// #2126, the `pull` baseline): unterminated literal / comment for both.
#[test]
fn marker_inside_quotes_and_comments_fails_for_both() {
    for (label, sql) in [
        (
            "marker_in_dollar_quote",
            "CREATE FUNCTION \"marker\"() RETURNS text LANGUAGE sql AS $$ SELECT '--> statement-breakpoint' $$;",
        ),
        (
            "marker_in_block_comment",
            "/*\nCREATE TABLE \"x\" (\"id\" integer);\n--> statement-breakpoint\nCREATE TABLE \"y\" (\"id\" integer);\n*/",
        ),
    ] {
        let mut f = Folder::new();
        f.add(
            "0000_fine",
            when(0),
            "CREATE TABLE \"fine\" (\"id\" integer);",
        )
        .add("0001_marker", when(1), sql);
        both_fail(label, &f, "", 0);
    }
}

/// E35: after a user's COMMIT, a failure no longer rolls back the whole run: what ran before the
/// COMMIT (and after it, up to the failing statement) stays, with the rows recorded so far.
#[test]
fn commit_then_failure_keeps_the_same_part_for_both() {
    let mut f = Folder::new();
    f.add(
        "0000_before",
        when(0),
        "CREATE TABLE \"before\" (\"id\" integer);",
    )
    .add(
        "0001_commits",
        when(1),
        "CREATE TABLE \"kept\" (\"id\" integer);--> statement-breakpoint\nCOMMIT;",
    )
    .add(
        "0002_fails",
        when(2),
        "CREATE TABLE \"autocommitted\" (\"id\" integer);--> statement-breakpoint\nSELECT 1/0;",
    );
    let out = both_fail("commit_then_failure", &f, "", 2);
    assert!(out.all().contains("22012"), "{}", out.all());
}

/// E34: an enum value added in the run cannot be used later in the same run (55P04): both fail
/// and roll back everything. (Statements that refuse a transaction block, and the
/// `-- portcullis: no-transaction` marker that makes this case work, are differences: see
/// differences.rs.)
#[test]
fn enum_value_added_and_used_in_one_run_fails_for_both() {
    let mut f = Folder::new();
    f.add(
        "0000_add_value",
        when(0),
        "ALTER TYPE \"level\" ADD VALUE 'high';",
    )
    .add(
        "0001_use_value",
        when(1),
        "CREATE TABLE \"levels\" (\"l\" \"level\" DEFAULT 'high');",
    );
    let out = both_fail(
        "enum_add_then_use",
        &f,
        "CREATE TYPE \"level\" AS ENUM ('low')",
        0,
    );
    assert!(out.all().contains("55P04"), "{}", out.all());
}

/// E18 in one run, E13, and configured tracking names (E31): same database for both.
#[test]
fn ordering_empty_journal_and_quoted_tracking_names() {
    // `when` decreasing along the journal: on a fresh database both apply all, in journal order.
    let mut f = Folder::new();
    f.add("0000_c", when(3), "CREATE TABLE \"c\" (\"id\" integer);")
        .add("0001_b", when(2), "CREATE TABLE \"b\" (\"id\" integer);")
        .add("0002_a", when(1), "CREATE TABLE \"a\" (\"id\" integer);");
    let want = twin::drizzle_alone("conf_decreasing_kit", f.path());
    let url = twin::fresh_db("conf_decreasing");
    twin::portcullis_migrate(&url, f.path());
    twin::assert_same("decreasing `when`", &twin::state(&url), &want);

    // `entries: []`: both still create the schema and the table.
    let empty = Folder::new();
    let want = twin::drizzle_alone("conf_empty_kit", empty.path());
    let url = twin::fresh_db("conf_empty");
    twin::portcullis_migrate(&url, empty.path());
    twin::assert_same("empty journal", &twin::state(&url), &want);

    // migrations.schema / migrations.table with a space, capitals and a double quote.
    let (schema, table) = ("Mixed Case", "track\"ing");
    let quoted = "\"Mixed Case\".\"track\"\"ing\"";
    let mut f = Folder::new();
    f.add("0000_a", when(0), "CREATE TABLE \"a\" (\"id\" integer);")
        .add("0001_b", when(1), "CREATE TABLE \"b\" (\"id\" integer);");
    let twin_url = twin::fresh_db("conf_names_kit");
    let out = kit::migrate_into(&twin_url, f.path(), Some((schema, table)));
    let want = twin::state_of(&twin_url, quoted);
    assert_eq!(want.rows.len(), 2, "drizzle-kit:\n{}", out.all());
    let url = twin::fresh_db("conf_names");
    run::run(
        run::command(&url, f.path())
            .env("PORTCULLIS_MIGRATIONS_SCHEMA", schema)
            .env("PORTCULLIS_MIGRATIONS_TABLE", table)
            .arg("migrate"),
    )
    .expect(0);
    twin::assert_same(
        "configured tracking names",
        &twin::state_of(&url, quoted),
        &want,
    );
}
