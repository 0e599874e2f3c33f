//! portcullis and the real drizzle-kit 1.0 on the same databases: each applies nothing the other
//! applied, and both leave the same rows and the same schema (`pg_dump --schema-only`).

use crate::drizzle::{
    DRIZZLE_KIT, DRIZZLE_ORM, converted, drizzle, generated, migration_folders, package_dir,
};
use crate::run::*;
use crate::support::{pg_bin_dir, query};
use portcullis::report::drizzle_up_folder_name;
use std::path::Path;
use std::sync::OnceLock;

/// The tracking rows, every column as text, in id order.
fn full_rows(url: &str) -> Vec<Vec<Option<String>>> {
    query(
        url,
        "select id::text, hash, created_at::text, name, applied_at::text \
         from drizzle.__drizzle_migrations order by id",
    )
}

/// The rows with `applied_at` reduced to whether it is NULL (its value is the time of the run).
fn comparable_rows(url: &str) -> Vec<Vec<Option<String>>> {
    query(
        url,
        "select id::text, hash, created_at::text, name, (applied_at is null)::text \
         from drizzle.__drizzle_migrations order by id",
    )
}

/// `pg_dump --schema-only` of the database, without the random `\restrict` key lines.
fn schema(url: &str) -> String {
    let bin = pg_bin_dir().expect("PostgreSQL binaries").join("pg_dump");
    let out = std::process::Command::new(&bin)
        .args(["--schema-only", "--no-owner", "--dbname", url])
        .output()
        .unwrap_or_else(|e| panic!("{} could not run: {e}", bin.display()));
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A copy of the first `k` migration folders of `from`, in drizzle's order.
fn first(from: &Path, k: usize) -> Folders {
    let f = Folders::new();
    for name in migration_folders(from).into_iter().take(k) {
        copy_dir(&from.join(&name), &f.dir.join(&name));
    }
    f
}

/// A copy of the example journal folder keeping its first `k` entries (an older image).
fn journal_prefix(k: usize) -> Folders {
    let f = Folders::copy_of(&example_dir());
    let path = f.dir.join("meta/_journal.json");
    let mut journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entries = journal["entries"].as_array_mut().unwrap();
    for gone in entries.drain(k..) {
        std::fs::remove_file(f.dir.join(format!("{}.sql", gone["tag"].as_str().unwrap()))).unwrap();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&journal).unwrap()).unwrap();
    f
}

/// A database migrated by drizzle-kit 1.0 alone from the generated folder, for comparisons.
fn drizzle_reference() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let url = fresh_db("v1ref");
        drizzle().migrate(&url, generated());
        url
    })
}

