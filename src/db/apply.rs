//! Applying migrations the way drizzle does: `BEGIN`, each chunk through the simple query
//! protocol in order, the tracking row inserted with bound parameters right after each migration,
//! `COMMIT` (drizzle-compat.md 2.2-2.6). `BEGIN`/`COMMIT` are plain statements, not a client-side
//! transaction object, so a file's own `COMMIT;` behaves as under drizzle (E35). Inside the
//! block the migrations' chunks and rows are pipelined (sent together, answers read in order):
//! the server refuses everything after a failure there, so the outcome is the same as sending
//! them one by one, in a few round trips for the whole transaction.
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
use super::watch::Watch;
use super::{Session, query_failed, rollback};
use crate::config::TransactionMode;
use crate::error::{Error, MigrationFailure};
use crate::interrupt;
use crate::source::lexer::{self, Command};
use crate::source::split::line_col;
use crate::source::{Chunk, Migration};
use backon::{BackoffBuilder, ExponentialBuilder};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
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
    /// A statement lost a lock conflict with another session (`blocked` says how); rolled back,
    /// and retryable. `chunk` is 1-based.
    LockConflict {
        tag: String,
        chunk: usize,
        blocked: Blocked,
    },
    Failed(Error),
}

/// How a statement lost a lock conflict with another session.
enum Blocked {
    /// SQLSTATE 55P03: it waited longer than `lock_timeout`; the sessions the statement watch saw
    /// blocking it (none when they let go before it looked).
    Timeout(Vec<String>),
    /// SQLSTATE 40P01: PostgreSQL cancelled it to break a deadlock; the server's DETAIL, which
    /// names both sides (relations by oid), when it sent one.
    Deadlock(Option<String>),
}

/// The statement in flight and the connection that watches who blocks it.
struct Runner<'a> {
    session: &'a Session,
    table: &'a Table,
    insert: tokio_postgres::Statement,
    /// Names who blocks a waiting statement, and confirms that the server is still running a
    /// long one, from a second connection.
    watch: Watch<'a>,
    limits: Limits,
    mode: TransactionMode,
    /// Migrations committed so far in this run.
    committed: Vec<Applied>,
}

/// How many requests a pipeline keeps in flight (see [`Runner::pipeline`]): enough that even a
/// distant server is rarely waited for (a 1000-migration folder is about 6000 requests), few
/// enough that their encoded text stays small.
const PIPELINE_DEPTH: usize = 256;

/// What one request of a pipeline sends (see [`Runner::pipeline`]).
#[derive(Clone, Copy)]
enum Request<'a> {
    /// A statement, as sent.
    Statement(&'a str),
    /// The tracking row of the migration at this index of the pipeline's `migrations`.
    Row(usize),
}

/// Why a statement (or COMMIT) did not complete normally.
enum Sent {
    /// The server answered with an error, or the connection broke.
    Failed(tokio_postgres::Error),
    /// No answer, and the server could not be seen running it: the connection is given up.
    Lost(String),
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
    let what = "setting lock_timeout, statement_timeout and transaction_timeout";
    let configure = session.within(what, async {
        use tokio_postgres::types::Type;
        // Typed parameters: one round trip, no separate prepare.
        client
            .query_typed(
                &super::set_limits(false),
                &[
                    (&ms(limits.lock_timeout), Type::TEXT),
                    (&ms(limits.statement_timeout), Type::TEXT),
                ],
            )
            .await
            .map_err(|e| query_failed(what, &e))
    });
    // The observer connection opens in the background from now on when blockers are to be
    // named, so that the first statements need not wait for it.
    let watch = Watch::new(session, limits.lock_timeout, limits.statement_timeout);
    // Sent together: one round trip.
    let (configured, insert) = tokio::join!(configure, prepare_insert(session, table));
    configured?;
    let insert = insert?;
    let mut runner = Runner {
        session,
        table,
        insert,
        watch,
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
                Err(GroupError::LockConflict {
                    tag,
                    chunk,
                    blocked,
                }) => {
                    let deadlock = matches!(blocked, Blocked::Deadlock(_));
                    let who = match blocked {
                        Blocked::Timeout(blockers) if !blockers.is_empty() => blockers.join("; "),
                        Blocked::Timeout(_) => {
                            "a session that had let go by the time we looked".to_string()
                        }
                        Blocked::Deadlock(Some(detail)) => {
                            super::name_relations(session, &detail).await
                        }
                        Blocked::Deadlock(None) => {
                            "another session (the server named none)".to_string()
                        }
                    };
                    if retry >= limits.lock_retries {
                        return Err(Error::migration_failed(
                            runner.lock_story(group, &tag, chunk, retry, &who, deadlock),
                        ));
                    }
                    if let Group::Autocommit(..) = group {
                        resume_at = chunk - 1;
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    retry += 1;
                    let why = super::lock_conflict(deadlock, limits.lock_timeout, &who);
                    tracing::warn!(
                        "statement {chunk} of {tag} {why}; rolled back, retry {retry} of {} in \
                         {:.1}s",
                        limits.lock_retries,
                        delay.as_secs_f64()
                    );
                    // Interrupted during the pause: the attempt was already undone, as far as it
                    // can be, and the message says what stays.
                    if interrupt::sleep(delay).await.is_err() {
                        return Err(interrupt::error_with(&match group {
                            Group::Transaction(ms) => runner.consequence_of_rollback(ms),
                            Group::Autocommit(m, reason) => {
                                runner.consequence_outside(m, reason, &m.chunks(), resume_at, None)
                            }
                        }));
                    }
                }
            }
        }
    }
    Ok(std::mem::take(&mut runner.committed))
}

