//! drizzle-orm 1.0's upgrade of a 0.x tracking table, computed exactly as drizzle computes it
//! (`upToV1` in `drizzle-orm/src/up-migrations/pg.ts`; drizzle-compat.md 4.4 step 3, E41, E42).
//! Pure: the rows and the folder in, the name for each row (or the rows that match nothing) out.
//! `db::history::upgrade` writes the result, under the lock, only after the whole run has been
//! judged, so a refusal changes nothing.
//!
//! For each row, in id order: its `created_at` text with the last three characters replaced by
//! `000` (the millisecond `when` truncated to the second) is looked up among the folders' seconds.
//! One folder in that second: that one, whatever its hash. Several: the one with the row's hash,
//! else no match. None: the folder with the row's hash anywhere (the last one, in drizzle's order,
//! when several share it). The matching is mirrored, quirks included, so the names written are the
//! names drizzle 1.0 would write; portcullis's own checks run afterwards, on the result.

use crate::db::history::RawRow;
use crate::error::Error;
use crate::plan::HistoryRow;
use crate::report::utc;
use crate::source::{Migration, collate};
use std::collections::HashMap;

/// What the upgrade would write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Upgrade {
    /// `(row id, name)` for every matched row, in id order.
    pub names: Vec<(i64, String)>,
    /// Rows that match no folder: drizzle 1.0 refuses to upgrade, and so does portcullis.
    pub unmatched: Vec<i64>,
}

/// drizzle's order for the upgrade: by `created_at` second, then `localeCompare` (the folder
/// order), as positions into `migrations`. drizzle sorts its array in place, so this is also
/// the order it applies pending migrations in, in the run that upgrades.
pub fn order(migrations: &[Migration]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..migrations.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&migrations[a], &migrations[b]);
        a.when
            .cmp(&b.when)
            .then_with(|| collate::compare(&a.name, &b.name))
    });
    order
}

/// Computes the upgrade of a table whose rows are `rows`.
pub fn compute(migrations: &[Migration], rows: &[RawRow]) -> Upgrade {
    let order = order(migrations);
    let mut by_second: HashMap<i64, Vec<&Migration>> = HashMap::new();
    let mut by_hash: HashMap<&str, &Migration> = HashMap::new();
    for &i in &order {
        let m = &migrations[i];
        by_second.entry(m.when).or_default().push(m);
        by_hash.insert(&m.hash, m);
    }
    let mut rows: Vec<&RawRow> = rows.iter().collect();
    rows.sort_by_key(|r| r.id);
    let mut upgrade = Upgrade::default();
    for r in rows {
        let candidates = second_key(r.created_at.as_deref())
            .and_then(|s| by_second.get(&s))
            .filter(|c| !c.is_empty());
        let matched = match candidates {
            Some(c) if c.len() == 1 => Some(c[0]),
            Some(c) => c.iter().copied().find(|m| m.hash == r.hash),
            None => by_hash.get(r.hash.as_str()).copied(),
        };
        match matched {
            Some(m) => upgrade.names.push((r.id, m.name.clone())),
            None => upgrade.unmatched.push(r.id),
        }
    }
    upgrade
}

/// drizzle's `Number(String(created_at).substring(0, length - 3) + '000')` as a whole number of
/// milliseconds; `None` where JavaScript gets NaN or a fraction (no folder has that key). A NULL
/// `created_at` is the string "null", which is NaN.
fn second_key(created_at: Option<&str>) -> Option<i64> {
    let text = created_at.unwrap_or("null");
    let cut = text.len().saturating_sub(3);
    let key = format!("{}000", text.get(..cut)?);
    js_whole_number(&key)
}

/// JavaScript's `Number(text)` for decimal text, when the result is a whole number that fits.
fn js_whole_number(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() {
        return Some(0);
    }
    if !t
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    (v.fract() == 0.0 && v.abs() < 9.0e15).then_some(v as i64)
}

impl Upgrade {
    /// The rows as drizzle 1.0 would read them after the upgrade.
    pub fn apply_to(&self, rows: &mut [HistoryRow]) {
        let by_id: HashMap<i64, &String> = self.names.iter().map(|(id, n)| (*id, n)).collect();
        for row in rows {
            if let Some(name) = by_id.get(&row.id) {
                row.name = Some((*name).clone());
            }
        }
    }

    /// The unmatched rows, one line each, for messages.
    pub fn unmatched_lines(&self, rows: &[RawRow]) -> Vec<String> {
        self.unmatched
            .iter()
            .map(|id| match rows.iter().find(|r| r.id == *id) {
                Some(r) => format!(
                    "row id {id}: hash {}, created_at {}",
                    &r.hash[..r.hash.len().min(12)],
                    match r.created_at.as_deref().map(|c| (c, c.parse::<i64>())) {
                        Some((_, Ok(ms))) => format!("{ms} ({})", utc(ms)),
                        Some((c, Err(_))) => c.to_string(),
                        None => "NULL".to_string(),
                    }
                ),
                None => format!("row id {id}"),
            })
            .collect()
    }

