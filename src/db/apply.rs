//! Applying migrations the way drizzle does: `BEGIN`, each chunk through the simple query
//! protocol in order, the tracking row inserted with bound parameters right after each migration,
//! `COMMIT` (drizzle-compat.md 2.2-2.6). `BEGIN`/`COMMIT` are plain statements, not a client-side
//! transaction object, so a file's own `COMMIT;` behaves as under drizzle (E35).
//!
//! Beyond drizzle: `each` mode (one transaction per migration), `lock_timeout` with retries so
//! DDL waiting for a busy table backs off instead of queueing every other query behind it, and a
//! failure report that names the file, line:column, SQLSTATE, DETAIL and HINT.

use super::history::Table;
use super::{Session, query_failed};
use crate::config::{TransactionMode, format_duration};
use crate::error::{Error, MigrationFailure};
use crate::source::Migration;
use crate::source::split::{line_col, position_to_byte};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// How DDL waits for locks and how long a statement may run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub lock_timeout: Duration,
    pub lock_retries: u32,
    pub statement_timeout: Duration,
}

/// One applied migration, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub tag: String,
    pub statements: usize,
    pub duration: Duration,
}

/// Why one transaction group failed.
enum GroupError {
    /// SQLSTATE 55P03: a statement waited longer than `lock_timeout`. Rolled back; retryable.
    LockTimeout {
        tag: String,
        chunk: usize,
    },
    Failed(Error),
}

