//! The real drizzle-kit and drizzle-orm 1.0, installed from npm exactly as pinned in
//! tests/v1/package.json and package-lock.json (`npm ci`), into a cache folder under target/
//! keyed by a hash of those two files. Without node and npm, or without the registry, the tests
//! fail saying so: they never skip.
//!
//! Everything drizzle runs lives under that cache folder (`work/<pid>-<n>/`), so that the schema
//! files and the drizzle.config.ts it loads resolve `drizzle-orm` from its node_modules. Work
//! folders of test processes that are gone are removed at the next start.

use crate::run::{Output, copy_dir, example_dir, finish, spawn};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The versions package.json pins (asserted by a test, so the two cannot drift apart).
pub const DRIZZLE_KIT: &str = "1.0.0-rc.5";
pub const DRIZZLE_ORM: &str = "1.0.0-rc.5";

/// How long one drizzle-kit command may take before the test fails.
const KIT_LIMIT: Duration = Duration::from_secs(180);

pub fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/v1")
}

/// The installed packages.
pub struct Drizzle {
    root: PathBuf,
}

static WORKS: AtomicUsize = AtomicUsize::new(0);

/// The installation, made on first use (once per lockfile, then reused from target/).
pub fn drizzle() -> &'static Drizzle {
    static D: OnceLock<Drizzle> = OnceLock::new();
    D.get_or_init(|| match install() {
        Ok(d) => d,
        Err(why) => panic!(
            "the drizzle 1.0 interop tests need node (18 or newer) and npm with access to the \
             npm registry, to install drizzle-kit {DRIZZLE_KIT} and drizzle-orm {DRIZZLE_ORM} \
             from tests/v1/package-lock.json with `npm ci`:\n{why}"
        ),
    })
}

