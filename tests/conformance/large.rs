//! A large history: the 1000-migration corpus of `../shared/bench/gen_corpus.py` (drizzle-kit's
//! output format: enums, tables, foreign keys, indexes, added columns and enum values), applied
//! by each tool alone on twin databases.

use crate::twin;
use std::path::Path;
use std::process::Command;

const COUNT: usize = 1000;

#[test]
fn thousand_migrations_same_result() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/gen_corpus.py");
    assert!(
        script.is_file(),
        "{} is missing: the conformance suite needs the shared bench corpus generator (the \
         `shared` folder next to the repository)",
        script.display()
    );
    let work = twin::scratch("corpus");
    let folder = work.join("drizzle");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--count", &COUNT.to_string(), "--out"])
        .arg(&folder)
        .output()
        .unwrap_or_else(|e| panic!("running python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "python3 {} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(twin::tags(&folder).len(), COUNT);

    let want = twin::drizzle_alone("conf_corpus_kit", &folder);

    let url = twin::fresh_db("conf_corpus");
    twin::portcullis_migrate(&url, &folder);
    twin::assert_same(
        "1000 migrations, portcullis alone",
        &twin::state(&url),
        &want,
    );

    // Taking turns is covered on the smaller folders; here, only a restart in the middle: an
    // older deploy (the first half) on a database drizzle-kit migrated completely applies nothing.
    let half = twin::prefix(&folder, COUNT / 2);
    twin::portcullis_migrate(&url, &half);
    twin::assert_same(
        "1000 migrations, then the first half again",
        &twin::state(&url),
        &want,
    );
}
