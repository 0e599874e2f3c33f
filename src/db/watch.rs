//! Watching a statement whose answer has not come yet, from a second connection (the
//! "observer"): who blocks it while it waits for a lock (for the log), and whether the server is
//! still running it. TCP keepalives cannot tell a hung peer or a proxy that stopped forwarding
//! from a busy server, so the client decides: a statement may run as long as the server confirms
//! it (an index build can take hours), but when nothing confirms it for three answer timeouts,
//! or no answer came within `statement_timeout` plus one answer timeout, the connection counts
//! as lost. Migrations (`apply`) and seeds (`seeds`) are watched the same way.
//!
//! When the connection is given up while the server still has its session, idle (the statement
//! ended, its answer never came: a connection that hangs rather than closes), the observer ends
//! that session: otherwise the server would keep it, with its open transaction, its locks and
//! the migration lock, until TCP gives up on the connection, which takes hours with the
//! server's default keepalives.

use super::connect::{NoConnection, Second};
use super::{Ending, Session};
use crate::config::format_duration;
use crate::source::lexer;
use std::cell::{Cell, RefCell};
use std::time::Duration;
use tokio::time::Instant;

/// Sessions blocking `$1`, described for the log (their query is masked by
/// [`lexer::mask_literals`] before it is shown).
pub(crate) const BLOCKERS: &str = "\
select a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''),
       coalesce(extract(epoch from now() - a.xact_start)::float8, 0), coalesce(a.query, '')
  from pg_stat_activity a where a.pid = any(pg_blocking_pids($1))";

/// A statement without an answer for this long gets an info line saying what it waits for,
/// and another every [`PROGRESS_EVERY`] after that: at 3 a.m. `kubectl logs` shows why the run
/// is taking long (a lock held by the app, with `lock_timeout` off; a long index build).
const FIRST_PROGRESS: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The observer connection, in whichever state it is.
#[derive(Default)]
enum Observer {
    /// Being opened in the background since the run began, so that the first statements need
    /// not wait for it.
    Opening(tokio::task::JoinHandle<Option<tokio_postgres::Client>>),
    Ready(tokio_postgres::Client),
    /// Not opened (blockers are not named), in use, or given up; opened anew when needed.
    #[default]
    Missing,
}

/// The watch over one session's statements. Dropping it closes the observer connection.
pub(crate) struct Watch<'a> {
    session: &'a Session,
    /// Taken out while in use (never borrowed across an await).
    observer: Cell<Observer>,
    /// Blockers are sampled once a statement has waited half of this; zero: never.
    lock_timeout: Duration,
    /// Zero: no deadline, only the liveness checks.
    statement_timeout: Duration,
    /// The state the last liveness check saw our session in, when it was there but not running
    /// a statement ('idle in transaction', say); `None` otherwise.
    idle_state: RefCell<Option<String>>,
}

impl<'a> Watch<'a> {
    /// A watch for `session`'s statements. When blockers are to be named (`lock_timeout` is
    /// not zero) the observer connection starts opening in the background now, so that the
    /// first statements need not wait for it; otherwise it is opened the first time a statement
    /// goes unanswered for an answer timeout.
    pub fn new(session: &'a Session, lock_timeout: Duration, statement_timeout: Duration) -> Self {
        let observer = if lock_timeout.is_zero() {
            Observer::Missing
        } else {
            let (db, t) = (session.database.clone(), session.answer_timeout);
            Observer::Opening(tokio::spawn(async move {
                tokio::time::timeout(t, super::connect::second(&db, Second::Observer))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }))
        };
        Watch {
            session,
            observer: Cell::new(observer),
            lock_timeout,
            statement_timeout,
            idle_state: RefCell::new(None),
        }
    }

    /// Runs `work` (a statement, or a pipeline of them) until it completes or the connection
    /// counts as lost (see [`Watch::lost`]). Then the session is marked lost, so that nothing
    /// more is sent on it, and `Err` says why.
    pub async fn run<F: std::future::Future>(
        &self,
        last_answer: &Cell<Instant>,
        blockers: &RefCell<Vec<String>>,
        one_statement: &dyn Fn() -> bool,
        work: F,
    ) -> Result<F::Output, String> {
        tokio::select! {
            out = work => Ok(out),
            why = self.lost(last_answer, blockers, one_statement) => {
                // The watch has done what can be done about the session in the server (ended
                // it, or found the server unreachable or busy).
                self.session.mark_lost();
                Err(why)
            }
        }
    }

