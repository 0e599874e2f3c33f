//! The session-level advisory lock that makes exactly one runner migrate at a time.
//!
//! Key: the first 8 bytes (big-endian, as a signed 64-bit integer) of
//! sha256("portcullis" NUL schema NUL table) (NUL cannot occur in an identifier), so runners sharing a tracking table exclude each
//! other and projects with separate tables do not. Advisory locks are per database already.
//! It is taken with `pg_try_advisory_lock`, which never queues, and released explicitly (and by
//! the server when the session ends, whatever way the process ends).
//!
//! How a runner waits while another holds it depends on the command. `migrate` queues for the
//! lock in *shared* mode ([`take_or_queue`]): the server wakes every queued runner the moment the
//! holder releases, and a shared lock excludes only a runner that wants to migrate, so they all
//! look at the tracking table at once, and most find the work done and leave within
//! milliseconds of the holder. The other commands that write ([`acquire`]) poll with backoff.
//! Neither kind of wait holds or queues for any lock on the app's tables.

use super::{Session, query_failed};
use crate::config::format_duration;
use crate::error::Error;
use crate::interrupt;
use backon::{BackoffBuilder, ExponentialBuilder};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// The key of the default table `"drizzle"."__drizzle_migrations"` (see the unit test).
pub const DEFAULT_KEY_FOR_DOCS: i64 = -8_126_967_830_540_195_935;

const REPORT_EVERY: Duration = Duration::from_secs(5);

/// The advisory lock key for a tracking table.
pub fn key(schema: &str, table: &str) -> i64 {
    let digest = Sha256::digest(format!("portcullis\0{schema}\0{table}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Who holds the lock, as one line per session, from pg_locks + pg_stat_activity.
const HOLDERS: &str = "\
select l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
       coalesce(a.state, 'unknown'),
       coalesce(extract(epoch from now() - a.backend_start)::float8, 0),
       coalesce(extract(epoch from now() - a.state_change)::float8, 0)
  from pg_locks l left join pg_stat_activity a on a.pid = l.pid
 where l.locktype = 'advisory' and l.granted
   and l.database = (select oid from pg_database where datname = current_database())
   and l.classid = $1 and l.objid = $2 and l.objsubid = 1";

/// The key as `pg_locks` shows it: `classid` and `objid`, its high and low 32 bits.
fn lock_ids(key: i64) -> (u32, u32) {
    (
        ((key as u64) >> 32) as u32,
        (key as u64 & 0xffff_ffff) as u32,
    )
}

/// Who holds the migration lock of `key` now, one description per session (none: nobody is
/// migrating). For `await`, which never takes the lock.
pub async fn holders(session: &Session, key: i64) -> Vec<String> {
    let (classid, objid) = lock_ids(key);
    let listed = session
        .within("listing who holds the migration lock", async {
            session
                .client()
                .query(HOLDERS, &[&classid, &objid])
                .await
                .map_err(|e| query_failed("listing who holds the migration lock", &e))
        })
        .await;
    match listed {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                format!(
                    "pid {} ({:?} from {}, {} for {:.0}s, connected {:.0}s ago)",
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, f64>(5),
                    r.get::<_, f64>(4)
                )
            })
            .collect(),
        // Only the error's first sentence: this lands inside another message, whose own
        // next step follows.
        Err(e) => {
            let e = e.to_string();
            let first = e
                .split(". ")
                .next()
                .unwrap_or_default()
                .trim_end_matches('.');
            vec![format!("a session that could not be listed ({first})")]
        }
    }
}

/// Runs a one-row statement whose only parameter is the lock key, in one round trip (the
/// parameter's type is given, so there is no separate prepare).
async fn keyed(
    session: &Session,
    what: &str,
    sql: &str,
    key: i64,
) -> Result<tokio_postgres::Row, Error> {
    let rows = session
        .client()
        .query_typed(sql, &[(&key, tokio_postgres::types::Type::INT8)])
        .await
        .map_err(|e| query_failed(what, &e))?;
    rows.into_iter()
        .next()
        .ok_or_else(|| Error::Internal(format!("{what}: the server returned no row")))
}

/// How `migrate` got past the lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Taken {
    /// This runner holds the lock: it does the work.
    Exclusive,
    /// Another runner held the lock when this one arrived. This one queued until it was
    /// released and now holds it in shared mode, which keeps any runner from starting to
    /// migrate while this one looks at what is left. `since` is the server's clock (seconds
    /// since the epoch) when this runner found the lock taken.
    Shared { since: f64 },
}

