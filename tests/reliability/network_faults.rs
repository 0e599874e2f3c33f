//! Network faults through the proxy (tests/reliability/proxy.rs) in front of the shared
//! cluster: a connection that stalls (a black hole: accepted, keepalives answered, nothing
//! forwarded) or is cut, during the wait, the lock wait, a statement and the COMMIT. Each must
//! end with the documented exit code within the configured timeouts plus a small margin.

use crate::capture::{Captured, Running, figure, poll, portcullis, running};
use crate::proxy::Proxy;
use crate::run::{Folder, advisory_locks, example_dir, rows, table_exists, wait_for_sent};
use crate::run::{hold_lock, hold_session};
use crate::support::{Cluster, query};
use std::time::{Duration, Instant};

/// Slack for a loaded 2-core machine on top of the timeouts the behaviour is specified by.
const MARGIN: Duration = Duration::from_secs(4);

/// A fresh database, its URL through `proxy` (with `params`), and its direct socket URL.
fn through(proxy: &Proxy, prefix: &str, params: &str) -> (String, String) {
    let cluster = Cluster::shared();
    let db = cluster.create_database(prefix);
    let url = cluster.url(&db).replace(
        &format!(":{}/", cluster.port()),
        &format!(":{}/", proxy.port()),
    );
    assert!(url.contains(&format!("127.0.0.1:{}/", proxy.port())));
    (format!("{url}&{params}"), cluster.socket_url(&db))
}

/// The direct TCP URL (no proxy) of the database `sock` points at.
fn direct_url(sock: &str) -> String {
    let db = query(sock, "select current_database()")[0][0]
        .clone()
        .unwrap();
    Cluster::shared().url(&db)
}

fn pausing(seconds: u32) -> Folder {
    let mut f = Folder::new();
    f.add(
        "0000_nf",
        1_700_000_000_000,
        &format!(
            "CREATE TABLE \"nf_a\" (\"id\" integer);\n--> statement-breakpoint\n\
             SELECT pg_sleep({seconds});\n--> statement-breakpoint\n\
             CREATE TABLE \"nf_b\" (\"id\" integer);"
        ),
    );
    f
}

/// A run of [`pausing`]`(2)` through `proxy` (`connect_timeout` and PORTCULLIS_STATEMENT_TIMEOUT
/// as given), once the server runs its pause: the run and the direct socket URL.
fn paused(
    proxy: &Proxy,
    prefix: &str,
    connect_timeout: u32,
    statement_timeout: &str,
) -> (Running, String, Folder) {
    let (url, sock) = through(proxy, prefix, &format!("connect_timeout={connect_timeout}"));
    let folder = pausing(2);
    let run = portcullis(&url, folder.path())
        .env("PORTCULLIS_STATEMENT_TIMEOUT", statement_timeout)
        .spawn();
    until_running(&sock, "%pg_sleep(2)%", "the pause never started");
    (run, sock, folder)
}

/// After a fault during a migration: once the server has noticed (the proxy is gone), nothing
/// of it is left, no lock is held, and a direct re-run completes.
fn nothing_half_applied_then_rerun(sock: &str, folder: &Folder) {
    poll(
        Duration::from_secs(30),
        "the orphaned session kept the lock",
        || advisory_locks(sock) == 0,
    );
    assert!(!table_exists(sock, "nf_a") && !table_exists(sock, "nf_b"));
    assert!(rows(sock).is_empty());
    let direct = direct_url(sock);
    portcullis(&direct, folder.path()).run().expect(0);
    assert!(table_exists(sock, "nf_a") && table_exists(sock, "nf_b"));
    assert_eq!(rows(sock).len(), 1);
}

/// Injects `fault` into `run` (which has reached the moment under test), waits for it (at most
/// `limit`), and checks that it ended with exit 5 within `bound` (plus [`MARGIN`]) of the fault.
/// Returns its output and how long after the fault it ended.
#[track_caller]
fn exit_5_after(
    run: Running,
    fault: impl FnOnce(),
    limit: Duration,
    bound: Duration,
    what: &str,
) -> (Captured, Duration) {
    let at = Instant::now();
    fault();
    let out = run.finish(limit);
    out.expect(5);
    let took = ended_within(&out, at, bound + MARGIN, what);
    (out, took)
}

/// Waits (up to 30 s) until the server runs a statement like `pattern` on `sock`'s database.
#[track_caller]
fn until_running(sock: &str, pattern: &str, what: &str) {
    poll(Duration::from_secs(30), what, || running(sock, pattern));
}

/// The proxy still holds a hung connection open, so only a session ended by portcullis frees the
/// migration lock; it must be free within 2 s.
#[track_caller]
fn lock_freed_while_the_connection_hangs(sock: &str) {
    poll(
        Duration::from_secs(2),
        "the hung session is ended while its connection stays open",
        || advisory_locks(sock) == 0,
    );
}