fn install() -> Result<Drizzle, String> {
    let manifest = std::fs::read(package_dir().join("package.json")).map_err(|e| e.to_string())?;
    let lock = std::fs::read(package_dir().join("package-lock.json")).map_err(|e| e.to_string())?;
    let mut both = manifest.clone();
    both.extend_from_slice(&lock);
    let key = &portcullis::source::split::hex(&sha256(&both))[..16];
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("drizzle-v1");
    let root = base.join(key);
    let marker = root.join("node_modules/.portcullis-installed");
    if !marker.exists() {
        let node = Command::new("node")
            .arg("--version")
            .output()
            .map_err(|e| format!("`node --version` could not run: {e}"))?;
        let tmp = base.join(format!("{key}.installing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        std::fs::write(tmp.join("package.json"), &manifest).map_err(|e| e.to_string())?;
        std::fs::write(tmp.join("package-lock.json"), &lock).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let out = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .current_dir(&tmp)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("`npm ci` could not run: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in {} failed ({}, node {}):\n{}{}",
                tmp.display(),
                out.status,
                String::from_utf8_lossy(&node.stdout).trim(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(tmp.join("node_modules/.portcullis-installed"), "")
            .map_err(|e| e.to_string())?;
        if std::fs::rename(&tmp, &root).is_err() {
            // Another test process finished first; use its copy.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        eprintln!(
            "installed drizzle-kit {DRIZZLE_KIT} and drizzle-orm {DRIZZLE_ORM} into {} in {:.0?}",
            root.display(),
            started.elapsed()
        );
    }
    remove_stale_work(&root.join("work"));
    Ok(Drizzle { root })
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Removes work folders whose test process is gone.
fn remove_stale_work(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or("");
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A scratch folder under the installation (removed on drop).
pub struct Work {
    pub dir: PathBuf,
    keep: bool,
}

impl Drop for Work {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drizzle {
    pub fn work(&self) -> Work {
        let dir = self.root.join("work").join(format!(
            "{}-{}",
            std::process::id(),
            WORKS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Work { dir, keep: false }
    }

    /// `drizzle-kit <args>` in `cwd`, with `DATABASE_URL` when given.
    pub fn kit(&self, cwd: &Path, args: &[&str], url: Option<&str>) -> Output {
        let mut cmd = Command::new("node");
        cmd.arg(self.root.join("node_modules/drizzle-kit/bin.cjs"))
            .args(args)
            .current_dir(cwd)
            .env("LANG", "C.UTF-8")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(url) = url {
            cmd.env("DATABASE_URL", url);
        }
        finish(spawn(&mut cmd), Instant::now(), KIT_LIMIT)
    }

    /// `drizzle-kit migrate` of drizzle 1.0 on `folder` against `url`, with the default
    /// tracking table, as a project's drizzle.config.ts would configure it.
    pub fn migrate(&self, url: &str, folder: &Path) -> Output {
        let work = self.work();
        std::fs::write(
            work.dir.join("drizzle.config.ts"),
            format!(
                "export default {{\n  dialect: 'postgresql',\n  out: {:?},\n  dbCredentials: \
                 {{ url: process.env.DATABASE_URL! }},\n}};\n",
                folder.display().to_string()
            ),
        )
        .unwrap();
        let out = self.kit(
            &work.dir,
            &["migrate", "--config", "drizzle.config.ts"],
            Some(url),
        );
        assert_eq!(
            out.code,
            0,
            "drizzle-kit {DRIZZLE_KIT} migrate failed on {}\n--- stdout\n{}\n--- stderr\n{}",
            folder.display(),
            out.stdout,
            out.stderr
        );
        out
    }

    /// Node's `localeCompare` order for `names` (input first sorted by code unit, as
    /// `readdirSync` returns them).
    pub fn locale_sort(&self, names: &[String]) -> Vec<String> {
        let mut child = Command::new("node")
            .args([
                "-e",
                "const a = JSON.parse(require('fs').readFileSync(0, 'utf8')); a.sort(); \
                 a.sort((x, y) => x.localeCompare(y)); process.stdout.write(JSON.stringify(a));",
            ])
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(serde_json::to_string(names).unwrap().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "node failed");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The example app's schema steps (examples/drizzle-app/steps), each turned into a migration by
/// drizzle-kit 1.0's `generate`, once per test process: a real folder-layout folder.
pub fn generated() -> &'static Path {
    static GEN: OnceLock<PathBuf> = OnceLock::new();
    GEN.get_or_init(|| {
        let d = drizzle();
        let mut work = d.work();
        work.keep = true;
        let steps_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/drizzle-app/steps");
        let mut steps: Vec<PathBuf> = std::fs::read_dir(&steps_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "ts"))
            .collect();
        steps.sort();
        let out = work.dir.join("drizzle");
        let mut last_second = 0;
        for step in &steps {
            let stem = step.file_stem().unwrap().to_string_lossy().into_owned();
            let name = &stem[3..];
            // One migration per second, so their order is that of the steps.
            while now_secs() <= last_second {
                std::thread::sleep(Duration::from_millis(50));
            }
            std::fs::copy(step, work.dir.join("schema.ts")).unwrap();
            let run = d.kit(
                &work.dir,
                &[
                    "generate",
                    "--dialect",
                    "postgresql",
                    "--schema",
                    "./schema.ts",
                    "--out",
                    "./drizzle",
                    "--name",
                    name,
                ],
                None,
            );
            assert_eq!(
                run.code,
                0,
                "drizzle-kit {DRIZZLE_KIT} generate failed for {}\n{}{}",
                step.display(),
                run.stdout,
                run.stderr
            );
            last_second = now_secs();
        }
        let folders = migration_folders(&out);
        assert_eq!(folders.len(), steps.len(), "{folders:?}");
        out
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The example app's journal folder (written by drizzle-kit 0.31.11) converted by drizzle-kit
/// 1.0's `up`, once per test process.
pub fn converted() -> &'static Path {
    static UP: OnceLock<PathBuf> = OnceLock::new();
    UP.get_or_init(|| {
        let d = drizzle();
        let mut work = d.work();
        work.keep = true;
        let out = work.dir.join("drizzle");
        copy_dir(&example_dir(), &out);
        let run = d.kit(
            &work.dir,
            &["up", "--dialect", "postgresql", "--out", "./drizzle"],
            None,
        );
        assert_eq!(
            run.code, 0,
            "drizzle-kit {DRIZZLE_KIT} up failed\n{}{}",
            run.stdout, run.stderr
        );
        assert!(!out.join("meta").exists(), "drizzle-kit up left meta/");
        out
    })
}

/// The migration folder names in `dir`, in byte order.
pub fn migration_folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("migration.sql").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
