//! Running the real `portcullis` binary in tests, and building migration folders on disk.

use crate::support::{Cluster, query};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// The example app's real drizzle-kit output.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect(&self, code: i32) -> &Output {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts that stderr contains `needle`, showing stderr when it does not.
    #[track_caller]
    pub fn says(&self, needle: &str) -> &Output {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts that stderr does not contain `needle`, showing stderr when it does.
    #[track_caller]
    pub fn never_says(&self, needle: &str) -> &Output {
        assert!(
            !self.stderr.contains(needle),
            "stderr contains {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Exit `code`, saying each of `texts`, with advice of its own rather than "Fix the SQL":
    /// a failure that is not the SQL's fault.
    pub fn advises(&self, code: i32, texts: &[&str]) -> &Output {
        self.expect(code);
        for text in texts {
            self.says(text);
        }
        self.never_says("Fix the SQL")
    }
}

/// A command with a clean environment: only what the test gives it (plus a fixed host name).
/// Seeds are off unless a test sets PORTCULLIS_SEEDS_DIR: the default `./seeds` would be the
/// example app's seeds in the crate folder, the tests' working directory.
pub fn command(url: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("HOSTNAME", "it-runner")
        .env("DATABASE_URL", url)
        .env("PORTCULLIS_MIGRATIONS_DIR", dir)
        .env("PORTCULLIS_SEEDS_DIR", dir.join("no-seeds-here"))
        .env("PORTCULLIS_WAIT_TIMEOUT", "10s")
        .stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    let started = Instant::now();
    let out = cmd.output().expect("run portcullis");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// `portcullis migrate` on `dir` against `url`.
pub fn migrate(url: &str, dir: &Path) -> Output {
    run(command(url, dir).arg("migrate"))
}

/// [`migrate`] with debug logging, for tests that check which way a run took.
pub fn migrate_debug(url: &str, dir: &Path) -> Output {
    run(command(url, dir)
        .arg("migrate")
        .env("PORTCULLIS_LOG_LEVEL", "debug"))
}

pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portcullis")
}

/// Waits for a spawned run, killing it after `limit`.
pub fn finish(mut child: Child, started: Instant, limit: Duration) -> Output {
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "portcullis did not finish within {limit:?}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect output");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Starts `cmd`, sends it SIGTERM once a statement containing `needle` runs, and a second one
/// once it logged the first; returns its output and how long after the first signal it exited.
/// stderr is read as it comes: two signals before the runtime looks would be one to it.
#[track_caller]
pub fn terminate_twice(cmd: &mut Command, url: &str, needle: &str) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = spawn(cmd);
    let stderr = child.stderr.take().expect("piped stderr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut text = seen.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        })
    };
    wait_for_statement(url, needle);
    let pid = child.id().to_string();
    let term = || {
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success(), "kill -TERM failed");
    };
    let signalled = Instant::now();
    term();
    while !seen
        .lock()
        .unwrap()
        .contains("received SIGTERM: cancelling")
    {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the first SIGTERM was never acknowledged:\n{}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    term();
    let mut out = finish(child, started, Duration::from_secs(20));
    let ended = signalled.elapsed();
    reader.join().unwrap();
    out.stderr = seen.lock().unwrap().clone();
    (out, ended)
}

/// A fresh database on the shared cluster and its URL.
/// The database name of a test URL (`postgres://u:p@h:port/<db>?...`).
pub fn db_name(url: &str) -> &str {
    let db = url.rsplit('/').next().unwrap_or_default();
    db.split('?').next().unwrap_or_default()
}

pub fn fresh_db(prefix: &str) -> String {
    let cluster = Cluster::shared();
    let db = cluster.create_database(prefix);
    cluster.url(&db)
}

/// The tracking rows as (hash, created_at), in id order.
pub fn rows(url: &str) -> Vec<(String, String)> {
    rows_of(url, "\"drizzle\".\"__drizzle_migrations\"")
}

pub fn rows_of(url: &str, table: &str) -> Vec<(String, String)> {
    query(
        url,
        &format!("select hash, created_at::text from {table} order by id"),
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_else(|| "NULL".into()),
        )
    })
    .collect()
}

