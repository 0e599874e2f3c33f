//! Throwaway PostgreSQL clusters started from the local server binaries
//! (or, as a fallback for `Cluster::shared()`, a docker container).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use super::docker::DockerPostgres;
use super::proc::{self, Janitor};
use super::sql;

/// Password of the `postgres` superuser in every cluster (tests grep output for it).
pub const PASSWORD: &str = "s3cr3t-Pa55w0rd-for-tests";

/// How long `start()` waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop()` waits for a fast shutdown before escalating.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const NO_SERVER_HINT: &str = "no PostgreSQL server binaries found (looked in $PG_BIN, \
    pg_config --bindir, /usr/lib/postgresql/*/bin) and no Docker daemon: install Debian's \
    postgresql package (apt-get install -y postgresql) or set PG_BIN";

/// Directory holding `postgres` and `initdb`: `$PG_BIN` if set, else
/// `pg_config --bindir` if it has both, else the highest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_pg_bin_dir).clone()
}

fn has_server_binaries(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

fn find_pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_server_binaries(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "PG_BIN={} does not contain both `postgres` and `initdb`",
                dir.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(version) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<u32>, _>>()
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server_binaries(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server binaries in $PG_BIN, pg_config --bindir or /usr/lib/postgresql/*/bin"
            .to_string()
    })
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A throwaway PostgreSQL cluster. See the `support` module docs for the
/// process/cleanup model.
pub struct Cluster {
    host: String,
    port: u16,
    backend: Backend,
}

enum Backend {
    Local(Local),
    Docker(Box<DockerPostgres>),
}

struct Local {
    bin: PathBuf,
    /// `<tmp>/portcullis-it-<pid>-<n>`: owned by the server user; holds
    /// `data/` (PGDATA), `postgres.log` and the unix socket.
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Directory of the unix socket (`base`), `None` if that path would be
    /// too long for a socket address (then the socket is disabled).
    socket_dir: Option<PathBuf>,
    postmaster: Option<Child>,
    janitor: Option<Janitor>,
}

static DIR_COUNTER: AtomicU32 = AtomicU32::new(0);
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where cluster directories go: `$PORTCULLIS_TEST_TMPDIR` if set, else
/// `/dev/shm` if it is a tmpfs with at least 2 GiB free (initdb and the
/// per-cluster copy are ~10x faster there than on a disk, where creating
/// the ~1000 files of a data dir is slow), else `std::env::temp_dir()`.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        if let Some(dir) = std::env::var_os("PORTCULLIS_TEST_TMPDIR") {
            return PathBuf::from(dir);
        }
        let shm = Path::new("/dev/shm");
        // SAFETY: statvfs is plain data.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = c"/dev/shm";
        // SAFETY: valid NUL-terminated path and out-pointer.
        let ok = unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0;
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        // SAFETY: valid NUL-terminated path.
        let writable = unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
        if ok && writable && shm.is_dir() && free >= 2 << 30 {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

/// Creates a fresh `<tmp>/portcullis-it-<pid>-<tag><n>` directory (0755,
/// owned by the server user) and a janitor that deletes it when this
/// process goes away.
fn new_base_dir(tag: &str) -> Result<(PathBuf, Janitor), String> {
    let tmp = scratch_root();
    loop {
        let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("portcullis-it-{}-{tag}{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let janitor = Janitor::for_dir(&dir);
                let result = janitor.and_then(|j| {
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
                    proc::chown_to_server_user(&dir)?;
                    Ok(j)
                });
                return match result {
                    Ok(j) => Ok((dir, j)),
                    Err(e) => {
                        let _ = fs::remove_dir_all(&dir);
                        Err(e)
                    }
                };
            }
            // A leftover of a dead process that had the same pid: skip it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("create {}: {e}", dir.display())),
        }
    }
}

/// The initdb'd template cluster, created once per test process; every
/// cluster is a `cp -a` copy of its data dir (much faster than initdb).
struct Template {
    data: PathBuf,
    _janitor: Janitor,
}

