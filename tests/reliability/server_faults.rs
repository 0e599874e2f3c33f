//! Server faults on private clusters: a restart (fast shutdown + start) or a crash in the middle
//! of a migration, a restart while waiting for the lock, and a server that is down when the run
//! starts and comes back within the wait timeout.

use crate::capture::{figure, poll, portcullis, running};
use crate::run::{Folder, example_dir, hold_lock, rows, table_exists, wait_for_sent};
use crate::support::{Cluster, execute};
use std::time::{Duration, Instant};

/// Two migrations; the second pauses for `app.pause` seconds (a database setting, so the same
/// file, with the same hash, runs fast once the setting is reset).
fn pausing_folder() -> Folder {
    let mut f = Folder::new();
    f.add(
        "0000_sf_a",
        1_700_000_000_000,
        "CREATE TABLE \"sf_a\" (\"id\" integer);",
    )
    .add(
        "0001_sf_b",
        1_700_000_000_001,
        "CREATE TABLE \"sf_b\" (\"id\" integer);\n--> statement-breakpoint\n\
             SELECT pg_sleep(coalesce(current_setting('app.pause', true), '0')::float8);\n\
             --> statement-breakpoint\nCREATE TABLE \"sf_c\" (\"id\" integer);",
    );
    f
}

/// A restart or a crash while statement 2 of 0001_sf_b runs: exit 5 (the server went away; a
/// restart may help), not exit 8 ("fix the SQL"), nothing half-applied, and the re-run
/// completes. Regression: a fast shutdown answers the running statement with 57P01, which was
/// reported as a failed migration (exit 8) telling the operator to fix correct SQL.
#[test]
fn a_server_restart_or_crash_mid_migration_exits_5_not_8_and_a_rerun_completes() {
    let mut cluster = Cluster::start_new();
    let folder = pausing_folder();
    for crash in [false, true] {
        let db = cluster.create_database(if crash { "sf_crash" } else { "sf_restart" });
        let (url, sock) = (cluster.url(&db), cluster.socket_url(&db));
        execute(
            &sock,
            &format!("ALTER DATABASE \"{db}\" SET app.pause = '60'"),
        );
        let run = portcullis(&url, folder.path()).spawn();
        poll(Duration::from_secs(30), "the pause never started", || {
            running(&sock, "%pg_sleep(%")
        });
        let fault = Instant::now();
        if crash {
            cluster.kill9();
        } else {
            cluster.stop();
        }
        let out = run.finish(Duration::from_secs(60));
        let reacted = fault.elapsed();
        cluster.start();
        out.expect(5);
        let e = &out.stderr;
        assert!(
            e.contains("ended while running statement 2 of 0001_sf_b"),
            "{e}"
        );
        if !crash {
            assert!(e.contains("57P01"), "the server's reason is shown: {e}");
        }
        assert!(e.contains("a restart may help"), "{e}");
        assert!(!e.contains("Fix the SQL"), "the SQL is not at fault: {e}");
        assert!(out.termlog.starts_with("exit 5: "), "{}", out.termlog);
        for t in ["sf_a", "sf_b", "sf_c"] {
            assert!(!table_exists(&sock, t), "{t} half-applied");
        }
        assert!(rows(&sock).is_empty());
        execute(&sock, &format!("ALTER DATABASE \"{db}\" RESET app.pause"));
        portcullis(&url, folder.path()).run().expect(0);
        assert_eq!(rows(&sock).len(), 2);
        for t in ["sf_a", "sf_b", "sf_c"] {
            assert!(table_exists(&sock, t), "{t}");
        }
        figure(
            "server faults",
            format!(
                "{} mid-migration: exit 5 {} ms after the fault, nothing applied, re-run exit 0",
                if crash {
                    "crash (kill -9 of every server process)"
                } else {
                    "restart (fast shutdown + start)"
                },
                reacted.as_millis()
            ),
        );
    }
}

/// The server restarts while a runner waits for the lock held by another session: the lost
/// connection is exit 5 at once (a restart may help), not a hang and not a lock timeout.
#[test]
fn a_server_restart_during_the_lock_wait_exits_5() {
    let mut cluster = Cluster::start_new();
    let db = cluster.create_database("sf_lockwait");
    let (url, sock) = (cluster.url(&db), cluster.socket_url(&db));
    let holder = hold_lock(&sock);
    let run = portcullis(&url, &example_dir())
        .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "60s")
        .spawn();
    wait_for_sent(&sock, "advisory_lock");
    let fault = Instant::now();
    cluster.stop();
    let out = run.finish(Duration::from_secs(60));
    let reacted = fault.elapsed();
    cluster.start();
    drop(holder);
    out.expect(5);
    assert!(reacted < Duration::from_secs(10), "{reacted:?}");
    assert!(
        out.stderr.to_lowercase().contains("run again"),
        "{}",
        out.stderr
    );
    portcullis(&url, &example_dir()).run().expect(0);
    assert_eq!(rows(&sock).len(), 4);
    figure(
        "server faults",
        format!(
            "restart during the lock wait: exit 5 {} ms after the fault; re-run exit 0",
            reacted.as_millis()
        ),
    );
}

/// The server is down when the run starts and comes back 2 s later, within the wait timeout:
/// the run waits and succeeds.
#[test]
fn the_server_down_at_the_start_and_back_within_the_wait_timeout_is_waited_for() {
    let mut cluster = Cluster::start_new();
    let db = cluster.create_database("sf_wait");
    let (url, sock) = (cluster.url(&db), cluster.socket_url(&db));
    cluster.stop();
    let run = portcullis(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
        .spawn();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start();
    let back = run.started.elapsed();
    let out = run.finish(Duration::from_secs(90));
    out.expect(0);
    out.says("connection refused");
    assert!(
        out.stderr.contains("accepts connections (after"),
        "{}",
        out.stderr
    );
    assert_eq!(rows(&sock).len(), 4);
    figure(
        "server faults",
        format!(
            "down at the start, back after {} ms: exit 0 after {} ms",
            back.as_millis(),
            out.elapsed.as_millis()
        ),
    );
}
