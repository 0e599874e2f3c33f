//! The only reader of the migrations folder, in either of drizzle-kit's layouts: the 0.x journal
//! (`meta/_journal.json` + `<tag>.sql`) and 1.0's folders (`<timestamp>_<name>/migration.sql`).
//! The parsers, ordering, hashing and splitting are pure (`journal`, `folders`, `collate`,
//! `split`); [`load`] is the thin disk loader that detects the layout and runs them, before any
//! connection.

pub mod collate;
pub mod folders;
pub mod journal;
pub mod lexer;
pub mod split;

use crate::error::Error;
use crate::report::{self, drizzle_up_folder_name};
use std::path::{Path, PathBuf};

pub use split::{BREAKPOINT, Chunk};

/// Which drizzle-kit wrote the folder, and so which migrator's rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// drizzle-kit 0.x: `meta/_journal.json` lists `<tag>.sql` files; pending = newer than the
    /// newest `created_at` (the high-water mark).
    Journal,
    /// drizzle-kit 1.0: one `<YYYYMMDDHHmmss>_<name>/migration.sql` folder per migration;
    /// pending = its folder name is not in the tracking table's `name` column.
    Folders,
}

impl Layout {
    /// How status and messages name it.
    pub fn label(self) -> &'static str {
        match self {
            Layout::Journal => "journal",
            Layout::Folders => "folders",
        }
    }
}

/// One migration of the folder, ready to plan and apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// 0-based position in the application order (journal order, or drizzle 1.0's folder order).
    pub position: usize,
    /// The journal tag, or the folder name in the folder layout.
    pub tag: String,
    /// The `created_at` drizzle records, in milliseconds: the journal `when`, or the folder's
    /// timestamp at second precision.
    pub when: i64,
    /// What drizzle 1.0 records in the `name` column: the folder name, or for a journal entry
    /// the folder name `drizzle-kit up` gives it.
    pub name: String,
    /// The file, as a path under the configured folder (for messages).
    pub path: PathBuf,
    /// The decoded file text (BOM, CRLF and all), exactly what drizzle hashes and splits.
    pub text: String,
    /// Lowercase hex sha256 of `text`.
    pub hash: String,
    /// `Some(reason)` when the migration must run outside a transaction (a statement that
    /// refuses one, or the `-- portcullis: no-transaction` marker); set by [`load`].
    pub no_transaction: Option<String>,
}

impl Migration {
    /// Builds a migration from its journal entry and its file's bytes.
    pub fn new(position: usize, tag: &str, when: i64, path: PathBuf, bytes: &[u8]) -> Migration {
        let text = split::decode(bytes);
        let hash = split::hash(&text);
        Migration {
            position,
            tag: tag.to_string(),
            when,
            name: drizzle_up_folder_name(tag, when),
            path,
            text,
            hash,
            no_transaction: None,
        }
    }

    /// Builds a migration from a 1.0 folder: `name` is the folder name, `millis` its timestamp.
    pub fn from_folder(
        position: usize,
        name: &str,
        millis: i64,
        path: PathBuf,
        bytes: &[u8],
    ) -> Migration {
        Migration {
            name: name.to_string(),
            ..Migration::new(position, name, millis, path, bytes)
        }
    }

    /// The statement chunks, split exactly as drizzle splits them.
    pub fn chunks(&self) -> Vec<Chunk<'_>> {
        split::split(&self.text)
    }

    /// The file path for messages.
    pub fn file(&self) -> String {
        self.path.display().to_string()
    }
}

/// The folder's migrations in application order, plus warnings worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub dir: PathBuf,
    pub layout: Layout,
    pub migrations: Vec<Migration>,
    pub warnings: Vec<String>,
}

