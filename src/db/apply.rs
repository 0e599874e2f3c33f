//! Applying migrations the way drizzle does: `BEGIN`, each chunk through the simple query
//! protocol in order, the tracking row inserted with bound parameters right after each migration,
//! `COMMIT` (drizzle-compat.md 2.2-2.6). `BEGIN`/`COMMIT` are plain statements, not a client-side
//! transaction object, so a file's own `COMMIT;` behaves as under drizzle (E35).
//!
//! Beyond drizzle:
//! - migrations that refuse a transaction (`CREATE INDEX CONCURRENTLY`, ... or the
//!   `-- portcullis: no-transaction` marker) run on their own: the batch before them is
//!   committed, their chunks run one by one in autocommit, then their row is recorded;
//! - `each` mode: one transaction per migration;
//! - `lock_timeout` with retries, so DDL waiting for a busy table backs off instead of queueing
//!   every other query behind it; a second connection watches who blocks the waiting statement;
//! - a failure report naming the file, line:column, SQLSTATE, DETAIL, HINT and what was kept.

use super::history::Table;
use super::{Session, query_failed};
use crate::config::{TransactionMode, format_duration};
use crate::error::{Error, MigrationFailure};
use crate::interrupt;
use crate::source::split::{line_col, position_to_byte};
use crate::source::{Chunk, Migration};
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

/// A unit of work with its own commit.
#[derive(Debug, Clone, Copy)]
enum Group<'a> {
    /// Migrations applied in one transaction.
    Transaction(&'a [&'a Migration]),
    /// One migration whose chunks autocommit one by one (`reason` says why).
    Autocommit(&'a Migration, &'a str),
}

/// Splits the migrations into transaction groups: in `all` mode every run of transactional
/// migrations is one group, in `each` mode every migration is; a migration that refuses a
/// transaction is always a group of its own.
fn groups<'a>(migrations: &'a [&'a Migration], mode: TransactionMode) -> Vec<Group<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, m) in migrations.iter().enumerate() {
        if let Some(reason) = &m.no_transaction {
            if start < i {
                out.push(Group::Transaction(&migrations[start..i]));
            }
            out.push(Group::Autocommit(m, reason));
            start = i + 1;
        } else if mode == TransactionMode::Each {
            out.push(Group::Transaction(&migrations[i..=i]));
            start = i + 1;
        }
    }
    if start < migrations.len() {
        out.push(Group::Transaction(&migrations[start..]));
    }
    out
}

/// Why one group failed.
enum GroupError {
    /// SQLSTATE 55P03: a statement waited longer than `lock_timeout`; rolled back, retryable.
    /// `chunk` is 1-based; `blockers` describes the sessions seen blocking it.
    LockTimeout {
        tag: String,
        chunk: usize,
        blockers: Vec<String>,
    },
    Failed(Error),
}

/// The statement in flight and the connection that watches who blocks it.
struct Runner<'a> {
    session: &'a Session,
    table: &'a Table,
    insert: String,
    observer: Option<tokio_postgres::Client>,
    limits: Limits,
    mode: TransactionMode,
    /// Migrations committed so far in this run.
    committed: Vec<Applied>,
}

/// Sessions blocking `$1`, described for the log.
const BLOCKERS: &str = "\
select a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
       coalesce(extract(epoch from now() - a.xact_start)::float8, 0),
       left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 160)
  from pg_stat_activity a where a.pid = any(pg_blocking_pids($1))";

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
    let observer = if limits.lock_timeout.is_zero() {
        None
    } else {
        super::connect::observer(&session.database).await
    };
    let mut runner = Runner {
        session,
        table,
        insert: insert_sql(table),
        observer,
        limits,
        mode,
        committed: Vec::new(),
    };
    for group in groups(migrations, mode) {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build();
        let mut retry = 0;
        // For an autocommit migration, a retry resumes at the statement that timed out: the
        // ones before it are committed.
        let mut resume_at = 0;
        loop {
            let attempt = match group {
                Group::Transaction(ms) => runner.transaction(ms).await,
                Group::Autocommit(m, reason) => runner.autocommit(m, reason, resume_at).await,
            };
            match attempt {
                Ok(done) => {
                    runner.committed.extend(done);
                    break;
                }
                Err(GroupError::Failed(e)) => return Err(e),
                Err(GroupError::LockTimeout {
                    tag,
                    chunk,
                    blockers,
                }) => {
                    let who = if blockers.is_empty() {
                        "a session that had let go by the time we looked".to_string()
                    } else {
                        blockers.join("; ")
                    };
                    if retry >= limits.lock_retries {
                        return Err(Error::MigrationFailed(Box::new(
                            runner.lock_story(group, &tag, chunk, retry, &who),
                        )));
                    }
                    if let Group::Autocommit(..) = group {
                        resume_at = chunk - 1;
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    retry += 1;
                    tracing::warn!(
                        "statement {chunk} of {tag} waited longer than lock_timeout ({}) for a \
                         lock held by {who}; rolled back, retry {retry} of {} in {:.1}s",
                        format_duration(limits.lock_timeout),
                        limits.lock_retries,
                        delay.as_secs_f64()
                    );
                    interrupt::sleep(delay).await?;
                }
            }
        }
    }
    Ok(runner.committed)
}