fn template() -> Result<&'static Template, String> {
    static TEMPLATE: OnceLock<Result<Template, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let bin = pg_bin_dir()?;
            let (base, janitor) = new_base_dir("template-")?;
            let pwfile = base.join("pwfile");
            let data = base.join("data");
            let result = (|| {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&pwfile)
                    .map_err(|e| format!("create {}: {e}", pwfile.display()))?;
                writeln!(f, "{PASSWORD}").map_err(|e| format!("write pwfile: {e}"))?;
                drop(f);
                proc::chown_to_server_user(&pwfile)?;
                let mut cmd = Command::new(bin.join("initdb"));
                cmd.arg("-D")
                    .arg(&data)
                    .args([
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                    ])
                    .arg(format!("--pwfile={}", pwfile.display()))
                    .args(["-E", "UTF8", "--locale=C", "--no-sync"]);
                proc::as_server_user(&mut cmd, &base)?;
                proc::run_tied(cmd, "initdb")
            })();
            let _ = fs::remove_file(&pwfile);
            match result {
                Ok(()) => {
                    cleanup_at_exit(None, base.clone());
                    Ok(Template {
                        data,
                        _janitor: janitor,
                    })
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&base);
                    janitor.release();
                    Err(e)
                }
            }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Last `max_lines` lines of a log file.
fn tail(path: &Path, max_lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

enum StartError {
    PortInUse(String),
    Other(String),
}

impl StartError {
    fn message(self) -> String {
        match self {
            StartError::PortInUse(m) | StartError::Other(m) => m,
        }
    }
}

/// Attempts one readiness probe: a full connect + `select 1` as the superuser.
async fn probe(url: &str) -> Result<(), String> {
    let connect = async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(sql::describe)?;
        let conn = tokio::spawn(conn);
        client
            .simple_query("select 1")
            .await
            .map_err(sql::describe)?;
        drop(client);
        let _ = conn.await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "probe timed out".to_string())?
}

