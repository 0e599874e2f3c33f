//! History rows + local migrations -> what each migration's state is and what to apply (pure).
//!
//! Journal layout (drizzle-kit 0.x): pending follows drizzle 0.x exactly: an entry is pending when
//! its `when` is greater than the newest `created_at` (the high-water mark), so the rows we write
//! are the rows drizzle would. Beyond drizzle, every entry at or below the mark is matched against
//! the rows, which finds what drizzle silently gets wrong: out-of-order entries it would skip
//! forever, applied files that were edited, and NULL `created_at` rows that would make it re-run
//! everything. In a table drizzle 1.0 has used, entries are first matched by the `name` 1.0
//! recorded, so nothing 1.0 applied is applied again.
//!
//! Folder layout (drizzle-kit 1.0): pending follows drizzle 1.0 exactly: a folder is pending when
//! its name is not in the `name` column, whatever its age, so out-of-order migrations are applied.
//! Beyond drizzle, a row with the same name and another hash is an edited migration, and a row
//! with no name that matches a folder by second and hash (written by a 0.x runner) stops the run
//! instead of letting the migration run twice (E43).

use crate::config::OutOfOrder;
use crate::error::Error;
use crate::report::utc;
use crate::source::split::cosmetic_variant_hashes;
use crate::source::{Layout, Migration};
use std::collections::{HashMap, VecDeque};

/// One row of drizzle's tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub id: i64,
    pub hash: String,
    pub created_at: Option<i64>,
    /// drizzle 1.0's `name` column (`None` when NULL or when the table has no such column).
    pub name: Option<String>,
}

impl HistoryRow {
    /// `created_at` truncated to the second, when it is a whole second (as drizzle 1.0 writes it).
    fn whole_second(&self) -> Option<i64> {
        self.created_at.filter(|c| c.rem_euclid(1000) == 0)
    }
}

/// A millisecond timestamp truncated to its second.
fn second_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

/// What a local migration is, relative to the tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Recorded. `moved` when matched by hash under another `created_at` (its `when` changed).
    Applied { row_id: i64, moved: bool },
    /// Newer than the mark: drizzle would apply it now.
    Pending,
    /// Older than the mark and not recorded: drizzle 0.x skips it silently forever.
    OutOfOrder,
    /// Recorded under its `when` (or its name), but the file's hash differs. `cosmetic` when the
    /// difference is only line endings or a BOM (a git `autocrlf` checkout, an editor).
    Edited {
        row_id: i64,
        recorded_hash: String,
        cosmetic: bool,
    },
    /// Folder layout: not recorded by name, but a row with `name` NULL has its second and hash,
    /// written by a drizzle 0.x runner after the table was upgraded. drizzle 1.0 would run it
    /// again (E43).
    Unnamed { row_id: i64 },
    /// Journal layout: newer than the mark, so drizzle 0.x would run it, but its exact content
    /// is recorded in a row no other migration claims, under an older `created_at` (seconds
    /// written by another tool, or a journal entry regenerated after it was applied). Running
    /// it again would apply it twice; portcullis refuses.
    RecordedEarlier { row_id: i64, created_at: i64 },
}

/// The analysis of one folder against one tracking table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Which drizzle's rules decided the states.
    pub layout: Layout,
    /// The newest non-NULL `created_at`, drizzle 0.x's high-water mark.
    pub mark: Option<i64>,
    /// One state per migration, in folder order.
    pub states: Vec<State>,
    /// Rows that match no local migration: written by a newer image (a rollback deploy), or by
    /// another project sharing the table.
    pub unknown_rows: Vec<HistoryRow>,
    /// Journal layout: rows with `created_at` NULL, which make drizzle 0.x re-run every
    /// migration. (drizzle 1.0 never reads `created_at`, so the folder layout leaves this empty.)
    pub null_rows: Vec<HistoryRow>,
}

/// The migration a row records that has `hash` but no usable `created_at`: the first with that
/// hash that no row records yet (`recorded`, by index into `migrations`, is updated), else the
/// first with that hash (the row is then a second record of it). Two untouched `--custom`
/// files share a hash (E41): their rows get one migration each, in id order.
pub fn migration_for_hash<'a>(
    migrations: &'a [Migration],
    hash: &str,
    recorded: &mut [bool],
) -> Option<&'a Migration> {
    let same = |i: &usize| migrations[*i].hash == hash;
    let i = (0..migrations.len())
        .filter(same)
        .find(|&i| !recorded[i])
        .or_else(|| (0..migrations.len()).find(same))?;
    recorded[i] = true;
    Some(&migrations[i])
}

/// What to do now, once the plan passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Positions (indices into the folder's migrations) to apply, in folder order.
    pub apply: Vec<usize>,
    /// Things an operator should know that do not stop the run.
    pub warnings: Vec<String>,
    /// Things worth an info line (rows from a newer image).
    pub notes: Vec<String>,
}

