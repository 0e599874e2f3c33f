//! Smoke tests for the test harness itself (`support`).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, Cluster, PASSWORD};

fn one_value(url: &str, sql: &str) -> Option<String> {
    let rows = support::query(url, sql);
    assert_eq!(rows.len(), 1, "expected one row from {sql}: {rows:?}");
    assert_eq!(rows[0].len(), 1, "expected one column from {sql}: {rows:?}");
    rows[0][0].clone()
}

fn port_refuses(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err()
}

#[test]
fn shared_cluster_gives_distinct_databases() {
    let t = Instant::now();
    let cluster = Cluster::shared();
    eprintln!("Cluster::shared() took {:?}", t.elapsed());
    let t = Instant::now();
    let a = cluster.create_database("smoke-A");
    eprintln!("create_database took {:?}", t.elapsed());
    let b = cluster.create_database("smoke-A");
    assert_ne!(a, b);
    assert!(a.starts_with("smoke_a_"), "{a}");
    for db in [&a, &b] {
        let url = cluster.url(db);
        assert!(url.contains(PASSWORD) && url.ends_with("?sslmode=disable"));
        assert_eq!(one_value(&url, "select 1").as_deref(), Some("1"));
        assert_eq!(
            one_value(&url, "select current_database()").as_deref(),
            Some(db.as_str())
        );
    }
    // A table in one database is invisible in the other.
    support::execute(
        &cluster.url(&a),
        "create table t (x int); insert into t values (42)",
    );
    assert_eq!(
        one_value(&cluster.url(&a), "select x from t").as_deref(),
        Some("42")
    );
    let err = support::try_query(&cluster.url(&b), "select x from t").unwrap_err();
    assert!(err.contains("42P01"), "{err}");
    // NULLs come back as None.
    assert_eq!(one_value(&cluster.url(&a), "select null::int"), None);
}

#[test]
fn wrong_password_is_rejected() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("smoke_auth");
    let err = support::try_execute(&cluster.url_with("postgres", "wrong", &db), "select 1")
        .expect_err("a wrong password must be rejected");
    assert!(
        err.contains("28P01") && err.contains("password authentication failed"),
        "{err}"
    );
    // A role whose password needs percent-encoding works through url_with.
    let role = format!("smoke_role_{}", std::process::id());
    let password = "p@ss:w/rd?#%";
    support::execute(
        &cluster.url("postgres"),
        &format!(
            "drop role if exists {role}; create role {role} login password '{password}'; \
             grant all on database \"{db}\" to {role}"
        ),
    );
    let url = cluster.url_with(&role, password, &db);
    assert_eq!(
        one_value(&url, "select current_user").as_deref(),
        Some(role.as_str())
    );
    assert!(support::try_execute(&cluster.url_with(&role, "nope", &db), "select 1").is_err());
    // The server really uses scram-sha-256 for stored passwords.
    assert_eq!(
        one_value(
            &cluster.url("postgres"),
            &format!("select left(rolpassword, 13) from pg_authid where rolname = '{role}'")
        )
        .as_deref(),
        Some("SCRAM-SHA-256")
    );
}

#[test]
fn stop_and_start_again_on_the_same_port() {
    let started = Instant::now();
    let mut cluster = Cluster::start_new();
    eprintln!("start_new took {:?}", started.elapsed());
    let port = cluster.port();
    let url = cluster.url("postgres");
    support::execute(
        &url,
        "create table kept (x int); insert into kept values (7)",
    );

    let t = Instant::now();
    cluster.stop();
    eprintln!("stop took {:?}", t.elapsed());
    assert!(!cluster.is_running());
    assert!(port_refuses(port), "port {port} still accepts after stop");
    assert!(support::try_execute(&url, "select 1").is_err());

    let t = Instant::now();
    cluster.start();
    eprintln!("restart took {:?}", t.elapsed());
    assert_eq!(cluster.port(), port);
    assert_eq!(one_value(&url, "select x from kept").as_deref(), Some("7"));
}