#[track_caller]
fn ended_within(out: &Captured, since: Instant, limit: Duration, what: &str) -> Duration {
    let took = since.elapsed();
    assert!(
        took <= limit,
        "{what}: took {took:?}, more than {limit:?}\n{}",
        out.stderr
    );
    took
}

#[test]
fn stalled_during_the_wait_exits_5_at_the_wait_timeout() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, _) = through(&proxy, "nf_wait", "connect_timeout=10");
    proxy.stall();
    let out = portcullis(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "3s")
        .run();
    out.expect(5);
    out.says("did not accept connections within 3s");
    let took = out.elapsed;
    assert!(took <= Duration::from_secs(3) + MARGIN, "{took:?}");
    figure(
        "network faults",
        format!(
            "stall during the wait (PORTCULLIS_WAIT_TIMEOUT=3s): exit 5 after {} ms",
            took.as_millis()
        ),
    );
}

#[test]
fn refused_connections_during_the_wait_then_restored_succeed() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_refuse", "connect_timeout=2");
    proxy.refuse();
    let run = portcullis(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "30s")
        .spawn();
    std::thread::sleep(Duration::from_secs(2));
    proxy.resume();
    let out = run.finish(Duration::from_secs(60));
    out.expect(0);
    assert_eq!(rows(&sock).len(), 4);
    figure(
        "network faults",
        format!(
            "connections closed at once for 2 s during the wait, then forwarded: exit 0 after {} ms",
            out.elapsed.as_millis()
        ),
    );
}

/// Regression: a lock poll sent into a stalled connection waited forever (no client-side
/// timeout; keepalives are answered by the proxy's kernel). Now it is exit 5 once the poll
/// goes unanswered for the connect timeout.
#[test]
fn stalled_during_the_lock_wait_exits_5_instead_of_hanging() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_lock", "connect_timeout=2");
    let holder = hold_lock(&sock);
    let run = portcullis(&url, &example_dir())
        .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "60s")
        .spawn();
    wait_for_sent(&sock, "advisory_lock");
    std::thread::sleep(Duration::from_millis(300));
    // The queued wait's slice (1 s) and the 2 s connect timeout; then up to one more connect
    // timeout for the new connection that would end the session the server kept, which a
    // proxy that stalls everything never lets through.
    let (out, took) = exit_5_after(
        run,
        || proxy.stall(),
        Duration::from_secs(120),
        Duration::from_secs(5),
        "lock-wait stall",
    );
    out.says("stopped answering while waiting for the migration lock");
    out.says("no answer within 2s");
    out.says("could not end that session (process ");
    out.says("end it with SELECT pg_terminate_backend(");
    drop(holder);
    drop(proxy);
    figure(
        "network faults",
        format!(
            "stall during the lock wait (lock wait 60s, connect_timeout=2): exit 5 {} ms after the stall",
            took.as_millis()
        ),
    );
}

#[test]
fn cut_during_the_lock_wait_exits_5_at_once() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_lockcut", "connect_timeout=2");
    let holder = hold_lock(&sock);
    let run = portcullis(&url, &example_dir())
        .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "60s")
        .spawn();
    wait_for_sent(&sock, "advisory_lock");
    let (_, took) = exit_5_after(
        run,
        || proxy.cut(),
        Duration::from_secs(60),
        Duration::from_secs(1),
        "lock-wait cut",
    );
    drop(holder);
    figure(
        "network faults",
        format!(
            "cut during the lock wait: exit 5 {} ms after the cut",
            took.as_millis()
        ),
    );
}

/// With a statement timeout, a statement whose answer never comes ends at statement_timeout plus
/// the connect timeout.
#[test]
fn stalled_mid_statement_with_a_statement_timeout_exits_5_in_time() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (run, sock, folder) = paused(&proxy, "nf_stmt_to", 3, "3s");
    let (out, took) = exit_5_after(
        run,
        || proxy.stall(),
        Duration::from_secs(120),
        Duration::from_secs(6),
        "statement stall",
    );
    out.says("stopped answering while running statement 2 of 0000_nf");
    out.says("statement_timeout (3s) plus 3s");
    out.says("nothing of this transaction was committed");
    drop(proxy);
    nothing_half_applied_then_rerun(&sock, &folder);
    figure(
        "network faults",
        format!(
            "stall mid-statement (statement_timeout 3s, connect_timeout=3): exit 5 {} ms after the stall; nothing applied; re-run exit 0",
            took.as_millis()
        ),
    );
}

