//! The only importer of tokio-postgres and deadpool: connecting and waiting (`connect`), the
//! advisory lock (`lock`), drizzle's tracking table (`history`) and applying migrations
//! (`apply`). Everything here runs on one [`Session`]: the connection that holds the lock.
//! Seeds run through the same session, under the same lock (`seeds`).

pub mod apply;
pub mod connect;
pub mod history;
pub mod lock;
pub mod seeds;
mod tls;
mod watch;

use crate::config::{Database, format_duration};
use crate::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The one connection of a run. The advisory lock is a property of this session, so every
/// statement after locking goes through it.
pub struct Session {
    client: deadpool_postgres::Object,
    /// The server process serving us, for logs and for other runners' "who holds the lock".
    pub backend_pid: i32,
    /// The server's clock (seconds since the epoch) at a moment that process was serving this
    /// session, its first statement (0 when unknown): a later session that gets the same pid
    /// starts after it, so with the pid it tells this session apart ([`END_OWN_SESSION`]).
    pub alive_at: f64,
    pub database: Database,
    /// How long an exchange that the server answers at once (lock polling, the tracking table,
    /// BEGIN, ROLLBACK) may go unanswered before the connection counts as lost: the connect
    /// timeout (10 s, or `connect_timeout` in the URL). TCP keepalives cannot tell a hung peer
    /// or a proxy that stopped forwarding from a busy one, so the client has to decide.
    pub answer_timeout: Duration,
    /// Set once an exchange went unanswered: the connection is out of step, nothing more is sent.
    lost: AtomicBool,
}

impl Session {
    fn new(
        client: deadpool_postgres::Object,
        backend_pid: i32,
        alive_at: f64,
        database: Database,
    ) -> Session {
        let answer_timeout = connect::answer_timeout(&database);
        Session {
            client,
            backend_pid,
            alive_at,
            database,
            answer_timeout,
            lost: AtomicBool::new(false),
        }
    }

    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Whether an exchange went unanswered; the run is then ending with exit 5.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Runs `work`, one or a few exchanges the server answers at once, giving up after
    /// [`Session::answer_timeout`] with exit 5, or 7 when the server shows the session waiting
    /// for another session's lock (see [`Session::unanswered`]), and at once when the connection
    /// was already given up. `what` completes "... stopped answering while".
    pub async fn within<T, F>(&self, what: &str, work: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        self.within_for(self.answer_timeout, what, work).await
    }

