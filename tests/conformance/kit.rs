//! The real drizzle-kit: installing the pinned packages with `npm ci` into a cache folder keyed
//! by the lockfile, and running `drizzle-kit generate`, `drizzle-kit migrate` and a small node
//! script that calls drizzle-orm's own `readMigrationFiles`.
//!
//! drizzle-kit 0.31 is not trustworthy about its exit code: `generate` exits 0 when it cannot
//! prompt for a rename or cannot read a snapshot, and `migrate` hides the SQL error. Callers
//! therefore check what it did (files written, tracking rows) and use the exit code only as an
//! extra signal.

use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `tests/conformance/drizzle`: package.json, package-lock.json, schema steps, node script.
pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/drizzle")
}

/// What `npm ci` installed.
pub struct Install {
    /// Holds `node_modules/`.
    pub dir: PathBuf,
    pub drizzle_kit: String,
    pub drizzle_orm: String,
    pub pg: String,
}

impl Install {
    fn bin(&self) -> PathBuf {
        self.dir.join("node_modules/drizzle-kit/bin.cjs")
    }
}

/// The installed packages, installed on first use. Panics with the reason (and what to do) when
/// node or npm is missing or `npm ci` fails: the conformance tests never skip.
pub fn install() -> &'static Install {
    static INSTALL: OnceLock<Result<Install, String>> = OnceLock::new();
    match INSTALL.get_or_init(try_install) {
        Ok(i) => i,
        Err(e) => panic!("conformance: cannot install the pinned drizzle-kit: {e}"),
    }
}

const NODE_HINT: &str = "The conformance tests run the real drizzle-kit, so they need Node.js \
    (>= 18) and npm on PATH and the npm registry reachable (first run only; the install is then \
    cached in target/tmp/conformance-node/). On Debian/Ubuntu: apt-get install nodejs npm.";

fn try_install() -> Result<Install, String> {
    let node = output(
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
    )
    .map_err(|e| format!("`node --version` failed: {e}. {NODE_HINT}"))?;
    let major: u32 = node
        .stdout
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if node.code != 0 || major < 18 {
        return Err(format!(
            "`node --version` said {:?} (exit {}); Node.js >= 18 is needed. {NODE_HINT}",
            node.stdout.trim(),
            node.code
        ));
    }

    let src = package_dir();
    let manifest = std::fs::read(src.join("package.json"))
        .map_err(|e| format!("reading {}/package.json: {e}", src.display()))?;
    let lock = std::fs::read(src.join("package-lock.json"))
        .map_err(|e| format!("reading {}/package-lock.json: {e}", src.display()))?;
    let mut key = Sha256::new();
    key.update(&manifest);
    key.update(&lock);
    let key = portcullis::source::split::hex(&key.finalize())[..16].to_string();

    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-node");
    let dir = base.join(&key);
    if !dir.join(COMPLETE).is_file() {
        std::fs::create_dir_all(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
        // Installs of older lockfiles are dead weight: remove them.
        if let Ok(rd) = std::fs::read_dir(&base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let live_partial = name
                    .split_once(".partial-")
                    .is_some_and(|(_, pid)| Path::new("/proc").join(pid).exists());
                if name != key && !live_partial {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        // Install into a private folder, then rename: a concurrent run never sees half an install.
        let partial = base.join(format!("{key}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .map_err(|e| format!("creating {}: {e}", partial.display()))?;
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(f), partial.join(f))
                .map_err(|e| format!("copying {f} to {}: {e}", partial.display()))?;
        }
        eprintln!(
            "conformance: npm ci (pinned drizzle-kit) into {} ...",
            dir.display()
        );
        let started = Instant::now();
        let npm = output(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&partial)
                .stdin(Stdio::null()),
            Duration::from_secs(600),
        );
        match npm {
            Ok(o) if o.code == 0 => {}
            Ok(o) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(format!(
                    "`npm ci` in {} exited {}:\n{}\n{NODE_HINT}",
                    partial.display(),
                    o.code,
                    tail(&o.all(), 40)
                ));
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(format!("`npm ci` could not run: {e}. {NODE_HINT}"));
            }
        }
        eprintln!(
            "conformance: npm ci took {:.1}s",
            started.elapsed().as_secs_f64()
        );
        std::fs::write(partial.join(COMPLETE), b"")
            .map_err(|e| format!("writing the install marker: {e}"))?;
        if dir.exists() && !dir.join(COMPLETE).is_file() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        if let Err(e) = std::fs::rename(&partial, &dir) {
            let _ = std::fs::remove_dir_all(&partial);
            if !dir.join(COMPLETE).is_file() {
                return Err(format!(
                    "moving {} to {}: {e}",
                    partial.display(),
                    dir.display()
                ));
            }
        }
    }

    let version = |pkg: &str| -> Result<String, String> {
        let path = dir.join("node_modules").join(pkg).join("package.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{} is missing ({e}); delete {} and rerun",
                path.display(),
                dir.display()
            )
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(v["version"].as_str().unwrap_or_default().to_string())
    };
    let pinned: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| format!("{}/package.json: {e}", src.display()))?;
    let install = Install {
        drizzle_kit: version("drizzle-kit")?,
        drizzle_orm: version("drizzle-orm")?,
        pg: version("pg")?,
        dir,
    };
    for (pkg, got) in [
        ("drizzle-kit", &install.drizzle_kit),
        ("drizzle-orm", &install.drizzle_orm),
        ("pg", &install.pg),
    ] {
        let want = pinned["devDependencies"][pkg].as_str().unwrap_or_default();
        if want != got {
            return Err(format!(
                "package.json pins {pkg} {want} but npm ci installed {got}: package.json and \
                 package-lock.json disagree; run `npm install --package-lock-only` in {}",
                src.display()
            ));
        }
    }
    eprintln!(
        "conformance: node {}, drizzle-kit {}, drizzle-orm {}, pg {}",
        node.stdout.trim(),
        install.drizzle_kit,
        install.drizzle_orm,
        install.pg
    );
    Ok(install)
}