impl Cluster {
    /// The cluster shared by all tests of this process, started on first use.
    /// Give each test its own database via [`Cluster::create_database`].
    /// Uses the local binaries, else a docker container
    /// (`postgres:16-alpine`); panics loudly if neither is available.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        match SHARED.get_or_init(Self::make_shared) {
            Ok(cluster) => cluster,
            Err(e) => panic!("could not start the shared PostgreSQL test cluster: {e}"),
        }
    }

    fn make_shared() -> Result<Cluster, String> {
        let force_docker = std::env::var_os("PORTCULLIS_TEST_DOCKER").is_some_and(|v| v == "1");
        let local = if force_docker {
            Err("PORTCULLIS_TEST_DOCKER=1".to_string())
        } else {
            pg_bin_dir()
        };
        match local {
            Ok(_) => {
                let cluster = Self::try_start_new()?;
                if let Backend::Local(l) = &cluster.backend
                    && let Some(child) = &l.postmaster
                {
                    cleanup_at_exit(Some(child.id()), l.base.clone());
                }
                Ok(cluster)
            }
            Err(local_err) => {
                if !super::docker::daemon_available() {
                    return Err(format!("{NO_SERVER_HINT}\n({local_err})"));
                }
                // testcontainers' SyncRunner owns a tokio runtime: keep it off
                // any runtime the calling test may be running on.
                let pg = std::thread::scope(|s| {
                    s.spawn(|| DockerPostgres::start(PASSWORD))
                        .join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))
                })
                .map_err(|e| format!("{local_err}; docker fallback failed: {e}"))?;
                Ok(Cluster {
                    host: pg.host.clone(),
                    port: pg.port,
                    backend: Backend::Docker(Box::new(pg)),
                })
            }
        }
    }

    /// A new, initialized but not running cluster that will listen on `port`.
    pub fn init(port: u16) -> Cluster {
        Self::try_init(port).unwrap_or_else(|e| panic!("Cluster::init: {e}"))
    }

    fn try_init(port: u16) -> Result<Cluster, String> {
        let bin = pg_bin_dir().map_err(|e| {
            format!(
                "local PostgreSQL binaries are required for Cluster::init/start_new \
                 (the docker fallback only supports Cluster::shared()): {e}\n\
                 install Debian's postgresql package (apt-get install -y postgresql) or set PG_BIN"
            )
        })?;
        let template = template()?;
        let (base, janitor) = new_base_dir("")?;
        let data = base.join("data");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template.data)
            .arg(&data)
            .output()
            .map_err(|e| format!("spawn cp: {e}"))
            .and_then(|out| {
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "cp -a {} {}: {}",
                        template.data.display(),
                        data.display(),
                        String::from_utf8_lossy(&out.stderr)
                    ))
                }
            });
        if let Err(e) = copied {
            let _ = fs::remove_dir_all(&base);
            janitor.release();
            return Err(e);
        }
        Ok(Cluster {
            host: "127.0.0.1".to_string(),
            port,
            backend: Backend::Local(Local {
                bin,
                log: base.join("postgres.log"),
                // sun_path holds 107 bytes; "/.s.PGSQL.65535" + NUL needs 16.
                socket_dir: (base.as_os_str().len() <= 90).then(|| base.clone()),
                base,
                data,
                postmaster: None,
                janitor: Some(janitor),
            }),
        })
    }

    /// `init(free_port())` + `start()` (retrying with another port if the
    /// chosen one got taken in the meantime).
    pub fn start_new() -> Cluster {
        Self::try_start_new().unwrap_or_else(|e| panic!("Cluster::start_new: {e}"))
    }

    fn try_start_new() -> Result<Cluster, String> {
        let mut cluster = Self::try_init(free_port())?;
        let mut attempts = 0;
        loop {
            match cluster.try_start() {
                Ok(()) => return Ok(cluster),
                Err(StartError::PortInUse(_)) if attempts < 5 => {
                    attempts += 1;
                    cluster.port = free_port();
                }
                Err(e) => return Err(e.message()),
            }
        }
    }

    fn local(&mut self, what: &str) -> &mut Local {
        match &mut self.backend {
            Backend::Local(l) => l,
            Backend::Docker(_) => panic!(
                "Cluster::{what} needs a locally started cluster; the docker fallback only \
                 supports Cluster::shared() (install postgresql or set PG_BIN)"
            ),
        }
    }

    /// Starts the server and waits (max 30 s) until it accepts connections.
    /// Panics with the tail of the server log on failure.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("Cluster::start on port {}: {}", self.port, e.message());
        }
    }

    /// [`Cluster::start`] with `extra` settings after the harness's own (`["-c",
    /// "name=value", ...]`, later ones winning).
    pub fn start_with(&mut self, extra: &[&str]) {
        if let Err(e) = self.try_start_with(extra, true, None) {
            panic!("Cluster::start_with on port {}: {}", self.port, e.message());
        }
    }

    /// Starts the server as a standby that refuses every connection (SQLSTATE 57P03, "the
    /// database system is not accepting connections"): `standby.signal` with nothing to
    /// replicate from, and `hot_standby` off. Returns once its log says it entered standby
    /// mode (max 30 s); what a client meets while a server starts up or recovers.
    pub fn start_as_refusing_standby(&mut self) {
        let local = self.local("start_as_refusing_standby");
        let signal = local.data.join("standby.signal");
        fs::write(&signal, b"").expect("write standby.signal");
        proc::chown_to_server_user(&signal).expect("chown standby.signal");
        let log = local.log.clone();
        if let Err(e) = self.try_start_with(&["-c", "hot_standby=off"], false, None) {
            panic!("Cluster::start_as_refusing_standby: {}", e.message());
        }
        let started = Instant::now();
        while !fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("entering standby mode")
        {
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the standby never entered standby mode; log {}:\n{}",
                log.display(),
                tail(&log, 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server in a mount namespace of its own, in which the returned directory (in
    /// the cluster's, removed with it) is a tmpfs of `bytes` owned by the server's account: a
    /// small volume for a tablespace, to fill on purpose (disk full, SQLSTATE 53100). The mount
    /// ends with the server; nothing outside its namespace sees it. Mounting needs root, as CI
    /// and the scripts run the tests.
    pub fn start_with_small_volume(&mut self, bytes: u64) -> PathBuf {
        let dir = self
            .local("start_with_small_volume")
            .base
            .join("small-volume");
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let volume = Volume { dir: &dir, bytes };
        if let Err(e) = self.try_start_with(&[], true, Some(volume)) {
            panic!("Cluster::start_with_small_volume: {}", e.message());
        }
        dir
    }

    fn try_start(&mut self) -> Result<(), StartError> {
        self.try_start_with(&[], true, None)
    }

    /// Starts the postmaster with `extra` settings after the harness's own; with `ready`, waits
    /// until it accepts connections; with a `volume`, in a mount namespace that has it.
    fn try_start_with(
        &mut self,
        extra: &[&str],
        ready: bool,
        volume: Option<Volume<'_>>,
    ) -> Result<(), StartError> {
        let port = self.port;
        // Probe over the unix socket (trust auth) when there is one: a SCRAM
        // exchange costs ~100 ms in debug builds. The postmaster binds its TCP
        // socket before the unix socket, so a unix-socket answer implies TCP
        // is ready too.
        let url = self.socket_url("postgres");
        let local = self.local("start");
        if local.postmaster.is_some() {
            return Err(StartError::Other("already running".into()));
        }
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&local.log)
            .map_err(|e| StartError::Other(format!("open {}: {e}", local.log.display())))?;
        let _ = writeln!(
            log,
            "=== portcullis test harness: starting on port {port} ==="
        );
        let log_err = log
            .try_clone()
            .map_err(|e| StartError::Other(format!("dup log fd: {e}")))?;
        let postgres = local.bin.join("postgres");
        let mut cmd = match &volume {
            None => Command::new(&postgres),
            Some(volume) => volume.wrap(&postgres).map_err(StartError::Other)?,
        };
        cmd.arg("-D")
            .arg(&local.data)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                local
                    .socket_dir
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            ))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
                "-c",
                "log_min_messages=warning",
                // Each session's database and application_name on its lines, so that a test
                // can tell which of a run's connections a logged statement came from.
                "-c",
                "log_line_prefix=%m [%p] %q%d [%a] ",
                // DSM segments as files in PGDATA/pg_dynshmem (not
                // /dev/shm/PostgreSQL.*), so a killed server leaks nothing
                // outside the data dir.
                "-c",
                "dynamic_shared_memory_type=mmap",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own process group: a terminal ^C aimed at the test run does not
            // reach the server directly (it dies via the death signal instead).
            .process_group(0);
        if volume.is_some() {
            // The wrapper mounts as root, then becomes the server's account (setpriv).
            proc::server_env(&mut cmd, &local.base);
        } else {
            proc::as_server_user(&mut cmd, &local.base).map_err(StartError::Other)?;
        }
        let child = proc::spawn_tied(cmd, libc::SIGQUIT)
            .map_err(|e| StartError::Other(format!("spawn postgres: {e}")))?;
        local.postmaster = Some(child);

        if !ready {
            return Ok(());
        }
        // On a scoped thread, so that this also works when called from
        // inside a tokio runtime (e.g. a `#[tokio::test]`).
        std::thread::scope(|s| {
            s.spawn(|| local.wait_ready(&url))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Fast shutdown (SIGINT) and wait for the postmaster to exit
    /// (escalates to SIGQUIT/SIGKILL after 30 s). No-op if not running.
    pub fn stop(&mut self) {
        if let Err(e) = self.local("stop").halt(libc::SIGINT) {
            panic!("Cluster::stop: {e}");
        }
    }

    /// Simulates a crash: SIGKILL the postmaster *and* all its children
    /// (backends keep running a statement after a postmaster-only kill),
    /// and wait until they are gone. The data dir is left as a crashed
    /// server leaves it; `start()` afterwards performs crash recovery.
    pub fn kill9(&mut self) {
        let local = self.local("kill9");
        let Some(mut child) = local.postmaster.take() else {
            return;
        };
        let pid = child.id();
        // Freeze the postmaster so it cannot fork while we collect its children.
        proc::signal(pid, libc::SIGSTOP);
        let children = proc::children_of(pid);
        for &c in &children {
            proc::signal(c, libc::SIGKILL);
        }
        proc::signal(pid, libc::SIGKILL);
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while children.iter().any(|&c| proc::alive(c)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        local.remove_stale_shmem();
    }

    /// Whether this harness has a running postmaster for the cluster
    /// (always true for the docker fallback).
    pub fn is_running(&self) -> bool {
        match &self.backend {
            Backend::Local(l) => l.postmaster.is_some(),
            Backend::Docker(_) => true,
        }
    }

    /// Pid of the postmaster, if running locally.
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Local(l) => l.postmaster.as_ref().map(Child::id),
            Backend::Docker(_) => None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Base temp dir (holds `data/`, `postgres.log`, the unix socket);
    /// `None` for the docker fallback.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(l) => Some(&l.base),
            Backend::Docker(_) => None,
        }
    }

    /// The server log (stdout+stderr of postgres), `None` for docker.
    pub fn log_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Local(l) => Some(&l.log),
            Backend::Docker(_) => None,
        }
    }

    /// Superuser URL over the cluster's unix socket with `trust` auth: no
    /// SCRAM exchange, so ~10x cheaper to connect in debug builds — use it
    /// for assertions/setup with [`super::query`]/[`super::execute`]. Falls
    /// back to [`Cluster::url`] when there is no socket (docker, long path).
    pub fn socket_url(&self, db: &str) -> String {
        match &self.backend {
            Backend::Local(Local {
                socket_dir: Some(dir),
                ..
            }) => format!(
                "postgres://postgres@{}:{}/{}",
                encode(&dir.to_string_lossy()),
                self.port,
                encode(db)
            ),
            _ => self.url(db),
        }
    }

    /// Superuser URL: `postgres://postgres:PASSWORD@127.0.0.1:PORT/db?sslmode=disable`.
    pub fn url(&self, db: &str) -> String {
        self.url_with("postgres", PASSWORD, db)
    }

    /// URL for another role; user, password and db are percent-encoded.
    pub fn url_with(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}?sslmode=disable",
            encode(user),
            encode(password),
            self.host,
            self.port,
            encode(db)
        )
    }

    /// `CREATE DATABASE` with a unique name (`<prefix>_<counter>_<pid>`,
    /// lowercased, non-`[a-z0-9_]` replaced by `_`, max 63 bytes); returns it.
    pub fn create_database(&self, prefix: &str) -> String {
        let suffix = format!(
            "_{}_{}",
            DB_COUNTER.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let mut name: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert_str(0, "db");
        }
        name.truncate(63 - suffix.len());
        name.push_str(&suffix);
        sql::execute(
            &self.socket_url("postgres"),
            &format!("CREATE DATABASE \"{name}\""),
        );
        name
    }
}