/// Regression for the hang this suite was asked to fix: with PORTCULLIS_STATEMENT_TIMEOUT=0 (the
/// default) a statement whose answer was swallowed by a stalled connection waited forever. Now
/// a second connection asks the server whether it still runs the statement; when nothing
/// confirms it for three connect timeouts, the run ends with exit 5.
#[test]
fn stalled_mid_statement_without_statement_timeout_no_longer_hangs() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (run, sock, folder) = paused(&proxy, "nf_stmt", 1, "0");
    // Three connect timeouts without confirmation, checked once per connect timeout, each
    // check taking up to one more.
    let (out, took) = exit_5_after(
        run,
        || proxy.stall(),
        Duration::from_secs(120),
        Duration::from_secs(5),
        "statement stall",
    );
    out.says("has not confirmed for");
    assert!(out.termlog.starts_with("exit 5: "), "{}", out.termlog);
    drop(proxy);
    nothing_half_applied_then_rerun(&sock, &folder);
    figure(
        "network faults",
        format!(
            "stall mid-statement without statement_timeout (connect_timeout=1): exit 5 {} ms after the stall (before: hung forever); nothing applied; re-run exit 0",
            took.as_millis()
        ),
    );
}

/// A connection that hangs while the server stays reachable (the proxy keeps it open but stops
/// forwarding it, and forwards new ones): the statement ends in the server, its answer never
/// comes, and the session sits in its transaction, holding the migration lock and the locks of
/// its DDL. The liveness checks see it idle, give the connection up, and end that session, so
/// nothing waits for TCP to give up on the connection (hours with default keepalives).
#[test]
fn a_connection_that_hangs_mid_transaction_has_its_session_ended() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (run, sock, folder) = paused(&proxy, "nf_hang", 1, "0");
    // The pause ends within 2 s; then three connect timeouts without confirmation, checked
    // once per connect timeout, each check taking up to one more.
    let (out, took) = exit_5_after(
        run,
        || proxy.stall_open(),
        Duration::from_secs(120),
        Duration::from_secs(7),
        "hang mid-transaction",
    );
    out.says("has not confirmed for");
    out.says("so portcullis ended it (pg_terminate_backend");
    lock_freed_while_the_connection_hangs(&sock);
    assert!(
        query(
            &sock,
            "select count(*) from pg_stat_activity where state like 'idle in transaction%' \
             and datname = current_database()"
        )[0][0]
            .as_deref()
            == Some("0")
    );
    drop(proxy);
    nothing_half_applied_then_rerun(&sock, &folder);
    figure(
        "network faults",
        format!(
            "hang mid-transaction (the proxy keeps the connection open, forwards new ones; connect_timeout=1): exit 5 {} ms after the hang, its session ended in the server, lock free with the connection still open; nothing applied; re-run exit 0",
            took.as_millis()
        ),
    );
}

/// A connection that hangs during an exchange the server answers at once (here the read of the
/// tracking table, which a table lock holds up until the hang), while the run holds the
/// migration lock. No statement watch runs then: the run gives the connection up after one
/// connect timeout, and then ends the session the server kept, from a new connection. Otherwise
/// that session would hold the migration lock until TCP gave up on the hung connection (hours
/// with default keepalives), and every later run would wait for it and fail with exit 7.
#[test]
fn a_connection_that_hangs_while_holding_the_lock_has_its_session_ended() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_quick", "connect_timeout=2");
    let direct = direct_url(&sock);
    // An earlier deploy made the tracking table; this one brings a second migration.
    let mut folder = one_table();
    portcullis(&direct, folder.path()).run().expect(0);
    folder.add(
        "0001_nf_more",
        1_700_000_001_000,
        "CREATE TABLE \"nf_more\" (\"id\" integer);",
    );
    // Every statement in this database goes to the server's log, under its session's
    // application_name, so the connection that ends the lost session can be told apart.
    let db = crate::run::log_statements(&sock);
    let table = crate::run::hold_session(
        &sock,
        "BEGIN; LOCK TABLE drizzle.__drizzle_migrations IN ACCESS EXCLUSIVE MODE",
        "COMMIT",
    );
    let run = portcullis(&url, folder.path()).spawn();
    poll(
        Duration::from_secs(30),
        "the run never waited to read the tracking table",
        || {
            query(
                &sock,
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' \
                 and datname = current_database() and pid <> pg_backend_pid()",
            )[0][0]
                .as_deref()
                != Some("0")
        },
    );
    // The connection hangs, then the read completes in the server: its answer goes nowhere and
    // the session sits idle, holding the migration lock.
    let (out, took) = exit_5_after(
        run,
        || {
            proxy.stall_open();
            table.release();
        },
        Duration::from_secs(60),
        Duration::from_secs(2),
        "hang reading the tracking table",
    );
    out.says("stopped answering while reading the tracking table");
    out.says("so portcullis ended it from a new connection (pg_terminate_backend)");
    // That connection says what it is for in pg_stat_activity (and the server's log).
    let ending = crate::run::server_log(&db, "portcullis@it-runner (ending its lost session)");
    assert!(
        ending
            .iter()
            .any(|l| l.contains("LOG:  execute") && l.contains("pg_terminate_backend")),
        "no pg_terminate_backend logged by a session named 'portcullis@it-runner (ending its \
         lost session)'; the run's own session logged:\n{}",
        crate::run::server_log(&db, "portcullis@it-runner").join("\n")
    );
    lock_freed_while_the_connection_hangs(&sock);
    assert_eq!(rows(&sock).len(), 1, "nothing more was applied");
    drop(proxy);
    portcullis(&direct, folder.path()).run().expect(0);
    assert_eq!(rows(&sock).len(), 2);
    figure(
        "network faults",
        format!(
            "hang while reading the tracking table, holding the migration lock (connect_timeout=2): exit 5 {} ms after the hang, its session ended from a new connection, lock free with the connection still open; re-run exit 0",
            took.as_millis()
        ),
    );
}

