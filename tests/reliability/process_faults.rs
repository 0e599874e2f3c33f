//! Process faults: portcullis killed (-9) or terminated (SIGTERM) at random moments of a
//! 30-migration run, 25 times each. After every fault the database is at the old version or at
//! the new one (batch mode: never in between), no advisory lock is left once the orphaned
//! backend notices, and the next run completes.

use crate::capture::{Rng, figure, poll, portcullis, seed};
use crate::run::{Folder, advisory_locks};
use crate::support::{Cluster, query};
use std::time::{Duration, Instant};

const ITERATIONS: usize = 25;
/// Applied before each faulty run: the "old" version.
const OLD: usize = 10;
/// The folder of the faulty run: it applies NEW - OLD = 30 migrations.
const NEW: usize = 40;

/// Migration i: a table, a row in it, and a 10 ms pause so that the run lasts long enough for
/// random kills to land in every phase (connecting, locking, reading, applying, committing).
fn folder(n: usize) -> Folder {
    let mut f = Folder::new();
    for i in 0..n {
        f.add(
            &format!("{i:04}_pf_{i}"),
            1_700_000_000_000 + i as i64,
            &format!(
                "CREATE TABLE \"pf_{i}\" (\n\t\"id\" integer PRIMARY KEY,\n\t\"v\" text\n);\n\
                 --> statement-breakpoint\nINSERT INTO \"pf_{i}\" VALUES (1, 'x');\n\
                 --> statement-breakpoint\nSELECT pg_sleep(0.01);"
            ),
        );
    }
    f
}