impl Runner<'_> {
    fn client(&self) -> &tokio_postgres::Client {
        self.session.client()
    }

    /// Runs one statement (or COMMIT) and watches it from a second connection: while it waits
    /// longer than half the lock timeout, who blocks it (for the log); and every
    /// `answer_timeout`, whether the server is still running it. A statement may run as long
    /// as the server confirms it (an index build can take hours), but when nothing confirms it
    /// for three `answer_timeout`s, or no answer came within `statement_timeout` plus one
    /// `answer_timeout`, the connection is given up ([`Sent::Lost`]): a proxy that stopped
    /// forwarding or a hung server would otherwise hang the run forever, since TCP keepalives
    /// are answered by whatever holds the socket. Returns the last blockers seen too.
    async fn execute(&self, sql: &str) -> (Result<(), Sent>, Vec<String>) {
        let (result, blockers) = self
            .pipeline(&[Request::Statement(sql)], &[], None, None)
            .await;
        (result.map_err(|(_, sent)| sent), blockers)
    }

    /// Sends `requests` without waiting for an answer in between (up to [`PIPELINE_DEPTH`] in
    /// flight) and reads the answers in order, watched as [`Runner::execute`] describes, except
    /// that `statement_timeout` and the watch count from the latest answer (each statement has
    /// its own). Inside a transaction block this is what sending them one by one does, without
    /// a round trip each: once a statement fails the block is aborted and the server refuses
    /// everything after it, so nothing after a failure takes effect, tracking rows included. (Outside a block the later
    /// statements would run, which is why the caller only pipelines where no statement can end
    /// the block.) `answered` hears of each request answered without error, in order;
    /// `activity` describes the request the server is on, for the "interrupted while ..."
    /// message. Returns the index of the first request that failed, why, and the blockers seen
    /// last.
    async fn pipeline(
        &self,
        requests: &[Request<'_>],
        migrations: &[&Migration],
        answered: Option<&dyn Fn(usize)>,
        activity: Option<&dyn Fn(usize) -> String>,
    ) -> (Result<(), (usize, Sent)>, Vec<String>) {
        type Answer<'f> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + 'f>>;
        let started = tokio::time::Instant::now();
        let last_answer = Cell::new(started);
        // How many requests, from the first, have answered: the server is on the next one.
        let done = Cell::new(0);
        let blockers = RefCell::new(Vec::new());
        let values: Vec<Option<RowValues>> = requests
            .iter()
            .map(|r| match *r {
                Request::Row(m) => Some(RowValues::of(&migrations[m..=m])),
                Request::Statement(_) => None,
            })
            .collect();
        let params: Vec<Option<Vec<&(dyn ToSql + Sync)>>> = values
            .iter()
            .map(|v| v.as_ref().map(|v| v.params(self.table)))
            .collect();
        let send = |i: usize| -> Answer<'_> {
            match requests[i] {
                Request::Statement(sql) => Box::pin(self.client().batch_execute(sql)),
                Request::Row(_) => {
                    let params = params[i].as_deref().unwrap_or_default();
                    Box::pin(async move {
                        self.client()
                            .execute(&self.insert, params)
                            .await
                            .map(|_| ())
                    })
                }
            }
        };
        // The requests sent and not answered yet, the first being request `done`, each with its
        // answer if that came when it was sent (only an error can).
        let mut in_flight: VecDeque<(Answer<'_>, Option<Result<(), tokio_postgres::Error>>)> =
            VecDeque::new();
        let mut described = None;
        let answers = poll_fn(|cx| {
            loop {
                let n = done.get();
                // At most PIPELINE_DEPTH requests in flight, which bounds the memory they take
                // however many migrations there are. Each goes out when first polled.
                while n + in_flight.len() < requests.len() && in_flight.len() < PIPELINE_DEPTH {
                    let mut request = send(n + in_flight.len());
                    let early = match request.as_mut().poll(cx) {
                        Poll::Ready(a) => Some(a),
                        Poll::Pending => None,
                    };
                    in_flight.push_back((request, early));
                }
                let Some((request, early)) = in_flight.front_mut() else {
                    return Poll::Ready(Ok(()));
                };
                if let Some(describe) = activity
                    && described != Some(n)
                {
                    interrupt::set_activity(describe(n));
                    described = Some(n);
                }
                // Answers come in order, so only the first unanswered request needs polling.
                let answer = match early.take() {
                    Some(a) => a,
                    None => match request.as_mut().poll(cx) {
                        Poll::Ready(a) => a,
                        Poll::Pending => return Poll::Pending,
                    },
                };
                in_flight.pop_front();
                last_answer.set(tokio::time::Instant::now());
                if let Err(e) = answer {
                    return Poll::Ready(Err((n, Sent::Failed(e))));
                }
                if let Some(answered) = answered {
                    answered(n);
                }
                done.set(n + 1);
            }
        });
        // Whether the request the server is on holds one statement (see `Watch::lost`).
        let one_statement = || match requests.get(done.get()) {
            Some(Request::Statement(sql)) => lexer::statement_ranges(sql).len() <= 1,
            _ => true,
        };
        let work = async {
            tokio::select! {
                result = answers => result,
                never = interrupt::keep_cancelling(), if requests.len() > 1 => match never {},
            }
        };
        let result = self
            .watch
            .run(&last_answer, &blockers, &one_statement, work)
            .await
            .unwrap_or_else(|why| {
                Err((
                    done.get().min(requests.len().saturating_sub(1)),
                    Sent::Lost(why),
                ))
            });
        (result, blockers.take())
    }

    /// `BEGIN`, the migrations with their rows, `COMMIT`.
    async fn transaction(&self, group: &[&Migration]) -> Result<Vec<Applied>, GroupError> {
        self.session
            .within("starting the transaction", async {
                self.client()
                    .batch_execute("BEGIN")
                    .await
                    .map_err(|e| query_failed("BEGIN", &e))
            })
            .await
            .map_err(GroupError::Failed)?;
        if interrupt::check().is_err() {
            rollback(self.session).await;
            return Err(GroupError::Failed(interrupt::error_with(
                &self.consequence_of_rollback(group),
            )));
        }
        let chunks: Vec<Vec<Chunk<'_>>> = group.iter().map(|m| m.chunks()).collect();
        // The chunks that are sent (not blank), per migration.
        let at: Vec<Vec<usize>> = chunks
            .iter()
            .map(|c| (0..c.len()).filter(|&n| !c[n].is_blank()).collect())
            .collect();
        // Up to the first migration with a chunk that may end the block (its own COMMIT, END,
        // ...), every statement and row goes out in one pipeline: while the block is certainly
        // open, a failure makes the server refuse everything after it. From that migration on,
        // one statement at a time, each answer waited for, as drizzle sends them: outside a
        // block a failed statement would not stop the next.
        let open = (0..group.len())
            .find(|&i| {
                at[i]
                    .iter()
                    .any(|&n| lexer::may_end_transaction(sendable(&chunks[i][n])))
            })
            .unwrap_or(group.len());
        // What each request of the pipeline is: a migration (an index into the group) and the
        // chunk sent, or `None` for the migration's tracking row.
        let places: Vec<(usize, Option<usize>)> = at[..open]
            .iter()
            .enumerate()
            .flat_map(|(i, sent)| sent.iter().map(move |&n| (i, Some(n))).chain([(i, None)]))
            .collect();
        let requests: Vec<Request<'_>> = places
            .iter()
            .map(|&(i, chunk)| match chunk {
                Some(n) => Request::Statement(sendable(&chunks[i][n])),
                None => Request::Row(i),
            })
            .collect();
        let done = RefCell::new(Vec::with_capacity(group.len()));
        let since = Cell::new(Instant::now());
        // Logged as each migration's row is answered: the migration took the time since the
        // previous one's.
        let answered = |r: usize| {
            if let (migration, None) = places[r] {
                let m = group[migration];
                done.borrow_mut()
                    .push(self.ran(m, at[migration].len(), since.get()));
                since.set(Instant::now());
            }
        };
        let activity = |r: usize| match places[r] {
            (migration, Some(chunk)) => {
                running_statement(group[migration], chunk, chunks[migration].len())
            }
            (migration, None) => format!(
                "recording {} in {}",
                group[migration].tag, self.table.qualified
            ),
        };
        // A signal's cancel request stops the statement running (and is sent again until one
        // does).
        let (result, blockers) = if requests.is_empty() {
            (Ok(()), Vec::new())
        } else {
            self.pipeline(&requests, group, Some(&answered), Some(&activity))
                .await
        };
        if let Err((r, sent)) = result {
            rollback(self.session).await;
            return Err(match places[r] {
                (migration, Some(chunk)) => {
                    self.failure(group[migration], chunk, sent, blockers, true, |_| {
                        self.consequence_of_rollback(group)
                    })
                }
                (migration, None) => GroupError::Failed(self.row_failure(group[migration], sent)),
            });
        }
        let mut done = done.into_inner();
        // The last statement sent that may have ended the block (a file's own COMMIT, as
        // drizzle runs it): from then on, what ran before it is committed, and a failure can
        // neither be retried nor be called a rollback.
        let mut ended: Option<(usize, usize)> = None;
        let consequence = |ended: Option<(usize, usize)>| match ended {
            None => self.consequence_of_rollback(group),
            Some((i, n)) => self.consequence_after_own_commit(group[i], n),
        };
        for (i, m) in group.iter().enumerate().skip(open) {
            let started = Instant::now();
            for &n in &at[i] {
                if interrupt::check().is_err() {
                    rollback(self.session).await;
                    return Err(GroupError::Failed(interrupt::error_with(&consequence(
                        ended,
                    ))));
                }
                interrupt::set_activity(running_statement(m, n, chunks[i].len()));
                let sent = sendable(&chunks[i][n]);
                let (result, blockers) = self.execute(sent).await;
                if let Err(e) = result {
                    rollback(self.session).await;
                    return Err(
                        self.failure(m, n, e, blockers, ended.is_none(), |_| consequence(ended))
                    );
                }
                if lexer::may_end_transaction(sent) {
                    ended = Some((i, n));
                }
            }
            if let Err(e) = self.record_rows(&[m]).await {
                rollback(self.session).await;
                return Err(GroupError::Failed(match ended {
                    None => e,
                    // The facts first: the cause's own advice speaks only of the row.
                    Some(_) => {
                        let facts = format!(
                            "recording {} in {} failed. {} The failure",
                            m.tag,
                            self.table.qualified,
                            consequence(ended)
                        );
                        match e {
                            Error::Unreachable(why) => {
                                Error::Unreachable(format!("{facts}: {why}"))
                            }
                            other => Error::Internal(format!("{facts}: {other}")),
                        }
                    }
                }));
            }
            done.push(self.ran(m, at[i].len(), started));
        }
        interrupt::set_activity(format!(
            "committing {} migration(s) ending with {}",
            group.len(),
            group.last().map_or("", |m| m.tag.as_str())
        ));
        // COMMIT is watched like a statement: it can take a while, and when its answer never
        // comes, whether it happened is unknown, which the message must say.
        let (committed, _) = self.execute("COMMIT").await;
        if let Err(sent) = committed {
            rollback(self.session).await;
            let last = group.last().expect("groups are never empty");
            return Err(GroupError::Failed(match sent {
                Sent::Failed(e) if session_ended(&e) => self.commit_unknown(group, &describe(&e)),
                Sent::Failed(e) => match e.as_db_error() {
                    Some(db) => Error::migration_failed(MigrationFailure {
                        tag: last.tag.clone(),
                        file: last.file(),
                        chunk: last.chunks().len(),
                        chunks: last.chunks().len(),
                        line: 1,
                        column: 1,
                        exact_position: false,
                        statement_excerpt: "COMMIT (deferred constraints are checked here)".into(),
                        command: Command::Other,
                        sqlstate: db.code().code().to_string(),
                        message: db.message().to_string(),
                        detail: db.detail().map(str::to_string),
                        hint: db.hint().map(str::to_string),
                        consequence: self.consequence_of_rollback(group),
                        advice: None,
                    }),
                    None => self.commit_unknown(group, &describe(&e)),
                },
                Sent::Lost(why) => self.commit_unknown(group, &why),
            }));
        }
        Ok(done)
    }

    /// The tracking rows of `group`, inserted within `answer_timeout`.
    async fn record_rows(&self, group: &[&Migration]) -> Result<u64, Error> {
        insert_rows(self.session, &self.insert, self.table, group).await
    }

    /// The tracking row sent behind `m`'s statements failed, or got no answer.
    fn row_failure(&self, m: &Migration, sent: Sent) -> Error {
        let what = format!("recording {} in {}", m.tag, self.table.qualified);
        match sent {
            Sent::Failed(e) => query_failed(&what, &e),
            Sent::Lost(why) => self.lost_in_transaction(&what, &why),
        }
    }

    /// The connection went silent inside a transaction while `doing`: given up as lost, and
    /// what that leaves.
    fn lost_in_transaction(&self, doing: &str, why: &str) -> Error {
        Error::Unreachable(format!(
            "the database stopped answering while {doing}: {why}. The connection is treated as \
             lost, so nothing of this transaction was committed (no migration of it, no tracking \
             row): the server rolls it back, and releases the migration lock, when the session \
             ends.{} \
             Check the network path (a proxy or firewall that stopped forwarding, a hung server) \
             and run again; a restart may help.",
            self.kept()
        ))
    }

    /// The connection ended or went silent during COMMIT: the outcome is unknown, but atomic.
    fn commit_unknown(&self, group: &[&Migration], why: &str) -> Error {
        Error::Unreachable(format!(
            "the connection to the database was lost while committing {} migration(s) ({}): \
             {why}. Whether the COMMIT happened is unknown, but PostgreSQL commits completely or \
             not at all: either every one of them was applied together with its tracking row, \
             or none was. The next run reads the tracking table and carries on from whichever \
             it was.{} Run again; a restart may help.",
            group.len(),
            group
                .iter()
                .map(|m| m.tag.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            self.kept()
        ))
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
                return Err(GroupError::Failed(interrupt::error_with(
                    &self.consequence_outside(m, reason, &chunks, n, None),
                )));
            }
            interrupt::set_activity_at_stake(
                format!(
                    "running statement {} of {} of {} ({}; outside a transaction, statements \
                     before it are committed)",
                    n + 1,
                    chunks.len(),
                    m.tag,
                    m.file()
                ),
                format!(
                    "{} runs outside a transaction, so nothing was rolled back: the statements \
                     before statement {} are committed, and whether statement {} completed is \
                     unknown. The migration is not recorded, so the next run starts it again \
                     from its first statement: make those statements idempotent (IF NOT EXISTS) \
                     or undo them first.{}",
                    m.tag,
                    n + 1,
                    n + 1,
                    self.kept()
                ),
            );
            let sent = sendable(chunk);
            let (result, blockers) = self.execute(sent).await;
            if let Err(e) = result {
                if let Sent::Lost(why) = &e
                    && interrupt::signal().is_none()
                {
                    return Err(GroupError::Failed(Error::Unreachable(format!(
                        "the database stopped answering while running statement {} of {} ({}), \
                         which runs outside a transaction ({reason}): {why}. The connection is \
                         treated as lost, and whether that statement completed on the server is \
                         unknown; statements before it are committed. The migration is not \
                         recorded, so the next run starts it again from its first statement: \
                         check the database and make the statements idempotent (IF NOT EXISTS) \
                         or undo them first.{} Check the network path (a proxy or firewall that \
                         stopped forwarding, a hung server) and run again.",
                        n + 1,
                        m.tag,
                        m.file(),
                        self.kept()
                    ))));
                }
                let invalid = self.invalid_indexes(sent).await;
                // A CREATE INDEX CONCURRENTLY that timed out after it created its index leaves
                // it INVALID; a retry with IF NOT EXISTS would skip it and record the migration
                // as if the index were there. Only a timeout that left nothing behind is retried.
                let retry_safe = invalid.is_empty();
                return Err(self.failure(m, n, e, blockers, retry_safe, |n| {
                    self.consequence_outside(m, reason, &chunks, n, Some(&invalid))
                }));
            }
            statements += 1;
        }
        interrupt::set_activity_at_stake(
            format!("recording {} in {}", m.tag, self.table.qualified),
            format!(
                "{} ran outside a transaction and all its statements are committed; whether its \
                 tracking row was written is unknown. {}{}",
                m.tag,
                self.record_by_hand(m),
                self.kept()
            ),
        );
        // The row goes where drizzle's would: into the block the file left open, which is then
        // committed (drizzle's own COMMIT would have done that).
        let leaves_open = lexer::leaves_transaction_open(chunks.iter().map(|c| c.text));
        let recorded = match self.record_rows(&[m]).await {
            Ok(_) if leaves_open => match self.execute("COMMIT").await.0 {
                Ok(()) => Ok(()),
                Err(Sent::Failed(e)) => {
                    Err(query_failed("committing the block the file opened", &e))
                }
                Err(Sent::Lost(why)) => Err(Error::Unreachable(why)),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            let (tag, table) = (&m.tag, &self.table.qualified);
            // A lost connection, or a wait for another session's lock that portcullis ended:
            // every statement of the file is committed (a block it left open is not, so then
            // this is not tried), only the row is in doubt, and a new session can settle that.
            let lock_wait = matches!(e, Error::LockTimeout(_));
            if let Error::Unreachable(why) | Error::LockTimeout(why) = &e
                && !leaves_open
                && interrupt::signal().is_none()
            {
                let what = if lock_wait {
                    format!("recording it in {table} waited for another session's lock")
                } else {
                    format!("the connection was lost while recording it in {table}")
                };
                tracing::warn!(
                    "{tag} ran outside a transaction and all its statements are committed, but \
                     {what}; reconnecting to make sure it is recorded"
                );
                match self.record_after_reconnecting(m).await {
                    Ok(wrote) => {
                        interrupt::settle();
                        // The cause's first sentence; the rest is its advice for a row that may
                        // be missing.
                        let cause = why.split(". ").next().unwrap_or(why);
                        let text = format!(
                            "{tag} ran outside a transaction and all its statements are \
                             committed, but {what} ({cause}). portcullis reconnected and {}, so \
                             it will not run again.{} Run again to apply what is left.",
                            if wrote {
                                "recorded it"
                            } else {
                                "found it recorded (the lost insert had gone through, or \
                                 another runner recorded it)"
                            },
                            self.kept()
                        );
                        return Err(GroupError::Failed(if lock_wait {
                            Error::LockTimeout(text)
                        } else {
                            Error::Unreachable(text)
                        }));
                    }
                    // What stays committed is still at stake: the message says so.
                    Err(_) if interrupt::signal().is_some() => {
                        return Err(GroupError::Failed(interrupt::error()));
                    }
                    Err(again) => tracing::warn!(
                        "could not make sure {tag} is recorded after reconnecting: {again}"
                    ),
                }
            }
            // The facts first: the cause's own advice speaks only of the row's statement.
            let facts = format!(
                "{tag} ran outside a transaction and all its statements are committed, but \
                 recording it in {table} failed, so its tracking row may be missing and a run \
                 would start it again from its first statement. {}{} The failure",
                self.record_by_hand(m),
                self.kept()
            );
            return Err(GroupError::Failed(match e {
                Error::Unreachable(why) => Error::Unreachable(format!("{facts}: {why}")),
                Error::LockTimeout(why) => Error::LockTimeout(format!("{facts}: {why}")),
                other => Error::Internal(format!("{facts}: {other}")),
            }));
        }
        interrupt::settle();
        Ok(vec![self.ran(m, statements, started)])
    }

    /// After the connection was lost while recording `m`, whose statements all ran outside a
    /// transaction and are committed: a new session makes sure its row is there. It first takes
    /// the migration lock, which the lost session holds until the server has ended it, so that
    /// session's insert has by then either happened or never will. `Ok(true)`: this wrote the
    /// row; `Ok(false)`: it was there already.
    async fn record_after_reconnecting(&self, m: &Migration) -> Result<bool, Error> {
        use tokio_postgres::types::Type;
        // Reconnecting and locking set activities of their own; what is at stake stays.
        let limit = self.session.answer_timeout;
        let session = super::connect::wait_for(&self.session.database, limit).await?;
        let key = super::lock::key(&self.table.schema, &self.table.name);
        // The server ends the lost session at once when it was idle, and within about a second
        // during a statement (client_connection_check_interval), when its connection closed; one
        // that hangs instead it keeps until TCP gives up, so that one is ended here. The lock
        // then waits for the server to be done with it.
        super::end_lost_session(&session, self.session).await;
        super::lock::acquire(&session, key, &self.table.qualified, 3 * limit).await?;
        let table = self.table;
        interrupt::set_activity(format!(
            "making sure {} is recorded in {}, after reconnecting",
            m.tag, table.qualified
        ));
        let wrote = async {
            let what = format!("looking for {} in {}", m.tag, table.qualified);
            let found = session
                .within(&what, async {
                    session
                        .client()
                        .query_typed(
                            &format!(
                                "select exists (select from {} where hash = $1 and created_at = \
                                 $2)",
                                table.qualified
                            ),
                            &[(&m.hash, Type::TEXT), (&m.when, Type::INT8)],
                        )
                        .await
                        .map_err(|e| query_failed(&what, &e))
                })
                .await?;
            if found.first().is_some_and(|r| r.get::<_, bool>(0)) {
                return Ok(false);
            }
            // As `baseline` writes rows.
            record(&session, table, &[m]).await?;
            Ok(true)
        }
        .await;
        super::lock::release(&session, key).await;
        wrote
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
    /// `consequence` says what the failure leaves behind; a lock timeout is handed back for a
    /// retry only when `retry_safe`.
    fn failure(
        &self,
        m: &Migration,
        n: usize,
        sent: Sent,
        blockers: Vec<String>,
        retry_safe: bool,
        consequence: impl FnOnce(usize) -> String,
    ) -> GroupError {
        if interrupt::signal().is_some() {
            return GroupError::Failed(interrupt::error_with(&format!(
                "The statement was cancelled. {}",
                consequence(n)
            )));
        }
        let e = match sent {
            Sent::Failed(e) => e,
            Sent::Lost(why) => {
                let doing = format!("running statement {} of {} ({})", n + 1, m.tag, m.file());
                return GroupError::Failed(self.lost_in_transaction(&doing, &why));
            }
        };
        let chunks = m.chunks();
        let chunk = chunks[n];
        let sent = sendable(&chunk);
        // The server went away (a restart, a crash, a failover, pg_terminate_backend): not a
        // problem of the SQL, and a restart may help.
        let db = match e.as_db_error() {
            Some(db) if !session_ended(&e) => db,
            _ => {
                return GroupError::Failed(Error::Unreachable(format!(
                    "the connection to the database ended while running statement {} of {} ({}): {}. \
                 The server is shutting down or restarting, or ended this session. {} Run again \
                 once the database is back; a restart may help.",
                    n + 1,
                    m.tag,
                    m.file(),
                    describe(&e),
                    consequence(n)
                )));
            }
        };
        // A lock timeout or a deadlock (with the app, taking the same locks in another order)
        // is retried only where running the group again cannot repeat what stayed committed;
        // otherwise it is a failure like any other.
        let deadlock = db.code().code() == "40P01";
        if super::lost_lock_conflict(db.code().code()) && retry_safe {
            return GroupError::LockConflict {
                tag: m.tag.clone(),
                chunk: n + 1,
                blocked: if deadlock {
                    Blocked::Deadlock(
                        db.detail()
                            .map(|d| d.replace('\n', " ").trim_end_matches('.').to_string()),
                    )
                } else {
                    Blocked::Timeout(blockers)
                },
            };
        }
        let position = super::error_at(sent, db);
        let skipped = chunk.text.len() - sent.len();
        let at = chunk.offset + skipped + position.unwrap_or_else(|| leading_blank(sent));
        let (line, column) = line_col(&m.text, at);
        GroupError::Failed(Error::migration_failed(MigrationFailure {
            tag: m.tag.clone(),
            file: m.file(),
            chunk: n + 1,
            chunks: chunks.len(),
            line,
            column,
            exact_position: position.is_some(),
            statement_excerpt: lexer::excerpt(sent, 80),
            command: Command::failed_in(sent, position),
            sqlstate: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
            consequence: consequence(n),
            advice: None,
        }))
    }

    /// What earlier groups of this run committed, as a clause.
    /// What to do when a migration that ran outside a transaction may not be recorded.
    fn record_by_hand(&self, m: &Migration) -> String {
        format!(
            "Before running again, check {table}: if {tag} is not there, record it with \
             `portcullis baseline --to {tag}` (or make its statements idempotent).",
            tag = m.tag,
            table = self.table.qualified
        )
    }

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

    /// What a failure leaves once statement `n` of `m`, which may end a transaction block (the
    /// file's own COMMIT, END, ROLLBACK ...), has run in this group's transaction: drizzle runs
    /// such a file the same way, and the block it ended cannot be rolled back any more.
    fn consequence_after_own_commit(&self, m: &Migration, n: usize) -> String {
        format!(
            "Statement {} of {} ({}) may have ended this transaction (a COMMIT or similar in the \
             file), so nothing before it could be rolled back: the statements and tracking rows \
             sent before it are committed if it was a COMMIT, and the statements after it \
             committed one by one unless the file opened a new transaction. This run is not \
             retried, since running the transaction again would repeat what stayed committed. \
             Check the tracking table ({}) for what is recorded, and the database against the \
             files for what is not: a migration without its row runs again from its first \
             statement.{}",
            n + 1,
            m.tag,
            m.file(),
            self.table.qualified,
            self.kept()
        )
    }

    /// What a migration outside a transaction leaves behind when it stops at chunk `n`: the
    /// statements before it stay committed. `invalid` is `Some` (the INVALID indexes it left)
    /// when statement `n` failed, `None` when the run stopped before sending it.
    fn consequence_outside(
        &self,
        m: &Migration,
        reason: &str,
        chunks: &[Chunk<'_>],
        n: usize,
        invalid: Option<&[String]>,
    ) -> String {
        let runnable: Vec<usize> = (0..chunks.len())
            .filter(|&i| !chunks[i].is_blank())
            .collect();
        let ran: Vec<String> = runnable
            .iter()
            .filter(|&&i| i < n)
            .map(|i| (i + 1).to_string())
            .collect();
        let failed = invalid.is_some();
        let left: Vec<String> = runnable
            .iter()
            .filter(|&&i| i > n || (i == n && !failed))
            .map(|i| (i + 1).to_string())
            .collect();
        let mut out = format!(
            "{} runs outside a transaction ({reason}), so nothing was rolled back: {}; {}{}. The \
             migration is not recorded, so the next run starts it again from its first \
             statement: make the statements that ran idempotent (IF NOT EXISTS) or undo them \
             first.",
            m.tag,
            if ran.is_empty() {
                "no statement before it had run".to_string()
            } else {
                format!("statement(s) {} ran and are committed", ran.join(", "))
            },
            if failed {
                format!("statement {} failed; ", n + 1)
            } else {
                String::new()
            },
            if left.is_empty() {
                "no statement remained after it".to_string()
            } else {
                format!("statement(s) {} did not run", left.join(", "))
            }
        );
        for index in invalid.unwrap_or_default() {
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
        let what = "looking for INVALID indexes";
        let found = self
            .session
            .within(what, async {
                self.client()
                    .query(
                        "select format('%I.%I', n.nspname, c.relname), c.relname::text \
                           from pg_index i join pg_class c on c.oid = i.indexrelid \
                           join pg_namespace n on n.oid = c.relnamespace where not i.indisvalid",
                        &[],
                    )
                    .await
                    .map_err(|e| query_failed(what, &e))
            })
            .await;
        match found {
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
        deadlock: bool,
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
                    self.consequence_outside(m, reason, &chunks, chunk - 1, Some(&[])),
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
            statement_excerpt: lexer::excerpt(c.text, 80),
            command: Command::failed_in(c.text, None),
            sqlstate: if deadlock { "40P01" } else { "55P03" }.into(),
            message: {
                let attempts = super::lock_attempts(deadlock, retries, self.limits.lock_timeout);
                if deadlock {
                    format!("deadlock detected {attempts}: {who}")
                } else {
                    format!("canceling statement due to lock timeout, {attempts}: blocked by {who}")
                }
            },
            detail: None,
            hint: Some(
                "end or wait out the blocking transaction (often a long or idle-in-transaction \
                 session of the app), or raise PORTCULLIS_DDL_LOCK_TIMEOUT or \
                 PORTCULLIS_DDL_LOCK_RETRIES"
                    .into(),
            ),
            consequence,
            advice: None,
        }
    }
}

/// What the run is doing while chunk `n` of `m`'s `chunks` runs in a transaction, for the
/// "interrupted while ..." message.
fn running_statement(m: &Migration, n: usize, chunks: usize) -> String {
    format!(
        "running statement {} of {chunks} of {} ({}; in a transaction)",
        n + 1,
        m.tag,
        m.file()
    )
}

/// The text to send for a chunk: a leading BOM would reach the server as a syntax error
/// (drizzle fails there); it is stripped, while the recorded hash still covers it.
fn sendable<'a>(chunk: &Chunk<'a>) -> &'a str {
    match chunk.text.strip_prefix('\u{feff}') {
        Some(rest) if chunk.offset == 0 => rest,
        _ => chunk.text,
    }
}

/// The tracking rows drizzle inserts, one per migration, for any number of migrations in one
/// statement: hashes, created_at values (`int8`, which converts to a `numeric` column too) and,
/// in a drizzle-1.0-shaped table, names (the folder name, or for a journal entry the one
/// `drizzle-kit up` gives it, so that drizzle 1.0 never applies it again) bound as arrays, and
/// inserted in array order, so that the serial ids follow the order of application as they do
/// when drizzle inserts the rows one by one.
fn insert_sql(table: &Table) -> String {
    let (columns, arrays, names) = if table.has_name_column {
        (
            "\"hash\", \"created_at\", \"name\"",
            "$1::text[], $2::int8[], $3::text[]",
            "h, c, n",
        )
    } else {
        ("\"hash\", \"created_at\"", "$1::text[], $2::int8[]", "h, c")
    };
    format!(
        "insert into {} ({columns}) select {names} from unnest({arrays}) with ordinality as \
         r({names}, ord) order by ord",
        table.qualified
    )
}

/// The values [`insert_sql`] binds, one array element per migration.
struct RowValues<'a> {
    hashes: Vec<&'a str>,
    whens: Vec<i64>,
    names: Vec<&'a str>,
}