/// Reads and checks the whole folder, in whichever layout it is: a journal (`meta/_journal.json`)
/// means drizzle-kit 0.x, subfolders holding `migration.sql` mean drizzle-kit 1.0; both or
/// neither is refused. Every problem is collected and reported together (exit 3), each naming
/// its file.
pub fn load(dir: &Path) -> Result<Folder, Error> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Source(format!(
                "the migrations folder {shown} is not a directory. Point \
                 PORTCULLIS_MIGRATIONS_DIR (or --migrations-dir) at drizzle-kit's `out` folder."
            )));
        }
        Err(e) => {
            return Err(Error::Source(format!(
                "the migrations folder {shown} cannot be read ({e}); relative paths are resolved \
                 against the working directory {}. Point PORTCULLIS_MIGRATIONS_DIR (or \
                 --migrations-dir) at drizzle-kit's `out` folder, or check that the image copies it.",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "(unknown)".into())
            )));
        }
    }
    let journal_path = dir.join("meta").join("_journal.json");
    let listing = list_migration_folders(dir)?;
    // drizzle-orm 1.0 refuses a folder with a journal, 0.x never looks at subfolders: with both
    // there is no telling which drizzle the project is on (E38).
    match (journal_path.exists(), listing.names.is_empty()) {
        (true, true) => load_journal(dir, &journal_path, &listing.links),
        (false, false) => load_folders(dir, listing),
        (true, false) => Err(Error::Source(format!(
            "{shown} holds both a drizzle-kit 0.x journal (meta/_journal.json) and {} drizzle-kit \
             1.0 migration folder{} ({}), so portcullis cannot tell which drizzle the project is \
             on: drizzle-orm 1.0 refuses such a folder and 0.x ignores the subfolders. If the \
             project moved to drizzle-kit 1.0, finish the move with `drizzle-kit up` (it turns \
             every journal entry into a folder and deletes meta/); if it is still on 0.x, remove \
             the folders (written by a drizzle-kit 1.0 `generate`?).",
            listing.names.len(),
            if listing.names.len() == 1 { "" } else { "s" },
            sample(&listing.names)
        ))),
        (false, true) => Err(Error::Source(format!(
            "{shown} has no meta/_journal.json (drizzle-kit 0.x) and no \
             <timestamp>_<name>/migration.sql folders (drizzle-kit 1.0), so it is not a \
             drizzle-kit migrations folder.{} Point PORTCULLIS_MIGRATIONS_DIR at the folder \
             configured as `out` in drizzle.config, and check that the image copies all of it \
             (meta/ included).",
            match journal_folders_near(dir).as_slice() {
                [] => String::new(),
                near => format!(
                    " A journal is in {}: is that the folder meant?",
                    near.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            }
        ))),
    }
}

/// Folders next to `dir` that hold a drizzle-kit 0.x journal, for a mistaken
/// PORTCULLIS_MIGRATIONS_DIR: its parent when `dir` is the `meta` folder itself, and its
/// subfolders (the project root or `drizzle/` given instead of the `out` folder).
fn journal_folders_near(dir: &Path) -> Vec<PathBuf> {
    let has_journal = |d: &Path| d.join("meta").join("_journal.json").is_file();
    let mut near = Vec::new();
    if dir.join("_journal.json").is_file() {
        near.push(match (dir.file_name(), dir.parent()) {
            // `.` or `..`: its parent by name.
            (None, _) => dir.join(".."),
            (Some(_), Some(parent)) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            (Some(_), _) => PathBuf::from("."),
        });
    }
    let mut subs: Vec<PathBuf> = file_names(dir)
        .map(|name| dir.join(name))
        .filter(|p| p.is_dir() && has_journal(p))
        .collect();
    subs.sort();
    near.extend(subs);
    near
}

/// A few names for a message.
fn sample(names: &[String]) -> String {
    match names.len() {
        0..=3 => names.join(", "),
        n => format!("{}, ... and {} more", names[..3].join(", "), n - 3),
    }
}

/// The subfolders drizzle-orm 1.0 treats as migrations, and the entries it ignores.
struct Listing {
    /// Entries `X` for which `X/migration.sql` exists, in no particular order.
    names: Vec<String>,
    /// Subfolders with a timestamp-like name but no `migration.sql` (ignored, worth a warning).
    ignored_dirs: Vec<String>,
    /// Top-level `.sql` files (ignored by drizzle 1.0).
    loose_sql: Vec<String>,
    /// Top-level entries that are symbolic links (see [`outside_warning`]).
    links: std::collections::HashSet<String>,
}

