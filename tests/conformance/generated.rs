//! Migrations written by the real `drizzle-kit generate` (at test time, once per process) from the
//! schema steps in `tests/conformance/drizzle/steps/`, then applied by portcullis alone, by
//! drizzle-kit alone, and by both taking turns for every split point k; each result is compared
//! with the database drizzle-kit migrated alone.

use crate::kit;
use crate::twin::{self, State};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One migration to generate.
enum Step {
    /// Copy `file` to `schema.ts` and `drizzle-kit generate --name <name>`.
    Schema {
        file: &'static str,
        name: &'static str,
        breakpoints: bool,
    },
    /// `drizzle-kit generate --custom --name <name>`, then append `sql_file` to it.
    Custom {
        name: &'static str,
        sql_file: &'static str,
    },
}

const STEPS: &[Step] = &[
    Step::Schema {
        file: "00_init.ts",
        name: "init",
        breakpoints: true,
    },
    Step::Schema {
        file: "01_add_post_body.ts",
        name: "add_post_body",
        breakpoints: true,
    },
    Step::Schema {
        file: "02_rename_add_display_name.ts",
        name: "rename_add_display_name",
        breakpoints: true,
    },
    Step::Custom {
        name: "copy_display_name",
        sql_file: "03_copy_display_name.sql",
    },
    Step::Schema {
        file: "04_rename_drop_name.ts",
        name: "rename_drop_name",
        breakpoints: true,
    },
    Step::Schema {
        file: "05_add_review_status.ts",
        name: "add_review_status",
        breakpoints: true,
    },
    Step::Schema {
        file: "06_add_indexes.ts",
        name: "add_indexes",
        breakpoints: true,
    },
    Step::Schema {
        file: "07_comments_without_breakpoints.ts",
        name: "comments_without_breakpoints",
        breakpoints: false,
    },
];

/// What `drizzle-kit generate --custom` writes (drizzle-compat.md 3.2), no newline.
const CUSTOM_HEADER: &str = "-- Custom SQL migration file, put your code below! --";

/// The generated folder (drizzle-kit's `out`), shared by every test of the process.
pub fn folder() -> &'static Path {
    static FOLDER: OnceLock<PathBuf> = OnceLock::new();
    FOLDER.get_or_init(generate_all)
}

fn generate_all() -> PathBuf {
    let work = twin::scratch("generate").keep();
    let steps = kit::package_dir().join("steps");
    for (i, step) in STEPS.iter().enumerate() {
        let (name, custom, breakpoints) = match step {
            Step::Schema {
                file,
                name,
                breakpoints,
            } => {
                std::fs::copy(steps.join(file), work.join("schema.ts"))
                    .unwrap_or_else(|e| panic!("copying step {file}: {e}"));
                (*name, false, *breakpoints)
            }
            Step::Custom { name, .. } => (*name, true, true),
        };
        let config = serde_json::json!({
            "dialect": "postgresql",
            "schema": "./schema.ts",
            "out": "./drizzle",
            "breakpoints": breakpoints,
        });
        std::fs::write(work.join("drizzle.config.json"), config.to_string()).unwrap();
        let out = kit::generate(&work, name, custom);
        // The exit code says little (0 on a failed prompt): check the journal and the file.
        let tag = format!("{i:04}_{name}");
        let sql = work.join("drizzle").join(format!("{tag}.sql"));
        let written = work.join("drizzle/meta/_journal.json").is_file()
            && twin::tags(&work.join("drizzle")) == tags_until(i);
        assert!(
            out.code == 0 && written && sql.is_file(),
            "drizzle-kit generate --name {name}{} did not write {} (exit {}):\n{}",
            if custom { " --custom" } else { "" },
            sql.display(),
            out.code,
            out.all()
        );
        if let Step::Custom { sql_file, .. } = step {
            let generated = std::fs::read_to_string(&sql).unwrap();
            assert_eq!(
                generated, CUSTOM_HEADER,
                "drizzle-kit generate --custom wrote an unexpected file"
            );
            let body = std::fs::read_to_string(steps.join(sql_file)).unwrap();
            std::fs::write(&sql, format!("{generated}\n{body}")).unwrap();
        }
    }
    work.join("drizzle")
}

/// The tags of steps 0..=i, as drizzle-kit names them (default `index` prefix).
fn tags_until(i: usize) -> Vec<String> {
    STEPS[..=i]
        .iter()
        .enumerate()
        .map(|(n, s)| match s {
            Step::Schema { name, .. } | Step::Custom { name, .. } => format!("{n:04}_{name}"),
        })
        .collect()
}

/// The database `drizzle-kit migrate` made alone from the generated folder.
fn reference() -> &'static State {
    static REFERENCE: OnceLock<State> = OnceLock::new();
    REFERENCE.get_or_init(|| twin::drizzle_alone("conf_gen_reference", folder()))
}

fn read(tag: &str) -> String {
    std::fs::read_to_string(folder().join(format!("{tag}.sql"))).unwrap()
}

