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
    /// Set once what can be done about the lost session's remains in the server has been done
    /// (the statement watch ended it or found the server unreachable; the recording recovery
    /// ended it), so [`end_own_lost_session`] does not try again.
    settled: AtomicBool,
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
            settled: AtomicBool::new(false),
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

    /// Whether the lost session's remains were dealt with already (see `settled`).
    pub(crate) fn is_settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_settled(&self) {
        self.settled.store(true, Ordering::SeqCst);
    }

    /// Runs `work`, one or a few exchanges the server answers at once, giving up after
    /// [`Session::answer_timeout`] with exit 5 (and at once when the connection was already
    /// given up). `what` completes "... stopped answering while".
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
                Err(self.lost_error(what))
            }
        }
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
        client.query(END_OWN_SESSION, &[&lost.backend_pid, &lost.alive_at]),
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

/// At the end of a run whose connection was given up (an exchange went unanswered, so it may
/// hang rather than be closed) once it had asked for the migration lock: ends what the server
/// kept of that session, from a new connection, so that the migration lock it holds (or was
/// queued for) and whatever its transaction held are free for the next run now rather than when
/// TCP gives up on the hung connection. Nothing is done when the session was not lost, when the
/// statement watch or the recording recovery already dealt with it, or after a signal (the run
/// must end now). The new connection and the question each get one answer timeout: a server
/// that cannot be reached adds at most two to the exit. Returns a sentence for the exit reason
/// when there is something to say.
pub async fn end_own_lost_session(session: &Session) -> Option<String> {
    if !session.is_lost() || session.is_settled() || crate::interrupt::signal().is_some() {
        return None;
    }
    session.mark_settled();
    let pid = session.backend_pid;
    let limit = session.answer_timeout;
    let second = connect::second(&session.database, connect::Second::EndingLostSession);
    let ending = match tokio::time::timeout(limit, second).await {
        Ok(Ok(client)) => end_own_session(&client, session, limit).await,
        Ok(Err(_)) | Err(_) => Ending::Failed("a new connection could not be opened".into()),
    };
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

/// Turns an unexpected error of a bookkeeping query (not a migration statement) into the
/// matching class: a lost connection may be retried, a privilege problem needs a person.
pub(crate) fn query_failed(what: &str, e: &tokio_postgres::Error) -> Error {
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
            "42501" => Error::Refused(format!(
                "{text}. The database user lacks a privilege portcullis needs; grant it (or run \
                 portcullis as the migration owner)."
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
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("drizzle"), "\"drizzle\"");
        assert_eq!(quote_ident("My \"T\""), "\"My \"\"T\"\"\"");
        assert_eq!(
            qualified("drizzle", "__drizzle_migrations"),
            "\"drizzle\".\"__drizzle_migrations\""
        );
    }
}
