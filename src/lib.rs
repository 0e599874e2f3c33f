//! portcullis: applies drizzle-kit migrations to PostgreSQL before the app starts.
//!
//! The single orchestration path lives here. Every command goes through the same steps, reading
//! the folder (before connecting), waiting for the database, taking the advisory lock when it
//! writes, reading the tracking table and planning, and differs only in what it does with the plan:
//! `migrate` applies it, `plan` prints it, `status` reports it, `validate` judges it, `baseline`
//! records it, `repair` fixes the table, `await` waits until it is empty. Seeds are read with the
//! folder and run last, under the same lock (`migrate`, or `seed` alone).

pub mod config;
pub mod db;
pub mod error;
pub mod exit;
pub mod interrupt;
pub mod logging;
pub mod plan;
pub mod repair;
pub mod report;
pub mod seeds;
pub mod source;
pub mod upgrade;

use config::Config;
use db::history::{RawRow, Snapshot};
use error::Error;
use plan::{Plan, State};
use source::{Folder, Layout, Migration};
use std::time::{Duration, Instant};

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// A command of the interface (`../shared/spec/interface.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Migrate,
    /// `plan`, also `migrate --dry-run`.
    Plan,
    Status {
        format: Format,
        colour: bool,
    },
    Validate {
        offline: bool,
    },
    Baseline {
        to: Option<String>,
        force: bool,
    },
    Repair {
        apply: bool,
    },
    Wait,
    Await,
    /// `seed`: wait, lock, run the seeds only.
    Seed,
}

/// What a successful command produced: a report for stdout (may be empty) and the summary line
/// for the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub stdout: String,
    pub summary: String,
    pub applied: Vec<db::apply::Applied>,
}