impl Plan {
    /// Matches rows to migrations by the rules of the folder's drizzle. Pure: no database, no disk.
    pub fn analyse(layout: Layout, migrations: &[Migration], rows: &[HistoryRow]) -> Plan {
        match layout {
            Layout::Journal => Plan::analyse_journal(migrations, rows),
            Layout::Folders => Plan::analyse_folders(migrations, rows),
        }
    }

    /// drizzle 0.x: the high-water mark, plus the diagnostics described in the module comment.
    fn analyse_journal(migrations: &[Migration], rows: &[HistoryRow]) -> Plan {
        let mark = rows.iter().filter_map(|r| r.created_at).max();
        let mut claimed = vec![false; rows.len()];
        let mut states: Vec<Option<State>> = vec![None; migrations.len()];
        // Each step gives a migration the first unclaimed row (in row order) that matches it,
        // through an index of the rows by the step's key (see `index`).

        // 0. A table drizzle 1.0 has used: the name it recorded (the folder `drizzle-kit up`
        //    made of this entry) says the migration ran, even though 1.0 wrote a second-precision
        //    created_at that is not the journal's `when`.
        let mut by_name = index(rows, |r| r.name.as_deref());
        for (i, m) in migrations.iter().enumerate() {
            if let Some(r) = first_unclaimed(by_name.get_mut(m.name.as_str()), &claimed) {
                claimed[r] = true;
                states[i] = Some(if rows[r].hash == m.hash {
                    State::Applied {
                        row_id: rows[r].id,
                        moved: false,
                    }
                } else {
                    edited(m, &rows[r])
                });
            }
        }
        // 1. Exact matches: same `created_at` and same hash.
        let mut exact = index(rows, |r| r.created_at.map(|c| (c, r.hash.as_str())));
        for (i, m) in migrations.iter().enumerate() {
            if states[i].is_some() {
                continue;
            }
            if let Some(r) = first_unclaimed(exact.get_mut(&(m.when, m.hash.as_str())), &claimed) {
                claimed[r] = true;
                states[i] = Some(State::Applied {
                    row_id: rows[r].id,
                    moved: false,
                });
            }
        }
        // 1b. Same hash, recorded at the whole second of its `when`: drizzle 1.0 applied it from
        //     the converted folder under a name this journal does not produce (a rename, or
        //     `drizzle-kit up` run in a time zone where the year differed). drizzle 0.x would run
        //     it again; it ran.
        let mut by_second = index(rows, |r| r.whole_second().map(|s| (s, r.hash.as_str())));
        for (i, m) in migrations.iter().enumerate() {
            if states[i].is_some() {
                continue;
            }
            let key = (second_of(m.when), m.hash.as_str());
            if let Some(r) = first_unclaimed(by_second.get_mut(&key), &claimed) {
                claimed[r] = true;
                states[i] = Some(State::Applied {
                    row_id: rows[r].id,
                    moved: false,
                });
            }
        }
        // 2. Newer than the mark: pending, by drizzle's rule (but see 4b).
        for (i, m) in migrations.iter().enumerate() {
            if states[i].is_none() && mark.is_none_or(|mark| m.when > mark) {
                states[i] = Some(State::Pending);
            }
        }
        // 3. A row under this `when` with another hash: the file was edited after it was applied.
        let mut by_when = index(rows, |r| r.created_at);
        for (i, m) in migrations.iter().enumerate() {
            if states[i].is_some() {
                continue;
            }
            if let Some(r) = first_unclaimed(by_when.get_mut(&m.when), &claimed) {
                claimed[r] = true;
                states[i] = Some(edited(m, &rows[r]));
            }
        }
        // 4. Recorded by hash under another `created_at` (or NULL): applied, but its `when` moved.
        let mut by_hash = index(rows, |r| Some(r.hash.as_str()));
        for (i, m) in migrations.iter().enumerate() {
            if states[i].is_some() {
                continue;
            }
            if let Some(r) = first_unclaimed(by_hash.get_mut(m.hash.as_str()), &claimed) {
                claimed[r] = true;
                states[i] = Some(State::Applied {
                    row_id: rows[r].id,
                    moved: true,
                });
            }
        }
        // 4b. Pending, yet its exact content is recorded in a row nothing else claimed, under an
        //     older `created_at`: drizzle would run it a second time. Last, so that migrations at
        //     or below the mark claim their own rows first (a moved `when`, step 4).
        //     A row that repeats a claimed one (same hash, same created_at: a copy two runs at
        //     once wrote) is no evidence of another application.
        //     Only when something is pending and some row is unclaimed (not on a no-op run).
        if states.contains(&Some(State::Pending)) && claimed.contains(&false) {
            let by_hash = index(rows, |r| r.created_at.map(|_| r.hash.as_str()));
            let mut seen: std::collections::HashSet<(&str, Option<i64>)> = rows
                .iter()
                .zip(&claimed)
                .filter(|(_, c)| **c)
                .map(|(r, _)| (r.hash.as_str(), r.created_at))
                .collect();
            for (i, m) in migrations.iter().enumerate() {
                if states[i] != Some(State::Pending) {
                    continue;
                }
                let found = by_hash.get(m.hash.as_str()).and_then(|q| {
                    q.iter().copied().find(|&r| {
                        !claimed[r] && !seen.contains(&(rows[r].hash.as_str(), rows[r].created_at))
                    })
                });
                if let Some(r) = found {
                    claimed[r] = true;
                    seen.insert((rows[r].hash.as_str(), rows[r].created_at));
                    states[i] = Some(State::RecordedEarlier {
                        row_id: rows[r].id,
                        created_at: rows[r].created_at.unwrap_or_default(),
                    });
                }
            }
        }
        // 5. Everything else at or below the mark was never applied: out of order.
        let states = states
            .into_iter()
            .map(|s| s.unwrap_or(State::OutOfOrder))
            .collect();
        let unknown_rows = rows
            .iter()
            .zip(&claimed)
            .filter(|(r, c)| !**c && r.created_at.is_some())
            .map(|(r, _)| r.clone())
            .collect();
        let null_rows = rows
            .iter()
            .filter(|r| r.created_at.is_none())
            .cloned()
            .collect();
        Plan {
            layout: Layout::Journal,
            mark,
            states,
            unknown_rows,
            null_rows,
        }
    }

