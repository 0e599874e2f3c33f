//! The seeds phase on the database: the tracking table `"<schema>"."__portcullis_seeds"`, and
//! running the seeds in one transaction. The seed variables become transaction-local settings
//! through bound parameters (`set_config($1, $2, true)`), never SQL text; each file is sent whole
//! as one simple query (the protocol drizzle uses for migrations), so it may hold any number of
//! statements, `DO` blocks and dollar-quoted bodies; its tracking row is upserted right after it.
//!
//! The file is read as a stream of messages rather than with `batch_execute`, only to count the
//! statements that completed: when the server names no position (a constraint violation, an
//! unset `current_setting`), that count says which statement failed.

use super::watch::Watch;
use super::{Session, qualified, query_failed, rollback};
use crate::config::{SeedMode, SeedVars};
use crate::error::{Error, SeedFailure};
use crate::seeds::{self, Record, Seed, SeedSet, State};
use crate::source::lexer;
use crate::source::split::line_col;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_core::Stream;
use futures_sink::Sink;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_postgres::SimpleQueryMessage;

/// How the seeds' transaction waits for locks and how long a statement may run (the same
/// settings as migrations: PORTCULLIS_DDL_LOCK_TIMEOUT/_RETRIES, PORTCULLIS_STATEMENT_TIMEOUT).
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub mode: SeedMode,
    pub vars: &'a SeedVars,
    pub lock_timeout: Duration,
    pub lock_retries: u32,
    pub statement_timeout: Duration,
}

/// One seed that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRun {
    pub name: String,
    /// Its state before this run (new, changed, or applied and run again).
    pub state: State,
    pub statements: usize,
    pub duration: Duration,
}

/// What the seeds phase did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seeded {
    pub ran: Vec<SeedRun>,
    /// Seeds left out because they are unchanged (`changed` mode).
    pub skipped: Vec<String>,
}

const TABLE_EXISTS: &str = "\
select exists(select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = $1 and c.relname = $2)";

fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
    name text PRIMARY KEY,
    hash text NOT NULL,
    first_applied_at timestamptz NOT NULL DEFAULT now(),
    last_applied_at timestamptz NOT NULL DEFAULT now(),
    run_count bigint NOT NULL DEFAULT 1
)"
    )
}

fn select_sql(table: &str) -> String {
    let utc =
        |c: &str| format!("to_char({c} at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'");
    format!(
        "select name, hash, {}, {}, run_count::int8 from {table} order by name",
        utc("first_applied_at"),
        utc("last_applied_at")
    )
}

/// One row per seed name; `now()` is the transaction's start, the same for every seed of a run.
fn upsert_sql(table: &str) -> String {
    format!(
        "insert into {table} as s (name, hash) values ($1, $2) on conflict (name) do update \
         set hash = excluded.hash, last_applied_at = now(), run_count = s.run_count + 1"
    )
}

/// The tracking table of `schema`, quoted.
pub fn table(schema: &str) -> String {
    qualified(schema, seeds::TABLE)
}