/// Advisory locks held in this URL's database (pg_locks is cluster-wide).
pub fn advisory_locks(url: &str) -> usize {
    query(
        url,
        "select count(*) from pg_locks where locktype = 'advisory' \
         and database = (select oid from pg_database where datname = current_database())",
    )[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits up to 30 s until a portcullis session in this URL's database is running a statement whose
/// text contains `needle`, and returns how long that took.
#[track_caller]
pub fn wait_for_statement(url: &str, needle: &str) -> Duration {
    wait_for_session(url, needle, true)
}

/// Starts `cmd`, sends it SIGTERM once a statement containing `needle` runs (see
/// [`wait_for_statement`]), and returns its output (within 20 s of the start) and how long
/// after the signal it exited.
#[track_caller]
pub fn terminate_while_running(cmd: &mut Command, url: &str, needle: &str) -> (Output, Duration) {
    let started = Instant::now();
    let child = spawn(cmd);
    wait_for_statement(url, needle);
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -TERM failed");
    let out = finish(child, started, Duration::from_secs(20));
    (out, signalled.elapsed())
}

/// [`wait_for_statement`] without requiring the statement to be running still (a lock poll
/// answers at once, so it is usually seen after it finished).
#[track_caller]
pub fn wait_for_sent(url: &str, needle: &str) -> Duration {
    wait_for_session(url, needle, false)
}

#[track_caller]
fn wait_for_session(url: &str, needle: &str, active: bool) -> Duration {
    let started = Instant::now();
    loop {
        if sessions(url, needle, active) > 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no portcullis session ran a statement containing {needle:?} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ALTER DATABASE <url's database> SET <setting>` (such as `statement_timeout = '1s'`): what
/// every new session on it starts with, as a database or role of production is set up.
pub fn set_for_database(url: &str, setting: &str) {
    crate::support::execute(
        url,
        &format!("alter database \"{}\" set {setting}", db_name(url)),
    );
}

/// Sends every statement run in `url`'s database from now on to the server's log (new sessions
/// only), and returns the database's name for [`server_log`].
pub fn log_statements(url: &str) -> String {
    set_for_database(url, "log_statement = 'all'");
    db_name(url).to_string()
}

/// The server log's lines from sessions on database `db` whose application_name is `app` (the
/// test cluster's `log_line_prefix` names both).
pub fn server_log(db: &str, app: &str) -> Vec<String> {
    let path = Cluster::shared()
        .log_path()
        .expect("the test cluster writes a log");
    let tag = format!(" {db} [{app}] ");
    std::fs::read_to_string(path)
        .expect("read the server log")
        .lines()
        .filter(|l| l.contains(&tag))
        .map(str::to_string)
        .collect()
}

pub fn table_exists(url: &str, name: &str) -> bool {
    query(url, &format!("select to_regclass('{name}') is not null"))[0][0].as_deref() == Some("t")
}

/// A migrations folder in the journal layout, written to a temp dir and removed on drop.
pub struct Folder {
    pub dir: PathBuf,
    entries: Vec<(String, String)>,
}

static FOLDERS: AtomicUsize = AtomicUsize::new(0);

impl Folder {
    pub fn new() -> Folder {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-folder-{}-{}",
            std::process::id(),
            FOLDERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("meta")).unwrap();
        let f = Folder {
            dir,
            entries: Vec::new(),
        };
        f.write_journal();
        f
    }

    /// Adds `<tag>.sql` with `bytes` and a journal entry with `when` (a JSON literal).
    pub fn add_raw(&mut self, tag: &str, when: &str, bytes: &[u8]) -> &mut Folder {
        std::fs::write(self.dir.join(format!("{tag}.sql")), bytes).unwrap();
        self.entries.push((tag.to_string(), when.to_string()));
        self.write_journal();
        self
    }

    pub fn add(&mut self, tag: &str, when: i64, sql: &str) -> &mut Folder {
        self.add_raw(tag, &when.to_string(), sql.as_bytes())
    }

    fn write_journal(&self) {
        let entries: Vec<String> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (tag, when))| {
                format!(
                    "    {{\n      \"idx\": {i},\n      \"version\": \"7\",\n      \"when\": {when},\n      \"tag\": \"{tag}\",\n      \"breakpoints\": true\n    }}"
                )
            })
            .collect();
        let journal = format!(
            "{{\n  \"version\": \"7\",\n  \"dialect\": \"postgresql\",\n  \"entries\": [\n{}\n  ]\n}}",
            entries.join(",\n")
        );
        std::fs::write(self.dir.join("meta/_journal.json"), journal).unwrap();
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join(rel), bytes).unwrap();
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A migrations folder in drizzle-kit 1.0's layout (`<YYYYMMDDHHmmss>_<name>/migration.sql`),
/// written to a temp dir and removed on drop.
pub struct Folders {
    pub dir: PathBuf,
}

impl Folders {
    pub fn new() -> Folders {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-folders-{}-{}",
            std::process::id(),
            FOLDERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Folders { dir }
    }

    /// Adds the folder `name` with `migration.sql` = `sql` and a token `snapshot.json`.
    pub fn add(&mut self, name: &str, sql: &str) -> &mut Folders {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("migration.sql"), sql).unwrap();
        std::fs::write(dir.join("snapshot.json"), "{}").unwrap();
        self
    }

    /// Copies every migration folder of `from` (e.g. real drizzle-kit output).
    pub fn copy_of(from: &Path) -> Folders {
        let f = Folders::new();
        copy_dir(from, &f.dir);
        f
    }

    pub fn remove(&mut self, name: &str) -> &mut Folders {
        std::fs::remove_dir_all(self.dir.join(name)).unwrap();
        self
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Folders {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Recursive copy of a directory tree (files and folders only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The tracking rows of a drizzle-1.0-shaped table as (hash, created_at, name, applied_at is
/// null), in id order.
pub fn v1_rows(url: &str) -> Vec<(String, String, String, bool)> {
    query(
        url,
        "select hash, coalesce(created_at::text, 'NULL'), coalesce(name, 'NULL'), \
         (applied_at is null)::text from \"drizzle\".\"__drizzle_migrations\" order by id",
    )
    .into_iter()
    .map(|r| {
        let v: Vec<String> = r.into_iter().map(Option::unwrap_or_default).collect();
        (v[0].clone(), v[1].clone(), v[2].clone(), v[3] == "true")
    })
    .collect()
}

/// The tracking table's columns as `name type`, in order.
pub fn tracking_columns(url: &str) -> Vec<String> {
    query(
        url,
        "select column_name || ' ' || data_type from information_schema.columns \
         where table_schema = 'drizzle' and table_name = '__drizzle_migrations' \
         order by ordinal_position",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap_or_default())
    .collect()
}

/// Decodes hex test vectors.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A session of its own (its thread and runtime) that ran `hold` and stays open, holding
/// whatever that took, until dropped or released; it then runs `end` (if not empty) and
/// disconnects. At most `HELD_AT_MOST` in any case.
pub struct SessionHolder {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

const HELD_AT_MOST: Duration = Duration::from_secs(600);

pub fn hold_session(url: &str, hold: &str, end: &str) -> SessionHolder {
    let (stop, thread) = session_thread(url, hold, end);
    SessionHolder {
        stop,
        thread: Some(thread),
    }
}

/// The thread behind [`SessionHolder`] and [`AppTransaction`]: connects to `url`, runs `hold`,
/// and once told (through the returned sender) runs `end` (if not empty), disconnects and
/// returns how `end` went. Returns once `hold` has run.
fn session_thread(
    url: &str,
    hold: &str,
    end: &str,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<(), String>>,
) {
    let (url, hold, end) = (url.to_string(), hold.to_string(), end.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let task = tokio::spawn(conn);
            client.batch_execute(&hold).await.unwrap();
            ready_tx.send(()).unwrap();
            // Until told to stop (or the test ends); the server may go away meanwhile.
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv_timeout(HELD_AT_MOST)).await;
            let ended = if end.is_empty() {
                Ok(())
            } else {
                client.batch_execute(&end).await.map_err(|e| e.to_string())
            };
            drop(client);
            let _ = task.await;
            ended
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the holding session connected");
    (stop, thread)
}

impl SessionHolder {
    /// Ends the hold now (as dropping does), once `end` has run.
    pub fn release(self) {}
}

impl Drop for SessionHolder {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Holds the advisory lock of the default tracking table from another session until dropped.
pub fn hold_lock(url: &str) -> SessionHolder {
    hold_session(
        url,
        &format!(
            "select pg_advisory_lock({})",
            portcullis::db::lock::DEFAULT_KEY_FOR_DOCS
        ),
        "",
    )
}

/// The portcullis sessions of `url`'s database whose statement (running, with `active`, or
/// the last one) contains `needle`.
fn sessions(url: &str, needle: &str, active: bool) -> usize {
    let sql = format!(
        "select count(*) from pg_stat_activity where application_name like 'portcullis@%' \
         and datname = current_database() and pid <> pg_backend_pid() \
         and strpos(query, '{}') > 0 {}",
        needle.replace('\'', "''"),
        if active { "and state = 'active'" } else { "" }
    );
    query(url, &sql)[0][0]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// Waits (up to 10 s after `since`) until no session runs `needle` and no advisory lock is held:
/// the server noticed that the runner is gone.
#[track_caller]
pub fn server_let_go(url: &str, needle: &str, since: Instant) {
    loop {
        // Any session that ran it, idle or not: the killed runner's must be gone.
        let (running, locks) = (sessions(url, needle, false), advisory_locks(url));
        if running == 0 && locks == 0 {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{:?} after the runner ended, {running} session(s) still run {needle:?} and {locks} \
             advisory lock(s) are held: the server did not notice it was gone",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An app's transaction in a session of its own (`deadlock-app-test`), which checks for
/// deadlocks only after 10 s: it runs `first`, then, when told, `then`, and commits. So a
/// portcullis session that deadlocks with it (PostgreSQL checks after 1 s by default) is the side
/// PostgreSQL cancels.
pub struct AppTransaction {
    go: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl AppTransaction {
    pub fn start(url: &str, first: &str, then: &str) -> AppTransaction {
        let (go, thread) = session_thread(
            &format!("{url}&application_name=deadlock-app-test"),
            &format!("SET deadlock_timeout = '10s'; BEGIN; {first}"),
            // A failed `then` skips the COMMIT; the transaction ends with the session.
            &format!("{then}; COMMIT"),
        );
        AppTransaction { go, thread }
    }

    /// Runs `then` now (in the background), then commits.
    pub fn then(&self) {
        let _ = self.go.send(());
    }

    /// Waits for the transaction's end; how `then` went.
    pub fn finish(self) -> Result<(), String> {
        let _ = self.go.send(());
        self.thread.join().expect("the app's thread")
    }
}

/// Waits (up to 60 s) until a portcullis session of this URL's database waits for a lock (wait_event_type Lock).
pub fn wait_until_blocked(url: &str) {
    let started = Instant::now();
    loop {
        let n = query(
            url,
            "select count(*) from pg_stat_activity where application_name = 'portcullis@it-runner' \
             and wait_event_type = 'Lock' and datname = current_database()",
        );
        if n[0][0].as_deref() == Some("1") {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "portcullis never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