/// A long statement on a healthy connection is left alone, however long it runs: the liveness
/// checks see it active on the server.
#[test]
fn a_long_healthy_statement_is_not_given_up() {
    let proxy = Proxy::start(Cluster::shared().port());
    // connect_timeout=2 rather than 1: on a loaded machine a debug build's SCRAM login alone
    // can take a second, and this test is about the statement, not the login.
    let (url, sock) = through(&proxy, "nf_long", "connect_timeout=2");
    // 9 s: four liveness checks, half again the three-timeout (6 s) limit.
    let folder = pausing(9);
    let out = portcullis(&url, folder.path()).run();
    out.expect(0);
    assert_eq!(rows(&sock).len(), 1);
    figure(
        "network faults",
        format!(
            "a healthy 9 s statement with connect_timeout=2 (four liveness checks, limit 6 s \
             unconfirmed): exit 0 after {} ms",
            out.elapsed.as_millis()
        ),
    );
}

#[test]
fn cut_mid_statement_exits_5_at_once_and_nothing_is_half_applied() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_cut", "connect_timeout=2");
    let folder = pausing(3);
    let run = portcullis(&url, folder.path()).spawn();
    until_running(&sock, "%pg_sleep(3)%", "the pause never started");
    let (out, took) = exit_5_after(
        run,
        || proxy.cut(),
        Duration::from_secs(60),
        Duration::from_secs(1),
        "statement cut",
    );
    out.says("ended while running statement 2 of 0000_nf");
    drop(proxy);
    nothing_half_applied_then_rerun(&sock, &folder);
    figure(
        "network faults",
        format!(
            "cut mid-statement: exit 5 {} ms after the cut; nothing applied; re-run exit 0",
            took.as_millis()
        ),
    );
}

/// A COMMIT whose answer never comes (a deferred trigger makes it last 3 s; the connection
/// stalls meanwhile): exit 5, and the message says honestly that whether it committed is
/// unknown but all-or-nothing. The re-run then finds the truth; nothing is lost or doubled.
#[test]
fn stalled_during_commit_exits_5_saying_the_outcome_is_unknown_but_atomic() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_commit", "connect_timeout=1");
    let mut folder = Folder::new();
    folder.add(
        "0000_slow_commit",
        1_700_000_000_000,
        "CREATE TABLE \"nf_c\" (\"id\" integer);\n--> statement-breakpoint\n\
         CREATE FUNCTION \"nf_slow\"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM \
         pg_sleep(3); RETURN NULL; END $$;\n--> statement-breakpoint\n\
         CREATE CONSTRAINT TRIGGER \"nf_slow_commit\" AFTER INSERT ON \"nf_c\" DEFERRABLE \
         INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \"nf_slow\"();\n\
         --> statement-breakpoint\nINSERT INTO \"nf_c\" VALUES (1);",
    );
    let run = portcullis(&url, folder.path()).spawn();
    until_running(&sock, "COMMIT", "the COMMIT never started");
    let (out, took) = exit_5_after(
        run,
        || proxy.stall(),
        Duration::from_secs(120),
        Duration::from_secs(5),
        "commit stall",
    );
    out.says("lost while committing 1 migration(s) (0000_slow_commit)");
    out.says("completely or");
    drop(proxy);
    poll(Duration::from_secs(30), "the lock was not released", || {
        advisory_locks(&sock) == 0
    });
    let committed = rows(&sock).len();
    assert!(committed <= 1);
    assert_eq!(
        table_exists(&sock, "nf_c"),
        committed == 1,
        "the schema change and its row are committed together"
    );
    let direct = direct_url(&sock);
    portcullis(&direct, folder.path()).run().expect(0);
    assert_eq!(rows(&sock).len(), 1);
    assert_eq!(
        query(&sock, "select count(*) from nf_c")[0][0].as_deref(),
        Some("1"),
        "applied exactly once"
    );
    figure(
        "network faults",
        format!(
            "stall during COMMIT: exit 5 {} ms after the stall ('outcome unknown, all or nothing'); the server had {} it; re-run exit 0, applied exactly once",
            took.as_millis(),
            if committed == 1 {
                "committed"
            } else {
                "not committed"
            }
        ),
    );
}

