//! Process plumbing: the long-lived spawner thread (for `PR_SET_PDEATHSIG`),
//! dropping root privileges to the `postgres` system user, janitor processes
//! and a few `/proc` helpers.

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The unprivileged account the server processes run as when the tests run as root.
#[derive(Debug)]
pub(crate) struct RunAs {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `Ok(None)` when not root (run everything as the current user),
/// `Ok(Some(..))` with the `postgres` account when root.
pub(crate) fn run_as() -> Result<Option<&'static RunAs>, String> {
    static RUN_AS: OnceLock<Result<Option<RunAs>, String>> = OnceLock::new();
    RUN_AS
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Ok(None);
            }
            let name = "postgres";
            let cname = CString::new(name).expect("no NUL");
            // SAFETY: called once (inside OnceLock init); the returned record is
            // copied out immediately.
            let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
            if pw.is_null() {
                return Err(
                    "the tests run as root, but initdb/postgres refuse to run as root \
                     and there is no `postgres` system user to run them as \
                     (install Debian's postgresql package, or run the tests as a normal user)"
                        .to_string(),
                );
            }
            // SAFETY: pw is non-null and points to a valid passwd record.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            Ok(Some(RunAs {
                name: name.to_string(),
                uid,
                gid,
            }))
        })
        .as_ref()
        .map(Option::as_ref)
        .map_err(Clone::clone)
}

/// Configures `cmd` to run as the server account (if root) with a clean,
/// predictable environment; `home` becomes `$HOME` and the working directory.
pub(crate) fn as_server_user(cmd: &mut Command, home: &Path) -> Result<(), String> {
    server_env(cmd, home);
    if let Some(user) = run_as()? {
        cmd.uid(user.uid)
            .gid(user.gid)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    Ok(())
}

/// The server's clean, predictable environment without the switch of account: `home` becomes
/// `$HOME` and the working directory.
pub(crate) fn server_env(cmd: &mut Command, home: &Path) {
    for var in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSERVICE",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C").env("LANG", "C").env("HOME", home);
    cmd.current_dir(home);
}

/// chown `path` to the server account (no-op when not root).
pub(crate) fn chown_to_server_user(path: &Path) -> Result<(), String> {
    if let Some(user) = run_as()? {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("chown {} to postgres: {e}", path.display()))?;
    }
    Ok(())
}

type Job = Box<dyn FnOnce() + Send>;

/// The one thread that forks every server process. It never exits (its
/// `Sender` lives in a static), so `PR_SET_PDEATHSIG` — which fires when the
/// *spawning thread* dies, not the process — only fires when the whole test
/// process dies.
fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for job in rx {
                    // A panicking job must not kill this thread (that would
                    // deliver the death signal to every server it spawned).
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
                // Unreachable in practice: the Sender is never dropped.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the pg-spawner thread");
        tx
    })
}

/// Spawns `cmd` from the long-lived spawner thread with `PR_SET_PDEATHSIG`
/// set to `death_signal`, so the child is signalled when the test process dies
/// (for any reason, including SIGKILL). The caller may wait on the returned
/// `Child` from any thread.
pub(crate) fn spawn_tied(mut cmd: Command, death_signal: libc::c_int) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only performs async-signal-safe syscalls and does
    // not allocate. std runs pre_exec closures *after* the setgid/setuid
    // switch, and the death signal must be set after it (a credential change
    // clears it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The test process died between fork and prctl: don't start.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    spawner()
        .send(Box::new(move || {
            let _ = reply_tx.send(cmd.spawn());
        }))
        .map_err(|_| io::Error::other("pg-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("pg-spawner thread dropped the request"))?
}

/// Runs `cmd` (from the spawner thread, death-signalled) to completion and
/// returns its combined output, or an error describing the failure.
pub(crate) fn run_tied(mut cmd: Command, what: &str) -> Result<(), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn_tied(cmd, libc::SIGKILL).map_err(|e| format!("{what}: spawn failed: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: wait failed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Removes a directory tree when the test process goes away, even when it is
/// SIGKILLed. It is a `sh` process (own process group, so a terminal ^C does
/// not hit it) blocked in `read` on a pipe whose only write end is held by the
/// test process (std creates it `O_CLOEXEC`, so no other child inherits it).
/// When the write end closes — the owner dropped the `Janitor`, or the
/// process died — `read` returns, the script waits for the postmaster named
/// in `data/postmaster.pid` to be gone (after 5 s it sends SIGQUIT, after 10 s
/// SIGKILL; it checks `/proc/PID/cmdline` names this data dir, so a recycled
/// pid is never signalled), then deletes the directory.
pub(crate) struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

const DIR_JANITOR: &str = r#"
dir=$1
read -r _ignored
pidfile="$dir/data/postmaster.pid"
i=0
while [ -f "$pidfile" ]; do
    pid=$(head -n 1 "$pidfile" 2>/dev/null)
    case "$pid" in ''|*[!0-9]*) break ;; esac
    tr '\000' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/data" || break
    i=$((i + 1))
    [ "$i" -eq 50 ] && kill -QUIT "$pid" 2>/dev/null
    [ "$i" -ge 100 ] && kill -KILL "$pid" 2>/dev/null
    sleep 0.1
done
n=0
until rm -rf -- "$dir" 2>/dev/null || [ "$n" -ge 20 ]; do n=$((n + 1)); sleep 0.1; done
"#;

const DOCKER_JANITOR: &str = r#"
read -r _ignored
docker rm -f -v "$1" >/dev/null 2>&1
"#;

impl Janitor {
    /// A janitor that deletes `dir` (a cluster base dir: `dir/data` is the
    /// data directory) once the owner is gone.
    pub(crate) fn for_dir(dir: &Path) -> Result<Janitor, String> {
        Self::spawn(DIR_JANITOR, dir.as_os_str())
            .map_err(|e| format!("spawn janitor for {}: {e}", dir.display()))
    }

    /// A janitor that force-removes a docker container once the owner is gone.
    pub(crate) fn for_container(id: &str) -> Result<Janitor, String> {
        Self::spawn(DOCKER_JANITOR, id.as_ref())
            .map_err(|e| format!("spawn janitor for container {id}: {e}"))
    }

    fn spawn(script: &str, arg: &std::ffi::OsStr) -> io::Result<Janitor> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("portcullis-test-janitor")
            .arg(arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take();
        Ok(Janitor { child, stdin })
    }

    /// Closes the pipe (the janitor then does its cleanup, normally a no-op
    /// because the owner already cleaned up) and reaps it.
    pub(crate) fn release(mut self) {
        drop(self.stdin.take());
        let _ = wait_timeout(&mut self.child, Duration::from_secs(15));
    }
}

/// Polls `child` until it exits or `timeout` passes; `Ok(true)` if it exited.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to `pid`; errors (e.g. already gone) are ignored.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `(ppid, state)` from `/proc/PID/stat`, `None` if the process is gone.
fn proc_stat(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces/parens.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Direct children of `pid` (scans /proc).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_stat(p).is_some_and(|(ppid, _)| ppid == pid))
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}