fn list_migration_folders(dir: &Path) -> Result<Listing, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::Source(format!(
            "the migrations folder {} cannot be listed ({e}).",
            dir.display()
        ))
    })?;
    let mut listing = Listing {
        names: Vec::new(),
        ignored_dirs: Vec::new(),
        loose_sql: Vec::new(),
        links: std::collections::HashSet::new(),
    };
    let mut problems = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        // Only a folder (or a link to one) can hold a migration.sql; a journal folder's 100k
        // files cost no extra look-up.
        let (is_file, maybe_dir) = match entry.file_type() {
            Ok(t) => (t.is_file(), t.is_dir() || t.is_symlink()),
            Err(_) => (false, true),
        };
        let has_sql = maybe_dir && path.join("migration.sql").exists();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            if has_sql {
                problems.push(format!(
                    "{}: the folder name is not valid UTF-8; rename it to \
                     <YYYYMMDDHHmmss>_<name>",
                    path.display()
                ));
            }
            continue;
        };
        if is_link {
            listing.links.insert(name.clone());
        }
        if has_sql && name.chars().any(char::is_control) {
            // A newline or an escape code would forge log lines, as in a journal tag.
            problems.push(format!(
                "{}: the folder name {name:?} contains a control character (a newline, tab or \
                 escape); rename it to <YYYYMMDDHHmmss>_<name>",
                dir.display()
            ));
        } else if has_sql {
            listing.names.push(name);
        } else if maybe_dir && folders::folder_millis(&name).is_some() && path.is_dir() {
            listing.ignored_dirs.push(name);
        } else if is_file && name.ends_with(".sql") {
            listing.loose_sql.push(name);
        }
    }
    if !problems.is_empty() {
        return Err(Error::Source(problems_message("migrations", &problems)));
    }
    listing.names.sort();
    listing.ignored_dirs.sort();
    listing.loose_sql.sort();
    Ok(listing)
}