/// Runs one command. The caller (main) turns an `Err` into its exit code.
pub async fn run(command: &Command, cfg: &Config) -> Result<Outcome, Error> {
    match command {
        Command::Migrate => migrate(cfg).await,
        Command::Seed => seed(cfg).await,
        Command::Wait => {
            db::connect::wait_for(&cfg.database, cfg.wait_timeout).await?;
            Ok(Outcome {
                summary: format!("{} accepts connections", cfg.database.target()),
                ..Outcome::default()
            })
        }
        Command::Validate { offline: true } => {
            let folder = read_folder(cfg)?;
            read_seeds(cfg)?;
            validate(cfg, &folder, None)
        }
        _ => {
            let folder = read_folder(cfg)?;
            if *command == Command::Await {
                return await_ready(cfg, &folder).await;
            }
            let seeds = match command {
                Command::Plan if !cfg.seeds.enabled => None,
                Command::Plan | Command::Status { .. } | Command::Validate { .. } => {
                    Some(read_seeds(cfg)?)
                }
                _ => None,
            };
            let session = db::connect::wait_for(&cfg.database, cfg.wait_timeout).await?;
            match command {
                Command::Plan => {
                    let snapshot = read_history(cfg, &session).await?;
                    let mut outcome = plan_report(cfg, &folder, &snapshot)?;
                    if let Some(seeds) = &seeds {
                        let records = read_seed_records(cfg, &session).await?;
                        seeds_plan(cfg, seeds, records.as_deref(), &mut outcome);
                    }
                    Ok(outcome)
                }
                Command::Status { format, colour } => {
                    let snapshot = read_history(cfg, &session).await?;
                    let records = read_seed_records(cfg, &session).await?;
                    let seeds =
                        seeds_status(cfg, seeds.as_ref().expect("read above"), records.as_deref());
                    let key = lock_key(cfg);
                    let migrating = db::lock::holders(&session, key).await;
                    status(cfg, &folder, &snapshot, seeds, migrating, *format, *colour)
                }
                Command::Validate { .. } => {
                    let snapshot = read_history(cfg, &session).await?;
                    validate(cfg, &folder, Some(&snapshot))
                }
                Command::Baseline { to, force } => {
                    with_lock(cfg, &session, baseline(cfg, &session, &folder, to, *force)).await
                }
                Command::Repair { apply } => {
                    with_lock(cfg, &session, repair(cfg, &session, &folder, *apply)).await
                }
                Command::Migrate | Command::Wait | Command::Await | Command::Seed => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// `portcullis migrate`: wait, lock, apply pending migrations exactly as drizzle would, run the
/// seeds, unlock.
pub async fn migrate(cfg: &Config) -> Result<Outcome, Error> {
    let started = Instant::now();
    let folder = read_folder(cfg)?;
    let seeds = if cfg.seeds.enabled {
        Some(read_seeds(cfg)?)
    } else {
        tracing::info!(
            "seeds are off for this run (PORTCULLIS_SEEDS=false or --no-seed): {} is not run",
            cfg.seeds.dir.display()
        );
        None
    };
    let session = db::connect::wait_for(&cfg.database, cfg.wait_timeout).await?;
    let table = db::qualified(&cfg.migrations_schema, &cfg.migrations_table);
    let key = lock_key(cfg);
    let waiting = Instant::now();
    let work = async {
        let mut outcome = migrate_locked(cfg, &session, &folder, started).await?;
        if let Some(seeds) = &seeds {
            seed_locked(cfg, &session, seeds, &mut outcome).await?;
        }
        Ok(outcome)
    };
    let locked = async {
        let taken = db::lock::take_or_queue(&session, key, &table, cfg.lock_wait_timeout);
        if let db::lock::Taken::Shared { since } = taken.await? {
            if let Some(outcome) =
                done_by_other(cfg, &session, &folder, seeds.as_ref(), key, since).await?
            {
                return Ok(outcome);
            }
            // The runner waited for left work undone (it failed, was killed, or came from an
            // older deploy): take the lock and do it, polling for the rest of the wait.
            let left = cfg.lock_wait_timeout.saturating_sub(waiting.elapsed());
            db::lock::acquire(&session, key, &table, left).await?;
        }
        let result = work.await;
        db::lock::release(&session, key).await;
        result
    };
    locked.await
}

/// After waiting for another runner, holding the lock in shared mode (released here, sent with
/// the read of the tracking table): whether that runner left nothing for this one,
/// judged exactly as this run would judge it (the same plan, no refusal, no table upgrade) and, for seeds, every seed file recorded with its current hash and, in
/// `always` mode, run by a transaction that began after this runner found the lock taken, so
/// that data deleted before this runner started has been put back. `Some(outcome)` when there
/// is nothing left; `None` sends this runner to take the lock and do the work itself (and to
/// report any refusal the normal way).
async fn done_by_other(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
    seeds: Option<&seeds::SeedSet>,
    key: i64,
    since: f64,
) -> Result<Option<Outcome>, Error> {
    interrupt::set_activity("reading the tracking table");
    let quick = read_history_quickly(cfg, session, Some((db::lock::UNLOCK_SHARED, key))).await?;
    // A table this read does not judge (none, another shape, a damaged row) takes the usual
    // two reads.
    let snapshot = match quick {
        Some(snapshot) => snapshot,
        None => read_history(cfg, session).await?,
    };
    if !snapshot.exists {
        return Ok(None);
    }
    let Ok((plan, decision, None)) = decide(cfg, folder, &snapshot) else {
        return Ok(None);
    };
    if !decision.apply.is_empty() {
        return Ok(None);
    }
    let seeds = seeds.filter(|s| !s.seeds.is_empty());
    if let Some(set) = seeds {
        let since = (cfg.seeds.mode == config::SeedMode::Always).then_some(since);
        let ran = session
            .within(
                "reading the seeds tracking table",
                db::seeds::all_ran_since(session, &cfg.migrations_schema, set, since),
            )
            .await?;
        if !ran {
            return Ok(None);
        }
    }
    log_decision(&decision);
    let recorded = plan
        .states
        .iter()
        .filter(|s| matches!(s, State::Applied { .. } | State::Edited { .. }))
        .count();
    let mut summary = report::summary(&[], Duration::ZERO, recorded);
    if let Some(set) = seeds {
        let n = set.seeds.len();
        summary.push_str(&match cfg.seeds.mode {
            config::SeedMode::Always => {
                format!("; seeds: all {n} ran after this runner started, in the run it waited for")
            }
            config::SeedMode::Changed => format!(
                "; seeds: all {n} unchanged since they last ran (PORTCULLIS_SEED_MODE=changed)"
            ),
        });
    }
    tracing::info!("the runner this one waited for left nothing to do");
    Ok(Some(Outcome {
        stdout: String::new(),
        summary,
        applied: Vec::new(),
    }))
}

/// Reads and checks the folder completely, before any connection; logs its warnings.
fn read_folder(cfg: &Config) -> Result<Folder, Error> {
    let folder = source::load(&cfg.migrations_dir)?;
    for w in &folder.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        migrations = folder.migrations.len(),
        "read {}",
        folder.dir.display()
    );
    Ok(folder)
}

/// Runs `work` holding the advisory lock, releasing it whatever `work` returns.
async fn with_lock<F>(cfg: &Config, session: &db::Session, work: F) -> Result<Outcome, Error>
where
    F: std::future::Future<Output = Result<Outcome, Error>>,
{
    let table = db::qualified(&cfg.migrations_schema, &cfg.migrations_table);
    let key = lock_key(cfg);
    let locked = async {
        db::lock::acquire(session, key, &table, cfg.lock_wait_timeout).await?;
        let result = work.await;
        db::lock::release(session, key).await;
        result
    };
    locked.await
}

// The tracking-table phases are bounded by the session's answer timeout (exit 5 when the server
// stops answering), so a stalled connection cannot hang a run; see `db::Session::within`.
async fn read_history(cfg: &Config, session: &db::Session) -> Result<Snapshot, Error> {
    session
        .within(
            "reading the tracking table",
            db::history::read(session, &cfg.migrations_schema, &cfg.migrations_table),
        )
        .await
}

/// [`db::history::read_quickly`], bounded like [`read_history`].
async fn read_history_quickly(
    cfg: &Config,
    session: &db::Session,
    release: Option<(&str, i64)>,
) -> Result<Option<Snapshot>, Error> {
    session
        .within("reading the tracking table", async {
            Ok(db::history::read_quickly(
                session,
                &cfg.migrations_schema,
                &cfg.migrations_table,
                release,
            )
            .await)
        })
        .await
}

async fn read_seed_records(
    cfg: &Config,
    session: &db::Session,
) -> Result<Option<Vec<seeds::Record>>, Error> {
    session
        .within(
            "reading the seeds tracking table",
            db::seeds::read(session, &cfg.migrations_schema),
        )
        .await
}

async fn prepare_history(
    cfg: &Config,
    session: &db::Session,
    layout: Layout,
) -> Result<Snapshot, Error> {
    session
        .within(
            "reading the tracking table",
            db::history::prepare(
                session,
                &cfg.migrations_schema,
                &cfg.migrations_table,
                layout,
            ),
        )
        .await
}

async fn upgrade_history(
    session: &db::Session,
    table: &mut db::history::Table,
    up: &upgrade::Upgrade,
) -> Result<(), Error> {
    session
        .within(
            "upgrading the tracking table to drizzle 1.0's shape",
            db::history::upgrade(session, table, &up.names),
        )
        .await
}

/// What [`decide`] returns: the plan, the decision, and the table upgrade that must come first.
type Decided = (Plan, plan::Decision, Option<upgrade::Upgrade>);

/// The decision `migrate` would take now, from a snapshot of the table: the plan over the rows
/// as drizzle would see them, and the upgrade to drizzle 1.0's table shape that must come first,
/// if any. Every refusal happens here, before anything is changed.
fn decide(cfg: &Config, folder: &Folder, snapshot: &Snapshot) -> Result<Decided, Error> {
    let mut rows = if snapshot.exists {
        snapshot.require_usable()?
    } else {
        Vec::new()
    };
    let upgrade = table_upgrade(folder, snapshot);
    if let Some(up) = &upgrade {
        if let Some(refusal) = up.refusal(&snapshot.table.qualified, &snapshot.raw) {
            return Err(refusal);
        }
        up.apply_to(&mut rows);
    }
    let plan = Plan::analyse(folder.layout, &folder.migrations, &rows);
    let mut decision = plan.decide(
        &folder.migrations,
        cfg.out_of_order,
        &snapshot.table.qualified,
    )?;
    // What only psql can run, in a migration about to be applied: refused before any is.
    let client_only: Vec<String> = decision
        .apply
        .iter()
        .flat_map(|&i| source::client_only_problems(&folder.migrations[i]))
        .collect();
    if !client_only.is_empty() {
        return Err(Error::Source(format!(
            "{} Nothing was applied; fix the file{}, then deploy again.",
            source::problems_message("migrations", &client_only),
            if client_only.len() == 1 { "" } else { "s" }
        )));
    }
    if folder.layout == Layout::Journal && snapshot.table.has_name_column {
        let nameless_ids: std::collections::HashSet<i64> = rows
            .iter()
            .filter(|r| r.name.is_none())
            .map(|r| r.id)
            .collect();
        let nameless: Vec<&str> = (plan.states.iter().zip(&folder.migrations))
            .filter_map(|(s, m)| match s {
                State::Applied { row_id, .. } if nameless_ids.contains(row_id) => {
                    Some(m.tag.as_str())
                }
                _ => None,
            })
            .collect();
        if !nameless.is_empty() {
            decision.warnings.push(format!(
                "{} has drizzle 1.0's shape, but the rows of {} have no name (a drizzle 0.x \
                 runner wrote them); once this project moves to drizzle-kit 1.0, drizzle would \
                 run those migrations again. `portcullis repair --apply` names them",
                snapshot.table.qualified,
                if nameless.len() > 10 {
                    format!(
                        "{} and {} more",
                        nameless[..10].join(", "),
                        nameless.len() - 10
                    )
                } else {
                    nameless.join(", ")
                }
            ));
        }
    }
    if upgrade.is_some() {
        // drizzle 1.0 sorts its migrations by second, then name, in the run that upgrades.
        let order = upgrade::order(&folder.migrations);
        decision
            .apply
            .sort_by_key(|i| order.iter().position(|o| o == i));
    }
    Ok((plan, decision, upgrade))
}

/// The upgrade drizzle 1.0 makes before anything else when a folder-layout folder meets a table
/// in drizzle 0.x's shape (no `name` column).
fn table_upgrade(folder: &Folder, snapshot: &Snapshot) -> Option<upgrade::Upgrade> {
    (folder.layout == Layout::Folders && snapshot.exists && !snapshot.table.has_name_column)
        .then(|| upgrade::compute(&folder.migrations, &snapshot.raw))
}

fn log_decision(decision: &plan::Decision) {
    for w in &decision.warnings {
        tracing::warn!("{w}");
    }
    for n in &decision.notes {
        tracing::info!("{n}");
    }
}

/// The part of `migrate` that runs while holding the lock.
async fn migrate_locked(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
    started: Instant,
) -> Result<Outcome, Error> {
    interrupt::set_activity("reading the tracking table");
    let (snapshot, (plan, decision, upgrade)) = match nothing_to_do(cfg, session, folder).await? {
        Some(found) => found,
        None => {
            let snapshot = prepare_history(cfg, session, folder.layout).await?;
            let decided = decide(cfg, folder, &snapshot)?;
            (snapshot, decided)
        }
    };
    log_decision(&decision);
    let mut table = snapshot.table;
    if let Some(up) = &upgrade {
        upgrade_history(session, &mut table, up).await?;
    }
    let todo: Vec<&Migration> = decision
        .apply
        .iter()
        .map(|&i| &folder.migrations[i])
        .collect();
    let applied = if todo.is_empty() {
        Vec::new()
    } else {
        tracing::info!(
            "applying {} migration{} to {} ({})",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            cfg.database.target(),
            transaction_words(cfg)
        );
        db::apply::apply(
            session,
            &table,
            &todo,
            cfg.transaction,
            db::apply::Limits {
                lock_timeout: cfg.ddl_lock_timeout,
                lock_retries: cfg.ddl_lock_retries,
                statement_timeout: cfg.statement_timeout,
            },
        )
        .await
        .map_err(|e| already_there(e, &table.qualified, &snapshot.raw, &snapshot.elsewhere))?
    };
    let recorded = plan
        .states
        .iter()
        .filter(|s| matches!(s, State::Applied { .. } | State::Edited { .. }))
        .count()
        + applied.len();
    let summary = report::summary(
        &applied
            .iter()
            .map(|a| (a.tag.clone(), a.duration))
            .collect::<Vec<_>>(),
        started.elapsed(),
        recorded,
    );
    Ok(Outcome {
        stdout: String::new(),
        summary,
        applied,
    })
}

/// The migration lock's key for the configured tracking table.
fn lock_key(cfg: &Config) -> i64 {
    db::lock::key(&cfg.migrations_schema, &cfg.migrations_table)
}

/// A migration that finds what it creates already there, while the tracking table had no rows
/// before this run: the schema was made without drizzle's migrator (`drizzle-kit push`, a
/// restore), or the history is in another table. "Fix the SQL" would mislead; this says which.
fn already_there(e: Error, table: &str, rows: &[RawRow], elsewhere: &[String]) -> Error {
    let Error::MigrationFailed(mut failure) = e else {
        return e;
    };
    // Duplicate schema, table (or index, view, sequence), column, object (type, constraint,
    // trigger...), function.
    let duplicate = matches!(
        failure.sqlstate.as_str(),
        "42P06" | "42P07" | "42701" | "42710" | "42723"
    );
    if duplicate && rows.is_empty() {
        let elsewhere = if elsewhere.is_empty() {
            String::new()
        } else {
            format!(
                " Other tables with drizzle's tracking columns exist: {}. If drizzle.config \
                 sets migrations.schema or migrations.table, set PORTCULLIS_MIGRATIONS_SCHEMA \
                 and PORTCULLIS_MIGRATIONS_TABLE to match, and run again.",
                elsewhere.join(", ")
            )
        };
        failure.advice = Some(format!(
            "{table} had no rows before this run, yet the database already has what {} \
             creates.{elsewhere} If the schema was made another way (drizzle-kit push, a \
             restore, by hand) and matches the migrations, record them as applied without \
             running them with `portcullis baseline` (`--to <tag>` stops at the last one the \
             database already has), then run again. Otherwise fix the SQL in {} or the \
             database, and deploy again.",
            failure.tag, failure.file
        ));
    }
    Error::MigrationFailed(failure)
}

/// What the cheap read (`db::history::read_quickly`) of the tracking table came to.
enum Quick {
    /// The read does not judge this table (none, another shape, a damaged row).
    Unjudged,
    /// The table is empty (the normal path checks other tracking tables for the rows), or
    /// [`decide`] refused it: the normal path, which reads the catalogs first, explains it.
    Unsure,
    /// The decision `migrate` would take now (boxed: the other variants are empty).
    Decided(Box<(Snapshot, Decided)>),
}

/// The cheap read of the tracking table, and [`decide`] on it; see [`Quick`].
async fn decide_quickly(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
) -> Result<Quick, Error> {
    Ok(match read_history_quickly(cfg, session, None).await? {
        None => Quick::Unjudged,
        Some(snapshot) if snapshot.raw.is_empty() => Quick::Unsure,
        Some(snapshot) => match decide(cfg, folder, &snapshot) {
            Ok(decided) => Quick::Decided(Box::new((snapshot, decided))),
            Err(_) => Quick::Unsure,
        },
    })
}

/// The snapshot and decision of a run with nothing to do, found with the cheap read: no
/// migration to apply, no table upgrade, no refusal, and at least one row. `None` sends the run
/// down the normal path, which reads the catalogs first and explains any problem.
async fn nothing_to_do(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
) -> Result<Option<(Snapshot, Decided)>, Error> {
    match decide_quickly(cfg, session, folder).await? {
        // The read has logged why.
        Quick::Unjudged => return Ok(None),
        Quick::Decided(found) => {
            let (_, (_, decision, upgrade)) = &*found;
            if decision.apply.is_empty() && upgrade.is_none() {
                return Ok(Some(*found));
            }
        }
        Quick::Unsure => {}
    }
    tracing::debug!(
        "there is work to do (or a problem to explain), so the tracking table is read again the \
         usual way"
    );
    Ok(None)
}

fn transaction_words(cfg: &Config) -> &'static str {
    match cfg.transaction {
        config::TransactionMode::All => "one transaction",
        config::TransactionMode::Each => "one transaction per migration",
    }
}

/// `portcullis plan` / `migrate --dry-run`: what `migrate` would apply now, with its SQL.
fn plan_report(cfg: &Config, folder: &Folder, snapshot: &Snapshot) -> Result<Outcome, Error> {
    let (_, decision, upgrade) = decide(cfg, folder, snapshot)?;
    log_decision(&decision);
    let q = &snapshot.table.qualified;
    let mut out = String::new();
    if let Some(up) = &upgrade {
        out.push_str(&format!(
            "-- first, in one transaction, {q} is upgraded to drizzle 1.0's shape as drizzle 1.0 \
             does it:\n-- ALTER TABLE {q} ADD COLUMN IF NOT EXISTS \"name\" text\n-- ALTER TABLE \
             {q} ADD COLUMN IF NOT EXISTS \"applied_at\" timestamp with time zone DEFAULT now()\n"
        ));
        for (id, name) in &up.names {
            out.push_str(&format!(
                "-- UPDATE {q} SET \"name\" = {}, \"applied_at\" = NULL WHERE \"id\" = {id}\n",
                plan::sql_literal(name)
            ));
        }
    }
    let named = snapshot.table.has_name_column || folder.layout == Layout::Folders;
    if decision.apply.is_empty() {
        let summary = format!(
            "nothing to apply: all {} migrations of {} are recorded in {}{}",
            folder.migrations.len(),
            folder.dir.display(),
            snapshot.table.qualified,
            if upgrade.is_some() {
                " (once it is upgraded to drizzle 1.0's shape)"
            } else {
                ""
            }
        );
        out.push_str(&format!("-- {summary}\n"));
        return Ok(Outcome {
            stdout: out,
            summary,
            applied: Vec::new(),
        });
    }
    let n = decision.apply.len();
    let outside = decision
        .apply
        .iter()
        .filter(|&&i| folder.migrations[i].no_transaction.is_some())
        .count();
    out.push_str(&format!(
        "-- portcullis plan for {}: {n} migration{} to apply, in this order, in {}{}.\n",
        cfg.database.target(),
        if n == 1 { "" } else { "s" },
        transaction_words(cfg),
        match outside {
            0 => String::new(),
            _ => format!(
                ", except {outside} that run{} outside a transaction, statement by statement \
                 (what comes before each is committed first)",
                if outside == 1 { "s" } else { "" }
            ),
        }
    ));
    if !snapshot.exists {
        out.push_str(&format!(
            "-- {} does not exist yet; migrate creates it first.\n",
            snapshot.table.qualified
        ));
    }
    for (k, &i) in decision.apply.iter().enumerate() {
        let m = &folder.migrations[i];
        let chunks = m.chunks();
        let sent: Vec<_> = chunks.iter().filter(|c| !c.is_blank()).collect();
        out.push_str(&format!(
            "\n-- [{}/{n}] {} ({}), when {} ({}), {} statement{}{}\n",
            k + 1,
            m.tag,
            m.file(),
            m.when,
            report::utc(m.when),
            sent.len(),
            if sent.len() == 1 { "" } else { "s" },
            match (&m.no_transaction, cfg.transaction) {
                (Some(reason), _) => format!(
                    ", outside a transaction, statement by statement (each commits on its own): \
                     {reason}"
                ),
                (None, config::TransactionMode::All) => ", in the batch transaction".into(),
                (None, config::TransactionMode::Each) => ", in its own transaction".into(),
            }
        ));
        for (s, c) in sent.iter().enumerate() {
            out.push_str(&format!("-- statement {}\n", s + 1));
            out.push_str(c.text.trim_matches(['\n', '\r']));
            out.push('\n');
        }
        out.push_str(&if named {
            format!(
                "-- then: insert into {q} (\"hash\", \"created_at\", \"name\") values ('{}', {}, {})\n",
                m.hash,
                m.when,
                plan::sql_literal(&m.name)
            )
        } else {
            format!(
                "-- then: insert into {q} (\"hash\", \"created_at\") values ('{}', {})\n",
                m.hash, m.when
            )
        });
    }
    Ok(Outcome {
        stdout: out,
        summary: format!(
            "{n} migration{} would be applied; nothing was changed",
            if n == 1 { "" } else { "s" }
        ),
        applied: Vec::new(),
    })
}

/// `portcullis status`: every migration's state, read-only, no lock.
/// `migrating`: who holds the migration lock now ([`db::lock::holders`]).
fn status(
    cfg: &Config,
    folder: &Folder,
    snapshot: &Snapshot,
    seeds: report::SeedsStatus,
    migrating: Vec<String>,
    format: Format,
    colour: bool,
) -> Result<Outcome, Error> {
    let mut rows = snapshot.rows();
    let upgrade = table_upgrade(folder, snapshot);
    if let Some(up) = &upgrade {
        up.apply_to(&mut rows);
    }
    let plan = Plan::analyse(folder.layout, &folder.migrations, &rows);
    let late = plan.late(&folder.migrations);
    // By id through a map: a scan of the rows per migration is minutes for 100k of each.
    let applied_at_by_id: std::collections::HashMap<i64, Option<&str>> = snapshot
        .raw
        .iter()
        .rev() // the first row with an id wins, as a scan would find it
        .map(|r| (r.id, r.applied_at.as_deref()))
        .collect();
    let applied_at = |id: i64| {
        applied_at_by_id
            .get(&id)
            .copied()
            .flatten()
            .map(str::to_string)
    };
    let mut counts = report::StatusCounts::default();
    let migrations: Vec<report::StatusEntry> = folder
        .migrations
        .iter()
        .zip(&plan.states)
        .enumerate()
        .map(|(i, (m, s))| {
            let (state, row_id, recorded_hash, note) = match s {
                State::Applied { row_id, moved } => {
                    counts.applied += 1;
                    let note = moved.then(|| "recorded under another created_at".to_string());
                    ("applied", Some(*row_id), None, note)
                }
                State::Pending => {
                    counts.pending += 1;
                    let note = late.contains(&i).then(|| {
                        "older than the newest applied; drizzle 1.0 applies it too".to_string()
                    });
                    ("pending", None, None, note)
                }
                State::RecordedEarlier { row_id, created_at } => {
                    counts.recorded_earlier += 1;
                    let note = format!(
                        "recorded under an older created_at ({created_at}); drizzle would run it \
                         again"
                    );
                    ("recorded-earlier", Some(*row_id), None, Some(note))
                }
                State::Unnamed { row_id } => {
                    counts.unnamed += 1;
                    let note =
                        "recorded with name NULL; drizzle 1.0 would run it again".to_string();
                    ("recorded-without-name", Some(*row_id), None, Some(note))
                }
                State::OutOfOrder => {
                    counts.out_of_order += 1;
                    ("out-of-order", None, None, None)
                }
                State::Edited {
                    row_id,
                    recorded_hash,
                    cosmetic,
                } => {
                    counts.edited += 1;
                    let note = cosmetic.then(|| "line endings or BOM only".to_string());
                    ("edited", Some(*row_id), Some(recorded_hash.clone()), note)
                }
            };
            report::StatusEntry {
                tag: m.tag.clone(),
                name: m.name.clone(),
                when: m.when,
                when_utc: report::utc(m.when),
                state,
                file: m.file(),
                hash: m.hash.clone(),
                row_id,
                recorded_hash,
                applied_at: row_id.and_then(applied_at),
                note,
            }
        })
        .collect();
    let unknown_rows: Vec<report::UnknownRow> = plan
        .unknown_rows
        .iter()
        .map(|r| report::UnknownRow {
            id: r.id,
            hash: r.hash.clone(),
            created_at: r.created_at.map(|v| v.to_string()),
            created_at_utc: r.created_at.map(report::utc),
            applied_at: applied_at(r.id),
        })
        .collect();
    counts.unknown = unknown_rows.len();
    let mut problems = snapshot.shape_problems();
    for r in snapshot.unparsable() {
        problems.push(format!(
            "row id {} has created_at {:?}, which is not whole milliseconds",
            r.id,
            r.created_at.as_deref().unwrap_or("")
        ));
    }
    for r in &plan.null_rows {
        if !snapshot.unparsable().iter().any(|u| u.id == r.id) {
            problems.push(format!(
                "row id {} has created_at NULL (drizzle-kit would re-run every migration)",
                r.id
            ));
        }
    }
    let mut notes = Vec::new();
    if let Some(up) = &upgrade {
        if up.unmatched.is_empty() {
            notes.push(format!(
                "the table is in drizzle 0.x's shape; migrate first upgrades it to drizzle 1.0's \
                 as drizzle 1.0 does (adds name and applied_at, names {} row(s))",
                up.names.len()
            ));
        } else {
            problems.push(format!(
                "the table is in drizzle 0.x's shape, and drizzle 1.0's upgrade (which migrate \
                 runs first) refuses it: {} row(s) match no folder here ({})",
                up.unmatched.len(),
                up.unmatched_lines(&snapshot.raw).join("; ")
            ));
        }
    }
    let summary = report::Status::summary_line(&counts, folder.migrations.len());
    let doc = report::Status {
        version: env!("CARGO_PKG_VERSION"),
        database: cfg.database.target(),
        table: snapshot.table.qualified.clone(),
        table_exists: snapshot.exists,
        table_shape: snapshot
            .exists
            .then_some(if snapshot.table.has_name_column {
                "1.0"
            } else {
                "0.x"
            }),
        layout: folder.layout.label(),
        migrations_dir: folder.dir.display().to_string(),
        migrations,
        unknown_rows,
        problems,
        notes,
        counts,
        summary: summary.clone(),
        seeds,
        migrating,
    };
    let stdout = match format {
        Format::Text => doc.to_text(colour),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&doc)
                .map_err(|e| Error::Internal(format!("cannot render status as JSON: {e}")))?;
            s.push('\n');
            s
        }
    };
    Ok(Outcome {
        stdout,
        summary,
        applied: Vec::new(),
    })
}