#[test]
fn the_pinned_versions_are_the_ones_installed() {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(package_dir().join("package.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["devDependencies"]["drizzle-kit"], DRIZZLE_KIT);
    assert_eq!(manifest["devDependencies"]["drizzle-orm"], DRIZZLE_ORM);
    let work = drizzle().work();
    let out = drizzle().kit(&work.dir, &["--version"], None);
    assert!(
        out.stdout.contains(DRIZZLE_KIT) && out.stdout.contains(DRIZZLE_ORM),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn portcullis_first_then_drizzle_applies_nothing_and_both_end_equal() {
    let folder = generated();
    let url = fresh_db("v1ours");
    let out = migrate(&url, folder);
    out.expect(0);
    assert!(
        out.stderr.contains("applied 4 migrations"),
        "{}",
        out.stderr
    );
    let ours = full_rows(&url);
    drizzle().migrate(&url, folder);
    assert_eq!(
        full_rows(&url),
        ours,
        "drizzle-kit {DRIZZLE_KIT} migrate changed the rows portcullis wrote"
    );
    let reference = drizzle_reference();
    assert_eq!(comparable_rows(&url), comparable_rows(reference));
    assert_eq!(schema(&url), schema(reference));
    // And portcullis finds drizzle's own database up to date.
    let out = migrate(reference, folder);
    out.expect(0);
    assert!(
        out.stderr.contains("up to date, 4 migrations applied"),
        "{}",
        out.stderr
    );
}

#[test]
fn drizzle_first_two_then_portcullis_applies_the_rest() {
    let folder = generated();
    let url = fresh_db("v1first");
    drizzle().migrate(&url, first(folder, 2).path());
    let out = migrate(&url, folder);
    out.expect(0);
    assert!(
        out.stderr.contains("applied 2 migrations"),
        "{}",
        out.stderr
    );
    let rows = full_rows(&url);
    drizzle().migrate(&url, folder);
    assert_eq!(
        full_rows(&url),
        rows,
        "drizzle re-applied what portcullis applied"
    );
    let reference = drizzle_reference();
    assert_eq!(comparable_rows(&url), comparable_rows(reference));
    assert_eq!(schema(&url), schema(reference));
}

#[test]
fn drizzle_kit_up_names_folders_as_portcullis_expects() {
    // The journal's entries and drizzle-kit up's folders: same bytes, names from `when`.
    let journal: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example_dir().join("meta/_journal.json")).unwrap())
            .unwrap();
    let up = converted();
    let expected: Vec<String> = journal["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| drizzle_up_folder_name(e["tag"].as_str().unwrap(), e["when"].as_i64().unwrap()))
        .collect();
    assert_eq!(migration_folders(up), expected);
    for (e, name) in journal["entries"].as_array().unwrap().iter().zip(&expected) {
        let tag = e["tag"].as_str().unwrap();
        assert_eq!(
            std::fs::read(up.join(name).join("migration.sql")).unwrap(),
            std::fs::read(example_dir().join(format!("{tag}.sql"))).unwrap()
        );
    }
}

#[test]
fn a_0x_database_upgraded_by_portcullis_equals_one_upgraded_by_drizzle() {
    let up = converted();
    // Two identical 0.x databases: portcullis applied the first three journal entries.
    let old = journal_prefix(3);
    let ours = fresh_db("v1upours");
    let theirs = fresh_db("v1uptheirs");
    for url in [&ours, &theirs] {
        migrate(url, old.path()).expect(0);
        assert_eq!(tracking_columns(url).len(), 3);
    }
    // Then the project moves to drizzle-kit 1.0 (`drizzle-kit up`) with one more migration.
    let out = migrate(&ours, up);
    out.expect(0);
    assert!(out.stderr.contains("upgraded"), "{}", out.stderr);
    assert!(out.stderr.contains("applied 1 migration"), "{}", out.stderr);
    drizzle().migrate(&theirs, up);
    assert_eq!(comparable_rows(&ours), comparable_rows(&theirs));
    assert_eq!(schema(&ours), schema(&theirs));
    let rows = comparable_rows(&ours);
    assert!(rows[..3].iter().all(|r| r[4].as_deref() == Some("true")));
    assert_eq!(rows[3][4].as_deref(), Some("false"));
    // Each then finds the other's database up to date.
    let before = full_rows(&ours);
    drizzle().migrate(&ours, up);
    assert_eq!(full_rows(&ours), before);
    let out = migrate(&theirs, up);
    out.expect(0);
    assert!(
        out.stderr.contains("up to date, 4 migrations applied"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_older_journal_image_on_drizzle_1s_table_leaves_nothing_for_drizzle_to_rerun() {
    // drizzle-kit 1.0 applied the first two converted folders; then an image still built with
    // the journal deploys (a rollback, a branch) and portcullis applies the other two.
    let up = converted();
    let url = fresh_db("v1mixed");
    drizzle().migrate(&url, first(up, 2).path());
    let out = migrate(&url, &example_dir());
    out.expect(0);
    assert!(
        out.stderr.contains("applied 2 migrations"),
        "{}",
        out.stderr
    );
    let rows = full_rows(&url);
    drizzle().migrate(&url, up);
    assert_eq!(full_rows(&url), rows, "drizzle 1.0 re-applied a migration");
    let names: Vec<String> = rows.iter().map(|r| r[3].clone().unwrap()).collect();
    assert_eq!(names, migration_folders(up));
    // The schema is the one the converted folder gives.
    let clean = fresh_db("v1mixedref");
    migrate(&clean, up).expect(0);
    assert_eq!(schema(&url), schema(&clean));
}

#[test]
fn the_folder_order_is_nodes_locale_compare() {
    // Names as drizzle-kit would write them within one second, from characters where ICU and
    // byte order disagree, plus random ones.
    let alphabet: Vec<char> = "aAbBzZ09_-.~$ +".chars().collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut names: Vec<String> = (0..2000)
        .map(|_| {
            let len = 1 + (next() % 6) as usize;
            let suffix: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            format!("20250101000000_{suffix}")
        })
        .collect();
    names.sort();
    names.dedup();
    let mut ours = names.clone();
    ours.sort_by(|a, b| portcullis::source::collate::compare(a, b));
    assert_eq!(ours, drizzle().locale_sort(&names));
}