#[test]
fn dropped_cluster_removes_its_dir_and_frees_its_port() {
    let cluster = Cluster::start_new();
    let port = cluster.port();
    let dir = cluster.dir().expect("local cluster").to_path_buf();
    let pid = cluster.pid().expect("running");
    assert!(dir.join("data/PG_VERSION").is_file());
    assert_eq!(
        one_value(&cluster.url("postgres"), "select 1").as_deref(),
        Some("1")
    );
    drop(cluster);
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    assert!(port_refuses(port), "port {port} still accepts after drop");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn kill9_then_start_recovers() {
    let mut cluster = Cluster::start_new();
    let url = cluster.url("postgres");
    support::execute(
        &url,
        "create table crash (x int); insert into crash values (1)",
    );
    let pid = cluster.pid().expect("running");
    cluster.kill9();
    assert!(!cluster.is_running());
    assert!(port_refuses(cluster.port()));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    cluster.start();
    assert_eq!(one_value(&url, "select x from crash").as_deref(), Some("1"));
    let log = std::fs::read_to_string(cluster.log_path().unwrap()).unwrap();
    assert!(
        log.contains("was interrupted") || log.contains("not properly shut down"),
        "expected crash recovery in the log:\n{log}"
    );
}

/// The blocking helpers and cluster control also work from async tests
/// (they never block_on inside the caller's runtime).
#[tokio::test]
async fn usable_inside_a_tokio_runtime() {
    assert!(support::pg_bin_dir().unwrap().join("postgres").is_file());
    let port = support::free_port();
    let mut cluster = Cluster::init(port);
    assert!(!cluster.is_running());
    assert!(port_refuses(port));
    cluster.start();
    assert_eq!(cluster.port(), port);
    let t = Instant::now();
    let via_tcp = one_value(&cluster.url("postgres"), "select 1");
    let tcp = t.elapsed();
    let t = Instant::now();
    let via_socket = one_value(&cluster.socket_url("postgres"), "select 1");
    eprintln!(
        "connect+query: tcp/scram {tcp:?}, unix socket {:?}",
        t.elapsed()
    );
    assert_eq!(via_tcp, via_socket);
    let db = Cluster::shared().create_database("async");
    support::execute(&Cluster::shared().url(&db), "create table a (x int)");
}

const PROBE_ENV: &str = "PORTCULLIS_HARNESS_PROBE";

/// Helper process for `sigkill_of_the_test_process_leaves_nothing_behind`:
/// starts the shared and a private cluster, reports them, then waits to be killed.
#[test]
#[ignore = "helper, run by sigkill_of_the_test_process_leaves_nothing_behind"]
fn sigkill_probe() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    let shared = Cluster::shared();
    let private = Cluster::start_new();
    shared.create_database("probe");
    println!(
        "PROBE {} {} {} {}",
        shared.pid().unwrap(),
        shared.dir().unwrap().display(),
        private.pid().unwrap(),
        private.dir().unwrap().display()
    );
    std::thread::sleep(Duration::from_secs(120));
    panic!("sigkill_probe was not killed");
}

#[test]
fn sigkill_of_the_test_process_leaves_nothing_behind() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness_smoke::sigkill_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let probe = loop {
        match lines.next() {
            // libtest prints "test <name> ... " without a newline first.
            Some(Ok(line)) if line.contains("PROBE ") => {
                break line[line.find("PROBE ").unwrap()..].to_string();
            }
            Some(Ok(_)) => continue,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("probe ended without reporting: {other:?}");
            }
        }
    };
    let f: Vec<&str> = probe.split(' ').collect();
    let pids: Vec<u32> = vec![f[1].parse().unwrap(), f[3].parse().unwrap()];
    let dirs: Vec<PathBuf> = vec![f[2].into(), f[4].into()];
    for &pid in &pids {
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }

    let killed = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let prefix = format!("portcullis-it-{child_pid}-");
    let leftovers = || {
        let mut left: Vec<String> = pids
            .iter()
            .filter(|&&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.contains(") Z ") && s.contains("(postgres)"))
            })
            .map(|pid| format!("postmaster {pid}"))
            .collect();
        left.extend(
            dirs.iter()
                .filter(|d| d.exists())
                .map(|d| d.display().to_string()),
        );
        left.extend(
            std::fs::read_dir(support::scratch_root())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix)),
        );
        left
    };
    loop {
        let left = leftovers();
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "still present 15 s after SIGKILL of the test process: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("everything gone {:?} after SIGKILL", killed.elapsed());
}