const COMPLETE: &str = ".portcullis-install-complete";

/// One finished process.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` to completion, reading both pipes, killing it after `limit`.
fn output(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "did not finish within {limit:?}; output so far:\n{}{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `node <drizzle-kit>/bin.cjs <args>` in `cwd`, with a clean environment (no stray
/// DATABASE_URL; `cwd` holds no `.env` for drizzle-kit's dotenv to load). `NODE_PATH` lets schema
/// files outside the install folder import `drizzle-orm`.
pub fn drizzle_kit(cwd: &Path, args: &[&str]) -> Output {
    let install = install();
    let mut cmd = Command::new("node");
    cmd.arg(install.bin())
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("NODE_PATH", install.dir.join("node_modules"));
    output(&mut cmd, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("drizzle-kit {} in {}: {e}", args.join(" "), cwd.display()))
}

/// `drizzle-kit migrate` of `folder` into `url`, with drizzle's default tracking table.
pub fn migrate(url: &str, folder: &Path) -> Output {
    migrate_into(url, folder, None)
}

/// `drizzle-kit migrate` with `migrations: { schema, table }` in the config when given.
pub fn migrate_into(url: &str, folder: &Path, tracking: Option<(&str, &str)>) -> Output {
    let work = crate::twin::scratch("kit-migrate");
    let mut config = serde_json::json!({
        "dialect": "postgresql",
        // readMigrationFiles joins this verbatim: an absolute path is used as is.
        "out": folder.to_str().expect("UTF-8 path"),
        "dbCredentials": { "url": url },
    });
    if let Some((schema, table)) = tracking {
        config["migrations"] = serde_json::json!({ "schema": schema, "table": table });
    }
    std::fs::write(work.join("drizzle.config.json"), config.to_string()).unwrap();
    drizzle_kit(&work, &["migrate", "--config", "drizzle.config.json"])
}

/// `drizzle-kit generate` in `work`, which holds `drizzle.config.json` (with a relative `out`:
/// drizzle-kit 0.31 prefixes snapshot paths with `./`, so an absolute `out` breaks the second
/// generate, silently and with exit 0).
pub fn generate(work: &Path, name: &str, custom: bool) -> Output {
    let mut args = vec![
        "generate",
        "--config",
        "drizzle.config.json",
        "--name",
        name,
    ];
    if custom {
        args.push("--custom");
    }
    drizzle_kit(work, &args)
}

/// What drizzle-orm's `readMigrationFiles` returns for one journal entry, and the hash computed
/// separately with node's crypto exactly as that function does (readFileSync, toString, sha256).
#[derive(Debug, Clone)]
pub struct NodeMigration {
    pub tag: String,
    /// `createHash('sha256').update(readFileSync(file).toString()).digest('hex')`.
    pub crypto_hash: String,
    /// `readMigrationFiles(...)[i].hash`.
    pub drizzle_hash: String,
    /// `readMigrationFiles(...)[i].folderMillis`, as JSON text.
    pub folder_millis: String,
    /// `readMigrationFiles(...)[i].sql`: the chunks drizzle sends.
    pub chunks: Vec<String>,
}

/// Runs `drizzle/read-migrations.cjs` on `folder` (its journal must parse in node).
pub fn read_migrations(folder: &Path) -> Vec<NodeMigration> {
    let install = install();
    let script = package_dir().join("read-migrations.cjs");
    let out = output(
        Command::new("node")
            .arg(&script)
            .arg(&install.dir)
            .arg(folder),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("node {}: {e}", script.display()));
    assert_eq!(
        out.code,
        0,
        "node {} {} failed:\n{}",
        script.display(),
        folder.display(),
        out.all()
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "read-migrations.cjs printed bad JSON ({e}):\n{}",
            out.stdout
        )
    });
    v.as_array()
        .expect("an array")
        .iter()
        .map(|m| NodeMigration {
            tag: m["tag"].as_str().unwrap().to_string(),
            crypto_hash: m["crypto"].as_str().unwrap().to_string(),
            drizzle_hash: m["drizzle"].as_str().unwrap().to_string(),
            folder_millis: m["folderMillis"].to_string(),
            chunks: m["sql"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect(),
        })
        .collect()
}
