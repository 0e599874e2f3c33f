//! What `portcullis repair` would change in a damaged tracking table (pure). It only ever touches
//! the tracking table: `created_at` converted to bigint, NULL or unreadable values filled from the
//! local migration with the same hash, exact duplicate rows dropped, and in a table in drizzle
//! 1.0's shape, a NULL `name` filled in for a row that records a local migration by second and
//! hash (a drizzle 0.x runner wrote it; drizzle 1.0 would run the migration again, E43). Rows it
//! cannot resolve are reported, and then nothing is changed at all.

use crate::db::history::RawRow;
use crate::plan::migration_for_hash;
use crate::source::Migration;
use std::collections::BTreeMap;

/// One change, in the order it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ALTER COLUMN created_at TYPE bigint`, every row getting its resolved value.
    ConvertToBigint { from: String },
    /// Give row `id` the `created_at` of the local migration with its hash.
    SetCreatedAt {
        id: i64,
        was: Option<String>,
        to: i64,
        tag: String,
    },
    /// Drop row `id`, an exact copy (hash, created_at and name) of row `keep`.
    DeleteDuplicate { id: i64, keep: i64 },
    /// Give row `id`, whose `name` is NULL, the name drizzle 1.0 knows its migration by.
    SetName { id: i64, name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairPlan {
    pub actions: Vec<Action>,
    /// The final `created_at` of every kept row (for the type conversion).
    pub values: BTreeMap<i64, i64>,
    /// Rows that cannot be fixed from the folder; with any, nothing is applied.
    pub unresolved: Vec<String>,
}

impl RepairPlan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// A stored value read as whole milliseconds: integers, and numerics such as `1700.000`.
fn as_millis(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Some(v);
    }
    let (int, frac) = t.split_once('.')?;
    if frac.bytes().all(|b| b == b'0') {
        int.parse().ok()
    } else {
        None
    }
}

/// Plans the repair of `rows` (whose `created_at` column has type `created_at_type`; `named`
/// when the table has drizzle 1.0's `name` column).
pub fn plan(
    migrations: &[Migration],
    created_at_type: &str,
    rows: &[RawRow],
    named: bool,
) -> RepairPlan {
    let mut out = RepairPlan::default();
    let needs_conversion = created_at_type != "bigint";
    let mut resolved: Vec<(i64, String, i64)> = Vec::new();
    let mut fills = Vec::new();
    // The migrations a row with a readable value records already; a row to fill gets one no
    // other row records (see `migration_for_hash`), in id order, so that filling never makes
    // one row a copy of another (which the duplicate step below would then delete).
    let mut recorded: Vec<bool> = migrations
        .iter()
        .map(|m| {
            rows.iter().any(|r| {
                r.hash == m.hash && r.created_at.as_deref().and_then(as_millis) == Some(m.when)
            })
        })
        .collect();
    for r in rows {
        let parsed = r.created_at.as_deref().and_then(as_millis);
        let value = match parsed {
            // A readable integer is kept, even under a text or numeric type.
            Some(v) => v,
            None => match migration_for_hash(migrations, &r.hash, &mut recorded) {
                Some(m) => {
                    fills.push(Action::SetCreatedAt {
                        id: r.id,
                        was: r.created_at.clone(),
                        to: m.when,
                        tag: m.tag.clone(),
                    });
                    m.when
                }
                None => {
                    out.unresolved.push(format!(
                        "row id {} has created_at {} and a hash ({}) that matches no migration in \
                         this folder; set its created_at by hand (the journal `when` of the \
                         migration it records) or delete it",
                        r.id,
                        r.created_at.as_deref().unwrap_or("NULL"),
                        &r.hash[..r.hash.len().min(12)]
                    ));
                    continue;
                }
            },
        };
        resolved.push((r.id, r.hash.clone(), value));
    }
    // Names for nameless rows: the migration of the same second and hash, when no row has its
    // name yet (one row per name).
    let mut names: BTreeMap<i64, String> = rows
        .iter()
        .filter_map(|r| r.name.clone().map(|n| (r.id, n)))
        .collect();
    let mut taken: std::collections::HashSet<String> = names.values().cloned().collect();
    let second = |ms: i64| ms - ms.rem_euclid(1000);
    let mut by_second: std::collections::HashMap<(&str, i64), &Migration> =
        std::collections::HashMap::new();
    for m in migrations.iter().rev() {
        by_second.insert((m.hash.as_str(), second(m.when)), m); // the first one wins
    }
    let mut namings = Vec::new();
    for (id, hash, value) in resolved.iter().filter(|_| named) {
        if names.contains_key(id) {
            continue;
        }
        let Some(m) = by_second.get(&(hash.as_str(), second(*value))) else {
            continue;
        };
        if !taken.insert(m.name.clone()) {
            continue;
        }
        names.insert(*id, m.name.clone());
        namings.push(Action::SetName {
            id: *id,
            name: m.name.clone(),
        });
    }
    let mut deletes = Vec::new();
    let mut kept: Vec<&(i64, String, i64)> = Vec::new();
    for row in &resolved {
        match kept
            .iter()
            .find(|k| k.1 == row.1 && k.2 == row.2 && names.get(&k.0) == names.get(&row.0))
        {
            Some(first) => deletes.push(Action::DeleteDuplicate {
                id: row.0,
                keep: first.0,
            }),
            None => kept.push(row),
        }
    }
    out.values = kept.iter().map(|(id, _, v)| (*id, *v)).collect();
    if needs_conversion {
        out.actions.push(Action::ConvertToBigint {
            from: created_at_type.to_string(),
        });
    }
    out.actions.extend(fills);
    out.actions.extend(namings);
    out.actions.extend(deletes);
    out
}