/// A runner whose node vanishes, or whose network goes away, closes nothing: with the operating
/// system's defaults the server would probe its connection only after two hours of silence,
/// keeping the session's transaction, its locks and the migration lock all that time. Each
/// session asks the server to probe as the client does (30 s, every 10 s, 3 probes), so it ends
/// about a minute after the runner is gone. Dropping packets is beyond this suite, so this checks
/// that the session carries those settings: a seed, run in the same session, records them.
#[test]
fn the_session_asks_the_server_to_notice_a_vanished_runner_within_a_minute() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("nf_keepalive");
    // Over TCP: on a Unix socket these settings do not apply.
    let (_, settings) = session_settings(&cluster.url(&db), &cluster.socket_url(&db));
    assert_eq!(settings, ["1s", "30", "10", "3"]);
}

/// A server that refuses some of those settings still gets the others: one built for a system
/// that cannot tell a closed connection (macOS among them) refuses
/// `client_connection_check_interval`, and the keepalives must not be lost with it. The proxy
/// makes the real server refuse a setting by corrupting its value on the way (`10x0`, `x0`).
#[test]
fn a_server_that_refuses_one_session_setting_still_gets_the_others() {
    const CHECK: (&str, &str) = (
        "'client_connection_check_interval', '1000'",
        "'client_connection_check_interval', '10x0'",
    );
    const IDLE: (&str, &str) = ("'tcp_keepalives_idle', '30'", "'tcp_keepalives_idle', 'x0'");
    let cluster = Cluster::shared();
    // What a TCP session has when nobody sets them: the operating system's values.
    let untouched: Vec<String> = query(
        &cluster.url("postgres"),
        "select current_setting('tcp_keepalives_idle'), \
         current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count')",
    )
    .remove(0)
    .into_iter()
    .map(Option::unwrap)
    .collect();
    assert_ne!(
        untouched[0], "30",
        "the test needs the server's default to differ"
    );
    let ours = ["30", "10", "3"].map(String::from).to_vec();
    /// What the proxy corrupts, what the session then has, and the debug lines that say so.
    struct Case<'a> {
        refused: &'a [(&'a str, &'a str)],
        check_every: &'a str,
        keepalives: &'a [String],
        said: &'a [&'a str],
    }
    let cases = [
        Case {
            refused: &[CHECK],
            check_every: "0",
            keepalives: &ours,
            said: &[
                "could not set client_connection_check_interval and the server's TCP \
                     keepalives together; trying them one by one",
            ],
        },
        Case {
            refused: &[IDLE],
            check_every: "1s",
            keepalives: &untouched,
            said: &["could not set the server's TCP keepalives (if this runner vanishes"],
        },
        Case {
            refused: &[CHECK, IDLE],
            check_every: "0",
            keepalives: &untouched,
            said: &[
                "could not set the server's TCP keepalives",
                "could not set client_connection_check_interval (if this runner is killed",
            ],
        },
    ];
    for Case {
        refused,
        check_every,
        keepalives,
        said,
    } in cases
    {
        let proxy = Proxy::start(cluster.port());
        for (what, with) in refused {
            proxy.rewrite(what, with);
        }
        let (url, sock) = through(&proxy, "nf_refused", "connect_timeout=5");
        let (out, settings) = session_settings(&url, &sock);
        assert!(
            proxy.rewritten() >= refused.len(),
            "the proxy never saw the statement to corrupt"
        );
        assert_eq!(settings[0], check_every, "refused: {refused:?}");
        assert_eq!(settings[1..], *keepalives, "refused: {refused:?}");
        for line in said {
            out.says(line);
        }
        assert_eq!(rows(&sock).len(), 1, "the migration was applied");
    }
}