impl<'a> RowValues<'a> {
    fn of(migrations: &[&'a Migration]) -> RowValues<'a> {
        RowValues {
            hashes: migrations.iter().map(|m| m.hash.as_str()).collect(),
            whens: migrations.iter().map(|m| m.when).collect(),
            names: migrations.iter().map(|m| m.name.as_str()).collect(),
        }
    }

    fn params(&self, table: &Table) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&self.hashes, &self.whens];
        if table.has_name_column {
            params.push(&self.names);
        }
        params
    }
}

/// [`insert_sql`] prepared once per run: each batch of rows then costs one round trip, not two
/// (a prepare and an execute).
async fn prepare_insert(
    session: &Session,
    table: &Table,
) -> Result<tokio_postgres::Statement, Error> {
    let what = format!("preparing the insert into {}", table.qualified);
    session
        .within(&what, async {
            session
                .client()
                .prepare(&insert_sql(table))
                .await
                .map_err(|e| query_failed(&what, &e))
        })
        .await
}

/// The tracking rows of `migrations` (in order), inserted by one statement within
/// `answer_timeout`.
async fn insert_rows(
    session: &Session,
    insert: &tokio_postgres::Statement,
    table: &Table,
    migrations: &[&Migration],
) -> Result<u64, Error> {
    let values = RowValues::of(migrations);
    let params = values.params(table);
    let what = match migrations {
        [m] => format!("recording {} in {}", m.tag, table.qualified),
        _ => format!(
            "recording {} migrations in {}",
            migrations.len(),
            table.qualified
        ),
    };
    session
        .within(&what, async {
            session
                .client()
                .execute(insert, &params)
                .await
                .map_err(|e| query_failed(&what, &e))
        })
        .await
}