impl Runner<'_> {
    fn client(&self) -> &tokio_postgres::Client {
        self.session.client()
    }

    /// Runs one statement, sampling who blocks it while it waits longer than half the lock
    /// timeout. Returns the result and the last blockers seen.
    async fn execute(&self, sql: &str) -> (Result<(), tokio_postgres::Error>, Vec<String>) {
        let exec = self.client().batch_execute(sql);
        tokio::pin!(exec);
        let Some(observer) = &self.observer else {
            return (exec.await, Vec::new());
        };
        let mut blockers = Vec::new();
        let mut next = tokio::time::Instant::now() + self.limits.lock_timeout / 2;
        loop {
            tokio::select! {
                result = &mut exec => return (result, blockers),
                _ = tokio::time::sleep_until(next) => {
                    next += Duration::from_millis(250);
                    if let Ok(rows) = observer.query(BLOCKERS, &[&self.session.backend_pid]).await
                        && !rows.is_empty()
                    {
                        blockers = rows
                            .iter()
                            .map(|r| {
                                format!(
                                    "pid {} ({:?}, {}, transaction open {:.1}s, query `{}`)",
                                    r.get::<_, i32>(0),
                                    r.get::<_, String>(1),
                                    r.get::<_, String>(2),
                                    r.get::<_, f64>(3),
                                    r.get::<_, String>(4)
                                )
                            })
                            .collect();
                    }
                }
            }
        }
    }

    /// `BEGIN`, the migrations with their rows, `COMMIT`.
    async fn transaction(&self, group: &[&Migration]) -> Result<Vec<Applied>, GroupError> {
        let lost =
            |what: &str, e: &tokio_postgres::Error| GroupError::Failed(query_failed(what, e));
        self.client()
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
                if interrupt::check().is_err() {
                    rollback(self.session).await;
                    return Err(GroupError::Failed(interrupt::error()));
                }
                interrupt::set_activity(format!(
                    "running statement {} of {} of {} ({}; in a transaction)",
                    n + 1,
                    chunks.len(),
                    m.tag,
                    m.file()
                ));
                let sent = sendable(chunk);
                let (result, blockers) = self.execute(sent).await;
                if let Err(e) = result {
                    rollback(self.session).await;
                    return Err(self.failure(m, &chunks, n, &e, blockers, |_| {
                        self.consequence_of_rollback(group)
                    }));
                }
                statements += 1;
            }
            if let Err(e) = insert_row(self.client(), &self.insert, self.table, m).await {
                rollback(self.session).await;
                return Err(GroupError::Failed(query_failed(
                    &format!("recording {} in {}", m.tag, self.table.qualified),
                    &e,
                )));
            }
            done.push(self.ran(m, statements, started));
        }
        if let Err(e) = self.client().batch_execute("COMMIT").await {
            rollback(self.session).await;
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
                    consequence: self.consequence_of_rollback(group),
                })),
                None => query_failed("COMMIT", &e),
            }));
        }
        Ok(done)
    }

    /// A migration that cannot run in a transaction: each chunk autocommits, from `from` on (a
    /// retry resumes where a lock timeout stopped it), then its row is recorded.
    async fn autocommit(
        &self,
        m: &Migration,
        reason: &str,
        from: usize,
    ) -> Result<Vec<Applied>, GroupError> {
        let started = Instant::now();
        let chunks = m.chunks();
        if from == 0 {
            tracing::info!(
                migration = %m.tag,
                "running {} outside a transaction, statement by statement: {reason}",
                m.tag
            );
        }
        let mut statements = 0;
        for (n, chunk) in chunks.iter().enumerate().skip(from) {
            if chunk.is_blank() {
                continue;
            }
            if interrupt::check().is_err() {
                return Err(GroupError::Failed(interrupt::error()));
            }
            interrupt::set_activity(format!(
                "running statement {} of {} of {} ({}; outside a transaction, statements before \
                 it are committed)",
                n + 1,
                chunks.len(),
                m.tag,
                m.file()
            ));
            let sent = sendable(chunk);
            let (result, blockers) = self.execute(sent).await;
            if let Err(e) = result {
                let invalid = self.invalid_indexes(sent).await;
                return Err(self.failure(m, &chunks, n, &e, blockers, |n| {
                    self.consequence_outside(m, reason, &chunks, n, &invalid)
                }));
            }
            statements += 1;
        }
        if let Err(e) = insert_row(self.client(), &self.insert, self.table, m).await {
            return Err(GroupError::Failed(query_failed(
                &format!(
                    "recording {} in {} (its statements all ran and are committed; record it \
                     with `portcullis baseline --to {}` once the cause is fixed)",
                    m.tag, self.table.qualified, m.tag
                ),
                &e,
            )));
        }
        Ok(vec![self.ran(m, statements, started)])
    }

    fn ran(&self, m: &Migration, statements: usize, started: Instant) -> Applied {
        let duration = started.elapsed();
        // Text logs read "ran migration=0001_x statements=3 duration_ms=12"; JSON gets the
        // same fields, so nothing is said twice.
        tracing::info!(
            migration = %m.tag,
            statements,
            duration_ms = duration.as_millis() as u64,
            "ran"
        );
        Applied {
            tag: m.tag.clone(),
            statements,
            duration,
        }
    }

    /// Turns a failed statement into the error to report. `n` is the 0-based chunk index;
    /// `consequence` says what the failure leaves behind.
    fn failure(
        &self,
        m: &Migration,
        chunks: &[Chunk<'_>],
        n: usize,
        e: &tokio_postgres::Error,
        blockers: Vec<String>,
        consequence: impl FnOnce(usize) -> String,
    ) -> GroupError {
        if interrupt::signal().is_some() {
            return GroupError::Failed(interrupt::error());
        }
        let chunk = chunks[n];
        let sent = sendable(&chunk);
        let Some(db) = e.as_db_error() else {
            return GroupError::Failed(Error::Unreachable(format!(
                "the connection to the database was lost while running statement {} of {} ({}): \
                 {e}. The server rolls back an open transaction; {} Run again.",
                n + 1,
                m.tag,
                m.file(),
                consequence(n)
            )));
        };
        if db.code().code() == "55P03" {
            return GroupError::LockTimeout {
                tag: m.tag.clone(),
                chunk: n + 1,
                blockers,
            };
        }
        let position = match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
            _ => None,
        };
        let skipped = chunk.text.len() - sent.len();
        let at = chunk.offset
            + skipped
            + position.map_or(leading_blank(sent), |p| position_to_byte(sent, p));
        let (line, column) = line_col(&m.text, at);
        GroupError::Failed(Error::MigrationFailed(Box::new(MigrationFailure {
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
            consequence: consequence(n),
        })))
    }

    /// What earlier groups of this run committed, as a clause.
    fn kept(&self) -> String {
        if self.committed.is_empty() {
            String::new()
        } else {
            format!(
                " Migrations committed earlier in this run stay applied: {}.",
                self.committed
                    .iter()
                    .map(|a| a.tag.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    fn consequence_of_rollback(&self, group: &[&Migration]) -> String {
        let what = match (self.mode, group.len()) {
            (_, 1) => "the migration was not applied and no tracking row was written".to_string(),
            _ => format!(
                "none of the {} migrations of this transaction were applied and no tracking rows \
                 were written",
                group.len()
            ),
        };
        format!("The transaction was rolled back: {what}.{}", self.kept())
    }

    fn consequence_outside(
        &self,
        m: &Migration,
        reason: &str,
        chunks: &[Chunk<'_>],
        n: usize,
        invalid: &[String],
    ) -> String {
        let runnable: Vec<usize> = (0..chunks.len())
            .filter(|&i| !chunks[i].is_blank())
            .collect();
        let ran: Vec<String> = runnable
            .iter()
            .filter(|&&i| i < n)
            .map(|i| (i + 1).to_string())
            .collect();
        let left: Vec<String> = runnable
            .iter()
            .filter(|&&i| i > n)
            .map(|i| (i + 1).to_string())
            .collect();
        let mut out = format!(
            "{} runs outside a transaction ({reason}), so nothing was rolled back: {}; statement \
             {} failed; {}. The migration is not recorded, so the next run starts it again from \
             its first statement: make the statements that ran idempotent (IF NOT EXISTS) or undo \
             them first.",
            m.tag,
            if ran.is_empty() {
                "no statement before it had run".to_string()
            } else {
                format!("statement(s) {} ran and are committed", ran.join(", "))
            },
            n + 1,
            if left.is_empty() {
                "no statement remained after it".to_string()
            } else {
                format!("statement(s) {} did not run", left.join(", "))
            }
        );
        for index in invalid {
            out.push_str(&format!(
                " The failed CREATE INDEX CONCURRENTLY left the INVALID index {index} behind (never \
                 used by queries, but maintained on every write): drop it with `DROP INDEX \
                 CONCURRENTLY IF EXISTS {index};` before running again."
            ));
        }
        out.push_str(&self.kept());
        out
    }

    /// INVALID indexes whose name occurs in the failed statement: what a failed
    /// `CREATE INDEX CONCURRENTLY` leaves behind.
    async fn invalid_indexes(&self, statement: &str) -> Vec<String> {
        let lower = statement.to_lowercase();
        match self
            .client()
            .query(
                "select format('%I.%I', n.nspname, c.relname), c.relname::text \
                   from pg_index i join pg_class c on c.oid = i.indexrelid \
                   join pg_namespace n on n.oid = c.relnamespace where not i.indisvalid",
                &[],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .filter(|r| lower.contains(&r.get::<_, String>(1).to_lowercase()))
                .map(|r| r.get::<_, String>(0))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn lock_story(
        &self,
        group: Group<'_>,
        tag: &str,
        chunk: usize,
        retries: u32,
        who: &str,
    ) -> MigrationFailure {
        let (m, consequence) = match group {
            Group::Transaction(ms) => (
                *ms.iter().find(|m| m.tag == tag).unwrap_or(&ms[0]),
                self.consequence_of_rollback(ms),
            ),
            Group::Autocommit(m, reason) => {
                let chunks = m.chunks();
                (
                    m,
                    self.consequence_outside(m, reason, &chunks, chunk - 1, &[]),
                )
            }
        };
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
                 {retries} retr{}): blocked by {who}",
                retries + 1,
                if retries == 0 { "" } else { "s" },
                format_duration(self.limits.lock_timeout),
                if retries == 1 { "y" } else { "ies" }
            ),
            detail: None,
            hint: Some(
                "end or wait out the blocking transaction (often a long or idle-in-transaction \
                 session of the app), or raise PORTCULLIS_DDL_LOCK_TIMEOUT or \
                 PORTCULLIS_DDL_LOCK_RETRIES"
                    .into(),
            ),
            consequence,
        }
    }
}

/// The text to send for a chunk: a leading BOM would reach the server as a syntax error
/// (drizzle fails there); it is stripped, while the recorded hash still covers it.
fn sendable<'a>(chunk: &Chunk<'a>) -> &'a str {
    match chunk.text.strip_prefix('\u{feff}') {
        Some(rest) if chunk.offset == 0 => rest,
        _ => chunk.text,
    }
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
    use std::path::PathBuf;

    #[test]
    fn excerpts_are_short_first_lines() {
        assert_eq!(excerpt("\n\n  ALTER TABLE x\n ADD y;"), "ALTER TABLE x");
        assert_eq!(excerpt(&"x".repeat(200)).len(), 80);
        assert_eq!(leading_blank("\n  a"), 3);
    }

    fn m(tag: &str, no_tx: bool) -> Migration {
        let mut m = Migration::new(0, tag, 1, PathBuf::from("x.sql"), b"select 1;");
        m.no_transaction = no_tx.then(|| "why".to_string());
        m
    }

    fn shape(gs: &[Group<'_>]) -> Vec<String> {
        gs.iter()
            .map(|g| match g {
                Group::Transaction(ms) => ms
                    .iter()
                    .map(|m| m.tag.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                Group::Autocommit(m, _) => format!("({})", m.tag),
            })
            .collect()
    }

    #[test]
    fn groups_commit_before_and_after_a_non_transactional_migration() {
        let ms = [
            m("a", false),
            m("b", false),
            m("c", true),
            m("d", false),
            m("e", true),
        ];
        let refs: Vec<&Migration> = ms.iter().collect();
        assert_eq!(
            shape(&groups(&refs, TransactionMode::All)),
            ["a+b", "(c)", "d", "(e)"]
        );
        assert_eq!(
            shape(&groups(&refs, TransactionMode::Each)),
            ["a", "b", "(c)", "d", "(e)"]
        );
        let plain = [m("a", false), m("b", false)];
        let refs: Vec<&Migration> = plain.iter().collect();
        assert_eq!(shape(&groups(&refs, TransactionMode::All)), ["a+b"]);
    }
}
