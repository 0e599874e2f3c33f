//! What a SIGTERM or SIGINT must stop. `main` owns the signal handlers; when one arrives it calls
//! [`interrupt`], which marks the run as interrupted, wakes every interruptible sleep, and sends
//! PostgreSQL a cancel request for the statement in flight. The run then unwinds by its normal
//! error paths (ROLLBACK, advisory unlock) and reports [`Error::Interrupted`].
//!
//! Process-wide state is unavoidable here: a signal is process-wide. It is kept to four things:
//! the flag, the cancel token of the one session, a one-line description of the current work,
//! and what abandoning that work would leave committed, if anything.

use crate::error::Error;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::CancelToken;
use tokio_postgres_rustls::MakeRustlsConnect;

/// 0 while running; the signal number once interrupted.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static WAKE: Notify = Notify::const_new();
static CANCEL: Mutex<Option<(CancelToken, MakeRustlsConnect)>> = Mutex::new(None);
static ACTIVITY: Mutex<String> = Mutex::new(String::new());
/// What abandoning the run now would leave behind, when it is not "nothing": set while a
/// migration runs outside a transaction, and kept through whatever the run does next (such as
/// reconnecting to record that migration) until [`settle`].
static AT_STAKE: Mutex<Option<String>> = Mutex::new(None);

pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

/// The signal that interrupted the run, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

fn signal_name(sig: i32) -> &'static str {
    if sig == SIGINT { "SIGINT" } else { "SIGTERM" }
}

/// Records what the run is doing, for the "interrupted while ..." message. What is at stake, if
/// anything, stays until [`settle`].
pub fn set_activity(what: impl Into<String>) {
    if let Ok(mut a) = ACTIVITY.lock() {
        *a = what.into();
    }
}

/// [`set_activity`] for work whose abandonment leaves something committed (`at_stake`, one or
/// more sentences: the statements of a migration outside a transaction that ran). [`error`]
/// reports it instead of "nothing half-done was committed", as when the run is abandoned after
/// a second signal or the wind-down deadline.
pub fn set_activity_at_stake(what: impl Into<String>, at_stake: impl Into<String>) {
    if let Ok(mut a) = ACTIVITY.lock() {
        *a = what.into();
    }
    if let Ok(mut s) = AT_STAKE.lock() {
        *s = Some(at_stake.into());
    }
}

/// Nothing committed is at stake any more (the migration outside a transaction is recorded).
pub fn settle() {
    if let Ok(mut s) = AT_STAKE.lock() {
        *s = None;
    }
}

pub fn activity() -> String {
    ACTIVITY.lock().map(|a| a.clone()).unwrap_or_default()
}

/// Registers the session whose running statement a signal cancels.
pub fn register(token: CancelToken, tls: MakeRustlsConnect) {
    if let Ok(mut c) = CANCEL.lock() {
        *c = Some((token, tls));
    }
}

/// Marks the run interrupted by `sig`, wakes sleepers and cancels the running statement (a
/// cancel request on an idle session does nothing). Returns once the request was sent or failed.
pub async fn interrupt(sig: i32) {
    SIGNAL.store(sig, Ordering::SeqCst);
    WAKE.notify_waiters();
    cancel().await;
}

/// For a caller with several statements in flight at once: once the run is interrupted, sends
/// a cancel request every 200 ms, since the one [`interrupt`] sent may have reached the server
/// between two of them and cancelled nothing. Never completes: race it with the work.
pub async fn keep_cancelling() -> std::convert::Infallible {
    let woken = WAKE.notified();
    tokio::pin!(woken);
    // Register before checking, so a signal in between is not missed.
    woken.as_mut().enable();
    if signal().is_none() {
        woken.await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel().await;
    }
}

/// Sends PostgreSQL a cancel request for the registered session's running statement.
async fn cancel() {
    let cancel = CANCEL.lock().ok().and_then(|c| c.clone());
    if let Some((token, tls)) = cancel {
        match tokio::time::timeout(Duration::from_secs(1), token.cancel_query(tls)).await {
            Ok(Ok(())) => tracing::debug!("sent PostgreSQL a cancel request"),
            Ok(Err(e)) => tracing::warn!("could not send PostgreSQL a cancel request: {e}"),
            Err(_) => tracing::warn!("the cancel request to PostgreSQL timed out"),
        }
    }
}

/// The error a run reports once interrupted.
pub fn error() -> Error {
    match AT_STAKE.lock().ok().and_then(|s| s.clone()) {
        Some(at_stake) => error_with(&at_stake),
        None => error_with(
            "Whatever was running was cancelled and rolled back; nothing half-done was committed.",
        ),
    }
}

/// [`error`] for work that knows what the interruption left behind (`consequence`, one or more
/// sentences: a migration outside a transaction keeps the statements that ran, for one).
pub fn error_with(consequence: &str) -> Error {
    let sig = signal().unwrap_or(SIGTERM);
    let what = activity();
    Error::Interrupted {
        signal: sig,
        message: format!(
            "interrupted by {} while {}. {consequence} The migration lock was released. Run \
             again to continue.",
            signal_name(sig),
            if what.is_empty() { "starting" } else { &what },
        ),
    }
}

/// Fails with [`error`] once interrupted.
pub fn check() -> Result<(), Error> {
    match signal() {
        Some(_) => Err(error()),
        None => Ok(()),
    }
}

/// Sleeps for `d`, returning early with [`error`] when a signal arrives.
pub async fn sleep(d: Duration) -> Result<(), Error> {
    check()?;
    let woken = WAKE.notified();
    tokio::pin!(woken);
    // Register before re-checking, so a signal between the check and the wait is not missed.
    woken.as_mut().enable();
    check()?;
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = woken => Err(error()),
    }
}