    /// [`Session::within`] for an exchange the server may take up to `limit` to answer (a lock
    /// wait bounded by its own `lock_timeout`, plus the answer timeout).
    pub async fn within_for<T, F>(&self, limit: Duration, what: &str, work: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        if self.is_lost() {
            return Err(self.lost_error(what));
        }
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                self.mark_lost();
                Err(self.unanswered(what, limit).await)
            }
        }
    }

    /// The error for an exchange that went unanswered (the session is marked lost), once the
    /// server has been asked, from a new connection, what became of it, and the session has been
    /// ended there: otherwise the server would keep it, with its transaction, its locks and the
    /// migration lock, until TCP gives up on a connection that hangs, which takes hours with the
    /// server's default keepalives.
    ///
    /// A session that the server shows waiting for a lock another session holds (an
    /// `ACCESS EXCLUSIVE` lock on the tracking table, say) is not a connection that stopped
    /// answering: that is exit 7, naming the lock and who holds it, not exit 5 sending the
    /// operator to the network. After a signal nothing is asked: the run must end now. The new
    /// connection and the questions (sent together) each get one answer timeout.
    async fn unanswered(&self, what: &str, waited: Duration) -> Error {
        let lost = self.lost_error(what);
        if crate::interrupt::signal().is_some() {
            return lost;
        }
        let limit = self.answer_timeout;
        let second = connect::second(&self.database, connect::Second::EndingLostSession);
        let Ok(Ok(client)) = tokio::time::timeout(limit, second).await else {
            let ending = Ending::Failed("a new connection could not be opened".into());
            return with_sentence(lost, ending_sentence(self.backend_pid, ending));
        };
        let own_session = self.identity_params();
        let by_pid = [own_session[0].clone()];
        // In this order on the one connection: what it waits for and who blocks it are read
        // before it is ended.
        let (waits, blockers, ending) = tokio::join!(
            tokio::time::timeout(
                limit,
                client.query_typed(LOCK_WAIT_OF_OWN_SESSION, &own_session)
            ),
            tokio::time::timeout(limit, client.query_typed(watch::BLOCKERS, &by_pid)),
            end_own_session(&client, self, limit),
        );
        let pid = self.backend_pid;
        let Some(wait) = waits.ok().and_then(Result::ok).and_then(|rows| {
            rows.first().map(|r| {
                lock_target(
                    r.get::<_, &str>(0),
                    r.get::<_, &str>(1),
                    r.get::<_, &str>(2),
                )
            })
        }) else {
            return with_sentence(lost, ending_sentence(pid, ending));
        };
        let ended = ending_sentence(pid, ending);
        let who: Vec<String> = blockers
            .ok()
            .and_then(Result::ok)
            .map(|rows| rows.iter().map(watch::describe_blocker).collect())
            .unwrap_or_default();
        Error::LockTimeout(format!(
            "while {what}, the session waited {}{} for {wait}, which another session holds: {}. \
             The database is up: the lock, not the network, kept the answer from coming.{} \
             Finish or end the blocking session (SELECT pg_terminate_backend(<pid>)), or wait \
             until it is done, then run again; a restart may help.",
            format_duration(waited),
            if waited == limit {
                " (the connect timeout)"
            } else {
                ""
            },
            if who.is_empty() {
                "it was released just as portcullis looked".to_string()
            } else {
                who.join("; ")
            },
            ended.map(|e| format!(" {e}")).unwrap_or_default(),
        ))
    }

    /// `$1` the server process and `$2` the server's clock while it served this session, typed,
    /// for the queries that find this session and no later one with the same pid
    /// ([`END_OWN_SESSION`], [`LOCK_WAIT_OF_OWN_SESSION`]).
    fn identity_params(
        &self,
    ) -> [(
        &(dyn tokio_postgres::types::ToSql + Sync),
        tokio_postgres::types::Type,
    ); 2] {
        use tokio_postgres::types::Type;
        [
            (&self.backend_pid, Type::INT4),
            (&self.alive_at, Type::FLOAT8),
        ]
    }

    pub(crate) fn lost_error(&self, what: &str) -> Error {
        Error::Unreachable(format!(
            "the database at {} stopped answering while {what}: no answer within {} (the connect \
             timeout), so the connection is treated as lost. Nothing half-done was committed: \
             the server rolls back what was in progress, and releases the migration lock, when \
             the session ends. Check the network path (a proxy or firewall that \
             stopped forwarding, a hung server) and run again; a restart may help.",
            self.database.target(),
            format_duration(self.answer_timeout)
        ))
    }
}

/// The statement that sets portcullis's limits: `lock_timeout` to `$1` and `statement_timeout`
/// to `$2` (text, such as `5000ms`), for the session (`local` false: the migrations) or for
/// the open transaction (`local` true: the seeds). On PostgreSQL 17 and later it also turns
/// `transaction_timeout` off (older servers do not know the setting; set inside a transaction,
/// this also stops the timer already running): a role's or database's transaction_timeout is
/// meant for the app, and would end a long migration's or seeds' transaction midway, where
/// PORTCULLIS_STATEMENT_TIMEOUT is meant to be the one limit.
pub(crate) fn set_limits(local: bool) -> String {
    format!(
        "select set_config('lock_timeout', $1, {local}), \
         set_config('statement_timeout', $2, {local}), \
         case when current_setting('server_version_num')::int >= 170000 then \
         set_config('transaction_timeout', '0', {local}) end"
    )
}

/// Ends server process `$1` if it is this run's own session, whose connection was given up: the
/// one that started before `$2` ([`Session::alive_at`], when it was serving us), since any later
/// session with the same pid started after ours ended. A session of one's own role may be ended
/// without privileges. One row when it was there.
pub(crate) const END_OWN_SESSION: &str = "select pg_terminate_backend(pid) from pg_stat_activity \
     where pid = $1 and backend_start <= to_timestamp($2)";

/// The state of this run's session (`$1`, `$2` as [`END_OWN_SESSION`] takes them) as the server
/// sees it: 'active' while it runs our statement; no row once it is gone.
pub(crate) const STATE_OF_OWN_SESSION: &str = "select state from pg_stat_activity \
     where pid = $1 and backend_start <= to_timestamp($2)";

/// The lock this run's own session (`$1`, `$2` as [`END_OWN_SESSION`] takes them) waits for,
/// when it waits for one: its kind, the relation's name for a table's, and the mode asked for.
const LOCK_WAIT_OF_OWN_SESSION: &str = "\
select l.locktype, coalesce(l.relation::regclass::text, ''), l.mode
  from pg_stat_activity a join pg_locks l on l.pid = a.pid and not l.granted
 where a.pid = $1 and a.backend_start <= to_timestamp($2)";

