//! What happened, in words: dates, the run summary, and names derived from timestamps. Pure
//! functions of values, so each line can be tested exactly.

use std::time::Duration;

/// Civil date (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day, hour, minute, second) in UTC of a Unix millisecond timestamp.
fn utc_parts(ms: i64) -> (i64, u32, u32, u32, u32, u32) {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        y,
        mo,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `2023-03-31 14:12:03 UTC` for a journal `when` (milliseconds).
pub fn utc(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// The folder name `drizzle-kit up` gives a journal entry when converting to the 1.0 layout:
/// the UTC `YYYYMMDDHHmmss` of `when`, `_`, and the tag without its first `_`-separated part
/// (drizzle-compat.md 4.6). Written into a 1.0-shaped table's `name` column so drizzle 1.0
/// recognises the migration as applied.
pub fn drizzle_up_folder_name(tag: &str, when: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(when);
    let rest = tag.split('_').skip(1).collect::<Vec<_>>().join("_");
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}_{rest}")
}

/// `YYYYMMDDHHMMSS` in UTC, for backup table names.
pub fn stamp(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_parts(ms);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// The last line of a successful migrate.
pub fn summary(applied: &[(String, Duration)], total: Duration, known: usize) -> String {
    if applied.is_empty() {
        return format!(
            "up to date, {known} migration{} applied, nothing pending",
            if known == 1 { "" } else { "s" }
        );
    }
    let tags: Vec<&str> = applied.iter().map(|(t, _)| t.as_str()).collect();
    let listed = if tags.len() > 10 {
        format!(
            "{} ... {} ({} in all)",
            tags[..5].join(", "),
            tags[tags.len() - 2..].join(", "),
            tags.len()
        )
    } else {
        tags.join(", ")
    };
    format!(
        "applied {} migration{} in {} ms: {listed}",
        applied.len(),
        if applied.len() == 1 { "" } else { "s" },
        total.as_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // drizzle's own fixture: 0000_puzzling_flatman, when 1680271923328.
        assert_eq!(utc(1_680_271_923_328), "2023-03-31 14:12:03 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_107_542_399_000), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn up_folder_names_match_drizzle_kit_up() {
        assert_eq!(
            drizzle_up_folder_name("0000_puzzling_flatman", 1_680_271_923_328),
            "20230331141203_puzzling_flatman"
        );
        assert_eq!(
            drizzle_up_folder_name("20240101120000_init", 1_680_271_923_328),
            "20230331141203_init"
        );
        assert_eq!(drizzle_up_folder_name("init", 0), "19700101000000_");
    }

    #[test]
    fn summaries() {
        assert_eq!(
            summary(&[], Duration::from_millis(3), 120),
            "up to date, 120 migrations applied, nothing pending"
        );
        let applied = vec![
            ("0012_x".to_string(), Duration::from_millis(100)),
            ("0013_y".to_string(), Duration::from_millis(200)),
        ];
        assert_eq!(
            summary(&applied, Duration::from_millis(412), 14),
            "applied 2 migrations in 412 ms: 0012_x, 0013_y"
        );
        let many: Vec<_> = (0..12).map(|i| (format!("m{i}"), Duration::ZERO)).collect();
        assert!(
            summary(&many, Duration::ZERO, 12)
                .contains("m0, m1, m2, m3, m4 ... m10, m11 (12 in all)")
        );
    }
}

/// One migration's line in `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusEntry {
    /// The journal tag, or the folder name in drizzle-kit 1.0's layout.
    pub tag: String,
    /// What drizzle 1.0 records in `name`: the folder name, or for a journal entry the folder
    /// name `drizzle-kit up` gives it.
    pub name: String,
    /// Journal `when` in milliseconds, and as a UTC date.
    pub when: i64,
    pub when_utc: String,
    /// `applied`, `pending`, `out-of-order`, `edited` or `recorded-without-name`.
    pub state: &'static str,
    pub file: String,
    pub hash: String,
    /// The tracking row matched to it, if any.
    pub row_id: Option<i64>,
    /// The hash in that row when it differs from the file's.
    pub recorded_hash: Option<String>,
    /// `applied_at` of that row, where the table records it (drizzle 1.0 shape).
    pub applied_at: Option<String>,
    /// A remark: `line endings only`, `recorded under another when`, ...
    pub note: Option<String>,
}

/// A tracking row that matches no local migration (`applied-but-unknown-locally`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnknownRow {
    pub id: i64,
    pub hash: String,
    pub created_at: Option<String>,
    pub created_at_utc: Option<String>,
    pub applied_at: Option<String>,
}

/// Counts for the one-line summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatusCounts {
    pub applied: usize,
    pub pending: usize,
    pub out_of_order: usize,
    pub edited: usize,
    pub unknown: usize,
    pub unnamed: usize,
    pub recorded_earlier: usize,
}

