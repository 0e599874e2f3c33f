//! portcullis: applies drizzle-kit migrations to PostgreSQL before the app starts.
//!
//! The single orchestration path lives here: read the folder (before connecting), wait for the
//! database, take the advisory lock, read the tracking table, plan, apply, report, and release the
//! lock on every way out. Commands differ only in what they do with the plan.

pub mod config;
pub mod db;
pub mod error;
pub mod exit;
pub mod logging;
pub mod plan;
pub mod report;
pub mod source;

use config::Config;
use error::Error;
use std::time::Instant;

/// What a successful `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<db::apply::Applied>,
    pub summary: String,
}

/// `portcullis migrate`: wait, lock, apply pending migrations exactly as drizzle would, unlock.
pub async fn migrate(cfg: &Config) -> Result<Outcome, Error> {
    let started = Instant::now();
    // The folder is read and checked completely before any connection is made.
    let folder = source::load(&cfg.migrations_dir)?;
    for w in &folder.warnings {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        migrations = folder.migrations.len(),
        "read {}",
        folder.dir.display()
    );

    let session = db::connect::wait_for(&cfg.database, cfg.wait_timeout).await?;
    tracing::debug!(
        pid = session.backend_pid,
        "connected to {} as {}",
        cfg.database.target(),
        cfg.database.user()
    );
    let table = db::qualified(&cfg.migrations_schema, &cfg.migrations_table);
    let key = db::lock::key(&cfg.migrations_schema, &cfg.migrations_table);
    db::lock::acquire(&session, key, &table, cfg.lock_wait_timeout).await?;
    let result = migrate_locked(cfg, &session, &folder, started).await;
    db::lock::release(&session, key).await;
    result
}

/// The part of `migrate` that runs while holding the lock.
async fn migrate_locked(
    cfg: &Config,
    session: &db::Session,
    folder: &source::Folder,
    started: Instant,
) -> Result<Outcome, Error> {
    let (table, rows) =
        db::history::prepare(session, &cfg.migrations_schema, &cfg.migrations_table).await?;
    let plan = plan::Plan::analyse(&folder.migrations, &rows);
    let decision = plan.decide(&folder.migrations, cfg.out_of_order, &table.qualified)?;
    for w in &decision.warnings {
        tracing::warn!("{w}");
    }
    for n in &decision.notes {
        tracing::info!("{n}");
    }
    let todo: Vec<&source::Migration> = decision
        .apply
        .iter()
        .map(|&i| &folder.migrations[i])
        .collect();
    let applied = if todo.is_empty() {
        Vec::new()
    } else {
        tracing::info!(
            "applying {} migration{} to {} ({} transaction{})",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            cfg.database.target(),
            match cfg.transaction {
                config::TransactionMode::All => "one",
                config::TransactionMode::Each => "one per migration,",
            },
            match cfg.transaction {
                config::TransactionMode::All => "",
                config::TransactionMode::Each => " as PORTCULLIS_TRANSACTION=each asks",
            }
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
        .await?
    };
    let recorded = plan
        .states
        .iter()
        .filter(|s| matches!(s, plan::State::Applied { .. } | plan::State::Edited { .. }))
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
    Ok(Outcome { applied, summary })
}