/// Reads the tracking table without changing anything: `None` when it does not exist yet.
pub async fn read(session: &Session, schema: &str) -> Result<Option<Vec<Record>>, Error> {
    let client = session.client();
    let exists: bool = client
        .query_one(TABLE_EXISTS, &[&schema, &seeds::TABLE])
        .await
        .map_err(|e| query_failed("looking up the seeds tracking table", &e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    read_rows(client, &table(schema)).await.map(Some)
}

async fn read_rows(client: &tokio_postgres::Client, table: &str) -> Result<Vec<Record>, Error> {
    Ok(client
        .query(&select_sql(table), &[])
        .await
        .map_err(|e| query_failed(&format!("reading {table}"), &e))?
        .iter()
        .map(|r| Record {
            name: r.get(0),
            hash: r.get(1),
            first_applied_at: r.get(2),
            last_applied_at: r.get(3),
            run_count: r.get(4),
        })
        .collect())
}

/// Whether every seed of `set` is recorded with the hash its file has now and, with `since`
/// (the server's clock, seconds since the epoch), was run by a seeds transaction that began at
/// or after it. What a runner that waited for another asks before leaving the seeds to it.
pub async fn all_ran_since(
    session: &Session,
    schema: &str,
    set: &SeedSet,
    since: Option<f64>,
) -> Result<bool, Error> {
    let client = session.client();
    let exists: bool = client
        .query_one(TABLE_EXISTS, &[&schema, &seeds::TABLE])
        .await
        .map_err(|e| query_failed("looking up the seeds tracking table", &e))?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let names: Vec<&str> = set.seeds.iter().map(|s| s.name.as_str()).collect();
    let hashes: Vec<&str> = set.seeds.iter().map(|s| s.hash.as_str()).collect();
    let table = table(schema);
    let matching: i64 = client
        .query_one(
            &format!(
                "select count(*) from unnest($1::text[], $2::text[]) as f(name, hash) \
                 join {table} s on s.name = f.name and s.hash = f.hash \
                 where $3::float8 is null or extract(epoch from s.last_applied_at) >= $3"
            ),
            &[&names, &hashes, &since],
        )
        .await
        .map_err(|e| query_failed(&format!("reading {table}"), &e))?
        .get(0);
    Ok(usize::try_from(matching).is_ok_and(|n| n == set.seeds.len()))
}

/// Why one attempt of the seeds' transaction failed.
enum Failure {
    /// SQLSTATE 55P03 (lock_timeout) or 40P01 (a deadlock PostgreSQL broke by cancelling this
    /// side): rolled back, worth retrying.
    LockConflict(Box<SeedFailure>),
    Failed(Error),
}

/// Runs the seeds of `set` that `opts.mode` selects, in one transaction, and records them.
/// A statement that waits longer than the lock timeout rolls everything back and is retried
/// with backoff, like a migration.
pub async fn run(
    session: &Session,
    schema: &str,
    set: &SeedSet,
    opts: Options<'_>,
) -> Result<Seeded, Error> {
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build();
    let mut retry = 0;
    loop {
        match attempt(session, schema, set, opts).await {
            Ok(seeded) => return Ok(seeded),
            Err(Failure::Failed(e)) => return Err(e),
            Err(Failure::LockConflict(mut failure)) => {
                let deadlock = failure.sqlstate == "40P01";
                if deadlock && let Some(detail) = &failure.detail {
                    failure.detail = Some(super::name_relations(session, detail).await);
                }
                if retry >= opts.lock_retries {
                    failure.message = format!(
                        "{}, {}",
                        failure.message,
                        super::lock_attempts(deadlock, retry, opts.lock_timeout)
                    );
                    failure.hint = Some(
                        "another session kept a conflicting lock on a row or table this seed \
                         writes; find it in pg_stat_activity / pg_locks (often a long or idle \
                         transaction of the app), or raise PORTCULLIS_DDL_LOCK_TIMEOUT or \
                         PORTCULLIS_DDL_LOCK_RETRIES"
                            .into(),
                    );
                    return Err(Error::seed_failed(*failure));
                }
                retry += 1;
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                let who = if deadlock {
                    failure
                        .detail
                        .as_deref()
                        .unwrap_or("the server named no session")
                        .replace('\n', " ")
                        .trim_end_matches('.')
                        .to_string()
                } else {
                    "another session".to_string()
                };
                let why = super::lock_conflict(deadlock, opts.lock_timeout, &who);
                tracing::warn!(
                    "seed {} {why}; the seeds were rolled back, retry {retry} of {} in {:.1}s",
                    failure.name,
                    opts.lock_retries,
                    delay.as_secs_f64()
                );
                // A signal in the pause ends the run before another attempt starts.
                if crate::interrupt::sleep(delay).await.is_err() {
                    return Err(crate::interrupt::error_with(
                        "The seeds' transaction had been rolled back before the pause: no seed \
                         of this run was applied; the migrations stay applied.",
                    ));
                }
            }
        }
    }
}

async fn attempt(
    session: &Session,
    schema: &str,
    set: &SeedSet,
    opts: Options<'_>,
) -> Result<Seeded, Failure> {
    let client = session.client();
    // Seed statements and COMMIT may run long; the watch tells that from a silent connection.
    // Blockers are not sampled: the seeds' lock-timeout message does not name them.
    let watch = Watch::new(session, Duration::ZERO, opts.statement_timeout);
    quick(session, "starting the seeds' transaction", async {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| query_failed("BEGIN (seeds)", &e))
    })
    .await?;
    let result = in_transaction(session, &watch, schema, set, opts).await;
    match result {
        Ok((seeded, created)) => {
            let last_answer = Cell::new(tokio::time::Instant::now());
            let committed = watch
                .run(
                    &last_answer,
                    &RefCell::new(Vec::new()),
                    &|| true,
                    client.batch_execute("COMMIT"),
                )
                .await
                .map_err(|why| {
                    Failure::Failed(Error::Unreachable(format!(
                        "the database at {} stopped answering while committing the seeds: {why}, \
                         so the connection is treated as lost. Whether the COMMIT happened is \
                         unknown, but PostgreSQL commits completely or not at all: either every \
                         seed of this run was applied and recorded, or none was; the migrations \
                         stay applied either way. Check the network path (a proxy or firewall \
                         that stopped forwarding, a hung server); seeds are idempotent, so run \
                         again; a restart may help.",
                        session.database.target()
                    )))
                })?;
            if let Err(e) = committed {
                rollback(session).await;
                return Err(match e.as_db_error() {
                    Some(db) => {
                        // Deferred constraints are checked at COMMIT: the failure is blamed on
                        // the last seed that ran in this transaction (in `changed` mode the
                        // folder's last seed may have been left out).
                        let last = seeded
                            .ran
                            .last()
                            .and_then(|r| set.seeds.iter().find(|s| s.name == r.name))
                            .or(set.seeds.last())
                            .expect("seeds are not empty here");
                        Failure::Failed(Error::seed_failed(SeedFailure {
                            name: last.name.clone(),
                            file: last.file(),
                            statement: lexer::statement_ranges(last.sendable().0).len(),
                            statements: lexer::statement_ranges(last.sendable().0).len(),
                            line: 1,
                            column: 1,
                            exact_position: false,
                            statement_excerpt: "COMMIT (deferred constraints are checked here)"
                                .into(),
                            command: lexer::Command::Other,
                            sqlstate: db.code().code().to_string(),
                            message: opts.vars.redact(db.message()),
                            detail: db.detail().map(|d| opts.vars.redact(d)),
                            hint: db.hint().map(|h| opts.vars.redact(h)),
                            context: None,
                            advice: None,
                        }))
                    }
                    // The answer to COMMIT never came: whether it happened is unknown.
                    None => Failure::Failed(Error::Unreachable(format!(
                        "the connection to the database was lost while committing the seeds \
                         ({e}). Whether the COMMIT happened is unknown, but PostgreSQL commits \
                         completely or not at all: either every seed of this run was applied \
                         and recorded, or none was; the migrations stay applied either way. \
                         Seeds are idempotent, so run again; a restart may help."
                    ))),
                });
            }
            if created {
                tracing::info!("created the seeds tracking table {}", table(schema));
            }
            Ok(seeded)
        }
        Err(f) => {
            rollback(session).await;
            Err(f)
        }
    }
}

/// An exchange of the seeds phase that the server answers at once, given up (exit 5) when no
/// answer comes within the answer timeout, as everywhere else ([`Session::within`]).
async fn quick<T>(
    session: &Session,
    what: &str,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Failure> {
    session.within(what, work).await.map_err(|e| match e {
        Error::Unreachable(m) if session.is_lost() => Failure::Failed(Error::Unreachable(format!(
            "{m} No seed of this run was applied; migrations committed before the seeds stay \
             applied."
        ))),
        Error::LockTimeout(m) => Failure::Failed(Error::LockTimeout(format!(
            "{m} No seed of this run was applied; migrations committed before the seeds stay \
             applied."
        ))),
        e => Failure::Failed(e),
    })
}

/// Everything between `BEGIN` and `COMMIT`. Returns what ran and whether the table was created.
async fn in_transaction(
    session: &Session,
    watch: &Watch<'_>,
    schema: &str,
    set: &SeedSet,
    opts: Options<'_>,
) -> Result<(Seeded, bool), Failure> {
    let client = session.client();
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let what = "setting lock_timeout, statement_timeout and transaction_timeout for the seeds";
    quick(session, what, async {
        client
            .query_one(
                &super::set_limits(true),
                &[&ms(opts.lock_timeout), &ms(opts.statement_timeout)],
            )
            .await
            .map_err(|e| query_failed(what, &e))
    })
    .await?;

    // The tracking table, created inside the transaction (so a failed first run leaves none),
    // with DDL issued only when something is missing.
    let table = table(schema);
    let mut created = false;
    let what = "looking up the seeds tracking table";
    let table_exists: bool = quick(session, what, async {
        super::history::ensure_schema(client, schema).await?;
        client
            .query_one(TABLE_EXISTS, &[&schema, &seeds::TABLE])
            .await
            .map_err(|e| query_failed(what, &e))
    })
    .await?
    .get(0);
    if !table_exists {
        let what = format!("creating {table}");
        quick(session, &what, async {
            client
                .batch_execute(&create_table_sql(&table))
                .await
                .map_err(|e| query_failed(&what, &e))
        })
        .await?;
        created = true;
    }
    let records = quick(
        session,
        &format!("reading {table}"),
        read_rows(client, &table),
    )
    .await?;
    let todo = seeds::select(&set.seeds, &records, opts.mode);
    let skipped: Vec<String> = set
        .seeds
        .iter()
        .filter(|s| !todo.iter().any(|(t, _)| t.name == s.name))
        .map(|s| s.name.clone())
        .collect();
    for name in &skipped {
        tracing::debug!(seed = %name, "skipped: unchanged since its last run");
    }
    if todo.is_empty() {
        return Ok((
            Seeded {
                ran: Vec::new(),
                skipped,
            },
            created,
        ));
    }

    if !opts.vars.is_empty() {
        set_vars(session, opts.vars).await?;
    }

    let upsert = upsert_sql(&table);
    let mut ran = Vec::with_capacity(todo.len());
    for (i, &(seed, state)) in todo.iter().enumerate() {
        let started = Instant::now();
        let statements = run_file(session, watch, seed, opts.vars)
            .await
            .map_err(|f| match f {
                Failure::Failed(e) => Failure::Failed(seeds::search_path_changed_before(
                    e,
                    todo[..=i].iter().map(|&(s, _)| s),
                )),
                f => f,
            })?;
        let what = format!("recording {} in {table}", seed.name);
        quick(session, &what, async {
            client
                .execute(&upsert, &[&seed.name, &seed.hash])
                .await
                .map_err(|e| query_failed(&what, &e))
        })
        .await?;
        let duration = started.elapsed();
        tracing::info!(
            seed = %seed.name,
            state = %state.word(),
            statements,
            duration_ms = duration.as_millis() as u64,
            "seeded"
        );
        ran.push(SeedRun {
            name: seed.name.clone(),
            state,
            statements,
            duration,
        });
    }
    Ok((Seeded { ran, skipped }, created))
}

/// The temporary table the seed variables pass through (see [`set_vars`]); dropped at the
/// seeds' COMMIT or ROLLBACK.
const VARS_TABLE: &str = "pg_temp.portcullis_seed_vars";

/// Sets each seed variable's setting for the seeds' transaction. The values never appear in SQL
/// text, and where the database user may create temporary tables they are not bound parameters
/// either: a server that logs statements (`log_statement = 'all'`, `log_min_duration_statement
/// = 0`) writes bound parameters to its log in full, but not the rows of a `COPY ... FROM
/// STDIN`. So the values go by COPY into a temporary table, and `set_config` reads them from
/// there. Without the TEMPORARY privilege they go as bound parameters, with a warning.
async fn set_vars(session: &Session, vars: &SeedVars) -> Result<(), Failure> {
    let client = session.client();
    let what = "setting the seed variables";
    let failed = |e: &tokio_postgres::Error| {
        Error::Internal(format!(
            "setting the seed variables ({}) failed: {}. Check the variables' names.",
            vars.settings(),
            vars.redact(&error_text(e))
        ))
    };
    quick(session, what, async {
        let temporary: bool = client
            .query_one(
                "select has_database_privilege(current_database(), 'TEMPORARY')",
                &[],
            )
            .await
            .map_err(|e| query_failed(what, &e))?
            .get(0);
        if !temporary {
            tracing::warn!(
                "the database user may not create temporary tables in this database, so the \
                 seed variables' values ({}) go to the server as bound parameters, which a \
                 server that logs statements (log_statement = 'all') writes to its log; grant \
                 TEMPORARY on the database to keep them out of it",
                vars.settings()
            );
            for var in vars.iter() {
                client
                    .query_one(
                        "select set_config($1, $2, true)",
                        &[&var.setting, &var.value()],
                    )
                    .await
                    .map_err(|e| failed(&e))?;
            }
            return Ok(());
        }
        client
            .batch_execute(&format!(
                "create temporary table {VARS_TABLE} (setting text not null, value text not \
                 null) on commit drop"
            ))
            .await
            .map_err(|e| query_failed(what, &e))?;
        let sink = client
            .copy_in::<_, std::io::Cursor<Vec<u8>>>(&format!("copy {VARS_TABLE} from stdin"))
            .await
            .map_err(|e| failed(&e))?;
        let mut sink = std::pin::pin!(sink);
        std::future::poll_fn(|cx| sink.as_mut().poll_ready(cx))
            .await
            .map_err(|e| failed(&e))?;
        sink.as_mut()
            .start_send(std::io::Cursor::new(copy_rows(vars)))
            .map_err(|e| failed(&e))?;
        sink.as_mut().finish().await.map_err(|e| failed(&e))?;
        client
            .query_one(
                &format!("select count(set_config(setting, value, true)) from {VARS_TABLE}"),
                &[],
            )
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    })
    .await
}

/// The variables as the rows of `COPY ... FROM STDIN` in text format: setting, tab, value,
/// newline, with backslash, tab, newline and carriage return escaped.
fn copy_rows(vars: &SeedVars) -> Vec<u8> {
    let mut rows = String::new();
    for var in vars.iter() {
        rows.push_str(&var.setting);
        rows.push('\t');
        for c in var.value().chars() {
            match c {
                '\\' => rows.push_str("\\\\"),
                '\t' => rows.push_str("\\t"),
                '\n' => rows.push_str("\\n"),
                '\r' => rows.push_str("\\r"),
                c => rows.push(c),
            }
        }
        rows.push('\n');
    }
    rows.into_bytes()
}

/// Sends one seed file as one simple query, watched (see [`Watch`]); returns how many statements
/// it ran.
async fn run_file(
    session: &Session,
    watch: &Watch<'_>,
    seed: &Seed,
    vars: &SeedVars,
) -> Result<usize, Failure> {
    let (sent, skipped) = seed.sendable();
    if lexer::statement_ranges(sent).is_empty() {
        return Ok(0);
    }
    // For the "interrupted while ..." message: a signal now rolls back the seeds only (the
    // seeds phase as a whole says so too, from its start on: see `lib::seed_locked`).
    crate::interrupt::set_activity(format!(
        "running seed {} ({}) in the seeds' transaction (the migrations are already committed \
         and stay applied)",
        seed.name,
        seed.file()
    ));
    let lost = |e: &tokio_postgres::Error| {
        Failure::Failed(Error::Unreachable(format!(
            "the connection to the database was lost while running seed {} ({}): {e}. The server \
             rolls back the open transaction, so no seed of this run was applied; run again.",
            seed.name,
            seed.file()
        )))
    };
    // Every message counts as an answer: the server is alive. (It sends them when its output
    // buffer fills or the query ends, so statement_timeout bounds a file of one statement only;
    // see `Watch::lost`.)
    let last_answer = Cell::new(tokio::time::Instant::now());
    let completed = Cell::new(0);
    let read = async {
        let stream = session
            .client()
            .simple_query_raw(sent)
            .await
            .map_err(|e| lost(&e))?;
        let mut stream = std::pin::pin!(stream);
        loop {
            let message = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
            last_answer.set(tokio::time::Instant::now());
            match message {
                None => return Ok(completed.get()),
                Some(Ok(SimpleQueryMessage::CommandComplete(_))) => {
                    completed.set(completed.get() + 1)
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let Some(db) = e.as_db_error() else {
                        return Err(lost(&e));
                    };
                    let failure = Box::new(failure(seed, sent, skipped, completed.get(), db, vars));
                    // A lock timeout, or a deadlock with the app: rolled back, worth retrying.
                    return Err(if super::lost_lock_conflict(db.code().code()) {
                        Failure::LockConflict(failure)
                    } else {
                        Failure::Failed(Error::seed_failed(*failure))
                    });
                }
            }
        }
    };
    let one_statement = lexer::statement_ranges(sent).len() <= 1;
    watch
        .run(
            &last_answer,
            &RefCell::new(Vec::new()),
            &|| one_statement,
            read,
        )
        .await
        .unwrap_or_else(|why| {
            // Not which statement: the server sends a multi-statement query's answers only when
            // its output buffer fills or the query ends, so the count lags behind.
            Err(Failure::Failed(Error::Unreachable(format!(
                "the database at {} stopped answering while running seed {} ({}): {why}, so \
                 the connection is treated as lost. The server rolls \
                 back the seeds' transaction, and releases the migration lock, when the session \
                 ends: no seed of this run was applied; migrations committed \
                 before the seeds stay applied. Check the network path (a proxy or firewall \
                 that stopped forwarding, a hung server) and run again; a restart may help.",
                session.database.target(),
                seed.name,
                seed.file(),
            ))))
        })
}

/// Locates a server error in the seed file and gathers what the operator needs. Every text
/// that came from the server passes through `redact`, as it may quote a variable's value.
fn failure(
    seed: &Seed,
    sent: &str,
    skipped: usize,
    completed: usize,
    db: &tokio_postgres::error::DbError,
    vars: &SeedVars,
) -> SeedFailure {
    let statements = lexer::statement_ranges(sent);
    let last = statements.len().saturating_sub(1);
    let position = super::error_at(sent, db);
    let (index, at) = match position {
        Some(byte) => (
            statements.iter().position(|r| byte < r.end).unwrap_or(last),
            byte,
        ),
        None => {
            let i = completed.min(last);
            (i, statements.get(i).map_or(0, |r| r.start))
        }
    };
    let (line, column) = line_col(&seed.text, skipped + at);
    let excerpt = statements
        .get(index)
        .map(|r| lexer::excerpt(&sent[r.clone()], 80))
        .unwrap_or_default();
    let missing = missing_variable_hint(db.code().code(), db.message());
    // A variable this run was not given: the file is not at fault.
    let advice = missing.is_some().then(|| {
        "The seed reads a variable this run was not given: set it (see the HINT) in the \
         environment of this run, then deploy again."
            .to_string()
    });
    let hint = db.hint().map(str::to_string).or(missing);
    SeedFailure {
        name: seed.name.clone(),
        file: seed.file(),
        statement: index + 1,
        statements: statements.len(),
        line,
        column,
        exact_position: position.is_some(),
        statement_excerpt: vars.redact(&excerpt),
        command: statements.get(index).map_or(lexer::Command::Other, |r| {
            lexer::Command::of(&sent[r.clone()])
        }),
        sqlstate: db.code().code().to_string(),
        message: vars.redact(db.message()),
        detail: db.detail().map(|d| vars.redact(d)),
        hint: hint.map(|h| vars.redact(&h)),
        context: db.where_().map(|w| vars.redact(w)),
        advice,
    }
}

/// For `current_setting('portcullis.x')` with no such variable: which one to set.
fn missing_variable_hint(sqlstate: &str, message: &str) -> Option<String> {
    if sqlstate != "42704" {
        return None;
    }
    // The name follows "portcullis." in any language's quotes ("...", »...«, 「...」).
    let at = message.find("portcullis.")? + "portcullis.".len();
    let name: String = message[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        return None;
    }
    let setting = format!("portcullis.{name}");
    Some(format!(
        "set PORTCULLIS_SEED_VAR_{} for this run (the seed reads current_setting('{setting}')), \
         or read it with current_setting('{setting}', true), which gives NULL when it is unset",
        name.to_ascii_uppercase()
    ))
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("ERROR {} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_named_in_any_language() {
        for message in [
            "unrecognized configuration parameter \"portcullis.admin_email\"",
            "nicht erkannter Konfigurationsparameter »portcullis.admin_email«",
            "nicht erkannter Konfigurationsparameter >>portcullis.admin_email<<",
        ] {
            let hint = missing_variable_hint("42704", message).expect(message);
            assert!(
                hint.starts_with("set PORTCULLIS_SEED_VAR_ADMIN_EMAIL for this run"),
                "{hint}"
            );
        }
        assert_eq!(
            missing_variable_hint("42704", "unrecognized configuration parameter \"foo.bar\""),
            None
        );
        assert_eq!(missing_variable_hint("42601", "portcullis.x"), None);
    }

    #[test]
    fn sql_quotes_the_table() {
        let t = table("my \"schema\"");
        assert_eq!(t, "\"my \"\"schema\"\"\".\"__portcullis_seeds\"");
        assert!(create_table_sql(&t).contains("name text PRIMARY KEY"));
        assert!(upsert_sql(&t).contains("run_count = s.run_count + 1"));
    }

    #[test]
    fn variables_become_copy_rows_with_their_special_characters_escaped() {
        let cfg = crate::config::Config::from_vars([
            ("DATABASE_URL", "postgres://u@h/d"),
            ("PORTCULLIS_SEED_VAR_PLAIN", "ops@example.com"),
            ("PORTCULLIS_SEED_VAR_TRICKY", "a\tb\nc\rd\\e\\.\n\\."),
        ])
        .unwrap();
        let rows = String::from_utf8(copy_rows(&cfg.seeds.vars)).unwrap();
        assert_eq!(
            rows,
            "portcullis.plain\tops@example.com\n\
             portcullis.tricky\ta\\tb\\nc\\rd\\\\e\\\\.\\n\\\\.\n"
        );
        // One line per variable: no value can end the data (`\.`) or start a row.
        assert_eq!(rows.lines().count(), 2);
    }

    #[test]
    fn an_unset_variable_gets_a_hint_naming_it() {
        assert_eq!(
            missing_variable_hint(
                "42704",
                "unrecognized configuration parameter \"portcullis.admin_email\""
            )
            .unwrap(),
            "set PORTCULLIS_SEED_VAR_ADMIN_EMAIL for this run (the seed reads \
             current_setting('portcullis.admin_email')), or read it with \
             current_setting('portcullis.admin_email', true), which gives NULL when it is unset"
        );
        assert_eq!(
            missing_variable_hint("42704", "unrecognized configuration parameter \"foo\""),
            None
        );
        assert_eq!(missing_variable_hint("42P01", "x \"portcullis.a\""), None);
    }
}