    /// drizzle 1.0: pending by name, plus the diagnostics described in the module comment.
    fn analyse_folders(migrations: &[Migration], rows: &[HistoryRow]) -> Plan {
        let mut claimed = vec![false; rows.len()];
        let mut states = Vec::with_capacity(migrations.len());
        let by_name = index(rows, |r| r.name.as_deref());
        let mut unnamed_by_second = index(rows, |r| match (&r.name, r.created_at) {
            (None, Some(c)) => Some((second_of(c), r.hash.as_str())),
            _ => None,
        });
        for m in migrations {
            if let Some(named) = by_name.get(m.name.as_str()) {
                let first = named[0];
                // drizzle 1.0 only asks whether the name is there; duplicates are harmless.
                for &r in named {
                    claimed[r] = true;
                }
                states.push(match named.iter().find(|&&r| rows[r].hash == m.hash) {
                    Some(&r) => State::Applied {
                        row_id: rows[r].id,
                        moved: false,
                    },
                    None => edited(m, &rows[first]),
                });
                continue;
            }
            let unnamed = first_unclaimed(
                unnamed_by_second.get_mut(&(m.when, m.hash.as_str())),
                &claimed,
            );
            match unnamed {
                Some(r) => {
                    claimed[r] = true;
                    states.push(State::Unnamed { row_id: rows[r].id });
                }
                None => states.push(State::Pending),
            }
        }
        let unknown_rows = rows
            .iter()
            .zip(&claimed)
            .filter(|(_, c)| !**c)
            .map(|(r, _)| r.clone())
            .collect();
        Plan {
            layout: Layout::Folders,
            mark: rows.iter().filter_map(|r| r.created_at).max(),
            states,
            unknown_rows,
            null_rows: Vec::new(),
        }
    }

    /// Folder layout: pending migrations older than the newest recorded one (a branch merged
    /// late). drizzle 1.0 applies them, and so does portcullis; they are worth a line in the log.
    pub fn late(&self, migrations: &[Migration]) -> Vec<usize> {
        if self.layout != Layout::Folders {
            return Vec::new();
        }
        self.positions(|s| matches!(s, State::Pending))
            .into_iter()
            .filter(|&i| self.mark.is_some_and(|mark| migrations[i].when < mark))
            .collect()
    }

    /// Positions of the migrations drizzle would apply now (its pending rule alone).
    pub fn pending(&self) -> Vec<usize> {
        self.positions(|s| matches!(s, State::Pending))
    }

    /// Positions of out-of-order migrations.
    pub fn out_of_order(&self) -> Vec<usize> {
        self.positions(|s| matches!(s, State::OutOfOrder))
    }

