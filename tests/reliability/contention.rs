//! Contention: 50 runners start at once on an empty database with a 200-migration folder.
//!
//! The folder is tests/fixtures/corpus-200, written by the project's corpus generator
//! (`python3 ../shared/bench/gen_corpus.py --count 200 --seed-rows 3 -o
//! tests/fixtures/corpus-200`; deterministic): realistic drizzle-kit SQL (enums, tables, foreign
//! keys, indexes, added columns, an enum value added in a migration of its own) whose last
//! migration inserts 3 rows into each of 4 tables. The runners also run three seeds (see
//! [`Seeds`]).

use crate::capture::{Captured, figure, poll, portcullis};
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

/// Seeds for the corpus, written to a temp dir: three files (two common, one for
/// PORTCULLIS_SEED_ENV=development) that add reference rows to `locations` guarded by
/// `WHERE NOT EXISTS` on a column without a unique constraint, so two seed runs that overlapped
/// (no lock) would leave duplicates; one reads a seed variable.
struct Seeds(PathBuf);

impl Seeds {
    fn write() -> Seeds {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-contention-seeds-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("development")).unwrap();
        let row = |url: &str| {
            format!(
                "INSERT INTO \"locations\" (\"url\", \"currency\", \"label\")\n\
                 SELECT '{url}', current_setting('portcullis.currency'), 'seeded'\n\
                 WHERE NOT EXISTS (SELECT 1 FROM \"locations\" WHERE \"url\" = '{url}');\n"
            )
        };
        std::fs::write(dir.join("1_headquarters.sql"), row("seed://hq")).unwrap();
        std::fs::write(
            dir.join("2_warehouse.sql"),
            format!(
                "{}UPDATE \"locations\" SET \"amount\" = 0 WHERE \"url\" LIKE 'seed://%';\n",
                row("seed://warehouse")
            ),
        )
        .unwrap();
        std::fs::write(dir.join("development/1_demo.sql"), row("seed://demo")).unwrap();
        Seeds(dir)
    }
}

impl Drop for Seeds {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SEED_FILES: usize = 3;

/// How the seeds fared under contention, as documented (README, "Seeds" and "How a run works"):
/// each runner either ran the seeds itself, in turn under the lock, or found that they had run,
/// with the same files, after it started (in the run it waited for). So every seed's run count
/// is the number of runners that logged running it, at least one, and each seeded row is there
/// once, whatever that count.
fn seeds_applied_as_documented(sock: &str, outs: &[Captured]) -> String {
    let ran_itself = outs
        .iter()
        .filter(|o| o.stderr.contains(&format!("seeds: ran {SEED_FILES} in")))
        .count();
    let left_to_other = outs
        .iter()
        .filter(|o| {
            o.stderr.contains(&format!(
                "seeds: all {SEED_FILES} ran after this runner started, in the run it waited for"
            ))
        })
        .count();
    assert_eq!(
        ran_itself + left_to_other,
        outs.len(),
        "every runner either ran the seeds or saw them run after it started"
    );
    assert!(ran_itself >= 1);
    let runs = query(
        sock,
        "select name, run_count::text from drizzle.__portcullis_seeds order by name",
    );
    let expected: Vec<Vec<Option<String>>> = [
        "1_headquarters.sql",
        "2_warehouse.sql",
        "development/1_demo.sql",
    ]
    .iter()
    .map(|n| vec![Some(n.to_string()), Some(ran_itself.to_string())])
    .collect();
    assert_eq!(
        runs, expected,
        "each seed recorded once per runner that ran it"
    );
    assert_eq!(
        query(
            sock,
            "select url, count(*)::text from locations where url like 'seed://%' group by url order by url"
        ),
        [
            [Some("seed://demo".to_string()), Some("1".to_string())],
            [Some("seed://hq".to_string()), Some("1".to_string())],
            [Some("seed://warehouse".to_string()), Some("1".to_string())],
        ],
        "each seeded row once"
    );
    format!(
        "seeds ({SEED_FILES} files, mode always): ran by {ran_itself} runner(s) in turn, left by \
         {left_to_other} to the run they waited for; run_count {ran_itself} each; each seeded \
         row once"
    )
}

#[test]
fn fifty_runners_at_once_apply_each_of_200_migrations_exactly_once() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("contention");
    let (url, sock) = (cluster.url(&db), cluster.socket_url(&db));
    let dir = corpus();
    let seeds = Seeds::write();
    let started = Instant::now();
    let runs: Vec<_> = (0..RUNNERS)
        .map(|_| {
            portcullis(&url, &dir)
                .env("PORTCULLIS_SEEDS_DIR", &seeds.0)
                .env("PORTCULLIS_SEED_ENV", "development")
                .env("PORTCULLIS_SEED_VAR_CURRENCY", "EUR")
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
        // The seeds' rows (in locations) are counted by seeds_applied_as_documented.
        let not_seeded = if table == "locations" {
            " where coalesce(label, '') <> 'seeded'"
        } else {
            ""
        };
        assert_eq!(
            n(&format!("select count(*) from \"{table}\"{not_seeded}")),
            expected.to_string(),
            "{table}: each row once"
        );
    }
    assert_eq!(advisory_locks(&sock), 0, "no lock left");
    // A backend ends a moment after its client has gone: 50 of them on 2 cores, give them time.
    poll(Duration::from_secs(10), "no session left", || {
        n(
            "select count(*) from pg_stat_activity where application_name like 'portcullis@%' \
           and datname = current_database()",
        ) == "0"
    });
    // The others queued for the lock (shared, behind the applier) and logged who they waited for.
    let waited = outs
        .iter()
        .filter(|o| o.stderr.contains("waiting for the migration lock"))
        .count();
    let seeds = seeds_applied_as_documented(&sock, &outs);
    let slowest = outs.iter().map(|o| o.elapsed).max().unwrap();
    figure(
        "contention",
        format!(
            "{RUNNERS} runners at once, {MIGRATIONS}-migration corpus (963 statements): all exit 0 \
             in {:.1}s (slowest runner {:.1}s, applier {:.1}s); 1 applied, {} found it done \
             ({waited} logged waiting); 200 tracking rows, 0 duplicates; corpus rows exactly once; \
             no deadlock, no lock left; {seeds}",
            took.as_secs_f64(),
            slowest.as_secs_f64(),
            appliers[0].elapsed.as_secs_f64(),
            RUNNERS - 1
        ),
    );
}