/// Applies `migrations` (already in order) and records each. Returns what was applied.
pub async fn apply(
    session: &Session,
    table: &Table,
    migrations: &[&Migration],
    mode: TransactionMode,
    limits: Limits,
) -> Result<Vec<Applied>, Error> {
    let client = session.client();
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    client
        .query_one(
            "select set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
            &[&ms(limits.lock_timeout), &ms(limits.statement_timeout)],
        )
        .await
        .map_err(|e| query_failed("setting lock_timeout and statement_timeout", &e))?;

    let groups: Vec<&[&Migration]> = match mode {
        TransactionMode::All => vec![migrations],
        TransactionMode::Each => migrations.chunks(1).collect(),
    };
    let mut applied = Vec::new();
    for group in groups {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build();
        let mut retry = 0;
        loop {
            match run_group(session, table, group, &applied, mode).await {
                Ok(done) => {
                    applied.extend(done);
                    break;
                }
                Err(GroupError::Failed(e)) => return Err(e),
                Err(GroupError::LockTimeout { tag, chunk }) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    if retry >= limits.lock_retries {
                        return Err(Error::MigrationFailed(Box::new(MigrationFailure {
                            consequence: consequence(mode, group, &applied),
                            ..lock_story(group, &tag, chunk, retry, limits)
                        })));
                    }
                    retry += 1;
                    tracing::warn!(
                        "statement {chunk} of {tag} waited longer than lock_timeout ({}) for a \
                         lock another session holds (a long-running transaction?); rolled back, \
                         retry {retry} of {} in {:.1}s",
                        format_duration(limits.lock_timeout),
                        limits.lock_retries,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    Ok(applied)
}

/// Runs one transaction: `BEGIN`, the migrations with their rows, `COMMIT`.
async fn run_group(
    session: &Session,
    table: &Table,
    group: &[&Migration],
    earlier: &[Applied],
    mode: TransactionMode,
) -> Result<Vec<Applied>, GroupError> {
    let client = session.client();
    let insert = insert_sql(table);
    let lost = |what: &str, e: &tokio_postgres::Error| GroupError::Failed(query_failed(what, e));
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| lost("BEGIN", &e))?;
    let mut done = Vec::with_capacity(group.len());
    for m in group {
        let started = Instant::now();
        let chunks = m.chunks();
        let mut statements = 0;
        for (n, chunk) in chunks.iter().enumerate() {
            if chunk.is_blank() {
                continue;
            }
            // A BOM would reach the server as a syntax error; drizzle fails there, we strip it.
            let (sent, skipped) = match chunk.text.strip_prefix('\u{feff}') {
                Some(rest) if chunk.offset == 0 => (rest, '\u{feff}'.len_utf8()),
                _ => (chunk.text, 0),
            };
            if let Err(e) = client.batch_execute(sent).await {
                rollback(session).await;
                let Some(db) = e.as_db_error() else {
                    return Err(GroupError::Failed(Error::Unreachable(format!(
                        "the connection to the database was lost while running statement {} of {} \
                         ({}): {e}. The server rolls back the open transaction, so nothing of it \
                         was applied; run again.",
                        n + 1,
                        m.tag,
                        m.file()
                    ))));
                };
                if db.code().code() == "55P03" {
                    return Err(GroupError::LockTimeout {
                        tag: m.tag.clone(),
                        chunk: n + 1,
                    });
                }
                let position = match db.position() {
                    Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
                    _ => None,
                };
                let at = chunk.offset
                    + skipped
                    + position.map_or(leading_blank(sent), |p| position_to_byte(sent, p));
                let (line, column) = line_col(&m.text, at);
                return Err(GroupError::Failed(Error::MigrationFailed(Box::new(
                    MigrationFailure {
                        tag: m.tag.clone(),
                        file: m.file(),
                        chunk: n + 1,
                        chunks: chunks.len(),
                        line,
                        column,
                        exact_position: position.is_some(),
                        statement_excerpt: excerpt(sent),
                        sqlstate: db.code().code().to_string(),
                        message: db.message().to_string(),
                        detail: db.detail().map(str::to_string),
                        hint: db.hint().map(str::to_string),
                        consequence: consequence(mode, group, earlier),
                    },
                ))));
            }
            statements += 1;
        }
        if let Err(e) = insert_row(client, &insert, table, m).await {
            rollback(session).await;
            return Err(GroupError::Failed(query_failed(
                &format!("recording {} in {}", m.tag, table.qualified),
                &e,
            )));
        }
        let duration = started.elapsed();
        // Text logs read "ran migration=0001_x statements=3 duration_ms=12"; JSON gets the
        // same fields, so nothing is said twice.
        tracing::info!(
            migration = %m.tag,
            statements,
            duration_ms = duration.as_millis() as u64,
            "ran"
        );
        done.push(Applied {
            tag: m.tag.clone(),
            statements,
            duration,
        });
    }
    if let Err(e) = client.batch_execute("COMMIT").await {
        rollback(session).await;
        let last = group.last().expect("groups are never empty");
        return Err(GroupError::Failed(match e.as_db_error() {
            Some(db) => Error::MigrationFailed(Box::new(MigrationFailure {
                tag: last.tag.clone(),
                file: last.file(),
                chunk: last.chunks().len(),
                chunks: last.chunks().len(),
                line: 1,
                column: 1,
                exact_position: false,
                statement_excerpt: "COMMIT (deferred constraints are checked here)".into(),
                sqlstate: db.code().code().to_string(),
                message: db.message().to_string(),
                detail: db.detail().map(str::to_string),
                hint: db.hint().map(str::to_string),
                consequence: consequence(mode, group, earlier),
            })),
            None => query_failed("COMMIT", &e),
        }));
    }
    Ok(done)
}

/// The tracking-row insert drizzle issues: hash and created_at bound as parameters (`$2::int8`
/// so the value converts to a `numeric` column too), plus `name` in a drizzle-1.0-shaped table
/// (the folder name, or for a journal entry the one `drizzle-kit up` gives it, so that drizzle
/// 1.0 never applies it again).
fn insert_sql(table: &Table) -> String {
    if table.has_name_column {
        format!(
            "insert into {} (\"hash\", \"created_at\", \"name\") values ($1, $2::int8, $3)",
            table.qualified
        )
    } else {
        format!(
            "insert into {} (\"hash\", \"created_at\") values ($1, $2::int8)",
            table.qualified
        )
    }
}

async fn insert_row(
    client: &tokio_postgres::Client,
    insert: &str,
    table: &Table,
    m: &Migration,
) -> Result<u64, tokio_postgres::Error> {
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&m.hash, &m.when];
    if table.has_name_column {
        params.push(&m.name);
    }
    client.execute(insert, &params).await
}

/// `baseline`: writes the rows drizzle would have written for `migrations`, in one transaction,
/// without running their SQL.
pub async fn record(
    session: &Session,
    table: &Table,
    migrations: &[&Migration],
) -> Result<(), Error> {
    let client = session.client();
    let insert = insert_sql(table);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| query_failed("BEGIN", &e))?;
    for m in migrations {
        if let Err(e) = insert_row(client, &insert, table, m).await {
            rollback(session).await;
            return Err(query_failed(
                &format!("recording {} in {}", m.tag, table.qualified),
                &e,
            ));
        }
    }
    if let Err(e) = client.batch_execute("COMMIT").await {
        rollback(session).await;
        return Err(query_failed("COMMIT", &e));
    }
    Ok(())
}

/// Best effort: if the connection is gone the server rolls back by itself.
async fn rollback(session: &Session) {
    if let Err(e) = session.client().batch_execute("ROLLBACK").await {
        tracing::debug!("ROLLBACK failed ({e}); the server rolls back when the session ends");
    }
}

/// What a failure leaves behind, in words.
fn consequence(mode: TransactionMode, group: &[&Migration], earlier: &[Applied]) -> String {
    match mode {
        TransactionMode::All if group.len() == 1 => "The transaction was rolled back: the \
            migration was not applied and no tracking row was written."
            .to_string(),
        TransactionMode::All => format!(
            "The transaction was rolled back: none of the {} pending migrations of this run were \
             applied and no tracking rows were written.",
            group.len()
        ),
        TransactionMode::Each => {
            let kept = if earlier.is_empty() {
                "No earlier migration of this run was committed".to_string()
            } else {
                format!(
                    "The earlier migrations of this run stay committed ({})",
                    earlier
                        .iter()
                        .map(|a| a.tag.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!("{kept}; this migration was rolled back and not recorded.")
        }
    }
}

fn lock_story(
    group: &[&Migration],
    tag: &str,
    chunk: usize,
    retries: u32,
    limits: Limits,
) -> MigrationFailure {
    let m = group.iter().find(|m| m.tag == tag).unwrap_or(&group[0]);
    let chunks = m.chunks();
    let c = chunks[(chunk - 1).min(chunks.len() - 1)];
    let (line, column) = line_col(&m.text, c.offset + leading_blank(c.text));
    MigrationFailure {
        tag: tag.to_string(),
        file: m.file(),
        chunk,
        chunks: chunks.len(),
        line,
        column,
        exact_position: false,
        statement_excerpt: excerpt(c.text),
        sqlstate: "55P03".into(),
        message: format!(
            "canceling statement due to lock timeout, {} time{} in a row (lock_timeout {}, \
             {retries} retr{}): another session kept a conflicting lock on a table this \
             statement needs",
            retries + 1,
            if retries == 0 { "" } else { "s" },
            format_duration(limits.lock_timeout),
            if retries == 1 { "y" } else { "ies" }
        ),
        detail: None,
        hint: Some(
            "find the blocker in pg_stat_activity / pg_locks (often a long transaction or an idle \
             one left open by the app), or raise PORTCULLIS_DDL_LOCK_TIMEOUT or \
             PORTCULLIS_DDL_LOCK_RETRIES"
                .into(),
        ),
        consequence: String::new(),
    }
}

/// Byte length of the blank prefix, so a chunk's position points at its first statement.
fn leading_blank(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

/// The first non-blank line of a statement, shortened, for orientation in messages.
fn excerpt(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() > 80 {
        format!("{}...", line.chars().take(77).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_first_lines() {
        assert_eq!(excerpt("\n\n  ALTER TABLE x\n ADD y;"), "ALTER TABLE x");
        assert_eq!(excerpt(&"x".repeat(200)).len(), 80);
        assert_eq!(leading_blank("\n  a"), 3);
    }
}