    fn positions(&self, f: impl Fn(&State) -> bool) -> Vec<usize> {
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| f(s))
            .map(|(i, _)| i)
            .collect()
    }

    /// Checks the plan against the policy and says what to apply. Every blocking problem is
    /// reported at once (exit 4), each naming the migration and the way out.
    pub fn decide(
        &self,
        migrations: &[Migration],
        policy: OutOfOrder,
        table: &str,
    ) -> Result<Decision, Error> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut notes = Vec::new();
        let newest = self.mark.map(|mark| {
            migrations
                .iter()
                .find(|m| m.when == mark)
                .map(|m| format!("{} ({})", m.tag, utc(mark)))
                .unwrap_or_else(|| format!("created_at {mark} ({})", utc(mark)))
        });

        if !self.null_rows.is_empty() {
            let mut fixes = Vec::new();
            // As `repair --apply` fills them: see `migration_for_hash`.
            let mut recorded: Vec<bool> = self
                .states
                .iter()
                .map(|s| {
                    matches!(
                        s,
                        State::Applied { .. }
                            | State::Edited { .. }
                            | State::RecordedEarlier { .. }
                    )
                })
                .collect();
            for r in &self.null_rows {
                match migration_for_hash(migrations, &r.hash, &mut recorded) {
                    Some(m) => fixes.push(format!(
                        "UPDATE {table} SET created_at = {} WHERE id = {};  -- {}",
                        m.when, r.id, m.tag
                    )),
                    None => fixes.push(format!(
                        "-- row id {} matches no local migration by hash; delete it if it is junk: \
                         DELETE FROM {table} WHERE id = {};",
                        r.id, r.id
                    )),
                }
            }
            problems.push(format!(
                "{table} has {} row(s) with created_at NULL (ids {}). drizzle-kit sorts NULL first \
                 and would re-run every migration; portcullis refuses instead. Give each row its \
                 migration's `when`:\n      {}",
                self.null_rows.len(),
                self.null_rows
                    .iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                fixes.join("\n      ")
            ));
        }

        for (i, state) in self.states.iter().enumerate() {
            let m = &migrations[i];
            match state {
                State::Edited {
                    row_id,
                    recorded_hash,
                    cosmetic: true,
                } => warnings.push(format!(
                    "{} ({}) differs from what was applied (row id {row_id}) only in line endings \
                     or a byte order mark: recorded hash {}, file hash {}. Check git's autocrlf \
                     setting; the content is the same, so the run goes on",
                    m.tag,
                    m.file(),
                    short(recorded_hash),
                    short(&m.hash)
                )),
                State::Edited {
                    row_id,
                    recorded_hash,
                    cosmetic: false,
                } => problems.push(format!(
                    "{} ({}) was edited after it was applied (row id {row_id}): the recorded hash is \
                     {} but the file's is {}. The database has the old version; the edit will never \
                     run. Restore the file as it was applied (git log -p -- {}) and put the change \
                     in a new migration (drizzle-kit generate)",
                    m.tag,
                    m.file(),
                    short(recorded_hash),
                    short(&m.hash),
                    m.file()
                )),
                State::Applied { row_id, moved: true } => warnings.push(format!(
                    "{} ({}) is recorded (row id {row_id}) under another created_at than its \
                     journal `when` {}; the journal entry was changed after it was applied",
                    m.tag,
                    m.file(),
                    m.when
                )),
                State::OutOfOrder if policy == OutOfOrder::Error => problems.push(format!(
                    "{} ({}, when {}) was never applied, but it is older than the newest applied \
                     migration {}, so drizzle-kit would skip it silently forever (typically a \
                     migration generated on a branch merged after a newer one was deployed). Either \
                     set PORTCULLIS_OUT_OF_ORDER=apply to apply it now (fine when it does not depend \
                     on the newer migrations), or give it a newer place: remove it with `drizzle-kit \
                     drop` and generate it again",
                    m.tag,
                    m.file(),
                    utc(m.when),
                    newest.as_deref().unwrap_or("?")
                )),
                State::RecordedEarlier { row_id, created_at } => problems.push(format!(
                    "{} ({}) would run a second time: its exact content is recorded (row id \
                     {row_id}) under created_at {created_at}{}, older than its journal `when` {}, \
                     so drizzle's rule (run what is newer than the newest created_at) counts it \
                     as never applied. portcullis refuses instead. Set the row to its `when`, \
                     with `portcullis repair --apply` or by hand: UPDATE {table} SET created_at \
                     = {} WHERE id = {row_id}; (unless that row is another project's that \
                     shares this table: then give each project its own migrations table)",
                    m.tag,
                    m.file(),
                    if created_at.checked_mul(1000) == Some(m.when)
                        || *created_at == m.when.div_euclid(1000)
                    {
                        " (seconds, not milliseconds: another tool wrote it)"
                    } else {
                        ""
                    },
                    m.when,
                    m.when
                )),
                State::Unnamed { row_id } => problems.push(format!(
                    "{} ({}) is recorded without a name (row id {row_id}: same second, same \
                     hash), as a drizzle 0.x runner (drizzle-kit 0.x, or an older image of the \
                     app) records it in a table drizzle 1.0 has upgraded. drizzle 1.0 decides by \
                     name and would run it again; portcullis refuses instead. Give the row its \
                     name, with `portcullis repair --apply` or by hand: UPDATE {table} SET name = \
                     {} WHERE id = {row_id};",
                    m.tag,
                    m.file(),
                    sql_literal(&m.name)
                )),
                State::OutOfOrder if policy == OutOfOrder::Skip => warnings.push(format!(
                    "{} ({}) is out of order (older than the newest applied migration {}) and is \
                     skipped because PORTCULLIS_OUT_OF_ORDER=skip; its SQL has never run here",
                    m.tag,
                    m.file(),
                    newest.as_deref().unwrap_or("?")
                )),
                _ => {}
            }
        }
        if !problems.is_empty() {
            let mut msg = format!(
                "the tracking table {table} disagrees with the migrations folder; nothing was \
                 applied. {} problem(s):",
                problems.len()
            );
            for (n, p) in problems.iter().enumerate() {
                // A problem that ends with the SQL to run keeps its `;` as the last character.
                let end = if p.ends_with(['.', ';']) { "" } else { "." };
                msg.push_str(&format!("\n  {}. {p}{end}", n + 1));
            }
            return Err(Error::History(msg));
        }

        for i in self.late(migrations) {
            notes.push(format!(
                "{} ({}) is older than the newest recorded migration {} but was never applied (a \
                 branch merged late?); drizzle 1.0 applies it by name, and so does portcullis, in \
                 folder order",
                migrations[i].tag,
                migrations[i].file(),
                newest.as_deref().unwrap_or("?")
            ));
        }
        if !self.unknown_rows.is_empty() {
            notes.push(format!(
                "{} row(s) of {table} match no migration in this folder (ids {}, newest created_at \
                 {}): a newer release has migrated this database (normal during a rollback), or \
                 another project shares the table",
                self.unknown_rows.len(),
                self.unknown_rows
                    .iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.unknown_rows
                    .iter()
                    .filter_map(|r| r.created_at)
                    .max()
                    .map(utc)
                    .unwrap_or_default()
            ));
        }
        let apply = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                matches!(s, State::Pending)
                    || (policy == OutOfOrder::Apply && matches!(s, State::OutOfOrder))
            })
            .map(|(i, _)| i)
            .collect();
        Ok(Decision {
            apply,
            warnings,
            notes,
        })
    }
}