/// `migrate`'s way in: takes the lock if it is free; if another runner holds it, queues in the
/// server (shared mode) until that runner releases it, for at most `timeout`, logging who
/// holds it every few seconds. A SIGTERM cancels the wait.
///
/// A queued runner sends nothing else while it waits. (Warming the server's caches ahead of the
/// release was tried: a holder that applies migrations invalidates them anyway, and 49 waiters
/// doing it slowed the holder's start.)
pub async fn take_or_queue(
    session: &Session,
    key: i64,
    table: &str,
    timeout: Duration,
) -> Result<Taken, Error> {
    let started = Instant::now();
    interrupt::set_activity(format!("waiting for the migration lock on {table}"));
    let row = session
        .within("waiting for the migration lock", async {
            keyed(
                session,
                "taking the advisory lock",
                "select pg_try_advisory_lock($1), extract(epoch from clock_timestamp())::float8",
                key,
            )
            .await
        })
        .await?;
    if row.get::<_, bool>(0) {
        tracing::debug!(key, "took the migration lock");
        return Ok(Taken::Exclusive);
    }
    let since: f64 = row.get(1);
    // One queued wait lasts at most half the answer timeout (its lock_timeout), so that a
    // connection that stalls during the wait is noticed within 1.5 answer timeouts, as when
    // polling.
    let slice_max = REPORT_EVERY.min(session.answer_timeout / 2);
    // Who holds the lock is looked up from the first report after REPORT_EVERY on: pg_locks and
    // pg_stat_activity are among the costliest things a fresh session can ask, and 49 replicas
    // asking at once, only to be let in a second later, slowed the one doing the work.
    tracing::info!(
        "waiting for the migration lock on {table}: another runner holds it; queued behind it \
         (up to {}; who holds it is logged every {}s)",
        format_duration(timeout),
        REPORT_EVERY.as_secs()
    );
    let mut last_report = Some(Instant::now());
    loop {
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(timed_out(session, key, table, timeout).await);
        }
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            last_report = Some(Instant::now());
            report_holders(session, key, table, waited, timeout).await;
        }
        let slice = slice_max
            .min(timeout - waited)
            .max(Duration::from_millis(1));
        // lock_timeout bounds the wait in the server; statement_timeout is off for it, since a
        // database's or role's statement_timeout (meant for the app, and often shorter than a
        // migration) would cancel the wait. The RESETs only run once the lock is granted (an
        // error skips the rest of the batch), and the next slice sets both again.
        let batch = format!(
            "SET statement_timeout = 0; SET lock_timeout = {}; \
             SELECT pg_advisory_lock_shared({key}); RESET lock_timeout; RESET statement_timeout",
            slice.as_millis()
        );
        let queued = session
            .within_for(
                slice + session.answer_timeout,
                "waiting for the migration lock",
                async { Ok(session.client().batch_execute(&batch).await) },
            )
            .await?;
        match queued {
            Ok(()) => {
                tracing::info!(
                    "the migration lock was released after {:.1}s; checking what is left to do",
                    started.elapsed().as_secs_f64()
                );
                return Ok(Taken::Shared { since });
            }
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {}
            Err(e) => {
                interrupt::check()?;
                return Err(query_failed("waiting for the migration lock", &e));
            }
        }
    }
}