/// Runs portcullis (one quick migration, debug log) at `url` with a seed that records, in the
/// same session, how the server checks that session's connection: `client_connection_check_
/// interval` and the three `tcp_keepalives_*`, in that order, read back through `sock`.
fn session_settings(url: &str, sock: &str) -> (Captured, Vec<String>) {
    let seeds = SeedDir::with(
        "1_settings",
        "CREATE TABLE IF NOT EXISTS nf_set AS SELECT \
         current_setting('client_connection_check_interval') AS check_every, \
         current_setting('tcp_keepalives_idle') AS idle, \
         current_setting('tcp_keepalives_interval') AS every, \
         current_setting('tcp_keepalives_count') AS probes;",
    );
    let folder = one_table();
    let out = portcullis(url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .env("PORTCULLIS_LOG_LEVEL", "debug")
        .run();
    out.expect(0);
    let settings = query(sock, "select check_every, idle, every, probes from nf_set")
        .remove(0)
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    (out, settings)
}

/// A seeds folder holding one seed, removed on drop.
struct SeedDir(std::path::PathBuf);

impl SeedDir {
    fn with(name: &str, sql: &str) -> SeedDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-nf-seeds-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.sql")), sql).unwrap();
        SeedDir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for SeedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder with one quick migration, for the seeds tests.
fn one_table() -> Folder {
    let mut f = Folder::new();
    f.add(
        "0000_nf_seeded",
        1_700_000_000_000,
        "CREATE TABLE \"nf_s\" (\"id\" integer PRIMARY KEY);",
    );
    f
}

/// After a fault during the seeds phase: once the server has noticed, the migration stays
/// applied, no seed is recorded and nothing it wrote is left, no lock is held; a direct re-run
/// runs the seed.
fn seeds_rolled_back_then_rerun(sock: &str, folder: &Folder, seeds: &SeedDir) {
    poll(
        Duration::from_secs(30),
        "the orphaned session kept the lock",
        || advisory_locks(sock) == 0,
    );
    assert_eq!(rows(sock).len(), 1, "the migration stays applied");
    assert!(table_exists(sock, "nf_s"));
    assert_eq!(
        query(sock, "select count(*) from nf_s")[0][0].as_deref(),
        Some("0"),
        "nothing the seed wrote is left"
    );
    assert!(
        !table_exists(sock, "drizzle.__portcullis_seeds")
            || query(sock, "select count(*) from drizzle.__portcullis_seeds")[0][0].as_deref()
                == Some("0"),
        "no seed is recorded"
    );
    let direct = direct_url(sock);
    portcullis(&direct, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .run()
        .expect(0);
    assert_eq!(
        query(sock, "select count(*) from nf_s")[0][0].as_deref(),
        Some("2"),
        "the re-run seeded"
    );
}

/// The seeds phase was not watched: a seed statement whose connection went silent (behind a
/// proxy that keeps answering keepalives) hung the run, holding the lock, until it was stopped.
/// Now it is watched like a migration statement: exit 5 once nothing has confirmed it for three
/// connect timeouts.
#[test]
fn stalled_mid_seed_exits_5_instead_of_hanging() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_seed", "connect_timeout=1");
    let folder = one_table();
    let seeds = SeedDir::with(
        "nf_seed",
        "INSERT INTO nf_s VALUES (1) ON CONFLICT DO NOTHING;\n\
         SELECT pg_sleep(3);\n\
         INSERT INTO nf_s VALUES (2) ON CONFLICT DO NOTHING;\n",
    );
    let run = portcullis(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .env("PORTCULLIS_STATEMENT_TIMEOUT", "0")
        .spawn();
    until_running(&sock, "%pg_sleep(3)%", "the seed never started");
    let (out, took) = exit_5_after(
        run,
        || proxy.stall(),
        Duration::from_secs(120),
        Duration::from_secs(5),
        "seed stall",
    );
    out.says("stopped answering while running seed nf_seed.sql");
    out.says("has not confirmed for");
    out.says("no seed of this run was applied; migrations committed before the seeds stay applied");
    drop(proxy);
    seeds_rolled_back_then_rerun(&sock, &folder, &seeds);
    figure(
        "network faults",
        format!(
            "stall mid-seed without statement_timeout (connect_timeout=1): exit 5 {} ms after the stall (before: hung forever); seeds rolled back, migration kept; re-run exit 0",
            took.as_millis()
        ),
    );
}

/// The seeds' COMMIT whose answer never comes (a deferred trigger makes it last 3 s; the
/// connection stalls meanwhile): exit 5 within the watch's bound, saying that whether it
/// committed is unknown but all or nothing.
#[test]
fn stalled_during_the_seeds_commit_exits_5_saying_the_outcome_is_unknown() {
    let proxy = Proxy::start(Cluster::shared().port());
    let (url, sock) = through(&proxy, "nf_seed_commit", "connect_timeout=1");
    let mut folder = Folder::new();
    folder.add(
        "0000_nf_seeded",
        1_700_000_000_000,
        "CREATE TABLE \"nf_s\" (\"id\" integer PRIMARY KEY);\n--> statement-breakpoint\n\
         CREATE FUNCTION \"nf_slow\"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM \
         pg_sleep(3); RETURN NULL; END $$;\n--> statement-breakpoint\n\
         CREATE CONSTRAINT TRIGGER \"nf_slow_commit\" AFTER INSERT ON \"nf_s\" DEFERRABLE \
         INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \"nf_slow\"();",
    );
    let seeds = SeedDir::with(
        "nf_seed",
        "INSERT INTO nf_s VALUES (1) ON CONFLICT DO NOTHING;\n",
    );
    let run = portcullis(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .spawn();
    // The seeds' COMMIT, in the deferred trigger's pause (the migrations' COMMIT is quick).
    poll(
        Duration::from_secs(30),
        "the seeds' COMMIT never started",
        || {
            query(
                &sock,
                "select count(*) from pg_stat_activity where query = 'COMMIT' \
                 and wait_event = 'PgSleep' and datname = current_database()",
            )[0][0]
                .as_deref()
                != Some("0")
        },
    );
    let (out, took) = exit_5_after(
        run,
        || proxy.stall(),
        Duration::from_secs(120),
        Duration::from_secs(5),
        "seeds commit stall",
    );
    out.says("stopped answering while committing the seeds");
    out.says("either every seed of this run was applied and recorded, or none was");
    drop(proxy);
    poll(Duration::from_secs(30), "the lock was not released", || {
        advisory_locks(&sock) == 0
    });
    let seeded = query(&sock, "select count(*) from nf_s")[0][0]
        .clone()
        .unwrap();
    let recorded = if table_exists(&sock, "drizzle.__portcullis_seeds") {
        query(&sock, "select count(*) from drizzle.__portcullis_seeds")[0][0]
            .clone()
            .unwrap()
    } else {
        "0".into()
    };
    assert_eq!(seeded, recorded, "the seed and its record commit together");
    assert_eq!(rows(&sock).len(), 1, "the migration stays applied");
    figure(
        "network faults",
        format!(
            "stall during the seeds' COMMIT: exit 5 {} ms after the stall ('outcome unknown, all or nothing'); the server had {} it",
            took.as_millis(),
            if seeded == "1" {
                "committed"
            } else {
                "not committed"
            }
        ),
    );
}

/// The server answers a request of several statements only when all have run, each with its
/// own statement_timeout: such a request (a chunk without breakpoints, a seed file) must not
/// be given up at statement_timeout plus the connect timeout. Here three 1.2 s statements per
/// request, statement_timeout 2 s, connect_timeout 1 s: the old deadline (3 s) ended both runs
/// with exit 5; the liveness checks see them running.
#[test]
fn several_statements_in_one_request_may_outlast_the_statement_timeout() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("nf_multi");
    let (url, sock) = (
        format!("{}&connect_timeout=1", cluster.url(&db)),
        cluster.socket_url(&db),
    );
    let sleeps = "SELECT pg_sleep(1.2);\nSELECT pg_sleep(1.2);\nSELECT pg_sleep(1.2);\n";
    let mut folder = Folder::new();
    folder.add(
        "0000_nf_multi",
        1_700_000_000_000,
        &format!("CREATE TABLE \"nf_s\" (\"id\" integer PRIMARY KEY);\n--> statement-breakpoint\n{sleeps}"),
    );
    let seeds = SeedDir::with("nf_multi", sleeps);
    let out = portcullis(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .env("PORTCULLIS_STATEMENT_TIMEOUT", "2s")
        .run();
    out.expect(0);
    assert_eq!(rows(&sock).len(), 1);
    assert_eq!(
        query(&sock, "select run_count from drizzle.__portcullis_seeds")[0][0].as_deref(),
        Some("1")
    );
    figure(
        "network faults",
        format!(
            "a chunk and a seed file of three 1.2 s statements each, statement_timeout 2s, connect_timeout=1: exit 0 after {} ms (before: exit 5 at the 3 s deadline)",
            out.elapsed.as_millis()
        ),
    );
}

/// Regression: a connection cut while the row of a migration that ran outside a transaction was
/// being recorded left the row in doubt (exit 5, "record it by hand with baseline"), and a run
/// after it would have started the migration again. Now portcullis reconnects, takes the
/// migration lock (the server has ended the lost session by then, so its insert either
/// happened or never will) and makes sure the row is there: written when the lost insert never
/// ran, not written twice when another insert got there first. It still exits 5, and the next
/// run goes on from the next migration. A SIGTERM while it does so exits 143 and says what
/// stays committed.
///
/// The row's insert is held on a lock of the tracking table taken while the migration sleeps,
/// and the proxy cuts the connection while it waits; the lock is let go once the server has
/// ended the lost session, after inserting the row itself in the second case, and only after
/// the SIGTERM in the third.
#[test]
fn a_cut_while_recording_a_migration_run_outside_a_transaction_is_settled_after_reconnecting() {
    #[derive(PartialEq)]
    enum Case {
        Missing,
        InsertedMeanwhile,
        Interrupted,
        /// The cancel cannot reach the server (the proxy refuses new connections), so the
        /// lookup keeps waiting until a second SIGTERM abandons the run.
        InterruptedTwice,
        /// The connection hangs instead of closing (the proxy stops forwarding it but keeps
        /// it open, and forwards new ones): the server would keep the lost session, and the
        /// migration lock, until TCP gives up, so the run ends that session itself. When the
        /// answer is given up, the server still shows the insert waiting for the table's lock,
        /// which alone keeps the answer away: the run says so (exit 7, naming the lock and its
        /// holder), and settles the row the same way.
        Hung,
    }
    let text = "-- portcullis: no-transaction\nSELECT pg_sleep(0.5);\n--> statement-breakpoint\n\
                CREATE TABLE \"nf_r\" (\"id\" integer);";
    let hash = portcullis::source::split::hash(text);
    for case in [
        Case::Missing,
        Case::InsertedMeanwhile,
        Case::Interrupted,
        Case::InterruptedTwice,
        Case::Hung,
    ] {
        let proxy = Proxy::start(Cluster::shared().port());
        let (url, sock) = through(&proxy, "nf_record", "connect_timeout=5");
        let mut folder = Folder::new();
        folder.add("0000_nt", 1_700_000_000_000, text);
        folder.add(
            "0001_next",
            1_700_000_000_001,
            "CREATE TABLE \"nf_s\" (\"id\" integer);",
        );
        let run = portcullis(&url, folder.path())
            .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "60s")
            .spawn();
        wait_for_sent(&sock, "pg_sleep(0.5)");
        let end = if case == Case::InsertedMeanwhile {
            format!(
                "INSERT INTO \"drizzle\".\"__drizzle_migrations\" (hash, created_at) VALUES \
                 ('{hash}', 1700000000000); COMMIT"
            )
        } else {
            "COMMIT".to_string()
        };
        let holder = hold_session(
            &sock,
            "BEGIN; LOCK TABLE \"drizzle\".\"__drizzle_migrations\" IN ACCESS EXCLUSIVE MODE",
            &end,
        );
        let waiting = |like: &str| {
            query(
                &sock,
                &format!(
                    "select count(*) from pg_stat_activity where query like '{like}' \
                     and wait_event_type = 'Lock' and datname = current_database()"
                ),
            )[0][0]
                .as_deref()
                != Some("0")
        };
        poll(Duration::from_secs(30), "the row's insert waits", || {
            waiting("insert into%")
        });
        if case == Case::Hung {
            proxy.stall_open();
        } else {
            proxy.cut();
        }
        poll(
            Duration::from_secs(30),
            "the server ends the lost session",
            || !waiting("insert into%"),
        );
        if matches!(case, Case::Interrupted | Case::InterruptedTwice) {
            poll(
                Duration::from_secs(4),
                "the new session looks for the row",
                || waiting("select exists%"),
            );
            let twice = case == Case::InterruptedTwice;
            if twice {
                proxy.refuse();
            }
            let before = proxy.accepted();
            run.signal(libc::SIGTERM);
            if twice {
                // The cancel request is a new connection, which the proxy closes at once: the
                // lookup goes on waiting for the table, and the second signal ends the run.
                poll(
                    Duration::from_secs(1),
                    "the cancel request reaches the proxy",
                    || proxy.accepted() > before,
                );
                run.signal(libc::SIGTERM);
            }
            let out = run.finish(Duration::from_secs(60));
            holder.release();
            out.expect(143);
            if twice {
                out.says("received a second SIGTERM: leaving without waiting for the cancel");
            }
            out.says("reconnecting to make sure it is recorded");
            out.says("whether its tracking row was written is unknown");
            out.says("record it with `portcullis baseline --to 0000_nt`");
            assert!(!out.stderr.contains("nothing half-done"), "{}", out.stderr);
            assert_eq!(rows(&sock), vec![], "{}", out.stderr);
            continue;
        }
        holder.release();
        let out = run.finish(Duration::from_secs(60));
        out.expect(if case == Case::Hung { 7 } else { 5 });
        out.says("reconnecting to make sure it is recorded");
        out.says(if case == Case::InsertedMeanwhile {
            "portcullis reconnected and found it recorded"
        } else {
            "portcullis reconnected and recorded it"
        });
        out.says("Run again to apply what is left");
        if case == Case::Hung {
            out.says(
                "but recording it in \"drizzle\".\"__drizzle_migrations\" waited for another \
                 session's lock (while recording 0000_nt in \"drizzle\".\"__drizzle_migrations\", \
                 the session waited 5s (the connect timeout) for a lock on \
                 drizzle.__drizzle_migrations (RowExclusiveLock), which another session holds: pid ",
            );
        }
        assert_eq!(
            rows(&sock),
            vec![(hash.clone(), "1700000000000".to_string())],
            "{}",
            out.stderr
        );
        // The next run goes on after it (running 0000_nt again would fail: nf_r exists).
        let next = portcullis(&sock, folder.path()).run();
        next.expect(0);
        assert_eq!(rows(&sock).len(), 2);
        assert!(table_exists(&sock, "nf_r") && table_exists(&sock, "nf_s"));
    }
}