    /// Runs until the statement in flight counts as lost; returns why. `last_answer` is when
    /// the last answer came (or the statement was sent): every answer starts the count again.
    /// `blockers` receives who blocked it, when it waited for a lock long enough to ask.
    /// `one_statement` says whether the request the server is on now holds a single statement:
    /// only then does `statement_timeout` bound its answer. The server answers a request of
    /// several statements (a chunk without breakpoints, a seed file) when it ends, each of
    /// them with its own statement_timeout, so such a request is judged by the liveness checks
    /// alone.
    async fn lost(
        &self,
        last_answer: &Cell<Instant>,
        blockers: &RefCell<Vec<String>>,
        one_statement: &dyn Fn() -> bool,
    ) -> String {
        let t = self.session.answer_timeout;
        let deadline = async {
            if self.statement_timeout.is_zero() {
                std::future::pending::<()>().await;
            }
            loop {
                let due = last_answer.get() + self.statement_timeout + t;
                if Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                } else if one_statement() {
                    break;
                } else {
                    // Until the next answer moves `due` on (or a single statement is up).
                    tokio::time::sleep(t).await;
                }
            }
        };
        tokio::select! {
            why = self.silence(last_answer, blockers) => why,
            () = deadline => format!(
                "no answer within statement_timeout ({}) plus {} although the server cancels a \
                 statement at statement_timeout",
                format_duration(self.statement_timeout),
                format_duration(t)
            ),
        }
    }

    /// Runs until the statement counts as lost through silence (see [`Watch`]); returns why.
    ///
    /// In a pipeline every answer counts from the start again: the server is alive and on the
    /// next request, whose wait for locks is its own (blockers seen before are dropped).
    async fn silence(
        &self,
        last_answer: &Cell<Instant>,
        blockers: &RefCell<Vec<String>>,
    ) -> String {
        let t = self.session.answer_timeout;
        let sample_blockers = !self.lock_timeout.is_zero();
        let mut since = last_answer.get();
        let mut next_sample = since + self.lock_timeout / 2;
        let mut next_check = since + t;
        let mut next_progress = since + FIRST_PROGRESS;
        let mut confirmed = since;
        loop {
            let wake = if sample_blockers {
                next_sample.min(next_check)
            } else {
                next_check
            }
            .min(next_progress);
            tokio::time::sleep_until(wake).await;
            if last_answer.get() != since {
                since = last_answer.get();
                next_sample = since + self.lock_timeout / 2;
                next_check = since + t;
                next_progress = since + FIRST_PROGRESS;
                confirmed = confirmed.max(since);
                blockers.borrow_mut().clear();
                continue;
            }
            let now = Instant::now();
            if now >= next_progress {
                next_progress = now + PROGRESS_EVERY;
                self.log_progress(since.elapsed()).await;
            }
            if sample_blockers && now >= next_sample {
                next_sample = now + Duration::from_millis(250);
                if let Some(seen) = self.blockers().await
                    && !seen.is_empty()
                {
                    *blockers.borrow_mut() = seen;
                }
            }
            if now >= next_check {
                if self.still_running().await {
                    confirmed = Instant::now();
                }
                next_check = Instant::now() + t;
                if confirmed.elapsed() >= 3 * t {
                    let why = format!(
                        "no answer for {:.0}s, and the server has not confirmed for {:.0}s that \
                         it is still running it (checked through a second connection every {})",
                        since.elapsed().as_secs_f64(),
                        confirmed.elapsed().as_secs_f64(),
                        format_duration(t)
                    );
                    return match self.end_idle_session().await {
                        Some(ended) => format!("{why}; {ended}"),
                        None => why,
                    };
                }
            }
        }
    }

    /// The observer connection if there is an open one, taken out of its cell (put it back
    /// with `Observer::Ready` after use). One still being opened is waited for: at most
    /// `answer_timeout`.
    async fn take_observer(&self) -> Option<tokio_postgres::Client> {
        let client = match self.observer.take() {
            Observer::Opening(opening) => opening.await.ok().flatten(),
            Observer::Ready(client) => Some(client),
            Observer::Missing => None,
        };
        client.filter(|c| !c.is_closed())
    }

    /// The observer connection, opened (again) when missing or closed.
    async fn observer(&self) -> Result<tokio_postgres::Client, NoConnection> {
        match self.take_observer().await {
            Some(c) => Ok(c),
            None => tokio::time::timeout(
                self.session.answer_timeout,
                super::connect::second(&self.session.database, Second::Observer),
            )
            .await
            .unwrap_or(Err(NoConnection::Unreachable)),
        }
    }

    /// Whether the server still runs a statement for our session (state `active`), asked on
    /// the observer connection within `answer_timeout`. A server that answers but cannot be
    /// asked (too many connections for the server or the role, an error) gets the benefit of
    /// the doubt: a healthy hour-long index build must never be given up.
    async fn still_running(&self) -> bool {
        self.idle_state.replace(None);
        let observer = match self.observer().await {
            Ok(c) => c,
            Err(NoConnection::Busy) => return true,
            Err(NoConnection::Unreachable) => return false,
        };
        let asked = tokio::time::timeout(
            self.session.answer_timeout,
            observer.query_opt(
                super::STATE_OF_OWN_SESSION,
                &[&self.session.backend_pid, &self.session.alive_at],
            ),
        )
        .await;
        let running = match &asked {
            Ok(Ok(Some(row))) => {
                let state: Option<String> = row.get(0);
                if state.as_deref() == Some("active") {
                    true
                } else {
                    self.idle_state
                        .replace(Some(state.unwrap_or_else(|| "unknown".into())));
                    false
                }
            }
            // Our session is gone from the server (a later one may have our pid): it ended
            // without us hearing of it.
            Ok(Ok(None)) => false,
            Ok(Err(e)) => e.as_db_error().is_some(),
            Err(_) => false,
        };
        // Keep a connection that answered; one that did not is dropped and opened anew.
        if asked.is_ok() {
            self.observer.set(Observer::Ready(observer));
        }
        running
    }

    /// When the last liveness check saw our session in the server but not running anything,
    /// ends it (it is ours, and its connection is being given up): the server then rolls back
    /// what it had not committed and releases its locks at once. Says so, for the reason of the
    /// exit; `None` when there was nothing to end or it could not be done (logged).
    async fn end_idle_session(&self) -> Option<String> {
        let state = self.idle_state.borrow().clone()?;
        let pid = self.session.backend_pid;
        // The connection is being given up: this is the observer's last use.
        let observer = self.take_observer().await?;
        match super::end_own_session(&observer, self.session, self.session.answer_timeout).await {
            Ending::Ended => {
                // The reason of the exit says it; this is for a debug trace of the order.
                tracing::debug!(pid, state, "ended this run's session in the server");
                Some(format!(
                    "the server still had the session, {state}, so portcullis ended it \
                     (pg_terminate_backend, pid {pid}): what it had not committed is rolled back \
                     and its locks are released now"
                ))
            }
            Ending::Gone => None,
            Ending::Failed(e) => {
                tracing::warn!(
                    "could not end this run's session in the server (pid {pid}, {state}): {e}; \
                     the server ends it when it notices the connection is gone"
                );
                None
            }
        }
    }

    /// The info line for a statement without an answer for `waited`: who holds the lock it waits
    /// for, if it waits for one.
    async fn log_progress(&self, waited: Duration) {
        let blockers = match self.observer().await {
            Ok(client) => {
                self.observer.set(Observer::Ready(client));
                self.blockers().await
            }
            Err(_) => None,
        };
        let what = match blockers {
            None => "what it waits for could not be asked (no second connection)".to_string(),
            Some(b) if b.is_empty() => {
                "it is not waiting for another session's lock (a long statement, or a busy server)"
                    .to_string()
            }
            Some(b) => format!(
                "it waits for a lock held by {}; finish or end that session to let it go on",
                b.join("; ")
            ),
        };
        tracing::info!(
            "still {} after {:.0}s without an answer: {what}",
            crate::interrupt::activity(),
            waited.as_secs_f64()
        );
    }

    /// The sessions blocking ours, described for the log; `None` when they cannot be asked.
    async fn blockers(&self) -> Option<Vec<String>> {
        let observer = self.take_observer().await?;
        let asked = tokio::time::timeout(
            self.session.answer_timeout,
            observer.query(BLOCKERS, &[&self.session.backend_pid]),
        )
        .await;
        let Ok(rows) = asked else {
            return None; // unanswered: dropped; the liveness check opens a new one
        };
        self.observer.set(Observer::Ready(observer));
        Some(rows.ok()?.iter().map(describe_blocker).collect())
    }
}

/// One row of [`BLOCKERS`], for the log.
pub(crate) fn describe_blocker(r: &tokio_postgres::Row) -> String {
    format!(
        "pid {} ({:?}, {}, transaction open {:.1}s, query `{}`)",
        r.get::<_, i32>(0),
        r.get::<_, String>(1),
        r.get::<_, String>(2),
        r.get::<_, f64>(3),
        lexer::mask_literals(r.get::<_, &str>(4), 160)
    )
}

impl Drop for Watch<'_> {
    /// An observer connection still being opened when the run ends is not needed any more.
    fn drop(&mut self) {
        if let Observer::Opening(opening) = self.observer.take() {
            opening.abort();
        }
    }
}
