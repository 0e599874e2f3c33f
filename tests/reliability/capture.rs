//! Running portcullis in this suite: every run gets its own termination log
//! (PORTCULLIS_TERMINATION_LOG), and every captured output (stdout, stderr, termination log) goes
//! through [`record`], which fails the test at once if the password appears and counts what was
//! checked for the secrets report. Also: measured figures, a small seeded random generator, and
//! polling helpers.

use crate::run;
use crate::support::PASSWORD;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs and bytes checked for the password so far, in this process.
pub static CHECKED_RUNS: AtomicUsize = AtomicUsize::new(0);
pub static CHECKED_BYTES: AtomicU64 = AtomicU64::new(0);
static TERMLOGS: AtomicUsize = AtomicUsize::new(0);

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// The exit status, or 128 + signal when a signal ended the process (as a shell reports it).
    pub code: i32,
    /// The signal that ended the process, if one did (before portcullis could handle it).
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// What portcullis wrote to its termination log ("" when nothing).
    pub termlog: String,
    pub elapsed: Duration,
}

impl Captured {
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Captured {
        assert_eq!(
            self.code,
            code,
            "expected exit {code}, got {} (signal {:?}) after {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- termination log\n{}",
            self.code,
            self.signal,
            self.elapsed,
            cut(&self.stdout),
            cut(&self.stderr),
            self.termlog
        );
        self
    }

    /// Asserts that stderr contains `needle`, showing stderr when it does not.
    #[track_caller]
    pub fn says(&self, needle: &str) -> &Captured {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}:\n{}",
            cut(&self.stderr)
        );
        self
    }
}

/// The first 20k characters, for assertion messages.
fn cut(s: &str) -> &str {
    match s.char_indices().nth(20_000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Fails the test if the password appears anywhere in a run's output; counts what was checked.
#[track_caller]
pub fn record(c: &Captured) {
    for (what, text) in [
        ("stdout", &c.stdout),
        ("stderr", &c.stderr),
        ("the termination log", &c.termlog),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the password appeared in {what} (exit {}):\n{}",
            c.code,
            cut(text)
        );
        // Percent-encoded, as in a URL, it must not appear either.
        assert!(
            !text.contains(&PASSWORD.replace('-', "%2D")),
            "the encoded password appeared in {what}"
        );
    }
    CHECKED_RUNS.fetch_add(1, Ordering::SeqCst);
    CHECKED_BYTES.fetch_add(
        (c.stdout.len() + c.stderr.len() + c.termlog.len()) as u64,
        Ordering::SeqCst,
    );
}

/// A portcullis command with a clean environment (see `run::command`) and its own termination
/// log.
pub struct Invocation {
    cmd: Command,
    termlog: PathBuf,
}

pub fn portcullis(url: &str, dir: &Path) -> Invocation {
    let termlog = std::env::temp_dir().join(format!(
        "portcullis-rel-term-{}-{}.log",
        std::process::id(),
        TERMLOGS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&termlog);
    let mut cmd = run::command(url, dir);
    cmd.env("PORTCULLIS_TERMINATION_LOG", &termlog);
    Invocation { cmd, termlog }
}

impl Invocation {
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Invocation {
        self.cmd.env(key, value);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Invocation {
        self.cmd.args(args);
        self
    }

    /// Runs to completion (outputs read concurrently, so a 50 MB plan cannot block on a pipe).
    pub fn run(self) -> Captured {
        self.spawn().finish(Duration::from_secs(600))
    }

    pub fn spawn(mut self) -> Running {
        let started = Instant::now();
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let stdout = reader(child.stdout.take().unwrap());
        let stderr = reader(child.stderr.take().unwrap());
        Running {
            pid: child.id(),
            child,
            stdout,
            stderr,
            termlog: self.termlog,
            started,
        }
    }
}

fn reader(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = from.read_to_end(&mut out);
        out
    })
}

/// A portcullis process running in the background.
pub struct Running {
    pub pid: u32,
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    termlog: PathBuf,
    pub started: Instant,
}

impl Running {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid as libc::pid_t, sig);
        }
    }

    /// Waits for the end (killing it and failing the test after `limit`), then records it.
    #[track_caller]
    pub fn finish(mut self, limit: Duration) -> Captured {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = String::from_utf8_lossy(&self.stderr.join().unwrap()).into_owned();
                panic!(
                    "portcullis did not finish within {limit:?}: it hung\n--- stderr\n{}",
                    cut(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let stdout = String::from_utf8_lossy(&self.stdout.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&self.stderr.join().unwrap()).into_owned();
        let termlog = std::fs::read_to_string(&self.termlog).unwrap_or_default();
        let _ = std::fs::remove_file(&self.termlog);
        let captured = Captured {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            signal: status.signal(),
            stdout,
            stderr,
            termlog,
            elapsed,
        };
        record(&captured);
        // RELIABILITY_SHOW=1 (with --nocapture) shows what every run printed.
        if std::env::var_os("RELIABILITY_SHOW").is_some() {
            eprintln!(
                "--- exit {} after {:?}\n{}{}",
                captured.code,
                captured.elapsed,
                cut(&captured.stderr),
                captured.termlog
            );
        }
        captured
    }
}

/// Writes a measured figure: to stderr (shown with --nocapture) and appended to
/// `<target>/tmp/reliability-figures.txt`, from which the README's Reliability section is made.
pub fn figure(test: &str, text: impl AsRef<str>) {
    static FILE: Mutex<()> = Mutex::new(());
    let line = format!("[{test}] {}", text.as_ref());
    eprintln!("FIGURE {line}");
    let _guard = FILE.lock().unwrap_or_else(|p| p.into_inner());
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability-figures.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
}

/// A seed for a randomised test: `RELIABILITY_SEED` when set (to replay a failure), else the
/// clock. Always reported, so that any failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    figure(
        test,
        format!("seed {seed} (replay with RELIABILITY_SEED={seed})"),
    );
    seed
}

/// splitmix64: small, seedable, good enough to pick delays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub fn below(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis() as u64;
        Duration::from_millis(self.next_u64() % (ms + 1))
    }
}

/// Polls `f` every 20 ms until it returns true; returns how long it took, or panics with `what`
/// after `limit`.
#[track_caller]
pub fn poll(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if f() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: still not true after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a statement matching `like` runs in `url`'s database, sent by another session.
pub fn running(url: &str, like: &str) -> bool {
    crate::support::query(
        url,
        &format!(
            "select count(*) from pg_stat_activity where query like '{like}' and state = 'active' \
             and pid <> pg_backend_pid() and datname = current_database()"
        ),
    )[0][0]
        .as_deref()
        != Some("0")
}
