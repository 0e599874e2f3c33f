//! The only reader of the migrations folder. The journal parser, hashing and splitting are pure
//! (`journal`, `split`); [`load`] is the thin disk loader that runs them, before any connection.

pub mod collate;
pub mod folders;
pub mod journal;
pub mod lexer;
pub mod split;

use crate::error::Error;
use std::path::{Path, PathBuf};

pub use split::{BREAKPOINT, Chunk};

/// One migration of the folder, ready to plan and apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// 0-based position in the journal: the application order.
    pub position: usize,
    pub tag: String,
    /// Journal `when` in milliseconds: the `created_at` drizzle records.
    pub when: i64,
    /// The file, as a path under the configured folder (for messages).
    pub path: PathBuf,
    /// The decoded file text (BOM, CRLF and all), exactly what drizzle hashes and splits.
    pub text: String,
    /// Lowercase hex sha256 of `text`.
    pub hash: String,
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
            path,
            text,
            hash,
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
    pub migrations: Vec<Migration>,
    pub warnings: Vec<String>,
}

/// Reads and checks the whole folder: the journal, then every file it names. Every problem is
/// collected and reported together (exit 3), each naming its file.
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
    let bytes = match std::fs::read(&journal_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Source(missing_journal_message(dir)));
        }
        Err(e) => {
            return Err(Error::Source(format!(
                "{}: cannot read the journal ({e}).",
                journal_path.display()
            )));
        }
    };
    let journal = journal::parse(&bytes, &journal_path.display().to_string())
        .map_err(|problems| Error::Source(problems_message(&problems)))?;

    let mut problems = Vec::new();
    let mut migrations = Vec::with_capacity(journal.entries.len());
    for entry in &journal.entries {
        let path = dir.join(format!("{}.sql", entry.tag));
        match std::fs::read(&path) {
            Ok(bytes) => migrations.push(Migration::new(
                entry.position,
                &entry.tag,
                entry.when,
                path,
                &bytes,
            )),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "the file does not exist".to_string(),
                    std::io::ErrorKind::IsADirectory => "it is a directory".to_string(),
                    _ => e.to_string(),
                };
                problems.push(format!(
                    "{}: journal entry {} (tag {}) names this file, but {why}. Restore the file \
                     (or remove the entry with `drizzle-kit drop` if the migration was abandoned)",
                    path.display(),
                    entry.position,
                    entry.tag
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Source(problems_message(&problems)));
    }

    let mut warnings = journal.warnings;
    let unlisted = unlisted_sql_files(dir, &journal.entries);
    if !unlisted.is_empty() {
        warnings.push(format!(
            "{shown} holds .sql files that the journal does not list, so neither drizzle nor \
             portcullis will apply them: {}. Generate migrations with drizzle-kit (or add \
             journal entries) instead of adding files by hand",
            unlisted.join(", ")
        ));
    }
    for m in &migrations {
        if m.text.starts_with('\u{feff}') {
            warnings.push(format!(
                "{} starts with a UTF-8 byte order mark; drizzle-kit would send it to the server \
                 and fail, portcullis strips it before sending (the recorded hash still covers it)",
                m.file()
            ));
        }
    }
    Ok(Folder {
        dir: dir.to_path_buf(),
        migrations,
        warnings,
    })
}

fn problems_message(problems: &[String]) -> String {
    if problems.len() == 1 {
        return format!("{}.", problems[0]);
    }
    let mut out = format!("the migrations folder has {} problems:", problems.len());
    for (i, p) in problems.iter().enumerate() {
        out.push_str(&format!("\n  {}. {p}.", i + 1));
    }
    out
}

fn missing_journal_message(dir: &Path) -> String {
    let v1 = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.path().join("migration.sql").is_file())
        })
        .unwrap_or(false);
    if v1 {
        format!(
            "{} uses the drizzle-kit 1.0 folder layout (<timestamp>_<name>/migration.sql, no \
             meta/_journal.json), which this version of portcullis does not read yet. Use \
             drizzle-kit 0.x's journal layout, or a portcullis release with 1.0 support.",
            dir.display()
        )
    } else {
        format!(
            "{} has no meta/_journal.json, so it is not a drizzle-kit migrations folder. Point \
             PORTCULLIS_MIGRATIONS_DIR at the folder configured as `out` in drizzle.config (it \
             holds meta/_journal.json and the .sql files), and check that the image copies meta/.",
            dir.display()
        )
    }
}

fn unlisted_sql_files(dir: &Path, entries: &[journal::JournalEntry]) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.strip_suffix(".sql")
                .is_some_and(|stem| !entries.iter().any(|e| e.tag == stem))
        })
        .collect();
    names.sort();
    names
}