/// The rows indexed by `key`, each key's rows in row order. Every matching step looks rows up
/// here instead of scanning them, so that 100k migrations against 100k rows take milliseconds.
fn index<'r, K: std::hash::Hash + Eq>(
    rows: &'r [HistoryRow],
    key: impl Fn(&'r HistoryRow) -> Option<K>,
) -> HashMap<K, VecDeque<usize>> {
    let mut map: HashMap<K, VecDeque<usize>> = HashMap::new();
    for (r, row) in rows.iter().enumerate() {
        if let Some(k) = key(row) {
            map.entry(k).or_default().push_back(r);
        }
    }
    map
}

/// The first row of `queue` not claimed yet (dropping the claimed ones on the way).
fn first_unclaimed(queue: Option<&mut VecDeque<usize>>, claimed: &[bool]) -> Option<usize> {
    let queue = queue?;
    while let Some(&r) = queue.front() {
        if !claimed[r] {
            return Some(r);
        }
        queue.pop_front();
    }
    None
}

/// The state of a migration whose row has another hash.
fn edited(m: &Migration, row: &HistoryRow) -> State {
    State::Edited {
        row_id: row.id,
        recorded_hash: row.hash.clone(),
        cosmetic: cosmetic_variant_hashes(&m.text).contains(&row.hash),
    }
}