/// `portcullis validate`: every problem of the folder (and, online, of the tracking table
/// against it), listed together. Exit 3 for folder problems, 4 for history problems.
fn validate(cfg: &Config, folder: &Folder, snapshot: Option<&Snapshot>) -> Result<Outcome, Error> {
    let mut folder_problems = Vec::new();
    // Only drizzle 0.x skips an entry that is not newer than the one before; 1.0 orders by name.
    let journal = folder.layout == Layout::Journal;
    for pair in folder.migrations.windows(2).filter(|_| journal) {
        if pair[1].when <= pair[0].when {
            folder_problems.push(format!(
                "{} has `when` {} ({}), not later than {} before it ({}): once {} is applied, \
                 drizzle skips {} forever",
                pair[1].tag,
                pair[1].when,
                report::utc(pair[1].when),
                pair[0].tag,
                report::utc(pair[0].when),
                pair[0].tag,
                pair[1].tag
            ));
        }
    }
    for m in &folder.migrations {
        folder_problems.extend(source::lexer::marker_problems(m));
    }
    // What only psql can run: offline in every file, online in those not applied yet (one
    // applied already, a COPY ... TO STDOUT that drizzle ran, is history, not a problem).
    if snapshot.is_none() {
        for m in &folder.migrations {
            folder_problems.extend(source::client_only_problems(m));
        }
    }
    let mut history_problems = Vec::new();
    if let Some(snapshot) = snapshot {
        history_problems.extend(snapshot.shape_problems());
        for r in snapshot.unparsable() {
            history_problems.push(format!(
                "row id {} has created_at {:?}, which is not whole milliseconds",
                r.id,
                r.created_at.as_deref().unwrap_or("")
            ));
        }
        let mut rows = snapshot.rows();
        // Rows the upgrade cannot match are listed once, as that (not again as unknown rows).
        let mut unmatched: Vec<i64> = Vec::new();
        if let Some(up) = table_upgrade(folder, snapshot) {
            unmatched.clone_from(&up.unmatched);
            for line in up.unmatched_lines(&snapshot.raw) {
                history_problems.push(format!(
                    "{line} matches no folder here, so drizzle 1.0's upgrade of the 0.x-shaped \
                     table (which migrate runs first) refuses"
                ));
            }
            up.apply_to(&mut rows);
        }
        let plan = Plan::analyse(folder.layout, &folder.migrations, &rows);
        for r in &plan.null_rows {
            if !snapshot.unparsable().iter().any(|u| u.id == r.id) {
                history_problems.push(format!("row id {} has created_at NULL", r.id));
            }
        }
        for (m, s) in folder.migrations.iter().zip(&plan.states) {
            if matches!(s, State::Pending | State::OutOfOrder) {
                folder_problems.extend(source::client_only_problems(m));
            }
            match s {
                State::Edited {
                    row_id,
                    cosmetic: false,
                    ..
                } => history_problems.push(format!(
                    "{} ({}) was edited after it was applied (row id {row_id})",
                    m.tag,
                    m.file()
                )),
                // A problem only where `migrate` would refuse it: with PORTCULLIS_OUT_OF_ORDER
                // apply or skip it is the policy chosen.
                State::OutOfOrder if cfg.out_of_order == config::OutOfOrder::Error => {
                    history_problems.push(format!(
                        "{} ({}) is out of order: never applied, older than the newest applied \
                         migration; migrate refuses it while PORTCULLIS_OUT_OF_ORDER=error \
                         (`apply` runs it, `skip` leaves it, as drizzle-kit 0.x does)",
                        m.tag,
                        m.file()
                    ))
                }
                State::Unnamed { row_id } => history_problems.push(format!(
                    "{} ({}) is recorded with name NULL (row id {row_id}), so drizzle 1.0 would \
                     run it again; `portcullis repair --apply` names the row",
                    m.tag,
                    m.file()
                )),
                State::RecordedEarlier { row_id, created_at } => history_problems.push(format!(
                    "{} ({}) is recorded (row id {row_id}) under created_at {created_at}, older \
                     than its `when` {}, so drizzle would run it again; `portcullis repair \
                     --apply` sets the row to its `when`",
                    m.tag,
                    m.file(),
                    m.when
                )),
                _ => {}
            }
        }
        for r in plan
            .unknown_rows
            .iter()
            .filter(|r| !unmatched.contains(&r.id))
        {
            history_problems.push(format!(
                "row id {} ({}created_at {}) matches no migration in {}",
                r.id,
                r.name
                    .as_deref()
                    .map(|n| format!("name {n}, "))
                    .unwrap_or_default(),
                r.created_at.map(report::utc).unwrap_or_default(),
                folder.dir.display()
            ));
        }
    }
    let numbered = |ps: &[String], start: usize| -> String {
        ps.iter()
            .enumerate()
            .map(|(i, p)| format!("\n  {}. {p}.", start + i + 1))
            .collect()
    };
    let total = folder_problems.len() + history_problems.len();
    if total > 0 {
        let msg = format!(
            "validate found {total} problem{} in {}{}:{}{}",
            if total == 1 { "" } else { "s" },
            folder.dir.display(),
            if snapshot.is_some() {
                format!(" against {}", cfg.database.target())
            } else {
                String::new()
            },
            numbered(&folder_problems, 0),
            numbered(&history_problems, folder_problems.len())
        ) + "\nFix them, then run `portcullis validate` again; `portcullis status` shows every \
             migration's state.";
        return Err(if folder_problems.is_empty() {
            Error::History(msg)
        } else {
            Error::Source(msg)
        });
    }
    Ok(Outcome {
        stdout: String::new(),
        summary: format!(
            "valid: {} migrations in {}{}",
            folder.migrations.len(),
            folder.dir.display(),
            match snapshot {
                Some(s) if s.exists => format!(", consistent with {}", s.table.qualified),
                Some(s) => format!(", {} not created yet", s.table.qualified),
                None => " (offline: the database was not consulted)".to_string(),
            }
        ),
        applied: Vec::new(),
    })
}