/// `baseline`: writes the rows drizzle would have written for `migrations`, in one transaction,
/// without running their SQL.
pub async fn record(
    session: &Session,
    table: &Table,
    migrations: &[&Migration],
) -> Result<(), Error> {
    let client = session.client();
    let insert = prepare_insert(session, table).await?;
    session
        .within("starting the transaction", async {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| query_failed("BEGIN", &e))
        })
        .await?;
    if let Err(e) = insert_rows(session, &insert, table, migrations).await {
        rollback(session).await;
        return Err(e);
    }
    let committed = session
        .within("committing the recorded rows", async {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| query_failed("COMMIT", &e))
        })
        .await;
    if let Err(e) = committed {
        rollback(session).await;
        return Err(match e {
            Error::Unreachable(why) => Error::Unreachable(format!(
                "{why} Whether the COMMIT of the rows happened is unknown (all of them or none \
                 were recorded); `portcullis baseline` again skips the rows already recorded."
            )),
            other => other,
        });
    }
    Ok(())
}

/// Whether an error means the session is over rather than that a statement failed: the
/// connection broke (no server response), or the server ended it: 08xxx connection exceptions,
/// 57P01 admin shutdown or pg_terminate_backend, 57P02 crash shutdown, 57P03 cannot connect now.
fn session_ended(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
    }
}

/// An error as one phrase: the server's SQLSTATE and message, or the client's reason.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("ERROR {} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Byte length of the blank prefix, so a chunk's position points at its first statement.
fn leading_blank(text: &str) -> usize {
    text.len() - text.trim_start().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn leading_blank_counts_bytes() {
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