/// One line per action, for the printed plan.
pub fn describe(action: &Action, table: &str) -> String {
    match action {
        Action::ConvertToBigint { from } => {
            format!("convert {table}.created_at from {from} to bigint (drizzle's type)")
        }
        Action::SetCreatedAt { id, was, to, tag } => format!(
            "set created_at of row id {id} from {} to {to} (the `when` of {tag}, matched by hash)",
            was.as_deref().unwrap_or("NULL")
        ),
        Action::DeleteDuplicate { id, keep } => {
            format!("delete row id {id}, an exact duplicate of row id {keep}")
        }
        Action::SetName { id, name } => format!(
            "set name of row id {id} from NULL to {name} (matched by second and hash), so \
             drizzle 1.0 does not run that migration again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn m(when: i64, sql: &str) -> Migration {
        Migration::new(
            0,
            &format!("m{when}"),
            when,
            PathBuf::from("x.sql"),
            sql.as_bytes(),
        )
    }

    fn raw(id: i64, hash: &str, created_at: Option<&str>) -> RawRow {
        RawRow {
            id,
            hash: hash.into(),
            created_at: created_at.map(str::to_string),
            applied_at: None,
            name: None,
        }
    }

    #[test]
    fn a_healthy_table_needs_nothing() {
        let ms = vec![m(10, "a"), m(20, "b")];
        let rows = vec![
            raw(1, &ms[0].hash, Some("10")),
            raw(2, &ms[1].hash, Some("20")),
        ];
        let p = plan(&ms, "bigint", &rows, false);
        assert!(p.is_empty() && p.unresolved.is_empty(), "{p:?}");
    }

    #[test]
    fn fills_nulls_by_hash_and_drops_exact_duplicates() {
        let ms = vec![m(10, "a"), m(20, "b")];
        let rows = vec![
            raw(1, &ms[0].hash, Some("10")),
            raw(2, &ms[1].hash, None),
            raw(3, &ms[0].hash, Some("10")),
        ];
        let p = plan(&ms, "bigint", &rows, false);
        assert_eq!(
            p.actions,
            vec![
                Action::SetCreatedAt {
                    id: 2,
                    was: None,
                    to: 20,
                    tag: "m20".into()
                },
                Action::DeleteDuplicate { id: 3, keep: 1 },
            ]
        );
        assert_eq!(p.values, BTreeMap::from([(1, 10), (2, 20)]));
    }

    #[test]
    fn nulls_of_two_files_with_the_same_content_get_one_migration_each() {
        // Two untouched `--custom` files: same content, same hash.
        let ms = vec![m(10, "-- custom"), m(20, "-- custom"), m(30, "x")];
        let fill = |id: i64, to: i64| Action::SetCreatedAt {
            id,
            was: None,
            to,
            tag: format!("m{to}"),
        };
        // Both rows NULL: one each, nothing deleted.
        let rows = vec![raw(1, &ms[0].hash, None), raw(2, &ms[1].hash, None)];
        let p = plan(&ms, "bigint", &rows, false);
        assert_eq!(p.actions, vec![fill(1, 10), fill(2, 20)]);
        assert_eq!(p.values, BTreeMap::from([(1, 10), (2, 20)]));
        // The first recorded, the second NULL: the second gets the migration not yet recorded.
        let rows = vec![raw(1, &ms[0].hash, Some("10")), raw(2, &ms[1].hash, None)];
        let p = plan(&ms, "bigint", &rows, false);
        assert_eq!(p.actions, vec![fill(2, 20)]);
        // A third row of that content has no migration left: a copy of the first, dropped.
        let rows = vec![
            raw(1, &ms[0].hash, None),
            raw(2, &ms[1].hash, None),
            raw(3, &ms[0].hash, None),
        ];
        let p = plan(&ms, "bigint", &rows, false);
        assert_eq!(
            p.actions,
            vec![
                fill(1, 10),
                fill(2, 20),
                fill(3, 10),
                Action::DeleteDuplicate { id: 3, keep: 1 }
            ]
        );
    }

    #[test]
    fn converts_text_numeric_and_timestamps() {
        let ms = vec![m(10, "a"), m(20, "b")];
        let rows = vec![
            raw(1, &ms[0].hash, Some("10")),
            raw(2, &ms[1].hash, Some("20.000")),
        ];
        let p = plan(&ms, "numeric", &rows, false);
        assert_eq!(
            p.actions,
            vec![Action::ConvertToBigint {
                from: "numeric".into()
            }]
        );
        assert_eq!(p.values, BTreeMap::from([(1, 10), (2, 20)]));
        // A timestamp value is not milliseconds: taken from the migration with the same hash.
        let rows = vec![raw(1, &ms[0].hash, Some("2024-01-01 00:00:00"))];
        let p = plan(&ms, "timestamp without time zone", &rows, false);
        assert_eq!(p.actions.len(), 2);
        assert_eq!(p.values, BTreeMap::from([(1, 10)]));
    }

    #[test]
    fn unknown_rows_it_cannot_fix_are_reported() {
        let ms = vec![m(10, "a")];
        let rows = vec![raw(7, &"f".repeat(64), None)];
        let p = plan(&ms, "bigint", &rows, false);
        assert_eq!(p.unresolved.len(), 1);
        assert!(p.unresolved[0].contains("row id 7"));
    }

    #[test]
    fn names_nameless_rows_in_a_drizzle_1_table() {
        // A 0.x runner recorded `m2000` (when 2345) with name NULL in an upgraded table.
        let ms = vec![m(1000, "a"), m(2345, "b"), m(3000, "c")];
        let mut rows = vec![
            raw(1, &ms[0].hash, Some("1000")),
            raw(2, &ms[1].hash, Some("2345")),
            raw(3, &ms[2].hash, Some("3000")),
            // The same content recorded again, already named: left alone.
            raw(4, &ms[2].hash, Some("3000")),
        ];
        rows[0].name = Some(ms[0].name.clone());
        rows[3].name = Some(ms[2].name.clone());
        let p = plan(&ms, "bigint", &rows, true);
        assert_eq!(
            p.actions,
            vec![Action::SetName {
                id: 2,
                name: ms[1].name.clone()
            }]
        );
        assert!(describe(&p.actions[0], "t").contains("does not run that migration again"));
        // Without the column there is nothing to name.
        assert!(plan(&ms, "bigint", &rows, false).is_empty());
    }
}