/// (tracking rows, distinct hashes, pf_ tables, rows in pf_ tables) of a database.
fn version(socket_url: &str) -> (usize, usize, usize, usize) {
    let n = |sql: &str| -> usize {
        query(socket_url, sql)[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    };
    let names: Vec<String> = query(
        socket_url,
        "select tablename from pg_tables where tablename like 'pf\\_%'",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    let tables = names.len();
    let data = if names.is_empty() {
        0
    } else {
        let sum: Vec<String> = names
            .iter()
            .map(|t| format!("(select count(*) from \"{t}\")"))
            .collect();
        n(&format!("select {}", sum.join(" + ")))
    };
    (
        n("select count(*) from drizzle.__drizzle_migrations"),
        n("select count(distinct hash) from drizzle.__drizzle_migrations"),
        tables,
        data,
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Kill9,
    Term,
}

fn faults(fault: Fault, name: &str) {
    let cluster = Cluster::shared();
    let (old, new) = (folder(OLD), folder(NEW));
    let seed = seed(name);
    let mut rng = Rng::new(seed);

    // Calibration: how long an undisturbed 30-migration run takes here, now.
    let db = cluster.create_database("pf_calibrate");
    portcullis(&cluster.url(&db), old.path()).run().expect(0);
    let full = portcullis(&cluster.url(&db), new.path()).run();
    full.expect(0);
    // Faults land uniformly in 0..window, where window is the duration of the latest
    // undisturbed 30-migration run (the calibration, then each re-run that applied all 30), so
    // that it follows the machine's load and most faults land inside the run.
    let mut window = full.elapsed;
    figure(
        name,
        format!(
            "an undisturbed 30-migration run takes {:?} at the start",
            full.elapsed
        ),
    );

    let (mut at_old, mut at_new, mut exits) = (0, 0, Vec::new());
    let mut worst_lock = Duration::ZERO;
    let mut worst_term = Duration::ZERO;
    let started = Instant::now();
    for i in 0..ITERATIONS {
        let db = cluster.create_database(&format!("pf_{i}"));
        let (url, sock) = (cluster.url(&db), cluster.socket_url(&db));
        portcullis(&url, old.path()).run().expect(0);
        assert_eq!(version(&sock), (OLD, OLD, OLD, OLD));

        let delay = rng.below(window);
        let run = portcullis(&url, new.path()).spawn();
        std::thread::sleep(delay.saturating_sub(run.started.elapsed()));
        let signalled = Instant::now();
        run.signal(match fault {
            Fault::Kill9 => libc::SIGKILL,
            Fault::Term => libc::SIGTERM,
        });
        let out = run.finish(Duration::from_secs(60));
        let ctx = format!(
            "iteration {i}, fault after {delay:?}, seed {seed} (replay with RELIABILITY_SEED={seed}), \
             exit {} signal {:?}\n{}",
            out.code, out.signal, out.stderr
        );
        if fault == Fault::Term && out.signal.is_none() {
            worst_term = worst_term.max(signalled.elapsed());
            assert!(
                signalled.elapsed() < Duration::from_secs(5),
                "SIGTERM took {:?} to end the run; {ctx}",
                signalled.elapsed()
            );
        }
        exits.push(out.code);

        // The orphaned backend notices the closed connection and the server releases the lock.
        worst_lock = worst_lock.max(poll(Duration::from_secs(20), &ctx, || {
            advisory_locks(&sock) == 0
        }));
        let v = version(&sock);
        match v {
            (OLD, OLD, OLD, OLD) => at_old += 1,
            (NEW, NEW, NEW, NEW) => at_new += 1,
            other => panic!("the database is in between: {other:?}; {ctx}"),
        }
        // What the exit status says must be what happened.
        match (fault, out.code, out.signal) {
            (_, 0, None) => assert_eq!(v.0, NEW, "exit 0 but not migrated; {ctx}"),
            (Fault::Term, 143, None) => {
                assert_eq!(v.0, OLD, "exit 143 promises nothing was committed; {ctx}");
                assert!(out.stderr.contains("interrupted by SIGTERM"), "{ctx}");
                assert!(out.termlog.starts_with("exit 143: "), "{ctx}");
            }
            // Terminated before the handlers were installed (within the first milliseconds,
            // before any connection): the shell reports 143 as well.
            (Fault::Term, _, Some(libc::SIGTERM)) => assert_eq!(v.0, OLD, "{ctx}"),
            (Fault::Kill9, _, Some(libc::SIGKILL)) => {}
            _ => panic!("unexpected end; {ctx}"),
        }

        // The next run completes and leaves the new version, each migration exactly once.
        let rerun = portcullis(&url, new.path()).run();
        rerun.expect(0);
        if v.0 == OLD {
            window = rerun.elapsed;
        }
        assert_eq!(
            version(&sock),
            (NEW, NEW, NEW, NEW),
            "after the re-run; {ctx}"
        );
        assert_eq!(advisory_locks(&sock), 0);
        query(
            &cluster.socket_url("postgres"),
            &format!("drop database \"{db}\" with (force)"),
        );
    }
    let signalled = exits.iter().filter(|&&c| c != 0).count();
    // The point is faults that land before the commit: at least one must have.
    assert!(
        at_old >= 1,
        "no fault landed before the commit in {ITERATIONS} iterations (exits {exits:?}); the \
         test exercised nothing"
    );
    figure(
        name,
        format!(
            "{ITERATIONS} iterations survived in {:.1}s: {signalled} runs ended by the fault \
             ({} at the old version, {} committed before it landed), {} finished first; \
             0 in between, 0 rows lost or duplicated; every re-run exit 0; lock released \
             within {} ms at worst{}; exit codes {:?}",
            started.elapsed().as_secs_f64(),
            at_old,
            at_new - exits.iter().filter(|&&c| c == 0).count(),
            exits.iter().filter(|&&c| c == 0).count(),
            worst_lock.as_millis(),
            if fault == Fault::Term {
                format!(
                    ", SIGTERM to exit within {} ms at worst",
                    worst_term.as_millis()
                )
            } else {
                String::new()
            },
            exits
        ),
    );
}

#[test]
fn kill_9_at_random_moments_leaves_the_old_or_the_new_version() {
    faults(Fault::Kill9, "kill -9");
}

#[test]
fn sigterm_at_random_moments_leaves_the_old_or_the_new_version() {
    faults(Fault::Term, "SIGTERM");
}