/// The folder really exercises what the scenarios claim: otherwise a drizzle-kit upgrade that
/// writes something else would make the comparisons below quietly weaker.
#[test]
fn generate_writes_every_kind_of_migration() {
    let journal = twin::journal(folder());
    let entries = journal["entries"].as_array().unwrap();
    assert_eq!(twin::tags(folder()), tags_until(STEPS.len() - 1));

    let init = read("0000_init");
    assert!(init.contains("CREATE TYPE \"public\".\"post_status\" AS ENUM"));
    assert_eq!(init.matches("CREATE TABLE").count(), 2, "{init}");
    assert!(init.contains("FOREIGN KEY"), "{init}");
    assert!(init.contains("--> statement-breakpoint\n"), "{init}");
    assert!(!init.ends_with('\n'), "drizzle-kit writes no final newline");

    assert!(read("0001_add_post_body").contains("ALTER TABLE \"posts\" ADD COLUMN \"body\" text;"));
    assert!(read("0002_rename_add_display_name").contains("ADD COLUMN \"display_name\" text"));

    let custom = read("0003_copy_display_name");
    assert!(
        custom.starts_with(&format!("{CUSTOM_HEADER}\n")),
        "{custom}"
    );
    assert!(custom.contains("UPDATE \"authors\""), "{custom}");

    let drop = read("0004_rename_drop_name");
    assert!(drop.contains("DROP COLUMN \"name\""), "{drop}");
    assert!(drop.contains("SET NOT NULL"), "{drop}");

    let enum_value = read("0005_add_review_status");
    assert!(
        enum_value.contains(
            "ALTER TYPE \"public\".\"post_status\" ADD VALUE 'review' BEFORE 'published'"
        ),
        "{enum_value}"
    );

    let indexes = read("0006_add_indexes");
    assert!(
        indexes.contains("CREATE UNIQUE INDEX \"authors_email_idx\""),
        "{indexes}"
    );
    assert!(
        indexes.contains("CREATE INDEX \"posts_author_id_idx\""),
        "{indexes}"
    );

    let flat = read("0007_comments_without_breakpoints");
    assert!(!flat.contains("statement-breakpoint"), "{flat}");
    assert!(flat.matches(';').count() >= 3, "several statements: {flat}");
    assert_eq!(entries[7]["breakpoints"], serde_json::json!(false));
    assert_eq!(entries[6]["breakpoints"], serde_json::json!(true));

    // `when` is Date.now() at generate time: strictly increasing here.
    let whens: Vec<i64> = entries
        .iter()
        .map(|e| e["when"].as_i64().unwrap())
        .collect();
    assert!(whens.windows(2).all(|w| w[0] < w[1]), "{whens:?}");
}

/// portcullis alone makes the same database as drizzle-kit alone; afterwards drizzle-kit (and
/// portcullis again, and an older deploy holding only a prefix of the folder) apply nothing.
#[test]
fn portcullis_alone_then_drizzle_kit_applies_nothing() {
    let want = reference();
    let url = twin::fresh_db("conf_gen_alone");
    let out = twin::portcullis_migrate(&url, folder());
    assert!(
        out.all()
            .contains(&format!("applied {} migrations", STEPS.len())),
        "portcullis should report what it ran:\n{}",
        out.all()
    );
    twin::assert_same("portcullis alone", &twin::state(&url), want);

    twin::kit_migrate_all(&url, folder(), "drizzle-kit after portcullis");
    twin::assert_same(
        "drizzle-kit after portcullis applied everything",
        &twin::state(&url),
        want,
    );

    // E21: the newest row is newer than every local entry (an older image, a rollback deploy):
    // both tools apply nothing and succeed.
    twin::portcullis_migrate(&url, folder());
    let older = twin::prefix(folder(), 3);
    twin::portcullis_migrate(&url, &older);
    let out = kit::migrate(&url, &older);
    assert_eq!(out.code, 0, "{}", out.all());
    twin::assert_same(
        "both tools again, with the full folder and with its first 3 entries",
        &twin::state(&url),
        want,
    );
}

/// drizzle-kit applies the first k migrations, portcullis the rest, for every k.
#[test]
fn drizzle_kit_first_k_then_portcullis_the_rest() {
    let want = reference();
    for k in 1..STEPS.len() {
        let url = twin::fresh_db(&format!("conf_gen_kit_first_{k}"));
        let first = twin::prefix(folder(), k);
        twin::kit_migrate_all(&url, &first, &format!("drizzle-kit, first {k}"));
        twin::portcullis_migrate(&url, folder());
        twin::assert_same(
            &format!("drizzle-kit first {k}, then portcullis"),
            &twin::state(&url),
            want,
        );
    }
}

/// portcullis applies the first k migrations, drizzle-kit the rest, for every k.
#[test]
fn portcullis_first_k_then_drizzle_kit_the_rest() {
    let want = reference();
    for k in 1..STEPS.len() {
        let url = twin::fresh_db(&format!("conf_gen_portcullis_first_{k}"));
        let first = twin::prefix(folder(), k);
        twin::portcullis_migrate(&url, &first);
        assert_eq!(crate::run::rows(&url).len(), k, "portcullis, first {k}");
        twin::kit_migrate_all(
            &url,
            folder(),
            &format!("drizzle-kit after portcullis's {k}"),
        );
        twin::assert_same(
            &format!("portcullis first {k}, then drizzle-kit"),
            &twin::state(&url),
            want,
        );
    }
}

/// Three turns each way: one deploy after another, alternating tools.
#[test]
fn alternating_turns() {
    let want = reference();
    let (two, five) = (twin::prefix(folder(), 2), twin::prefix(folder(), 5));

    let url = twin::fresh_db("conf_gen_turns_kit");
    twin::kit_migrate_all(&url, &two, "drizzle-kit, first 2");
    twin::portcullis_migrate(&url, &five);
    twin::kit_migrate_all(&url, folder(), "drizzle-kit, the rest");
    twin::assert_same(
        "drizzle-kit 2, portcullis 5, drizzle-kit all",
        &twin::state(&url),
        want,
    );

    let url = twin::fresh_db("conf_gen_turns_portcullis");
    twin::portcullis_migrate(&url, &two);
    twin::kit_migrate_all(&url, &five, "drizzle-kit, first 5");
    twin::portcullis_migrate(&url, folder());
    twin::assert_same(
        "portcullis 2, drizzle-kit 5, portcullis all",
        &twin::state(&url),
        want,
    );
}