/// Releases the shared hold taken by [`take_or_queue`]; its one parameter is the key. Sent by
/// the caller together with the COPY of its read of the tracking table
/// (`history::read_quickly`).
pub const UNLOCK_SHARED: &str = "select pg_advisory_unlock_shared($1)";

/// The progress line of a wait: how long so far, and who holds the lock now.
async fn report_holders(
    session: &Session,
    key: i64,
    table: &str,
    waited: Duration,
    timeout: Duration,
) {
    let who = holders(session, key).await;
    tracing::info!(
        "waiting for the migration lock on {table} ({:.1}s of {}); held by {}",
        waited.as_secs_f64(),
        format_duration(timeout),
        if who.is_empty() {
            "nobody any more".to_string()
        } else {
            who.join("; ")
        }
    );
}

/// The exit-7 error, naming who holds the lock now.
async fn timed_out(session: &Session, key: i64, table: &str, timeout: Duration) -> Error {
    let who = holders(session, key).await;
    if session.is_lost() {
        return session.lost_error("waiting for the migration lock");
    }
    Error::LockTimeout(format!(
        "another runner held the migration lock for {table} for the whole \
         PORTCULLIS_LOCK_WAIT_TIMEOUT ({}); held by {}. If that runner is stuck, stop it \
         (SELECT pg_terminate_backend(<pid>)); if it is just slow, raise \
         PORTCULLIS_LOCK_WAIT_TIMEOUT. A restart may help.",
        format_duration(timeout),
        if who.is_empty() {
            "a session that has just released it".to_string()
        } else {
            who.join("; ")
        }
    ))
}

/// Takes the lock, polling with backoff for up to `timeout`.
pub async fn acquire(
    session: &Session,
    key: i64,
    table: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_report: Option<Instant> = None;
    interrupt::set_activity(format!("waiting for the migration lock on {table}"));
    loop {
        // pg_try_advisory_lock answers at once, so a poll that goes unanswered means the
        // connection is gone (exit 5), not that the lock is busy.
        let got: bool = session
            .within("waiting for the migration lock", async {
                keyed(
                    session,
                    "taking the advisory lock",
                    "select pg_try_advisory_lock($1)",
                    key,
                )
                .await
            })
            .await?
            .get(0);
        if got {
            if last_report.is_some() {
                tracing::info!(
                    "took the migration lock after waiting {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            } else {
                tracing::debug!(key, "took the migration lock");
            }
            return Ok(());
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(timed_out(session, key, table, timeout).await);
        }
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            last_report = Some(Instant::now());
            report_holders(session, key, table, waited, timeout).await;
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(1));
        interrupt::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await?;
    }
}

/// Releases the lock. A failure is only logged: the server releases it when the session ends.
pub async fn release(session: &Session, key: i64) {
    if session.is_lost() {
        tracing::debug!("not releasing the lock on a lost connection; the server releases it");
        return;
    }
    let unlocked = session
        .within("releasing the migration lock", async {
            keyed(
                session,
                "releasing the migration lock",
                "select pg_advisory_unlock($1)",
                key,
            )
            .await
        })
        .await;
    match unlocked {
        Ok(row) if row.get::<_, bool>(0) => tracing::debug!(key, "released the migration lock"),
        Ok(_) => tracing::warn!("the migration lock was not held when releasing it"),
        Err(e) => tracing::debug!(
            "could not release the migration lock ({e}); the server releases it with the session"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_schema_and_table_only() {
        assert_eq!(
            key("drizzle", "__drizzle_migrations"),
            key("drizzle", "__drizzle_migrations")
        );
        assert_ne!(
            key("drizzle", "__drizzle_migrations"),
            key("other", "__drizzle_migrations")
        );
        assert_ne!(key("a.b", "c"), key("a", "b.c"));
        // Pinned: the README documents this value for the default table, so operators can find
        // the lock in pg_locks; changing it would let old and new runners migrate at once.
        assert_eq!(key("drizzle", "__drizzle_migrations"), DEFAULT_KEY_FOR_DOCS);
    }
}
