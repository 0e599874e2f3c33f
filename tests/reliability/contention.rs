//! Contention: 50 runners start at once on an empty database with a 200-migration folder.
//!
//! The folder is tests/fixtures/corpus-200, written by the project's corpus generator
//! (`python3 ../shared/bench/gen_corpus.py --count 200 --seed-rows 3 -o
//! tests/fixtures/corpus-200`; deterministic): realistic drizzle-kit SQL (enums, tables, foreign
//! keys, indexes, added columns, an enum value added in a migration of its own) whose last
//! migration inserts 3 rows into each of 4 tables.

use crate::capture::{figure, portcullis};
use crate::run::advisory_locks;
use crate::support::{Cluster, query};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNNERS: usize = 50;
const MIGRATIONS: usize = 200;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus-200")
}

/// Tables the corpus's last migration fills, with how many rows each gets.
fn seeded_tables(dir: &Path) -> Vec<(String, usize)> {
    let journal = std::fs::read_to_string(dir.join("meta/_journal.json")).unwrap();
    let journal: serde_json::Value = serde_json::from_str(&journal).unwrap();
    let last = journal["entries"].as_array().unwrap().last().unwrap()["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let sql = std::fs::read_to_string(dir.join(format!("{last}.sql"))).unwrap();
    sql.split("--> statement-breakpoint")
        .filter_map(|stmt| {
            let stmt = stmt.trim();
            let rest = stmt.strip_prefix("INSERT INTO \"")?;
            let table = rest[..rest.find('"')?].to_string();
            // One "(...)" tuple per line after VALUES.
            let rows = stmt.lines().filter(|l| l.starts_with('(')).count();
            Some((table, rows))
        })
        .collect()
}

// TODO(seeds, issue 10): seeds land on the `seeds` branch. When they do, give this folder a
// seeds folder (PORTCULLIS_SEEDS_DIR), run the 50 runners with it, and fill in
// `seeds_applied_exactly_once`: every seed ran once (its tracking row once, its rows once) and
// none ran twice under contention. Until then it checks nothing and says so in the figures.
fn seeds_applied_exactly_once(_socket_url: &str) -> &'static str {
    "seeds: not in this version (hook seeds_applied_exactly_once left for the seeds branch)"
}

#[test]
fn fifty_runners_at_once_apply_each_of_200_migrations_exactly_once() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("contention");
    let (url, sock) = (cluster.url(&db), cluster.socket_url(&db));
    let dir = corpus();
    let started = Instant::now();
    let runs: Vec<_> = (0..RUNNERS)
        .map(|_| {
            portcullis(&url, &dir)
                .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "5m")
                .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
                .spawn()
        })
        .collect();
    let outs: Vec<_> = runs
        .into_iter()
        .map(|r| r.finish(Duration::from_secs(300)))
        .collect();
    let took = started.elapsed();
    for o in &outs {
        o.expect(0);
    }
    let appliers: Vec<_> = outs
        .iter()
        .filter(|o| {
            o.stderr
                .contains(&format!("applied {MIGRATIONS} migrations"))
        })
        .collect();
    assert_eq!(appliers.len(), 1, "exactly one runner applies");
    assert_eq!(
        outs.iter()
            .filter(|o| o
                .stderr
                .contains(&format!("up to date, {MIGRATIONS} migrations")))
            .count(),
        RUNNERS - 1,
        "every other runner finds nothing to do"
    );
    let n = |sql: &str| -> String { query(&sock, sql)[0][0].clone().unwrap_or_default() };
    assert_eq!(
        n("select count(*) from drizzle.__drizzle_migrations"),
        "200"
    );
    assert_eq!(
        n(
            "select count(distinct hash) || '/' || count(distinct created_at) from drizzle.__drizzle_migrations"
        ),
        "200/200",
        "no duplicate tracking row"
    );
    let seeded = seeded_tables(&dir);
    assert_eq!(seeded.len(), 4, "{seeded:?}");
    for (table, expected) in &seeded {
        assert_eq!(
            n(&format!("select count(*) from \"{table}\"")),
            expected.to_string(),
            "{table}: each row once"
        );
    }
    assert_eq!(advisory_locks(&sock), 0, "no lock left");
    assert_eq!(
        n(
            "select count(*) from pg_stat_activity where application_name like 'portcullis@%' \
           and datname = current_database()"
        ),
        "0",
        "no session left"
    );
    // The waiters waited politely: lock polls, never a server-side lock queue (no deadlock).
    let waited = outs
        .iter()
        .filter(|o| {
            o.stderr.contains("waiting for the migration lock")
                || o.stderr.contains("took the migration lock")
        })
        .count();
    let seeds = seeds_applied_exactly_once(&sock);
    let slowest = outs.iter().map(|o| o.elapsed).max().unwrap();
    figure(
        "contention",
        format!(
            "{RUNNERS} runners at once, {MIGRATIONS}-migration corpus (963 statements): all exit 0 \
             in {:.1}s (slowest runner {:.1}s, applier {:.1}s); 1 applied, {} found it done \
             ({waited} logged waiting); 200 tracking rows, 0 duplicates; seed rows exactly once; \
             no deadlock, no lock left; {seeds}",
            took.as_secs_f64(),
            slowest.as_secs_f64(),
            appliers[0].elapsed.as_secs_f64(),
            RUNNERS - 1
        ),
    );
}