/// A lock `pg_locks` shows a session waiting for, in words.
fn lock_target(locktype: &str, relation: &str, mode: &str) -> String {
    match locktype {
        "relation" if !relation.is_empty() => format!("a lock on {relation} ({mode})"),
        "transactionid" | "tuple" => {
            "a row that another transaction has changed or locked and not yet committed".into()
        }
        "advisory" => format!("an advisory lock ({mode})"),
        other => format!("a lock of kind {other} ({mode})"),
    }
}

/// `error`, an exit-5 one, with `sentence` added to its message.
fn with_sentence(error: Error, sentence: Option<String>) -> Error {
    match (error, sentence) {
        (Error::Unreachable(why), Some(more)) => Error::Unreachable(format!("{why} {more}")),
        (error, _) => error,
    }
}

/// What came of ending this run's lost session (server process `pid`), for the exit reason.
fn ending_sentence(pid: i32, ending: Ending) -> Option<String> {
    match ending {
        Ending::Ended => Some(format!(
            "The server still had that session (process {pid}), so portcullis ended it from a \
             new connection (pg_terminate_backend): what it had not committed is rolled back, \
             and the migration lock it held or was queued for is free now."
        )),
        Ending::Gone => {
            tracing::debug!(pid, "the lost session is gone already");
            None
        }
        Ending::Failed(why) => Some(format!(
            "portcullis could not end that session (process {pid}) itself ({why}); if the next \
             run waits for the migration lock held by pid {pid}, end it with SELECT \
             pg_terminate_backend({pid})."
        )),
    }
}

/// What asking the server to end this run's lost session came to.
pub(crate) enum Ending {
    /// It was there, and was ended.
    Ended,
    /// It was gone already.
    Gone,
    /// It could not be ended, or the server could not be asked: why.
    Failed(String),
}

/// Asks the server, on `client` (a connection other than the lost one), to end `lost`'s
/// session ([`END_OWN_SESSION`]), waiting at most `limit` for the answer.
pub(crate) async fn end_own_session(
    client: &tokio_postgres::Client,
    lost: &Session,
    limit: Duration,
) -> Ending {
    let asked = tokio::time::timeout(
        limit,
        client.query_typed(END_OWN_SESSION, &lost.identity_params()),
    )
    .await;
    match asked {
        Ok(Ok(rows)) if rows.is_empty() => Ending::Gone,
        Ok(Ok(rows)) if rows.iter().all(|r| r.get::<_, bool>(0)) => Ending::Ended,
        Ok(Ok(_)) => Ending::Failed("pg_terminate_backend returned false".into()),
        Ok(Err(e)) => Ending::Failed(e.to_string()),
        Err(_) => Ending::Failed(format!("no answer within {}", format_duration(limit))),
    }
}

/// Ends this run's own lost session (`lost`) from the new session `new`, when the server still
/// has it: its connection hung rather than closed (a proxy or firewall that stopped forwarding),
/// and the server would keep that session, its transaction and the migration lock until TCP
/// gives up on it, which takes hours with the server's default keepalives. Best effort: when it
/// cannot be done, the caller's wait for the lock decides what happens.
pub async fn end_lost_session(new: &Session, lost: &Session) {
    let pid = lost.backend_pid;
    match end_own_session(new.client(), lost, new.answer_timeout).await {
        Ending::Ended => tracing::info!(
            "the server still had the lost session (server process {pid}; it had not noticed yet \
             that its connection is gone, or the connection hangs instead of closing). Ended it \
             (pg_terminate_backend), so the server rolls back what it had not committed and \
             frees the migration lock now"
        ),
        Ending::Gone => tracing::debug!(pid, "the lost session is gone already"),
        Ending::Failed(e) => tracing::warn!(
            "could not end the lost session (server process {pid}): {e}; waiting for the server \
             to end it"
        ),
    }
}

/// `ROLLBACK`, best effort, within the answer timeout: when the connection is gone (or was given
/// up) the server rolls back by itself.
pub(crate) async fn rollback(session: &Session) {
    if session.is_lost() {
        return;
    }
    let done = session
        .within("rolling back", async {
            session
                .client()
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| query_failed("ROLLBACK", &e))
        })
        .await;
    if let Err(e) = done {
        tracing::debug!("ROLLBACK failed ({e}); the server rolls back when the session ends");
    }
}