/// The whole `status` document. Its JSON form is documented in README and kept stable:
/// fields are only ever added.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub version: &'static str,
    pub database: String,
    pub table: String,
    pub table_exists: bool,
    /// `0.x` (id, hash, created_at) or `1.0` (plus name, applied_at); `None` when absent.
    pub table_shape: Option<&'static str>,
    /// `journal` (drizzle-kit 0.x) or `folders` (drizzle-kit 1.0).
    pub layout: &'static str,
    pub migrations_dir: String,
    pub migrations: Vec<StatusEntry>,
    pub unknown_rows: Vec<UnknownRow>,
    /// Problems that would stop `migrate` (NULL or unreadable created_at, a bad table shape).
    pub problems: Vec<String>,
    /// What migrate will do besides applying (upgrading the table to drizzle 1.0's shape).
    pub notes: Vec<String>,
    pub counts: StatusCounts,
    pub summary: String,
    /// The seeds phase: files, states and last runs.
    pub seeds: SeedsStatus,
    /// The sessions holding the migration lock now, described (pid, application name, client,
    /// state, for how long); empty: no runner is migrating.
    pub migrating: Vec<String>,
}

impl Status {
    pub fn summary_line(counts: &StatusCounts, total: usize) -> String {
        let mut parts = vec![format!("{} of {total} applied", counts.applied)];
        for (n, what) in [
            (counts.pending, "pending"),
            (counts.out_of_order, "out of order"),
            (counts.edited, "edited after apply"),
            (counts.unnamed, "recorded without a name"),
            (
                counts.recorded_earlier,
                "recorded under an older created_at",
            ),
            (counts.unknown, "recorded but unknown here"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }

    /// An aligned table for people; `colour` adds ANSI colours to the state column.
    pub fn to_text(&self, colour: bool) -> String {
        let mut rows: Vec<[String; 4]> = vec![[
            "TAG".into(),
            "WHEN (UTC)".into(),
            "STATE".into(),
            "APPLIED AT".into(),
        ]];
        for m in &self.migrations {
            let state = match &m.note {
                Some(note) => format!("{} ({note})", m.state),
                None => m.state.to_string(),
            };
            rows.push([
                m.tag.clone(),
                m.when_utc.trim_end_matches(" UTC").to_string(),
                state,
                m.applied_at.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        for u in &self.unknown_rows {
            rows.push([
                format!("(row id {})", u.id),
                u.created_at_utc
                    .as_deref()
                    .map(|d| d.trim_end_matches(" UTC").to_string())
                    .unwrap_or_else(|| "-".into()),
                "applied-but-unknown-locally".into(),
                u.applied_at.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!(
            "{} on {}, {} tracked in {}{}\n\n",
            self.migrations_dir,
            self.database,
            self.migrations.len(),
            self.table,
            if self.table_exists {
                ""
            } else {
                " (not created yet)"
            }
        );
        for (i, r) in rows.iter().enumerate() {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                let shown = if colour && c == 2 && i > 0 {
                    let code = match cell.split(' ').next().unwrap_or("") {
                        "applied" => "32",
                        "pending" => "33",
                        _ => "31",
                    };
                    format!("\x1b[{code}m{cell}\x1b[0m")
                } else {
                    cell.clone()
                };
                line.push_str(&shown);
                if c < 3 {
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.seeds.to_text(colour));
        for n in &self.notes {
            out.push_str(&format!("\nnote: {n}\n"));
        }
        for p in &self.problems {
            out.push_str(&format!("\nproblem: {p}\n"));
        }
        if self.migrating.is_empty() {
            out.push_str("\nmigration lock: free, no runner is migrating now\n");
        } else {
            out.push_str(&format!(
                "\nmigration lock: held by {}: a runner is migrating now\n",
                self.migrating.join("; ")
            ));
        }
        out.push_str(&format!("\n{}\n", self.summary));
        out
    }
}

/// The last line of a seeds phase: what ran, in order, and what was left out as unchanged.
pub fn seeds_summary(ran: &[(String, Duration)], skipped: usize, total: Duration) -> String {
    let unchanged = if skipped > 0 {
        format!(", {skipped} unchanged left out (PORTCULLIS_SEED_MODE=changed)")
    } else {
        String::new()
    };
    if ran.is_empty() {
        return format!("seeds: none ran{unchanged}");
    }
    let names: Vec<&str> = ran.iter().map(|(n, _)| n.as_str()).collect();
    let listed = if names.len() > 10 {
        format!(
            "{} ... {} ({} in all)",
            names[..5].join(", "),
            names[names.len() - 2..].join(", "),
            names.len()
        )
    } else {
        names.join(", ")
    };
    format!(
        "seeds: ran {} in {} ms: {listed}{unchanged}",
        ran.len(),
        total.as_millis()
    )
}

/// One seed file in `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeedEntry {
    /// Its path under the seeds folder, as recorded (`1_roles.sql`, `staging/1_demo.sql`).
    pub name: String,
    pub file: String,
    pub hash: String,
    /// `new` (never ran here), `applied` (ran with this content) or `changed` (edited since).
    pub state: &'static str,
    /// The recorded hash when it differs from the file's.
    pub recorded_hash: Option<String>,
    pub run_count: i64,
    pub first_applied_at: Option<String>,
    pub last_applied_at: Option<String>,
    /// Whether `migrate` would run it now (every file in `always` mode).
    pub next_run: bool,
}

/// A tracking row whose file is gone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeedRow {
    pub name: String,
    pub hash: String,
    pub run_count: i64,
    pub first_applied_at: String,
    pub last_applied_at: String,
}

/// The seeds part of `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeedsStatus {
    pub dir: String,
    /// Whether the seeds folder exists (a missing one means no seeds).
    pub dir_exists: bool,
    pub env: Option<String>,
    /// `always` or `changed`.
    pub mode: &'static str,
    /// false when PORTCULLIS_SEEDS=false leaves them out of `migrate`.
    pub enabled: bool,
    pub table: String,
    pub table_exists: bool,
    pub files: Vec<SeedEntry>,
    pub recorded_only: Vec<SeedRow>,
    pub summary: String,
}

impl SeedsStatus {
    pub fn summary_line(files: &[SeedEntry], enabled: bool) -> String {
        if files.is_empty() {
            return "no seeds".into();
        }
        let count = |state: &str| files.iter().filter(|f| f.state == state).count();
        let mut parts = vec![format!(
            "{} seed{}",
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        )];
        for state in ["applied", "changed", "new"] {
            let n = count(state);
            if n > 0 {
                parts.push(format!("{n} {state}"));
            }
        }
        let next = files.iter().filter(|f| f.next_run).count();
        let tail = if enabled {
            format!("; migrate runs {next}")
        } else {
            "; off in migrate (PORTCULLIS_SEEDS=false)".to_string()
        };
        format!("{}{tail}", parts.join(", "))
    }

    /// The seeds section of the text status.
    pub fn to_text(&self, colour: bool) -> String {
        let env = self
            .env
            .as_deref()
            .map(|e| format!(" (+ {e}/)"))
            .unwrap_or_default();
        if self.files.is_empty() && self.recorded_only.is_empty() {
            let why = if self.dir_exists {
                "holds no .sql files"
            } else {
                "does not exist"
            };
            return format!("seeds: none ({}{env} {why})\n", self.dir);
        }
        let mut out = format!(
            "seeds in {}{env}, mode {}, tracked in {}{}\n\n",
            self.dir,
            self.mode,
            self.table,
            if self.table_exists {
                ""
            } else {
                " (not created yet)"
            }
        );
        let mut rows: Vec<[String; 4]> = vec![[
            "SEED".into(),
            "STATE".into(),
            "RUNS".into(),
            "LAST RUN (UTC)".into(),
        ]];
        let at = |t: &Option<String>| {
            t.as_deref()
                .map(|t| t.trim_end_matches(" UTC").to_string())
                .unwrap_or_else(|| "-".into())
        };
        for f in &self.files {
            rows.push([
                f.name.clone(),
                f.state.to_string(),
                f.run_count.to_string(),
                at(&f.last_applied_at),
            ]);
        }
        for r in &self.recorded_only {
            rows.push([
                r.name.clone(),
                "recorded, file gone".into(),
                r.run_count.to_string(),
                at(&Some(r.last_applied_at.clone())),
            ]);
        }
        let widths: Vec<usize> = (0..4)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for (i, r) in rows.iter().enumerate() {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if colour && c == 1 && i > 0 {
                    let code = match cell.as_str() {
                        "applied" => "32",
                        "new" | "changed" => "33",
                        _ => "31",
                    };
                    line.push_str(&format!("\x1b[{code}m{cell}\x1b[0m"));
                } else {
                    line.push_str(cell);
                }
                if c < 3 {
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&format!("\n{}\n", self.summary));
        out
    }
}

#[cfg(test)]
mod seed_tests {
    use super::*;

    #[test]
    fn seeds_summaries() {
        assert_eq!(seeds_summary(&[], 0, Duration::ZERO), "seeds: none ran");
        assert_eq!(
            seeds_summary(&[], 2, Duration::ZERO),
            "seeds: none ran, 2 unchanged left out (PORTCULLIS_SEED_MODE=changed)"
        );
        let ran = vec![
            ("1_a.sql".to_string(), Duration::from_millis(3)),
            ("staging/1_b.sql".to_string(), Duration::from_millis(4)),
        ];
        assert_eq!(
            seeds_summary(&ran, 0, Duration::from_millis(9)),
            "seeds: ran 2 in 9 ms: 1_a.sql, staging/1_b.sql"
        );
    }

    #[test]
    fn the_seeds_section_is_an_aligned_table() {
        let entry = |name: &str, state: &'static str, runs: i64, next_run: bool| SeedEntry {
            name: name.into(),
            file: format!("./seeds/{name}"),
            hash: "h".into(),
            state,
            recorded_hash: None,
            run_count: runs,
            first_applied_at: (runs > 0).then(|| "2026-11-21 08:49:49 UTC".to_string()),
            last_applied_at: (runs > 0).then(|| "2026-11-21 08:50:00 UTC".to_string()),
            next_run,
        };
        let files = vec![
            entry("1_roles.sql", "applied", 3, true),
            entry("staging/1_demo.sql", "new", 0, true),
        ];
        let status = SeedsStatus {
            dir: "./seeds".into(),
            dir_exists: true,
            env: Some("staging".into()),
            mode: "always",
            enabled: true,
            table: "\"drizzle\".\"__portcullis_seeds\"".into(),
            table_exists: true,
            summary: SeedsStatus::summary_line(&files, true),
            files,
            recorded_only: Vec::new(),
        };
        assert_eq!(
            status.to_text(false),
            "seeds in ./seeds (+ staging/), mode always, tracked in \"drizzle\".\"__portcullis_seeds\"\n\n\
             SEED                STATE    RUNS  LAST RUN (UTC)\n\
             1_roles.sql         applied  3     2026-11-21 08:50:00\n\
             staging/1_demo.sql  new      0     -\n\n\
             2 seeds, 1 applied, 1 new; migrate runs 2\n"
        );
        let none = SeedsStatus {
            dir_exists: false,
            files: Vec::new(),
            env: None,
            ..status
        };
        assert_eq!(
            none.to_text(false),
            "seeds: none (./seeds does not exist)\n"
        );
    }
}