/// `portcullis baseline`: records migrations up to `to` as applied, without running them, with
/// exactly the rows drizzle writes.
async fn baseline(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
    to: &Option<String>,
    force: bool,
) -> Result<Outcome, Error> {
    let upto = match to {
        None => folder.migrations.len(),
        Some(tag) => match folder.migrations.iter().position(|m| &m.tag == tag) {
            Some(i) => i + 1,
            None => {
                return Err(Error::Config(format!(
                    "baseline --to {tag}: no migration with that tag in {}; tags look like {}",
                    folder.dir.display(),
                    folder
                        .migrations
                        .first()
                        .map(|m| m.tag.as_str())
                        .unwrap_or("0000_name")
                )));
            }
        },
    };
    let snapshot = prepare_history(cfg, session, folder.layout).await?;
    let mut rows = snapshot.rows();
    let upgrade = table_upgrade(folder, &snapshot);
    if let Some(up) = &upgrade {
        if let Some(refusal) = up.refusal(&snapshot.table.qualified, &snapshot.raw) {
            return Err(refusal);
        }
        up.apply_to(&mut rows);
    }
    let plan = Plan::analyse(folder.layout, &folder.migrations, &rows);
    let targets = &folder.migrations[..upto];
    for (m, s) in targets.iter().zip(&plan.states) {
        match s {
            // A difference in line endings or a BOM only (a checkout with autocrlf) is the
            // same migration, as `migrate` treats it: recorded already.
            State::Edited {
                row_id,
                cosmetic: false,
                ..
            } => {
                return Err(Error::History(format!(
                    "baseline: {} already has a row (id {row_id}) with another hash; the file \
                     was edited after it was recorded. Restore the file, or fix the row by hand.",
                    m.tag
                )));
            }
            State::Unnamed { row_id } => {
                return Err(Error::History(format!(
                    "baseline: {} is already recorded, with name NULL (row id {row_id}); run \
                     `portcullis repair --apply` to name it instead of recording it twice.",
                    m.tag
                )));
            }
            State::RecordedEarlier { row_id, .. } => {
                return Err(Error::History(format!(
                    "baseline: {} is already recorded, under an older created_at (row id \
                     {row_id}); run `portcullis repair --apply` to set the row to its `when` \
                     instead of recording it twice.",
                    m.tag
                )));
            }
            _ => {}
        }
    }
    let claimed: Vec<i64> = plan.states[..upto]
        .iter()
        .filter_map(|s| match s {
            State::Applied { row_id, .. }
            | State::Edited {
                row_id,
                cosmetic: true,
                ..
            } => Some(*row_id),
            _ => None,
        })
        .collect();
    let others: Vec<i64> = rows
        .iter()
        .map(|r| r.id)
        .filter(|id| !claimed.contains(id))
        .collect();
    if !others.is_empty() && !force {
        return Err(Error::History(format!(
            "baseline refuses: {} already has {} row(s) beyond the ones it would record (ids {}), \
             so this database's history is not simply \"nothing recorded yet\". Check `portcullis \
             status`; re-run with --force to record the missing rows anyway.",
            snapshot.table.qualified,
            others.len(),
            others
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let todo: Vec<&Migration> = targets
        .iter()
        .zip(&plan.states)
        .filter(|(_, s)| {
            !matches!(
                s,
                State::Applied { .. } | State::Edited { cosmetic: true, .. }
            )
        })
        .map(|(m, _)| m)
        .collect();
    if todo.is_empty() {
        return Ok(Outcome {
            summary: format!(
                "nothing to record: the {upto} migration(s) up to {} are already recorded",
                targets.last().map(|m| m.tag.as_str()).unwrap_or("-")
            ),
            ..Outcome::default()
        });
    }
    let mut table = snapshot.table;
    if let Some(up) = &upgrade {
        upgrade_history(session, &mut table, up).await?;
    }
    db::apply::record(session, &table, &todo).await?;
    let mut stdout = String::new();
    for m in &todo {
        stdout.push_str(&format!(
            "recorded {} (hash {}, created_at {}) without running it\n",
            m.tag, m.hash, m.when
        ));
    }
    Ok(Outcome {
        stdout,
        summary: format!(
            "baseline recorded {} migration{} as applied in {}, up to {}",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            table.qualified,
            targets.last().map(|m| m.tag.as_str()).unwrap_or("-")
        ),
        applied: Vec::new(),
    })
}

/// `portcullis repair`: shows (and with `--apply` makes, after a backup) the changes that turn a
/// damaged tracking table into one drizzle and portcullis accept.
async fn repair(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
    apply: bool,
) -> Result<Outcome, Error> {
    let snapshot = read_history(cfg, session).await?;
    let q = snapshot.table.qualified.clone();
    if !snapshot.exists {
        return Ok(Outcome {
            summary: format!("{q} does not exist; nothing to repair (migrate creates it)"),
            ..Outcome::default()
        });
    }
    let missing: Vec<&str> = ["id", "hash", "created_at"]
        .into_iter()
        .filter(|c| !snapshot.columns.iter().any(|col| col.name == *c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::History(format!(
            "{q} lacks the column(s) {}; repair only fixes values and the created_at type. Move \
             the table aside and run `portcullis baseline` to rebuild it from the folder.",
            missing.join(", ")
        )));
    }
    let ty = snapshot.created_at_type().unwrap_or("bigint").to_string();
    let mut plan = repair::plan(
        &folder.migrations,
        &ty,
        &snapshot.raw,
        snapshot.table.has_name_column,
    );
    if folder.layout == Layout::Journal {
        set_recorded_earlier(&mut plan, &folder.migrations, &snapshot.raw);
    }
    if !plan.unresolved.is_empty() {
        return Err(Error::History(format!(
            "repair cannot fix {q} from this folder; nothing was changed:\n  {}",
            plan.unresolved.join("\n  ")
        )));
    }
    if plan.is_empty() {
        return Ok(Outcome {
            summary: format!("{q} needs no repair"),
            ..Outcome::default()
        });
    }
    let mut stdout = String::new();
    for a in &plan.actions {
        stdout.push_str(&format!(
            "{} {}\n",
            if apply { "did:" } else { "would:" },
            repair::describe(a, &q)
        ));
    }
    if !apply {
        return Ok(Outcome {
            stdout,
            summary: format!(
                "repair would make {} change(s) to {q} after backing it up; nothing was changed. \
                 Run `portcullis repair --apply` to do it.",
                plan.actions.len()
            ),
            applied: Vec::new(),
        });
    }
    let stamp = report::stamp(now_millis());
    // Its lock and its ALTER may each wait half the answer timeout for another session's lock.
    let backup = session
        .within_for(
            2 * session.answer_timeout,
            "repairing the tracking table",
            db::history::apply_repair(session, &snapshot, &plan, &stamp),
        )
        .await?;
    stdout.insert_str(0, &format!("did: copy {q} to {backup}\n"));
    Ok(Outcome {
        stdout,
        summary: format!(
            "repaired {q} ({} change(s)); the previous contents are kept in {backup}",
            plan.actions.len()
        ),
        applied: Vec::new(),
    })
}

/// Adds to a journal folder's repair the rows drizzle would run again: a migration newer than
/// the mark whose exact content is recorded under an older `created_at` (seconds written by
/// another tool, a regenerated journal entry) gets its row set to its `when`. Judged on the
/// values the rest of the repair leaves.
fn set_recorded_earlier(
    plan: &mut repair::RepairPlan,
    migrations: &[Migration],
    raw: &[db::history::RawRow],
) {
    let rows: Vec<plan::HistoryRow> = raw
        .iter()
        .filter_map(|r| {
            Some(plan::HistoryRow {
                id: r.id,
                hash: r.hash.clone(),
                created_at: Some(*plan.values.get(&r.id)?),
                name: r.name.clone(),
            })
        })
        .collect();
    let analysed = Plan::analyse(Layout::Journal, migrations, &rows);
    for (m, s) in migrations.iter().zip(&analysed.states) {
        let State::RecordedEarlier { row_id, .. } = *s else {
            continue;
        };
        let was = raw
            .iter()
            .find(|r| r.id == row_id)
            .and_then(|r| r.created_at.clone());
        plan.values.insert(row_id, m.when);
        plan.actions
            .retain(|a| !matches!(a, repair::Action::SetCreatedAt { id, .. } if *id == row_id));
        plan.actions.push(repair::Action::SetCreatedAt {
            id: row_id,
            was,
            to: m.when,
            tag: m.tag.clone(),
        });
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `portcullis await`: for app containers that must not migrate themselves. Polls, read-only and
/// without the lock, until nothing is pending for this folder; exit 5 at the wait timeout.
async fn await_ready(cfg: &Config, folder: &Folder) -> Result<Outcome, Error> {
    let started = Instant::now();
    let mut last_report: Option<Instant> = None;
    let mut session: Option<db::Session> = None;
    let mut reads = AwaitReads {
        quickly: true,
        confirmed: false,
    };
    loop {
        if session.is_none() {
            let remaining = cfg.wait_timeout.saturating_sub(started.elapsed());
            session = Some(db::connect::wait_for(&cfg.database, remaining).await?);
        }
        let connected = session.as_ref().expect("connected above");
        let decision = match await_decision(cfg, connected, folder, &mut reads).await {
            Ok(d) => d,
            // The connection dropped (a restart, a failover): connect again within the deadline.
            // Or another session locked the tracking table (a migration Job's upgrade of it,
            // say): not ready yet; the waiting session was ended. Look again on a new one.
            Err(e @ (Error::Unreachable(_) | Error::LockTimeout(_)))
                if started.elapsed() < cfg.wait_timeout =>
            {
                if let Error::LockTimeout(why) = e {
                    tracing::info!(
                        "{why} `await` keeps waiting ({:.1}s of {}).",
                        started.elapsed().as_secs_f64(),
                        config::format_duration(cfg.wait_timeout)
                    );
                } else {
                    tracing::debug!("reconnecting: {e}");
                }
                session = None;
                continue;
            }
            // Problems that would stop `migrate` stop `await` too: waiting cannot fix them.
            Err(e) => return Err(e),
        };
        if decision.apply.is_empty() {
            return Ok(Outcome {
                summary: format!(
                    "schema ready: all {} migrations of {} are applied on {}",
                    folder.migrations.len(),
                    folder.dir.display(),
                    cfg.database.target()
                ),
                ..Outcome::default()
            });
        }
        let pending: Vec<&str> = decision
            .apply
            .iter()
            .map(|&i| folder.migrations[i].tag.as_str())
            .collect();
        let due = started.elapsed() >= cfg.wait_timeout;
        if due || last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            // Whether anyone is migrating: a runner holding the migration lock, or none (the
            // Job failed, or has not started).
            let key = lock_key(cfg);
            let holders = db::lock::holders(connected, key).await;
            if due {
                return Err(Error::Unreachable(format!(
                    "{} migration(s) were still pending after {} ({}); the schema is not ready \
                     for this image. {}",
                    pending.len(),
                    config::format_duration(cfg.wait_timeout),
                    pending.join(", "),
                    if holders.is_empty() {
                        "No runner holds the migration lock, so none is migrating now: check \
                         that the migration Job (or init container) ran and succeeded (its log \
                         says why not), or raise PORTCULLIS_WAIT_TIMEOUT; a restart may help."
                            .to_string()
                    } else {
                        format!(
                            "A runner holds the migration lock and is still migrating: {}. Its \
                             log says what it is doing; raise PORTCULLIS_WAIT_TIMEOUT to wait \
                             for it longer; a restart may help.",
                            holders.join("; ")
                        )
                    }
                )));
            }
            last_report = Some(Instant::now());
            tracing::info!(
                "waiting for {} pending migration(s) to be applied by another runner ({}; {:.1}s \
                 of {}); {}",
                pending.len(),
                pending.join(", "),
                started.elapsed().as_secs_f64(),
                config::format_duration(cfg.wait_timeout),
                if holders.is_empty() {
                    "no runner is migrating now".to_string()
                } else {
                    format!("migrating: {}", holders.join("; "))
                }
            );
        }
        let pause = Duration::from_secs(1).min(cfg.wait_timeout.saturating_sub(started.elapsed()));
        interrupt::sleep(pause).await?;
    }
}

/// How `await` reads the tracking table: the cheap read (see [`decide_quickly`]) while it can
/// judge the table, since every app pod start pays for this look and, while a migration Job
/// runs, every waiting pod repeats it once a second.
struct AwaitReads {
    /// Whether the cheap read is still tried. A table it cannot judge (none yet, another shape)
    /// is read the usual way from then on: a table that does not exist yet leaves one error in
    /// the server's log, not one a second.
    quickly: bool,
    /// Whether the usual read has seen pending work once: until then a cheap read that finds
    /// some is checked again the usual way, which refuses what `migrate` would refuse before
    /// writing a row (an `id` without its default), so that `await` stops at once as before.
    confirmed: bool,
}

/// One look of `await` at the tracking table: the decision `migrate` would take now. A problem
/// found on the cheap read is explained from the usual read, in a `migrate` run's words.
async fn await_decision(
    cfg: &Config,
    session: &db::Session,
    folder: &Folder,
    reads: &mut AwaitReads,
) -> Result<plan::Decision, Error> {
    if reads.quickly {
        match decide_quickly(cfg, session, folder).await? {
            Quick::Decided(found) => {
                let (_, (_, decision, _)) = *found;
                if decision.apply.is_empty() || reads.confirmed {
                    return Ok(decision);
                }
            }
            Quick::Unjudged => reads.quickly = false,
            Quick::Unsure => {}
        }
    }
    let snapshot = read_history(cfg, session).await?;
    let (_, decision, _) = decide(cfg, folder, &snapshot)?;
    reads.confirmed |= !decision.apply.is_empty();
    Ok(decision)
}

// ---- seeds ----------------------------------------------------------------------------------

/// Reads the seeds folder completely, before any connection; logs its notes.
fn read_seeds(cfg: &Config) -> Result<seeds::SeedSet, Error> {
    let set = seeds::load(&cfg.seeds)?;
    for n in &set.notes {
        tracing::info!("{n}");
    }
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(seeds = set.seeds.len(), "read {}", set.dir.display());
    Ok(set)
}

fn mode_word(mode: config::SeedMode) -> &'static str {
    match mode {
        config::SeedMode::Always => "always",
        config::SeedMode::Changed => "changed",
    }
}

/// `portcullis seed`: wait, lock, run the seeds only.
async fn seed(cfg: &Config) -> Result<Outcome, Error> {
    let seeds = read_seeds(cfg)?;
    // Only to warn when migrations are pending (the seeds may need their tables); a missing or
    // broken migrations folder is `migrate`'s business, not this command's.
    let folder = source::load(&cfg.migrations_dir).ok();
    let session = db::connect::wait_for(&cfg.database, cfg.wait_timeout).await?;
    with_lock(cfg, &session, async {
        if let Some(folder) = &folder
            && let Ok(snapshot) = read_history(cfg, &session).await
            && let Ok((_, decision, _)) = decide(cfg, folder, &snapshot)
            && !decision.apply.is_empty()
        {
            tracing::warn!(
                "{} migration(s) of {} are not applied yet; seeds that need their tables will \
                 fail. Run `portcullis migrate` (which runs the seeds too) instead.",
                decision.apply.len(),
                folder.dir.display()
            );
        }
        let mut outcome = Outcome::default();
        seed_locked(cfg, &session, &seeds, &mut outcome).await?;
        if outcome.summary.is_empty() {
            outcome.summary = format!("seeds: none in {}", seeds.dir.display());
        }
        Ok(outcome)
    })
    .await
}

/// The seeds phase, holding the lock: runs the seeds and adds their line to the summary.
async fn seed_locked(
    cfg: &Config,
    session: &db::Session,
    set: &seeds::SeedSet,
    outcome: &mut Outcome,
) -> Result<(), Error> {
    interrupt::set_activity(
        "starting the seeds' transaction (the migrations are already committed and stay applied)",
    );
    if set.seeds.is_empty() {
        if set.exists {
            tracing::info!("no seeds: {} holds no .sql files", set.dir.display());
        }
        return Ok(());
    }
    let started = Instant::now();
    tracing::info!(
        "seeding from {}{}: {} file{}, mode {}, one transaction{}",
        set.dir.display(),
        set.env
            .as_deref()
            .map(|e| format!(" (+ {e}/)"))
            .unwrap_or_default(),
        set.seeds.len(),
        if set.seeds.len() == 1 { "" } else { "s" },
        mode_word(cfg.seeds.mode),
        if cfg.seeds.vars.is_empty() {
            String::new()
        } else {
            format!(", with the settings {}", cfg.seeds.vars.settings())
        }
    );
    let seeded = db::seeds::run(
        session,
        &cfg.migrations_schema,
        set,
        db::seeds::Options {
            mode: cfg.seeds.mode,
            vars: &cfg.seeds.vars,
            lock_timeout: cfg.ddl_lock_timeout,
            lock_retries: cfg.ddl_lock_retries,
            statement_timeout: cfg.statement_timeout,
        },
    )
    .await?;
    let line = report::seeds_summary(
        &seeded
            .ran
            .iter()
            .map(|r| (r.name.clone(), r.duration))
            .collect::<Vec<_>>(),
        seeded.skipped.len(),
        started.elapsed(),
    );
    outcome.summary = if outcome.summary.is_empty() {
        line
    } else {
        format!("{}; {line}", outcome.summary)
    };
    Ok(())
}

/// The seeds part of `plan`: which seeds `migrate` would run after the migrations, and why.
fn seeds_plan(
    cfg: &Config,
    set: &seeds::SeedSet,
    records: Option<&[seeds::Record]>,
    outcome: &mut Outcome,
) {
    let records = records.unwrap_or_default();
    let mode = cfg.seeds.mode;
    let todo = seeds::select(&set.seeds, records, mode);
    let out = &mut outcome.stdout;
    if set.seeds.is_empty() {
        out.push_str(&format!(
            "\n-- seeds: none ({} {})\n",
            set.dir.display(),
            if set.exists {
                "holds no .sql files"
            } else {
                "does not exist"
            }
        ));
        return;
    }
    out.push_str(&format!(
        "\n-- seeds: {} of {} in {} would run after the migrations, in this order, in one \
         transaction (PORTCULLIS_SEED_MODE={}){}.\n",
        todo.len(),
        set.seeds.len(),
        set.dir.display(),
        mode_word(mode),
        if cfg.seeds.vars.is_empty() {
            String::new()
        } else {
            format!(", with the settings {}", cfg.seeds.vars.settings())
        }
    ));
    for s in &set.seeds {
        let state = seeds::state(s, records);
        let why = match (state, seeds::runs(mode, state)) {
            (seeds::State::New, _) => "new: never ran here",
            (seeds::State::Changed, _) => "changed since its last run",
            (seeds::State::Applied, true) => "unchanged, runs again (mode always)",
            (seeds::State::Applied, false) => "unchanged, left out (mode changed)",
        };
        out.push_str(&format!("--   {} ({}): {why}\n", s.name, s.file()));
    }
    let n = todo.len();
    outcome.summary = format!(
        "{}; {n} seed{} would run",
        outcome.summary,
        if n == 1 { "" } else { "s" }
    );
}

/// The seeds part of `status`.
fn seeds_status(
    cfg: &Config,
    set: &seeds::SeedSet,
    records: Option<&[seeds::Record]>,
) -> report::SeedsStatus {
    let rows = records.unwrap_or_default();
    let files: Vec<report::SeedEntry> = set
        .seeds
        .iter()
        .map(|s| {
            let state = seeds::state(s, rows);
            let row = rows.iter().find(|r| r.name == s.name);
            report::SeedEntry {
                name: s.name.clone(),
                file: s.file(),
                hash: s.hash.clone(),
                state: state.word(),
                recorded_hash: row.filter(|r| r.hash != s.hash).map(|r| r.hash.clone()),
                run_count: row.map_or(0, |r| r.run_count),
                first_applied_at: row.map(|r| r.first_applied_at.clone()),
                last_applied_at: row.map(|r| r.last_applied_at.clone()),
                next_run: seeds::runs(cfg.seeds.mode, state),
            }
        })
        .collect();
    let recorded_only = rows
        .iter()
        .filter(|r| !set.seeds.iter().any(|s| s.name == r.name))
        .map(|r| report::SeedRow {
            name: r.name.clone(),
            hash: r.hash.clone(),
            run_count: r.run_count,
            first_applied_at: r.first_applied_at.clone(),
            last_applied_at: r.last_applied_at.clone(),
        })
        .collect();
    report::SeedsStatus {
        dir: set.dir.display().to_string(),
        dir_exists: set.exists,
        env: set.env.clone(),
        mode: mode_word(cfg.seeds.mode),
        enabled: cfg.seeds.enabled,
        table: db::seeds::table(&cfg.migrations_schema),
        table_exists: records.is_some(),
        summary: report::SeedsStatus::summary_line(&files, cfg.seeds.enabled),
        files,
        recorded_only,
    }
}