    /// The refusal when rows match nothing (exit 4), in drizzle's words and then ours.
    pub fn refusal(&self, table: &str, rows: &[RawRow]) -> Option<Error> {
        if self.unmatched.is_empty() {
            return None;
        }
        Some(Error::History(format!(
            "{table} is in drizzle 0.x's shape and the migrations folder is in drizzle-kit 1.0's, \
             so it must be upgraded the way drizzle 1.0 upgrades it: each row gets the name of \
             the folder it belongs to. {} row(s) match no folder here (ids {}), and drizzle 1.0 \
             refuses the upgrade in that case (\"While upgrading your database migrations table \
             we found {} migrations ... that do not match any local migration\"); so does \
             portcullis. Nothing was changed.\n  {}\n  This database has migrations that this \
             folder lacks: deploy a folder that has them (was `drizzle-kit up` run on an older \
             copy of the journal, or are another branch's migrations missing?). Rows that are \
             junk can be deleted (DELETE FROM {table} WHERE id = ...;) after checking.",
            self.unmatched.len(),
            self.unmatched
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.unmatched.len(),
            self.unmatched_lines(rows).join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn folder(position: usize, name: &str, sql: &str) -> Migration {
        let millis = crate::source::folders::folder_millis(name).unwrap();
        Migration::from_folder(position, name, millis, PathBuf::from(name), sql.as_bytes())
    }

    fn raw(id: i64, hash: &str, created_at: Option<&str>) -> RawRow {
        RawRow {
            id,
            hash: hash.to_string(),
            created_at: created_at.map(str::to_string),
            applied_at: None,
            name: None,
        }
    }

    /// drizzle's own fixture: two entries 1 ms apart become folders in the same second.
    fn fixture() -> Vec<Migration> {
        vec![
            folder(0, "20230331141203_puzzling_flatman", "create table a();"),
            folder(1, "20230331141203_test", "create table b();"),
            folder(2, "20230401000000_later", "create table c();"),
        ]
    }

    #[test]
    fn rows_match_by_second_then_hash() {
        let ms = fixture();
        let rows = vec![
            raw(1, &ms[0].hash, Some("1680271923328")),
            raw(2, &ms[1].hash, Some("1680271923329")),
            // Alone in its second: matched whatever its hash (an edited file).
            raw(3, &"e".repeat(64), Some("1680307200123")),
        ];
        let up = compute(&ms, &rows);
        assert!(up.unmatched.is_empty());
        assert_eq!(
            up.names,
            vec![
                (1, "20230331141203_puzzling_flatman".to_string()),
                (2, "20230331141203_test".to_string()),
                (3, "20230401000000_later".to_string()),
            ]
        );
    }

    #[test]
    fn a_shared_second_without_the_hash_does_not_fall_back() {
        let ms = fixture();
        let rows = vec![raw(7, &ms[2].hash, Some("1680271923999"))];
        let up = compute(&ms, &rows);
        assert_eq!(up.unmatched, vec![7]);
        let err = up
            .refusal("\"drizzle\".\"__drizzle_migrations\"", &rows)
            .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("ids 7"), "{msg}");
        assert!(msg.contains("Nothing was changed"), "{msg}");
        assert!(msg.contains("2023-03-31 14:12:03 UTC"), "{msg}");
    }

    #[test]
    fn no_folder_in_that_second_falls_back_to_the_hash_last_one_wins() {
        // E41: identical contents (two untouched --custom files): the later folder wins.
        let ms = vec![
            folder(0, "20240101000000_custom_a", "-- custom"),
            folder(1, "20240102000000_custom_b", "-- custom"),
        ];
        let rows = vec![
            raw(1, &ms[0].hash, Some("1600000000000")),
            raw(2, &ms[0].hash, None),
        ];
        let up = compute(&ms, &rows);
        assert_eq!(
            up.names,
            vec![
                (1, "20240102000000_custom_b".to_string()),
                (2, "20240102000000_custom_b".to_string())
            ]
        );
    }

    #[test]
    fn created_at_text_is_cut_like_javascript() {
        assert_eq!(second_key(Some("1680271923328")), Some(1_680_271_923_000));
        assert_eq!(second_key(Some("5")), Some(0));
        assert_eq!(second_key(None), None);
        // A numeric column's text keeps its scale: the cut lands in the wrong place.
        assert_eq!(
            second_key(Some("1680271923328.000")),
            Some(1_680_271_923_328)
        );
        assert_eq!(second_key(Some("abc1000")), None);
    }

    #[test]
    fn the_run_order_is_by_second_then_name() {
        let mut ms = fixture();
        ms.swap(0, 2);
        assert_eq!(order(&ms), vec![2, 1, 0]);
    }

    #[test]
    fn names_are_applied_to_the_rows() {
        let up = Upgrade {
            names: vec![(2, "x".into())],
            unmatched: vec![],
        };
        let mut rows = vec![HistoryRow {
            id: 2,
            hash: String::new(),
            created_at: None,
            name: None,
        }];
        up.apply_to(&mut rows);
        assert_eq!(rows[0].name.as_deref(), Some("x"));
    }
}