impl Local {
    /// Polls until the server answers `url` (max START_TIMEOUT); detects an
    /// early exit of the postmaster (and whether its port was taken).
    fn wait_ready(&mut self, url: &str) -> Result<(), StartError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::Other(format!("tokio runtime: {e}")))?;
        let started = Instant::now();
        let mut last_err;
        loop {
            let child = self.postmaster.as_mut().expect("just set");
            if let Ok(Some(status)) = child.try_wait() {
                self.postmaster = None;
                let log = tail(&self.log, 40);
                let msg = format!(
                    "postgres exited during startup ({status}); log {}:\n{log}",
                    self.log.display()
                );
                let in_use = log.contains("could not bind") || log.contains("already in use");
                return Err(if in_use {
                    StartError::PortInUse(msg)
                } else {
                    StartError::Other(msg)
                });
            }
            match rt.block_on(probe(url)) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = e,
            }
            if started.elapsed() > START_TIMEOUT {
                let log = tail(&self.log, 40);
                let _ = self.halt(libc::SIGKILL);
                return Err(StartError::Other(format!(
                    "postgres did not accept connections within {START_TIMEOUT:?} \
                     (last error: {last_err}); log {}:\n{log}",
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Signals the postmaster with `sig`, waits up to STOP_TIMEOUT, then
    /// escalates (SIGQUIT, then SIGKILL). No-op if not running.
    fn halt(&mut self, sig: libc::c_int) -> Result<(), String> {
        let Some(mut child) = self.postmaster.take() else {
            return Ok(());
        };
        let pid = child.id();
        for (signal, timeout) in [
            (sig, STOP_TIMEOUT),
            (libc::SIGQUIT, Duration::from_secs(5)),
            (libc::SIGKILL, Duration::from_secs(30)),
        ] {
            proc::signal(pid, signal);
            match proc::wait_timeout(&mut child, timeout) {
                Ok(true) => return Ok(()),
                Ok(false) => eprintln!(
                    "portcullis test harness: postgres {pid} did not exit within {timeout:?} \
                     after signal {signal}; escalating. log tail:\n{}",
                    tail(&self.log, 20)
                ),
                Err(e) => return Err(format!("waiting for postgres {pid}: {e}")),
            }
        }
        Err(format!("postgres {pid} survived SIGKILL?"))
    }

    /// After a SIGKILL the server's small SysV interlock segment is left
    /// behind; remove it (a later start would do so too, but the cluster may
    /// just be dropped). Only segments nobody is attached to are removed.
    fn remove_stale_shmem(&self) {
        let Ok(pidfile) = fs::read_to_string(self.data.join("postmaster.pid")) else {
            return;
        };
        // Line 7: "<shmem key> <shmem id>".
        let Some(id) = pidfile
            .lines()
            .nth(6)
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<libc::c_int>().ok())
        else {
            return;
        };
        // SAFETY: shmid_ds is plain data; shmctl writes into it.
        unsafe {
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 && ds.shm_nattch == 0 {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Local(local) => {
                if let Err(e) = local.halt(libc::SIGINT) {
                    eprintln!("portcullis test harness: stopping cluster: {e}");
                }
                if let Err(e) = fs::remove_dir_all(&local.base)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    eprintln!(
                        "portcullis test harness: removing {}: {e}",
                        local.base.display()
                    );
                }
                if let Some(j) = local.janitor.take() {
                    j.release();
                }
            }
            Backend::Docker(_) => {} // the container is removed by its own Drop
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The shared cluster and the template are never-dropped statics, so on a
/// normal process exit (all tests done, pass or fail) an `atexit` hook stops
/// the shared server (SIGQUIT = immediate shutdown), reaps it and removes
/// their directories synchronously. Abnormal deaths are covered by the death
/// signal and the janitors.
fn cleanup_at_exit(postmaster: Option<u32>, dir: PathBuf) {
    static AT_EXIT: Mutex<Vec<(Option<u32>, PathBuf)>> = Mutex::new(Vec::new());
    static REGISTER: Once = Once::new();
    extern "C" fn on_exit() {
        // try_lock: never block process exit on a lock some thread holds.
        let Ok(mut entries) = AT_EXIT.try_lock() else {
            return;
        };
        for (postmaster, dir) in entries.drain(..) {
            if let Some(pid) = postmaster {
                proc::signal(pid, libc::SIGQUIT);
                if !reap(pid, Duration::from_secs(5)) {
                    proc::signal(pid, libc::SIGKILL);
                    reap(pid, Duration::from_secs(5));
                }
            }
            let _ = fs::remove_dir_all(dir);
        }
    }
    fn reap(pid: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: plain syscall on our own child.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if r != 0 {
                return true; // reaped, or not our child any more
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    AT_EXIT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((postmaster, dir));
    REGISTER.call_once(|| {
        // SAFETY: registering a plain extern "C" fn.
        unsafe {
            libc::atexit(on_exit);
        }
    });
}

/// A small tmpfs for one server's mount namespace ([`Cluster::start_with_small_volume`]).
struct Volume<'a> {
    dir: &'a Path,
    bytes: u64,
}

impl Volume<'_> {
    /// `unshare` (a private mount namespace) running a shell that mounts the tmpfs and then
    /// execs `postgres` (the arguments added after this) as the server's account: one process
    /// throughout, so the postmaster is still the harness's direct child.
    fn wrap(&self, postgres: &Path) -> Result<Command, String> {
        let user = proc::run_as()?.ok_or_else(|| {
            "a small volume for the server is a tmpfs mounted in a mount namespace of its own, \
             which needs root; run the tests as root (as .ci/run and scripts/test.sh do in CI)"
                .to_string()
        })?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "d=$1 size=$2 u=$3 g=$4; shift 4; \
                 mount -t tmpfs -o \"size=$size,mode=0700,uid=$u,gid=$g\" portcullis-test \"$d\" \
                 || exit 97; \
                 exec setpriv --reuid=\"$u\" --regid=\"$g\" --init-groups --pdeathsig SIGQUIT \"$@\"",
            )
            .arg("sh")
            .arg(self.dir)
            .arg(self.bytes.to_string())
            .arg(user.uid.to_string())
            .arg(user.gid.to_string())
            .arg(postgres)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        Ok(cmd)
    }
}