/// Quotes an identifier the way drizzle's `escapeName` does: always double-quoted, embedded `"`
/// doubled. Every identifier that reaches SQL goes through here (E31).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Whether a statement's SQLSTATE says it lost a lock conflict with another session, which a
/// rollback and a retry may win: 55P03 (it waited longer than `lock_timeout`) or 40P01
/// (PostgreSQL cancelled it to break a deadlock, often with the app).
pub(crate) fn lost_lock_conflict(sqlstate: &str) -> bool {
    matches!(sqlstate, "55P03" | "40P01")
}

/// What a statement that lost a lock conflict did, for the retry warning: `who` is the session
/// that held the lock, or for a deadlock the server's DETAIL.
pub(crate) fn lock_conflict(deadlock: bool, lock_timeout: Duration, who: &str) -> String {
    if deadlock {
        format!("deadlocked with another session, so PostgreSQL cancelled it ({who})")
    } else {
        format!(
            "waited longer than lock_timeout ({}) for a lock held by {who}",
            format_duration(lock_timeout)
        )
    }
}

/// How the attempts ended once the retries ran out, for the failure's message.
pub(crate) fn lock_attempts(deadlock: bool, retries: u32, lock_timeout: Duration) -> String {
    let limits = format!(
        "lock_timeout {}, {retries} retr{}",
        format_duration(lock_timeout),
        if retries == 1 { "y" } else { "ies" }
    );
    if deadlock {
        format!(
            "in the last of {} attempts, each ended by a deadlock or a lock timeout ({limits})",
            retries + 1
        )
    } else {
        format!(
            "{} time{} in a row ({limits})",
            retries + 1,
            if retries == 0 { "" } else { "s" }
        )
    }
}

/// Each "relation <oid> of database <oid>" in `detail` (a deadlock's DETAIL): its byte range
/// and the relation's oid.
fn relation_mentions(detail: &str) -> Vec<(std::ops::Range<usize>, u32)> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut found = Vec::new();
    for (start, _) in detail.match_indices("relation ") {
        let rest = &detail[start + "relation ".len()..];
        let n = digits(rest);
        let Ok(oid) = rest[..n].parse::<u32>() else {
            continue;
        };
        let Some(after) = rest[n..].strip_prefix(" of database ") else {
            continue;
        };
        let m = digits(after);
        if m == 0 {
            continue;
        }
        let end = detail.len() - after.len() + m;
        found.push((start..end, oid));
    }
    found
}

/// `detail` with each relation mentioned by oid replaced by its name from `names`.
fn with_relation_names(detail: &str, names: &[(u32, String)]) -> String {
    let mut out = String::with_capacity(detail.len());
    let mut at = 0;
    for (range, oid) in relation_mentions(detail) {
        let Some((_, name)) = names.iter().find(|(o, _)| *o == oid) else {
            continue;
        };
        out.push_str(&detail[at..range.start]);
        out.push_str(&format!("relation {name}"));
        at = range.end;
    }
    out.push_str(&detail[at..]);
    out
}