/// drizzle-kit 1.0's layout, read as drizzle-orm 1.0 reads it.
fn load_folders(dir: &Path, mut listing: Listing) -> Result<Folder, Error> {
    let links = std::mem::take(&mut listing.links);
    let mut names = listing.names;
    folders::sort(&mut names);
    let mut problems = Vec::new();
    let mut warnings = folders::order_warnings(&names);
    let mut migrations = Vec::with_capacity(names.len());
    for (position, name) in names.iter().enumerate() {
        let path = dir.join(name).join("migration.sql");
        let Some(millis) = folders::folder_millis(name) else {
            problems.push(format!(
                "{}: the folder name does not start with a 14-digit timestamp \
                 (YYYYMMDDHHmmss_name, as drizzle-kit 1.0 writes it), so drizzle-orm 1.0 cannot \
                 compute its created_at and fails when recording it. Rename the folder",
                dir.join(name).display()
            ));
            continue;
        };
        if !folders::is_calendar_date(name, millis) {
            warnings.push(format!(
                "{}: the timestamp {} is not a valid date and time; drizzle-orm 1.0 reads it as \
                 {} (JavaScript's Date.UTC rolls over), and so does portcullis",
                dir.join(name).display(),
                &name[..14],
                report::utc(millis)
            ));
        }
        match read_regular(&path) {
            Ok(bytes) => {
                migrations.push(Migration::from_folder(position, name, millis, path, &bytes))
            }
            Err(e) => problems.push(format!("{}: cannot be read ({e})", path.display())),
        }
    }
    mark_transaction_refusals(&mut migrations, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Source(problems_message("migrations", &problems)));
    }
    if !listing.ignored_dirs.is_empty() {
        warnings.push(format!(
            "{} holds folder(s) without a migration.sql, which neither drizzle nor portcullis \
             applies: {}",
            dir.display(),
            listing.ignored_dirs.join(", ")
        ));
    }
    let folder_names: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let loose: Vec<&String> = listing
        .loose_sql
        .iter()
        .filter(|f| {
            !f.strip_suffix(".sql")
                .is_some_and(|n| folder_names.contains(n))
        })
        .collect();
    if !loose.is_empty() {
        warnings.push(format!(
            "{} holds .sql files outside migration folders, which drizzle-orm 1.0 (and \
             portcullis) ignores: {}. With drizzle-kit 1.0 every migration is a \
             <timestamp>_<name>/migration.sql folder",
            dir.display(),
            loose
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    warnings.extend(outside_warning(dir, &migrations, &links));
    warnings.extend(bom_warnings(&migrations));
    Ok(Folder {
        dir: dir.to_path_buf(),
        layout: Layout::Folders,
        migrations,
        warnings,
    })
}

/// drizzle-kit 0.x's layout: the journal, then every file it names.
fn load_journal(
    dir: &Path,
    journal_path: &Path,
    links: &std::collections::HashSet<String>,
) -> Result<Folder, Error> {
    let shown = dir.display();
    let bytes = read_regular(journal_path).map_err(|e| {
        Error::Source(format!(
            "{}: cannot read the journal ({e}).",
            journal_path.display()
        ))
    })?;
    let journal = journal::parse(&bytes, &journal_path.display().to_string())
        .map_err(|problems| Error::Source(problems_message("migrations", &problems)))?;
    let mut problems = Vec::new();
    let mut migrations = Vec::with_capacity(journal.entries.len());
    // The folder's names, listed only once a file is missing.
    let mut listed: Option<Vec<String>> = None;
    for entry in &journal.entries {
        let path = dir.join(format!("{}.sql", entry.tag));
        match read_regular(&path) {
            Ok(bytes) => migrations.push(Migration::new(
                entry.position,
                &entry.tag,
                entry.when,
                path,
                &bytes,
            )),
            Err(e) => {
                let expected = format!("{}.sql", entry.tag);
                let near = if e.kind() == std::io::ErrorKind::NotFound {
                    let names = listed.get_or_insert_with(|| {
                        let mut names: Vec<String> = file_names(dir).collect();
                        names.sort();
                        names
                    });
                    near_names(names, &expected)
                } else {
                    Vec::new()
                };
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "the file does not exist".to_string(),
                    std::io::ErrorKind::IsADirectory => "it is a directory".to_string(),
                    _ => e.to_string(),
                };
                let what_to_do = if near.is_empty() {
                    "Restore the file (or remove the entry with `drizzle-kit drop` if the \
                     migration was abandoned)"
                        .to_string()
                } else {
                    format!(
                        "The folder has {}, a name that differs only in letter case or spaces: \
                         Linux tells such names apart, macOS and Windows do not, so a rename \
                         made there may not have reached git. Rename it to {expected} (`git mv`)",
                        near.iter()
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )
                };
                problems.push(format!(
                    "{}: journal entry {} (tag {}) names this file, but {why}. {what_to_do}",
                    path.display(),
                    entry.position,
                    entry.tag
                ));
            }
        }
    }
    mark_transaction_refusals(&mut migrations, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Source(problems_message("migrations", &problems)));
    }

    let mut warnings = journal.warnings;
    warnings.extend(outside_warning(dir, &migrations, links));
    let unlisted = unlisted_sql_files(dir, &journal.entries);
    if !unlisted.is_empty() {
        warnings.push(format!(
            "{shown} holds .sql files that the journal does not list, so neither drizzle nor \
             portcullis will apply them: {}. Generate migrations with drizzle-kit (or add \
             journal entries) instead of adding files by hand",
            unlisted.join(", ")
        ));
    }
    warnings.extend(bom_warnings(&migrations));
    Ok(Folder {
        dir: dir.to_path_buf(),
        layout: Layout::Journal,
        migrations,
        warnings,
    })
}