/// `text` as an SQL string literal, for fixes printed in messages.
pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn m(position: usize, when: i64, sql: &str) -> Migration {
        Migration::new(
            position,
            &format!("{position:04}_m"),
            when,
            PathBuf::from(format!("migrations/{position:04}_m.sql")),
            sql.as_bytes(),
        )
    }

    fn row(id: i64, mig: &Migration) -> HistoryRow {
        HistoryRow {
            id,
            hash: mig.hash.clone(),
            created_at: Some(mig.when),
            name: None,
        }
    }

    const T: &str = "\"drizzle\".\"__drizzle_migrations\"";

    #[test]
    fn empty_table_makes_everything_pending() {
        let ms = vec![m(0, 10, "a"), m(1, 20, "b")];
        let p = Plan::analyse(Layout::Journal, &ms, &[]);
        assert_eq!(p.mark, None);
        assert_eq!(p.pending(), vec![0, 1]);
        let d = p.decide(&ms, OutOfOrder::Error, T).unwrap();
        assert_eq!(d.apply, vec![0, 1]);
    }

    #[test]
    fn high_water_mark_is_strict_and_in_journal_order() {
        // Journal order 30, 20, 40 with mark 20: 30 and 40 pending, applied in journal order.
        let ms = vec![m(0, 30, "a"), m(1, 20, "b"), m(2, 40, "c")];
        let rows = vec![row(1, &ms[1])];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.mark, Some(20));
        assert_eq!(p.pending(), vec![0, 2]);
        assert_eq!(
            p.states[1],
            State::Applied {
                row_id: 1,
                moved: false
            }
        );
        // An entry equal to the mark is not pending (E17): it is applied or out of order.
        let ms2 = vec![m(0, 20, "x")];
        let p2 = Plan::analyse(Layout::Journal, &ms2, &rows);
        assert!(p2.pending().is_empty());
    }

    #[test]
    fn fully_applied_is_a_no_op() {
        let ms = vec![m(0, 10, "a"), m(1, 20, "b")];
        let rows = vec![row(1, &ms[0]), row(2, &ms[1])];
        let d = Plan::analyse(Layout::Journal, &ms, &rows)
            .decide(&ms, OutOfOrder::Error, T)
            .unwrap();
        assert!(d.apply.is_empty());
        assert!(d.warnings.is_empty() && d.notes.is_empty());
    }

    #[test]
    fn out_of_order_follows_the_policy() {
        // 0 and 2 applied; 1 (older than the mark 30) never was.
        let ms = vec![m(0, 10, "a"), m(1, 20, "b"), m(2, 30, "c"), m(3, 40, "d")];
        let rows = vec![row(1, &ms[0]), row(2, &ms[2])];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.out_of_order(), vec![1]);
        assert_eq!(p.pending(), vec![3]);

        let err = p.decide(&ms, OutOfOrder::Error, T).unwrap_err();
        assert!(matches!(err, Error::History(_)));
        let msg = err.to_string();
        assert!(msg.contains("0001_m"), "{msg}");
        assert!(msg.contains("PORTCULLIS_OUT_OF_ORDER=apply"), "{msg}");
        assert!(msg.contains("drizzle-kit"), "{msg}");

        let d = p.decide(&ms, OutOfOrder::Apply, T).unwrap();
        assert_eq!(d.apply, vec![1, 3]);
        let d = p.decide(&ms, OutOfOrder::Skip, T).unwrap();
        assert_eq!(d.apply, vec![3]);
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn edited_files_are_refused_but_line_endings_only_warn() {
        let ms = vec![m(0, 10, "create table a();\n"), m(1, 20, "b")];
        let mut rows = vec![row(1, &ms[0]), row(2, &ms[1])];
        rows[0].hash = crate::source::split::hash("create table a (id int);\n");
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert!(matches!(
            p.states[0],
            State::Edited {
                cosmetic: false,
                ..
            }
        ));
        let msg = p.decide(&ms, OutOfOrder::Error, T).unwrap_err().to_string();
        assert!(msg.contains("0000_m") && msg.contains("edited"), "{msg}");

        rows[0].hash = crate::source::split::hash("create table a();\r\n");
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert!(matches!(p.states[0], State::Edited { cosmetic: true, .. }));
        let d = p.decide(&ms, OutOfOrder::Error, T).unwrap();
        assert!(d.apply.is_empty());
        assert!(d.warnings[0].contains("line endings"), "{:?}", d.warnings);
    }

    #[test]
    fn null_created_at_is_refused_with_the_fix() {
        let ms = vec![m(0, 10, "a"), m(1, 20, "b")];
        let rows = vec![
            HistoryRow {
                id: 7,
                hash: ms[0].hash.clone(),
                created_at: None,
                name: None,
            },
            HistoryRow {
                id: 8,
                hash: "f".repeat(64),
                created_at: None,
                name: None,
            },
        ];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.null_rows.len(), 2);
        let msg = p.decide(&ms, OutOfOrder::Apply, T).unwrap_err().to_string();
        assert!(msg.contains("created_at NULL"), "{msg}");
        assert!(msg.contains("SET created_at = 10 WHERE id = 7"), "{msg}");
        assert!(msg.contains("DELETE FROM"), "{msg}");
        // The SQL to copy ends with its own `;`, not `;.`.
        assert!(msg.trim_end().ends_with("WHERE id = 8;"), "{msg}");
    }

    #[test]
    fn null_rows_of_two_identical_files_are_given_one_migration_each() {
        // Two untouched `--custom` files: same content, same hash.
        let ms = vec![m(0, 10, "-- custom"), m(1, 20, "-- custom")];
        let null = |id: i64| HistoryRow {
            id,
            hash: ms[0].hash.clone(),
            created_at: None,
            name: None,
        };
        let p = Plan::analyse(Layout::Journal, &ms, &[null(7), null(8)]);
        let msg = p.decide(&ms, OutOfOrder::Apply, T).unwrap_err().to_string();
        assert!(msg.contains("SET created_at = 10 WHERE id = 7"), "{msg}");
        assert!(msg.contains("SET created_at = 20 WHERE id = 8"), "{msg}");
    }

    #[test]
    fn rows_from_a_newer_release_are_only_noted() {
        let ms = vec![m(0, 10, "a")];
        let rows = vec![
            row(1, &ms[0]),
            HistoryRow {
                id: 2,
                hash: "e".repeat(64),
                created_at: Some(50),
                name: None,
            },
        ];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.unknown_rows.len(), 1);
        let d = p.decide(&ms, OutOfOrder::Error, T).unwrap();
        assert!(d.apply.is_empty());
        assert_eq!(d.notes.len(), 1);
        assert!(d.notes[0].contains("newer release"), "{:?}", d.notes);
    }

    #[test]
    fn identical_files_are_matched_by_when_first() {
        // Two untouched --custom files have the same hash (E41); only the first is applied, and
        // the second (when below the mark? no: above) stays pending by drizzle's rule.
        let ms = vec![m(0, 10, "-- custom"), m(1, 20, "-- custom")];
        let rows = vec![row(1, &ms[0])];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.pending(), vec![1]);
        // With a newer row present, the second is out of order, not "applied by hash".
        let rows = vec![
            row(1, &ms[0]),
            HistoryRow {
                id: 2,
                hash: "e".repeat(64),
                created_at: Some(30),
                name: None,
            },
        ];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.out_of_order(), vec![1]);
    }

    #[test]
    fn content_recorded_under_seconds_is_refused_not_run_again() {
        let ms = vec![m(0, 1_700_000_000_000, "a"), m(1, 1_700_000_100_000, "b")];
        let rows: Vec<HistoryRow> = ms
            .iter()
            .enumerate()
            .map(|(i, mig)| HistoryRow {
                created_at: Some(mig.when / 1000),
                ..row(i as i64 + 1, mig)
            })
            .collect();
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(
            p.states,
            vec![
                State::RecordedEarlier {
                    row_id: 1,
                    created_at: 1_700_000_000
                },
                State::RecordedEarlier {
                    row_id: 2,
                    created_at: 1_700_000_100
                },
            ]
        );
        assert!(p.unknown_rows.is_empty());
        let e = p.decide(&ms, OutOfOrder::Error, T).unwrap_err().to_string();
        assert!(
            e.contains("0000_m (migrations/0000_m.sql) would run a second time"),
            "{e}"
        );
        assert!(e.contains("seconds, not milliseconds"), "{e}");
        assert!(
            e.contains("SET created_at = 1700000100000 WHERE id = 2;"),
            "{e}"
        );
    }

    #[test]
    fn a_regenerated_newest_entry_is_refused_not_run_again() {
        let ms = vec![m(0, 10, "a"), m(1, 25, "b")];
        let rows = vec![
            row(1, &ms[0]),
            HistoryRow {
                created_at: Some(20),
                ..row(2, &ms[1])
            },
        ];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(
            p.states[1],
            State::RecordedEarlier {
                row_id: 2,
                created_at: 20
            }
        );
        let e = p.decide(&ms, OutOfOrder::Error, T).unwrap_err().to_string();
        assert!(!e.contains("seconds"), "{e}");
    }

    #[test]
    fn a_duplicate_row_does_not_make_equal_new_content_recorded() {
        // c has a's content; row 3 is a copy of a's row (two runs at once): c is new.
        let ms = vec![m(0, 10, "add x"), m(1, 20, "drop x"), m(2, 30, "add x")];
        let rows = vec![row(1, &ms[0]), row(2, &ms[1]), row(3, &ms[0])];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(p.states[2], State::Pending);
        assert_eq!(
            p.unknown_rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn new_content_equal_to_a_moved_migration_is_still_pending() {
        // a's `when` moved below the mark; c, newer, has a's content (a column added, dropped by
        // b, added again). a keeps its row; c is new.
        let ms = vec![m(0, 15, "add x"), m(1, 20, "drop x"), m(2, 30, "add x")];
        let rows = vec![
            HistoryRow {
                created_at: Some(10),
                ..row(1, &ms[0])
            },
            row(2, &ms[1]),
        ];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(
            p.states,
            vec![
                State::Applied {
                    row_id: 1,
                    moved: true
                },
                State::Applied {
                    row_id: 2,
                    moved: false
                },
                State::Pending
            ]
        );
    }

    #[test]
    fn a_moved_when_is_applied_by_hash() {
        let ms = vec![m(0, 15, "a"), m(1, 20, "b")];
        let rows = vec![
            HistoryRow {
                id: 1,
                hash: ms[0].hash.clone(),
                created_at: Some(10),
                name: None,
            },
            row(2, &ms[1]),
        ];
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert_eq!(
            p.states[0],
            State::Applied {
                row_id: 1,
                moved: true
            }
        );
        let d = p.decide(&ms, OutOfOrder::Error, T).unwrap();
        assert!(d.apply.is_empty());
        assert_eq!(d.warnings.len(), 1);
    }

    // ---- folder layout (drizzle 1.0) and the mixed cases ----

    fn f(position: usize, second: i64, sql: &str) -> Migration {
        let name = format!("2025010100000{second}_m{position}");
        Migration::from_folder(
            position,
            &name,
            1_735_689_600_000 + second * 1000,
            PathBuf::from(format!("migrations/{name}/migration.sql")),
            sql.as_bytes(),
        )
    }

    fn named(id: i64, mig: &Migration) -> HistoryRow {
        HistoryRow {
            name: Some(mig.name.clone()),
            ..row(id, mig)
        }
    }

    #[test]
    fn folders_are_pending_by_name_whatever_their_age() {
        let ms = vec![f(0, 1, "a"), f(1, 2, "b"), f(2, 3, "c"), f(3, 4, "d")];
        // 0 and 2 applied; 1 is older than 2 and never applied: drizzle 1.0 applies it.
        let rows = vec![named(1, &ms[0]), named(2, &ms[2])];
        let p = Plan::analyse(Layout::Folders, &ms, &rows);
        assert_eq!(p.pending(), vec![1, 3]);
        assert!(p.out_of_order().is_empty());
        assert_eq!(p.late(&ms), vec![1]);
        // The 0.x policy does not apply: drizzle 1.0 has no such thing as skipping.
        let d = p.decide(&ms, OutOfOrder::Error, T).unwrap();
        assert_eq!(d.apply, vec![1, 3]);
        assert!(d.notes[0].contains("merged late"), "{:?}", d.notes);
        // created_at plays no part: a NULL or odd value is no problem for drizzle 1.0.
        let mut rows = rows;
        rows[0].created_at = None;
        let p = Plan::analyse(Layout::Folders, &ms, &rows);
        assert!(p.null_rows.is_empty());
        assert_eq!(
            p.decide(&ms, OutOfOrder::Error, T).unwrap().apply,
            vec![1, 3]
        );
    }

    #[test]
    fn folders_edited_and_foreign_rows() {
        let ms = vec![f(0, 1, "a"), f(1, 2, "b")];
        let mut rows = vec![named(1, &ms[0]), named(2, &ms[1])];
        rows[1].hash = crate::source::split::hash("other");
        rows.push(HistoryRow {
            id: 3,
            hash: "e".repeat(64),
            created_at: Some(1_900_000_000_000),
            name: Some("20300101000000_newer".into()),
        });
        let p = Plan::analyse(Layout::Folders, &ms, &rows);
        assert!(matches!(p.states[1], State::Edited { row_id: 2, .. }));
        assert_eq!(p.unknown_rows.len(), 1);
        let msg = p.decide(&ms, OutOfOrder::Error, T).unwrap_err().to_string();
        assert!(msg.contains("edited after it was applied"), "{msg}");
        // A duplicate row under the same name is harmless, as for drizzle.
        let rows = vec![named(1, &ms[0]), named(2, &ms[0]), named(3, &ms[1])];
        let p = Plan::analyse(Layout::Folders, &ms, &rows);
        assert!(p.unknown_rows.is_empty());
        assert!(
            p.decide(&ms, OutOfOrder::Error, T)
                .unwrap()
                .apply
                .is_empty()
        );
    }

    #[test]
    fn a_nameless_row_of_the_same_second_and_hash_is_refused_not_rerun() {
        // E43: a 0.x runner recorded the journal entry (when ...123 ms) with name NULL.
        let ms = vec![f(0, 1, "a"), f(1, 2, "b")];
        let rows = vec![
            named(1, &ms[0]),
            HistoryRow {
                id: 2,
                hash: ms[1].hash.clone(),
                created_at: Some(ms[1].when + 123),
                name: None,
            },
        ];
        let p = Plan::analyse(Layout::Folders, &ms, &rows);
        assert_eq!(p.states[1], State::Unnamed { row_id: 2 });
        assert!(p.pending().is_empty());
        let msg = p.decide(&ms, OutOfOrder::Error, T).unwrap_err().to_string();
        assert!(
            msg.contains(&format!(
                "UPDATE {T} SET name = '{}' WHERE id = 2;",
                ms[1].name
            )),
            "{msg}"
        );
        assert!(msg.contains("would run it again"), "{msg}");
        // Another second, or another hash: not the same migration, so it stays pending.
        for (created_at, hash) in [
            (ms[1].when + 1000, ms[1].hash.clone()),
            (ms[1].when, "f".repeat(64)),
        ] {
            let rows = vec![HistoryRow {
                id: 2,
                hash,
                created_at: Some(created_at),
                name: None,
            }];
            let p = Plan::analyse(Layout::Folders, &ms[1..], &rows);
            assert_eq!(p.pending(), vec![0]);
            assert_eq!(p.unknown_rows.len(), 1);
        }
    }

    #[test]
    fn journal_entries_drizzle_1_applied_are_not_applied_again() {
        // A database migrated by drizzle 1.0 from the `drizzle-kit up` folders (created_at at
        // whole seconds, names set), then an older image with the journal runs (a rollback).
        let ms = vec![m(0, 1_700_000_000_250, "a"), m(1, 1_700_000_001_750, "b")];
        let rows: Vec<HistoryRow> = ms
            .iter()
            .enumerate()
            .map(|(i, mig)| HistoryRow {
                id: i as i64 + 1,
                hash: mig.hash.clone(),
                created_at: Some(second_of(mig.when)),
                name: Some(mig.name.clone()),
            })
            .collect();
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert!(p.pending().is_empty(), "{:?}", p.states);
        assert!(
            p.decide(&ms, OutOfOrder::Error, T)
                .unwrap()
                .apply
                .is_empty()
        );
        // Under another name (renamed or converted elsewhere): matched by second and hash.
        let mut rows = rows;
        rows[1].name = Some("20231114221321_renamed".into());
        let p = Plan::analyse(Layout::Journal, &ms, &rows);
        assert!(p.pending().is_empty(), "{:?}", p.states);
        assert!(p.unknown_rows.is_empty());
        // drizzle 0.x alone would have re-run the second one: its `when` is above the mark.
        assert!(ms[1].when > rows.iter().filter_map(|r| r.created_at).max().unwrap());
    }

    #[test]
    fn journal_names_are_what_drizzle_kit_up_makes() {
        let mig = m(3, 1_680_271_923_328, "x");
        assert_eq!(mig.name, "20230331141203_m");
        let folder = f(0, 5, "x");
        assert_eq!(folder.name, folder.tag);
    }
}