/// A deadlock's DETAIL as PostgreSQL words it ("... on relation 16954 of database 16950 ..."),
/// with the relations of this database named, asked on `session` after the rollback; as it
/// is when that cannot be done.
pub(crate) async fn name_relations(session: &Session, detail: &str) -> String {
    let oids: Vec<u32> = relation_mentions(detail)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    if oids.is_empty() || session.is_lost() {
        return detail.to_string();
    }
    let what = "naming the relations of a deadlock";
    let asked = session
        .within(what, async {
            session
                .client()
                .query_typed(
                    "select o, o::regclass::text from unnest($1::oid[]) as o \
                     where o::regclass::text !~ '^[0-9]+$'",
                    &[(&oids, tokio_postgres::types::Type::OID_ARRAY)],
                )
                .await
                .map_err(|e| query_failed(what, &e))
        })
        .await;
    match asked {
        Ok(rows) => {
            let names: Vec<(u32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            with_relation_names(detail, &names)
        }
        Err(e) => {
            tracing::debug!("{e}");
            detail.to_string()
        }
    }
}

/// Where in `sent` (one query) the server's error is, as a byte offset: its position, or for a
/// character the database's encoding cannot store (22P05, which has none), that character.
pub(crate) fn error_at(sent: &str, db: &tokio_postgres::error::DbError) -> Option<usize> {
    use crate::source::split::{position_to_byte, untranslatable_at};
    match db.position() {
        Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(position_to_byte(sent, *p)),
        _ if db.code().code() == "22P05" => untranslatable_at(sent, db.message()),
        _ => None,
    }
}

/// Turns an unexpected error of a bookkeeping query (not a migration statement) into the
/// matching class: a lost connection may be retried, a privilege problem needs a person.
pub(crate) fn query_failed(what: &str, e: &tokio_postgres::Error) -> Error {
    schema_query_failed(what, e, false)
}

/// [`query_failed`] for a query that `creates_schema`: then its privilege error (42501) is
/// about CREATE on the database, in whatever language the server words it.
pub(crate) fn schema_query_failed(
    what: &str,
    e: &tokio_postgres::Error,
    creates_schema: bool,
) -> Error {
    if let Some(db) = e.as_db_error() {
        let text = format!(
            "{what} failed: {}",
            crate::error::server_error(
                db.code().code(),
                db.message(),
                db.detail(),
                db.hint(),
                None
            )
        );
        return match db.code().code() {
            // A statement prepared on one server session and executed on another: only a
            // transaction-mode pooler does that.
            "26000" => Error::Refused(format!(
                "{text}. This happens behind a transaction-mode connection pooler (PgBouncer, \
                 Supavisor on 6543), where the migration lock cannot work either. Point \
                 portcullis at the database directly (PORTCULLIS_DATABASE_URL with the direct \
                 host and port)."
            )),
            "25006" => Error::Refused(format!("{text}. {}", crate::error::READ_ONLY)),
            // Only where portcullis set lock_timeout (the seeds' transaction): a session that
            // locks portcullis's own table, which the lock wait cannot name any more.
            "55P03" => Error::LockTimeout(format!(
                "{text}. Another session held a lock this needed for longer than lock_timeout \
                 (often a long or idle-in-transaction session that changed or locked the \
                 table); nothing of this run is half-done. Find it in pg_stat_activity and \
                 pg_locks, finish or end it (SELECT pg_terminate_backend(<pid>)), then run \
                 again; a restart may help."
            )),
            "42501" => Error::Refused(format!(
                "{text}. The database user lacks a privilege portcullis needs; grant it (or run \
                 portcullis as the migration owner).{}",
                if creates_schema || db.message().starts_with("permission denied for database") {
                    " Creating the tracking table's schema takes CREATE on the database (GRANT \
                     CREATE ON DATABASE <db> TO <user>); or create the schema beforehand, owned \
                     by that user."
                } else {
                    ""
                }
            )),
            c if c.starts_with("08") || c.starts_with("57P") => Error::Unreachable(format!(
                "{text}. The server went away; nothing half-done was committed. Run again."
            )),
            _ => Error::Internal(format!(
                "{text}. This was not expected; please report it with this message."
            )),
        };
    }
    Error::Unreachable(format!(
        "{what} failed: the connection to the database was lost ({e}). The server rolls back \
         whatever was in progress; run again."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_waited_for_is_named_in_words() {
        assert_eq!(
            lock_target(
                "relation",
                "drizzle.__drizzle_migrations",
                "AccessShareLock"
            ),
            "a lock on drizzle.__drizzle_migrations (AccessShareLock)"
        );
        assert!(lock_target("transactionid", "", "ShareLock").starts_with("a row that"));
        assert_eq!(
            lock_target("advisory", "", "ShareLock"),
            "an advisory lock (ShareLock)"
        );
        assert_eq!(
            lock_target("object", "", "AccessExclusiveLock"),
            "a lock of kind object (AccessExclusiveLock)"
        );
    }

    #[test]
    fn a_deadlocks_relations_are_found_and_named() {
        let detail = "Process 18012 waits for AccessExclusiveLock on relation 16954 of database \
                      16950; blocked by process 18008. Process 18008 waits for AccessShareLock on \
                      relation 16951 of database 16950; blocked by process 18012";
        let found: Vec<u32> = relation_mentions(detail)
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        assert_eq!(found, [16954, 16951]);
        assert_eq!(
            with_relation_names(
                detail,
                &[(16954, "dl_b".into()), (16951, "\"Dl a\"".into())]
            ),
            "Process 18012 waits for AccessExclusiveLock on relation dl_b; blocked by process \
             18008. Process 18008 waits for AccessShareLock on relation \"Dl a\"; blocked by \
             process 18012"
        );
        // Unknown oids, and text that only looks like a mention, stay as they are.
        assert_eq!(with_relation_names(detail, &[]), detail);
        assert!(relation_mentions("relation x of database 1; relation 5 of db").is_empty());
        // A transaction wait names no relation.
        assert!(relation_mentions("Process 1 waits for ShareLock on transaction 771").is_empty());
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("drizzle"), "\"drizzle\"");
        assert_eq!(quote_ident("My \"T\""), "\"My \"\"T\"\"\"");
        assert_eq!(
            qualified("drizzle", "__drizzle_migrations"),
            "\"drizzle\".\"__drizzle_migrations\""
        );
    }
}