/// Where `m` holds what only a client such as psql can run ([`lexer::ClientOnly`]), which no
/// file sent to the server as SQL can (`file:line:column: why`). Checked for the migrations a
/// run would apply, before it applies any: an applied one stays as it is (drizzle applied a
/// `COPY ... TO STDOUT`, discarding its rows).
pub fn client_only_problems(m: &Migration) -> Vec<String> {
    m.chunks()
        .iter()
        .flat_map(|chunk| {
            lexer::client_only(chunk.text)
                .into_iter()
                .map(move |(at, item)| (chunk.offset + at, item))
        })
        .map(|(at, item)| {
            let (line, column) = split::line_col(&m.text, at);
            format!("{}:{line}:{column}: {}", m.file(), item.explain())
        })
        .collect()
}

/// Marks the migrations that must run outside a transaction, collecting the files where that
/// cannot work (in either layout).
fn mark_transaction_refusals(migrations: &mut [Migration], problems: &mut Vec<String>) {
    for m in migrations {
        match lexer::transaction_refusal(m) {
            Ok(reason) => m.no_transaction = reason,
            Err(problem) => problems.push(problem),
        }
    }
}

fn bom_warnings(migrations: &[Migration]) -> Vec<String> {
    migrations
        .iter()
        .filter(|m| m.text.starts_with('\u{feff}'))
        .map(|m| {
            format!(
                "{} starts with a UTF-8 byte order mark; drizzle-kit would send it to the server \
                 and fail, portcullis strips it before sending (the recorded hash still covers it)",
                m.file()
            )
        })
        .collect()
}

/// One problem as a sentence, or several numbered under "the `folder` folder has N problems"
/// (`folder`: "migrations" or "seeds").
pub(crate) fn problems_message(folder: &str, problems: &[String]) -> String {
    if problems.len() == 1 {
        return format!("{}.", problems[0]);
    }
    let mut out = format!("the {folder} folder has {} problems:", problems.len());
    for (i, p) in problems.iter().enumerate() {
        out.push_str(&format!("\n  {}. {p}.", i + 1));
    }
    out
}

/// The names of the entries of `dir` that are UTF-8, in the order the file system lists them
/// (none when it cannot be listed).
fn file_names(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
}

/// The names among `names` that are `expected` but for letter case and white space: a file
/// renamed on a file system that ignores case, or saved with a stray space.
fn near_names(names: &[String], expected: &str) -> Vec<String> {
    let fold = |n: &str| -> String {
        n.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let want = fold(expected);
    names
        .iter()
        .filter(|n| n.as_str() != expected && fold(n) == want)
        .cloned()
        .collect()
}

fn unlisted_sql_files(dir: &Path, entries: &[journal::JournalEntry]) -> Vec<String> {
    // A set, not a scan of the entries per file: 100k files must not take minutes.
    let tags: std::collections::HashSet<&str> = entries.iter().map(|e| e.tag.as_str()).collect();
    let mut names: Vec<String> = file_names(dir)
        .filter(|n| {
            n.strip_suffix(".sql")
                .is_some_and(|stem| !tags.contains(stem))
        })
        .collect();
    names.sort();
    names
}

/// The largest file portcullis reads. PostgreSQL refuses a query over 1 GB, so a bigger
/// migration could never be applied; refusing it up front also keeps a mistaken path (a disk
/// image, a log) from being read into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Reads a file of the folder, refusing what is not a regular file (a FIFO would block forever,
/// `/dev/zero` would never end) or is larger than [`MAX_FILE_BYTES`]. Symbolic links are
/// followed, as drizzle (Node's `readFileSync`) follows them.
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    // Opened first and then asked what it is (open, fstat, read, close: four system calls per
    // file, which is most of what reading a 1000-file folder costs). O_NONBLOCK keeps the open of
    // a FIFO from waiting for a writer; it changes nothing for a regular file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(Error::new(ErrorKind::IsADirectory, "it is a directory"));
    }
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it is not a regular file (a FIFO, socket or device, perhaps through a symbolic \
             link), which portcullis refuses to read",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "it is {} bytes, larger than the 1 GiB PostgreSQL accepts in one query",
                meta.len()
            ),
        ));
    }
    // One read usually returns the whole file; a read shorter than asked once the size fstat
    // gave is reached is the end of it (so no extra read just to see the end). A file that grows
    // meanwhile is read on to its end, at most one byte past the limit.
    let size = meta.len() as usize;
    let mut bytes = vec![0u8; size + 1];
    let mut filled = 0;
    loop {
        let n = match file.read(&mut bytes[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;
        if n == 0 || filled == size || filled == bytes.len() {
            break;
        }
    }
    bytes.truncate(filled);
    if filled > size {
        (&mut file)
            .take(MAX_FILE_BYTES + 1 - filled as u64)
            .read_to_end(&mut bytes)?;
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "it grew past the 1 GiB PostgreSQL accepts in one query while being read",
        ));
    }
    Ok(bytes)
}

/// Migration files whose real location (symbolic links resolved) is outside the folder's real
/// location. They are read anyway (Kubernetes ConfigMaps, Bazel and Nix lay folders out as
/// links), but the operator is told, since a link can point somewhere unexpected.
fn outside_warning(
    dir: &Path,
    migrations: &[Migration],
    links: &std::collections::HashSet<String>,
) -> Option<String> {
    let outside = outside_the_folder(dir, migrations, links);
    (!outside.is_empty()).then(|| {
        format!(
            "{} migration file(s) of {} resolve (through symbolic links) to files outside \
             it: {}{}. portcullis reads them as drizzle would, and records their hashes; check \
             that these are the files you mean to deploy",
            outside.len(),
            dir.display(),
            outside[..outside.len().min(10)].join(", "),
            if outside.len() > 10 {
                format!(" and {} more", outside.len() - 10)
            } else {
                String::new()
            }
        )
    })
}

fn outside_the_folder(
    dir: &Path,
    migrations: &[Migration],
    links: &std::collections::HashSet<String>,
) -> Vec<String> {
    // Only a path with a symbolic link below the folder can lead out of it. The folder's
    // listing already says which top-level entries are links, so a journal file costs no
    // system call here; resolving every path (a readlink per component of the absolute path)
    // was most of the system time of a 1000-file no-op run.
    let linked: Vec<&Migration> = migrations
        .iter()
        .filter(|m| has_link_below(dir, &m.path, links))
        .collect();
    if linked.is_empty() {
        return Vec::new();
    }
    let Ok(root) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    linked
        .into_iter()
        .filter_map(|m| {
            let real = std::fs::canonicalize(&m.path).ok()?;
            (!real.starts_with(&root)).then(|| format!("{} -> {}", m.file(), real.display()))
        })
        .collect()
}

/// Whether `path` (inside `dir`) passes through a symbolic link below `dir`, or cannot be
/// checked (then it is resolved, to be safe). `links` are the top-level entries that are links,
/// from the folder's listing; deeper components are looked at one by one.
fn has_link_below(dir: &Path, path: &Path, links: &std::collections::HashSet<String>) -> bool {
    let Ok(relative) = path.strip_prefix(dir) else {
        return true;
    };
    let mut components = relative.components();
    let Some(first) = components.next() else {
        return true;
    };
    let Some(first) = first.as_os_str().to_str() else {
        return true;
    };
    if links.contains(first) {
        return true;
    }
    let mut at = dir.join(first);
    components.any(|c| {
        at.push(c);
        std::fs::symlink_metadata(&at).map_or(true, |m| m.file_type().is_symlink())
    })
}

#[cfg(test)]
mod tests {
    use super::near_names;

    #[test]
    fn near_names_differ_only_in_case_or_spaces() {
        let names: Vec<String> = [
            "0001_Gone.sql",
            "0001_gone .sql",
            "0001_gone.SQL",
            "0001_gone.sql.bak",
            "0001_gone.sql",
            "0002_gone.sql",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            near_names(&names, "0001_gone.sql"),
            ["0001_Gone.sql", "0001_gone .sql", "0001_gone.SQL"]
        );
        assert!(near_names(&names, "0003_x.sql").is_empty());
    }
}
