//! Waiting for PostgreSQL: connect with exponential backoff and jitter (backon) until the
//! deadline, retrying only what is transient and failing fast on what waiting cannot fix.

use super::{Session, tls};
use crate::config::{Database, SslMode, format_duration, tcp_address};
use crate::error::Error;
use crate::interrupt;
use backon::{BackoffBuilder, ExponentialBuilder};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use std::time::{Duration, Instant};

/// Connect attempts never wait longer than this for one TCP/TLS/startup handshake.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the "still waiting" line is logged at info.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Whether a failed connection attempt is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The server may accept us later (not up yet, restarting, full, network blip).
    Transient(String),
    /// Waiting cannot help (wrong password, no such database, TLS refused).
    Permanent(String),
}

/// Classifies a connection error. SQLSTATEs: 57P03 starting up, 53300 too many connections,
/// 08xxx connection exceptions and 57P01/57P02 shutdowns are transient; 28xxx authentication,
/// 3D000 missing database, 42501 no CONNECT privilege are permanent, as are TLS failures and
/// client-side configuration errors. I/O errors (refused, reset, timeouts, DNS) are transient.
pub fn classify(e: &tokio_postgres::Error, db: &Database) -> Attempt {
    if let Some(dbe) = e.as_db_error() {
        let code = dbe.code().code();
        let text = format!("{} ({code})", dbe.message());
        return if code.starts_with("08") || matches!(code, "57P03" | "53300" | "57P01" | "57P02") {
            Attempt::Transient(text)
        } else if code == "28000" && refused_unencrypted(dbe.message()) {
            Attempt::Permanent(format!(
                "{text}: the server accepts this user only over TLS. Set sslmode=require (or \
                 verify-full with sslrootcert) in {} (or PGSSLMODE)",
                db.source
            ))
        } else if code == "28000" && dbe.message().contains("not permitted to log in") {
            Attempt::Permanent(format!(
                "{text}: the role exists but has NOLOGIN. Give it LOGIN (ALTER ROLE {} LOGIN), \
                 or put a role that may log in into {}",
                super::quote_ident(db.user()),
                db.source
            ))
        } else if code == "28P01" {
            // The server's text usually says "password authentication failed" already.
            let text = if dbe.message().contains("authentication failed") {
                text
            } else {
                format!("authentication failed: {text}")
            };
            // An expired password (VALID UNTIL in the past) gets the same words as a wrong one:
            // the server tells only its own log which it was.
            Attempt::Permanent(format!(
                "{text}. Check the user and password in {} (user {:?}; a password past the \
                 role's VALID UNTIL date is refused with the same words, and only the server's \
                 log says which), and the server's pg_hba.conf",
                db.source,
                db.user()
            ))
        } else if code == "28000" {
            // pg_hba.conf's refusal, a method other than a password failing (ident, peer,
            // certificate), or NOLOGIN told in a language other than English.
            Attempt::Permanent(format!(
                "{text}. Check the server's pg_hba.conf (a line must let user {:?} into this \
                 database from this host, over TLS or not as this connection is made, by a \
                 method it can pass), that the role may log in (LOGIN), and the user and \
                 password in {}",
                db.user(),
                db.source
            ))
        } else if code == "55000"
            && dbe
                .message()
                .contains("not currently accepting connections")
        {
            Attempt::Permanent(format!(
                "{text}: its ALLOW_CONNECTIONS is off, usually for maintenance (a restore, an \
                 upgrade) or because it is a template. Once that is over, turn it back on \
                 (ALTER DATABASE {} ALLOW_CONNECTIONS true) and run again",
                super::quote_ident(db.pg.get_dbname().unwrap_or(db.user()))
            ))
        } else if code == "55000" {
            // The same in a language other than English, or (PostgreSQL 16 and later, and
            // later minor releases of 12 to 15) a database an interrupted DROP DATABASE left
            // invalid.
            Attempt::Permanent(format!(
                "{text}: the server lets no one connect to this database now; its message says \
                 why: usually ALLOW_CONNECTIONS is off, for maintenance (a restore, an upgrade) \
                 or because it is a template (then turn it back on once that is over: ALTER \
                 DATABASE {} ALLOW_CONNECTIONS true), or an interrupted DROP DATABASE left it \
                 invalid (then drop it, or fix the name in {})",
                super::quote_ident(db.pg.get_dbname().unwrap_or(db.user())),
                db.source
            ))
        } else if code == "3D000" {
            Attempt::Permanent(format!(
                "{text}. Create the database first, or fix its name in {}",
                db.source
            ))
        } else if code == "42501" {
            Attempt::Permanent(format!(
                "{text}. Grant the user CONNECT on the database (GRANT CONNECT ON DATABASE ... TO \
                 {:?}), or connect as a user that has it",
                db.user()
            ))
        } else {
            Attempt::Permanent(text)
        };
    }
    // A fatal alert from the server: under TLS 1.3 its refusal of our certificate comes after
    // the client has finished its half of the handshake, as an I/O error on the first read,
    // which would otherwise pass for a network blip and be retried until the deadline; under
    // TLS 1.2 it ends the handshake itself. Either way, waiting does not change a certificate.
    if let Some(alert) = tls_alert(e) {
        use rustls::AlertDescription as A;
        let hint = match alert {
            A::UnknownCA
            | A::BadCertificate
            | A::CertificateRequired
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied => format!(
                "the server refused this client's certificate. Check that sslcert (in {} or \
                 PGSSLCERT) is signed by a CA in the server's ssl_ca_file and has not expired",
                db.source
            ),
            A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => format!(
                "the server and portcullis share no TLS version or cipher suite (portcullis \
                 speaks TLS 1.2 and 1.3). Check the server's ssl_min_protocol_version and \
                 ssl_ciphers, and sslmode in {}",
                db.source
            ),
            // Anything else (an internal error, a proxy in trouble) may pass.
            other => {
                return Attempt::Transient(format!("the server sent the TLS alert {other:?}"));
            }
        };
        return Attempt::Permanent(format!(
            "TLS failed: the server ended the connection with the TLS alert {alert:?}; {hint}"
        ));
    }
    let shown = e.to_string();
    if shown.starts_with("error performing TLS handshake") {
        let why = source_text(e).unwrap_or_default();
        let hint = if why.contains("does not support TLS") {
            "; set sslmode=disable or sslmode=prefer if this server is meant to be reached \
             without encryption"
                .to_string()
        } else {
            format!(
                "; check sslmode and sslrootcert (in {} or PGSSLMODE / PGSSLROOTCERT) against the \
                 server's certificate and its name",
                db.source
            )
        };
        return Attempt::Permanent(format!("TLS failed: {why}{hint}"));
    }
    if shown.starts_with("invalid configuration") {
        let why = source_text(e).unwrap_or_default();
        let hint = if why.contains("password missing") {
            format!(
                ": the server asks for a password and none was given (put it in {} or set \
                 PGPASSWORD)",
                db.source
            )
        } else {
            String::new()
        };
        return Attempt::Permanent(format!("{shown}: {why}{hint}"));
    }
    // The client refused the server's authentication: channel binding required and not used,
    // a method tokio-postgres does not speak (GSSAPI, SSPI), or a SCRAM proof that does not
    // check out. None of that changes by waiting.
    if shown.starts_with("authentication error") {
        let why = source_text(e).unwrap_or_default();
        let hint = if why.contains("channel binding") {
            format!(
                ". channel_binding=require (in {}) needs the server to prove, inside TLS, that it \
                 knows the password (SCRAM with channel binding); this connection gave no such \
                 proof, because it is not encrypted (sslmode=disable, or a server without TLS) or \
                 the server does not authenticate with SCRAM. Use sslmode=require (or \
                 verify-full), or leave channel_binding=require out for a server without TLS \
                 (a local container)",
                db.source
            )
        } else {
            String::new()
        };
        return Attempt::Permanent(format!("authentication failed: {why}{hint}"));
    }
    Attempt::Transient(short_reason(e))
}

/// The fatal alert the server sent, if that is what ended the connection.
fn tls_alert(e: &tokio_postgres::Error) -> Option<rustls::AlertDescription> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let inner = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static))
            .unwrap_or(s);
        if let Some(rustls::Error::AlertReceived(alert)) = inner.downcast_ref::<rustls::Error>() {
            return Some(*alert);
        }
        source = s.source();
    }
    None
}

/// "connection refused", "timed out", ... for the progress line.
fn short_reason(e: &tokio_postgres::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                std::io::ErrorKind::UnexpectedEof => "server closed the connection".into(),
                _ => io.to_string(),
            };
        }
        source = s.source();
    }
    match source_text(e) {
        Some(why) => format!("{e}: {why}"),
        None => e.to_string(),
    }
}

fn source_text(e: &tokio_postgres::Error) -> Option<String> {
    std::error::Error::source(e).map(|s| s.to_string())
}

/// TCP keepalives, on both ends of a connection (see `pg_config` and `backend_pid_again`): the
/// first probe after 30 s of silence, then every 10 s, and the peer counts as gone after 3
/// unanswered probes: about a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_COUNT: u32 = 3;

/// The tokio-postgres configuration for `db`: TLS mode, connect timeout, TCP keepalives (so a
/// peer that vanished is noticed instead of hanging the run).
fn pg_config(db: &Database) -> tokio_postgres::Config {
    let mut pg = db.pg.clone();
    pg.ssl_mode(match db.ssl_mode {
        // libpq's `allow` tries plain TCP first; TLS is its second attempt (see `wait_for`).
        SslMode::Disable | SslMode::Allow => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(ATTEMPT_TIMEOUT);
    }
    pg.keepalives(true);
    pg.keepalives_idle(KEEPALIVE_IDLE);
    pg.keepalives_interval(KEEPALIVE_INTERVAL);
    pg.keepalives_retries(KEEPALIVE_COUNT);
    pg
}

/// How long portcullis waits for an answer the server gives at once, and for each liveness check
/// of a long statement: the connect timeout (10 s, or `connect_timeout` in the URL).
pub fn answer_timeout(db: &Database) -> Duration {
    pg_config(db)
        .get_connect_timeout()
        .copied()
        .unwrap_or(ATTEMPT_TIMEOUT)
        .max(Duration::from_secs(1))
}

/// Why no second connection ([`second`]) could be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoConnection {
    /// The server answered but refused one more connection (53300: too many connections, for
    /// the server or for the role): it is up, it just cannot be asked.
    Busy,
    /// Anything else: refused, reset, timed out, TLS.
    Unreachable,
}

/// What a second connection is for, as `pg_stat_activity` shows it (`application_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Second {
    /// The statement watch: who blocks the migrating session's statements, and whether the
    /// server still runs a long one. Best effort: without it, lock timeouts are still retried,
    /// only the blockers go unnamed.
    Observer,
    /// Ending this run's own lost session once an exchange went unanswered
    /// (`Session::within`), after asking what became of it.
    EndingLostSession,
}

impl Second {
    fn label(self) -> &'static str {
        match self {
            Second::Observer => "lock observer",
            Second::EndingLostSession => "ending its lost session",
        }
    }
}

/// A second, plain connection, besides the session that holds the lock.
pub async fn second(
    db: &Database,
    purpose: Second,
) -> Result<tokio_postgres::Client, NoConnection> {
    let mut pg = pg_config(db);
    let name = format!(
        "{} ({})",
        pg.get_application_name().unwrap_or("portcullis"),
        purpose.label()
    );
    pg.application_name(&name);
    let tls = tls::connector(db).map_err(|_| NoConnection::Unreachable)?;
    match tokio::time::timeout(ATTEMPT_TIMEOUT, pg.connect(tls)).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => {
            tracing::debug!("no second connection ({}): {e}", purpose.label());
            match e.as_db_error() {
                Some(dbe) if dbe.code().code() == "53300" => Err(NoConnection::Busy),
                _ => Err(NoConnection::Unreachable),
            }
        }
        Err(_) => Err(NoConnection::Unreachable),
    }
}

/// Builds the connection factory (a one-connection deadpool pool) and the TLS connector, which
/// cancel requests need too.
fn pool(db: &Database) -> Result<(Pool, tokio_postgres_rustls::MakeRustlsConnect), Error> {
    let pg = pg_config(db);
    let tls = tls::connector(db)?;
    let manager = Manager::from_config(
        pg,
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(1)
        .build()
        .map_err(|e| Error::Internal(format!("cannot build the connection factory: {e}")))?;
    Ok((pool, tls))
}

/// The server process serving this statement, and the server's clock while it ran it (seconds
/// since the epoch, 0 when unknown), asked through the simple query protocol (one message, one
/// transaction: what a pooler may route anywhere). Any later session that gets the same pid
/// starts after that instant, so the pair tells this session from it, and portcullis can end its
/// own lost session safely (see `db::END_OWN_SESSION`). The clock costs the server nothing
/// measurable; asking for the session's own `backend_start` (through `pg_stat_get_activity`)
/// cost 0.5-0.7 ms of server CPU per connection.
async fn backend_identity(client: &tokio_postgres::Client) -> (i32, f64) {
    let rows = client
        .simple_query("select pg_backend_pid(), extract(epoch from clock_timestamp())::float8")
        .await
        .unwrap_or_default();
    (first_row(&rows, 0), first_row(&rows, 1))
}

/// The server process serving this statement, asked as [`backend_identity`] asks.
async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    let rows = client
        .simple_query("select pg_backend_pid()")
        .await
        .unwrap_or_default();
    first_row(&rows, 0)
}

/// Column `i` of the first row, parsed (the type's default when there is none).
fn first_row<T: std::str::FromStr + Default>(
    rows: &[tokio_postgres::SimpleQueryMessage],
    i: usize,
) -> T {
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(i).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The server process serving the second statement of a session and, in the same statement
/// and only when it is the one that served the first (`first`, so not behind a pooler, where the
/// settings would stay on a server connection other clients get), settings for how the server
/// notices that this runner is gone:
///
/// - `client_connection_check_interval`: the server (PostgreSQL 14 and later, on systems that
///   can tell, Linux among them) checks every second, while it runs a statement of this
///   session, whether portcullis closed the connection, and ends the session if so. Without it,
///   a runner killed mid-statement (kill -9, OOM, a second SIGTERM) leaves its backend running
///   that statement, and any sent after it, to the end: a long CREATE INDEX keeps the migration
///   lock and its table locks for as long as it takes, and the runner's replacement waits
///   behind it. With it, the server rolls back and releases both within about a second.
/// - `tcp_keepalives_idle`, `_interval` and `_count` (30 s, 10 s, 3, as the client's own): a
///   runner whose node vanished or whose network went away closes nothing, and with the
///   operating system's defaults the server would probe its connection only after two hours of
///   silence, keeping the session's transaction, its locks and the migration lock all that
///   time. Now the server ends it about a minute after the runner is gone. (Ignored on a Unix
///   socket, which cannot lose its peer that way.)
///
/// The settings are best effort: when a server refuses them together (one built for a system
/// that cannot tell refuses the connection check), each is tried on its own, the reasons are
/// logged, and the process is asked again on its own when neither is taken.
async fn backend_pid_again(client: &tokio_postgres::Client, first: i32) -> i32 {
    let check = format!(
        "case when pg_backend_pid() = {first} and \
         current_setting('server_version_num')::int >= 140000 then \
         set_config('client_connection_check_interval', '1000', false) end"
    );
    let keepalives = format!(
        "case when pg_backend_pid() = {first} then \
         set_config('tcp_keepalives_idle', '{idle}', false) || \
         set_config('tcp_keepalives_interval', '{interval}', false) || \
         set_config('tcp_keepalives_count', '{KEEPALIVE_COUNT}', false) end",
        idle = KEEPALIVE_IDLE.as_secs(),
        interval = KEEPALIVE_INTERVAL.as_secs(),
    );
    // A server that refuses one of them (the connection check, on a system that cannot tell)
    // may still take the other: after a refusal each is tried on its own, keepalives first.
    let attempts = [
        (
            format!("{check}, {keepalives}"),
            "client_connection_check_interval and the server's TCP keepalives together; \
             trying them one by one",
        ),
        (
            keepalives,
            "the server's TCP keepalives (if this runner vanishes, the server notices only when \
             its own keepalives do)",
        ),
        (
            check,
            "client_connection_check_interval (if this runner is killed mid-statement, the \
             server finishes that statement before it notices)",
        ),
    ];
    for (settings, lost) in attempts {
        match client
            .simple_query(&format!("select pg_backend_pid(), {settings}"))
            .await
        {
            Ok(rows) => return first_row(&rows, 0),
            Err(e) => {
                let why = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string());
                tracing::debug!("could not set {lost}: {why}");
            }
        }
    }
    backend_pid(client).await
}

/// Connects, waiting up to `timeout` for the server to accept us (`0` = one attempt).
///
/// As libpq does, a refusal from pg_hba.conf (SQLSTATE 28000) that may depend on encryption gets
/// one more attempt the other way: with sslmode `prefer` (the default), the first attempt is
/// encrypted whenever the server offers TLS, and a refused one is tried again without TLS (a
/// `hostnossl` line for the user, say); with `allow`, the first attempt is plain TCP, and a
/// refused one is tried again with TLS (a `hostssl` line).
pub async fn wait_for(db: &Database, timeout: Duration) -> Result<Session, Error> {
    let started = Instant::now();
    let (refused, why) = match wait_on(db, timeout).await {
        Err(Refusal::Authorization {
            error,
            unencrypted,
            why,
        }) if db.ssl_mode == SslMode::Allow || (db.ssl_mode == SslMode::Prefer && !unencrypted) => {
            (error, why)
        }
        Err(Refusal::Authorization { error, .. } | Refusal::Other(error)) => return Err(error),
        Ok(session) => return Ok(session),
    };
    let allow = db.ssl_mode == SslMode::Allow;
    // The other attempt, how the first went and the other goes, and the sslmode that skips the
    // first.
    let (other, mode, first, then, skip) = if allow {
        (
            SslMode::Prefer,
            "allow",
            "over plain TCP",
            "with TLS",
            "require",
        )
    } else {
        (
            SslMode::Disable,
            "prefer",
            "over TLS",
            "without TLS",
            "disable",
        )
    };
    let other = Database {
        ssl_mode: other,
        ..db.clone()
    };
    tracing::info!(
        "{} refused user {:?} {first} ({why}, SQLSTATE 28000); trying once more {then}, as \
         libpq does with sslmode={mode}, since pg_hba.conf may treat the two ways differently",
        db.host_port(),
        db.user(),
    );
    match wait_on(&other, timeout.saturating_sub(started.elapsed())).await {
        Ok(session) => {
            tracing::info!(
                "connected to {} {then}: the server accepts user {:?} only that way (set \
                 sslmode={skip} to skip the first attempt)",
                db.host_port(),
                db.user(),
            );
            Ok(session)
        }
        // With allow, the refusal of the encrypted attempt explains (the server asked for TLS,
        // and that is what it refused next, a wrong password say). With prefer, the first one
        // does (the server also refused plain TCP, or never offered TLS and refused the same
        // way twice).
        Err(Refusal::Authorization { error, .. } | Refusal::Other(error)) if allow => Err(error),
        Err(_) => Err(refused),
    }
}

/// Whether pg_hba.conf's refusal (SQLSTATE 28000) says it refused an unencrypted connection:
/// "..., no encryption" since PostgreSQL 14, "..., SSL off" before.
fn refused_unencrypted(message: &str) -> bool {
    message.ends_with("no encryption") || message.ends_with("SSL off")
}

/// How [`wait_on`] failed: a refusal from pg_hba.conf (SQLSTATE 28000), which may depend on
/// whether the connection is encrypted, or anything else.
enum Refusal {
    /// Refused by pg_hba.conf; `unencrypted`: the server said it refused an unencrypted
    /// connection ([`refused_unencrypted`]).
    Authorization {
        error: Error,
        unencrypted: bool,
        /// The server's message.
        why: String,
    },
    Other(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Other(e)
    }
}

/// [`wait_for`] with `db`'s TLS settings as they are.
async fn wait_on(db: &Database, timeout: Duration) -> Result<Session, Refusal> {
    let (pool, tls) = pool(db)?;
    let target = db.host_port();
    interrupt::set_activity(format!("waiting for the database at {target}"));
    let started = Instant::now();
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(1.6)
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempt = 0u32;
    let mut last_progress = Instant::now();
    // What to do when the last attempt met a server that is up but refused us for now.
    let mut up_but_refusing: Option<&'static str>;
    // Whether an attempt found no route to the server's address (a network without IPv6,
    // trying a host that has only IPv6 addresses, say).
    let mut no_route = false;
    // Whether the last attempt found nothing listening (connection refused, or no socket file).
    let mut nothing_listens;
    // Whether the last attempt could not resolve the host's name.
    let mut unresolved;
    // Whether the last attempt reached something that answered in a way PostgreSQL does not,
    // and whether that something was asked once whether it speaks PostgreSQL's protocol.
    let mut odd_answer;
    let mut probed = false;
    loop {
        attempt += 1;
        up_but_refusing = None;
        nothing_listens = false;
        unresolved = false;
        odd_answer = false;
        let remaining = timeout.saturating_sub(started.elapsed());
        // The last attempt may overshoot the deadline by up to a second rather than be too short
        // to complete a handshake; `0` (try once) gets a full attempt.
        let per_attempt = if timeout.is_zero() {
            ATTEMPT_TIMEOUT
        } else {
            remaining.clamp(Duration::from_secs(1), ATTEMPT_TIMEOUT)
        };
        let tried = tokio::time::timeout(per_attempt, pool.get()).await;
        let reason = match tried {
            Ok(Ok(client)) => {
                // Behind a transaction-mode pooler (PgBouncer, Supavisor on 6543) consecutive
                // transactions may be served by different server sessions, and a session
                // advisory lock then protects nothing. Two autocommit statements that land on
                // different backends prove it. A peer that accepted the connection but stopped
                // answering (a hung proxy) counts as a failed attempt, not a hang.
                let pids = tokio::time::timeout(per_attempt, async {
                    let (pid, alive_at) = backend_identity(&client).await;
                    (pid, alive_at, backend_pid_again(&client, pid).await)
                })
                .await;
                match pids {
                    Err(_) => {
                        // Out of the pool for good: the next attempt opens a new connection.
                        drop(deadpool_postgres::Object::take(client));
                        "the server accepted the connection but did not answer".to_string()
                    }
                    Ok((pid, alive_at, again)) => {
                        if pid != again {
                            return Err(Refusal::Other(Error::Refused(format!(
                                "{} is behind a transaction-mode connection pooler: two \
                                 consecutive statements were served by different PostgreSQL \
                                 sessions (pids {pid} and {again}), so the migration lock cannot \
                                 work. Point portcullis at the database directly \
                                 (PORTCULLIS_DATABASE_URL with the direct host and port, e.g. \
                                 5432 instead of a pooler's 6543).",
                                db.target()
                            ))));
                        }
                        tracing::debug!(attempt, pid, "connected to {target}");
                        if attempt > 1 {
                            tracing::info!(
                                "{target} accepts connections (after {} attempts, {:.1}s)",
                                attempt,
                                started.elapsed().as_secs_f64()
                            );
                        }
                        interrupt::register(client.cancel_token(), tls);
                        return Ok(Session::new(client, pid, alive_at, db.clone()));
                    }
                }
            }
            Ok(Err(PoolError::Backend(e))) => match classify(&e, db) {
                Attempt::Transient(why) => {
                    up_but_refusing = e
                        .as_db_error()
                        .and_then(|d| up_but_refusing_advice(d.code().code()));
                    let kind = io_error(&e).map(std::io::Error::kind);
                    no_route |= matches!(
                        kind,
                        Some(
                            std::io::ErrorKind::NetworkUnreachable
                                | std::io::ErrorKind::HostUnreachable
                        )
                    );
                    nothing_listens = matches!(
                        kind,
                        Some(std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound)
                    );
                    unresolved = name_not_resolved(&e);
                    odd_answer =
                        e.as_db_error().is_none() && !nothing_listens && !no_route && !unresolved;
                    why
                }
                Attempt::Permanent(why) => {
                    // Not an error PostgreSQL sent (a TLS failure): what answered may not be
                    // PostgreSQL at all, which would make the TLS advice mislead.
                    if e.as_db_error().is_none()
                        && let Some(not) = not_postgres(db).await
                    {
                        return Err(Refusal::Other(not));
                    }
                    let refused = Error::Refused(format!(
                        "the database at {} refused the connection as user {:?}: {why}. Waiting \
                         will not help, so portcullis stops now.",
                        db.target(),
                        db.user()
                    ));
                    // pg_hba.conf refused this connection. (Whether it said it refused an
                    // unencrypted one, in English, decides whether `prefer` tries plain TCP.)
                    return Err(match e.as_db_error() {
                        Some(d)
                            if d.code()
                                == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
                        {
                            Refusal::Authorization {
                                error: refused,
                                unencrypted: refused_unencrypted(d.message()),
                                why: d.message().to_string(),
                            }
                        }
                        _ => Refusal::Other(refused),
                    });
                }
            },
            Ok(Err(other)) => other.to_string(),
            // Silence is not asked about: a stalled network or proxy would stall the question
            // too, and add its wait to the deadline.
            Err(_) => "timed out".to_string(),
        };
        if odd_answer && !probed {
            probed = true;
            if let Some(not) = not_postgres(db).await {
                return Err(Refusal::Other(not));
            }
        }
        let elapsed = started.elapsed();
        tracing::debug!(
            attempt,
            elapsed_ms = elapsed.as_millis() as u64,
            "connecting to {target} failed: {reason}"
        );
        if elapsed >= timeout {
            let advice = match up_but_refusing {
                Some(advice) => Some(advice.to_string()),
                None if no_route => only_ipv6(db).await,
                None if nothing_listens => nothing_listens_locally(db),
                None if unresolved => Some(name_advice(db)),
                None => None,
            };
            return Err(unreachable(db, timeout, attempt, &reason, advice).into());
        }
        if last_progress.elapsed() >= PROGRESS_EVERY || attempt == 1 {
            last_progress = Instant::now();
            tracing::info!(
                "waiting for {target}: {reason} (attempt {attempt}, {:.1}s of {})",
                elapsed.as_secs_f64(),
                format_duration(timeout)
            );
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(1));
        interrupt::sleep(delay.min(timeout.saturating_sub(started.elapsed()))).await?;
    }
}

/// The deadline message. `up_but_refusing`: what to do when the last attempt reached a server
/// that refused us for now (full, starting up), where checking the network would mislead.
fn unreachable(
    db: &Database,
    timeout: Duration,
    attempt: u32,
    reason: &str,
    up_but_refusing: Option<String>,
) -> Error {
    Error::Unreachable(format!(
        "the database at {} did not accept connections within {} ({attempt} attempt{}, last \
         error: {reason}). {}",
        db.target(),
        format_duration(timeout),
        if attempt == 1 { "" } else { "s" },
        up_but_refusing.as_deref().unwrap_or(
            "Check that it is running and reachable from here (host, port, DNS, network \
             policy), or raise PORTCULLIS_WAIT_TIMEOUT; a restart may help."
        )
    ))
}

/// Asks each TCP host of `db` to start a PostgreSQL session (an SSLRequest, which every
/// PostgreSQL server and pooler answers with one byte) and returns the refusal to report when
/// one answers with a line of text instead: an HTTP or SSH server, say, on a wrong port.
/// `None` when every host answers like PostgreSQL, or not at all.
async fn not_postgres(db: &Database) -> Option<Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let wait = Duration::from_secs(2);
    for (name, port) in db.tcp_hosts() {
        let answer = tokio::time::timeout(wait, async {
            let mut stream = tokio::net::TcpStream::connect((name, port)).await?;
            stream.write_all(&SSL_REQUEST).await?;
            let mut buf = [0u8; 128];
            let n = stream.read(&mut buf).await?;
            Ok::<_, std::io::Error>(buf[..n].to_vec())
        })
        .await;
        if let Ok(Ok(answer)) = answer
            && let Some(line) = text_answer(&answer)
        {
            let what = if line.starts_with("HTTP/") {
                " (an HTTP server)"
            } else if line.starts_with("SSH-") {
                " (an SSH server)"
            } else {
                ""
            };
            return Some(Error::Refused(format!(
                "what answers at {} is not PostgreSQL: asked to start a PostgreSQL session, it \
                 answered `{line}`{what}. Check the host and port in {} (PostgreSQL listens on \
                 5432 unless configured otherwise; a managed database's console shows its \
                 connection string). Waiting will not help, so portcullis stops now.",
                tcp_address(name, port),
                db.source
            )));
        }
    }
    None
}

/// The first line of `answer` when it is text (4 or more printable ASCII characters), which a
/// PostgreSQL server never sends first: it answers an SSLRequest with the single byte `S` or
/// `N`, and anything else it sends starts with a type byte and a binary length.
fn text_answer(answer: &[u8]) -> Option<String> {
    let line: Vec<u8> = answer
        .iter()
        .copied()
        .take_while(|b| *b != b'\r' && *b != b'\n')
        .take(80)
        .collect();
    (line.len() >= 4 && line.iter().all(|b| (0x20..0x7f).contains(b)))
        .then(|| String::from_utf8_lossy(&line).into_owned())
}

/// Whether `e` is a failed lookup of the host's name (the resolver's answer: no such name, or
/// no answer from DNS), as Rust's standard library words it (its own text, not the server's).
fn name_not_resolved(e: &tokio_postgres::Error) -> bool {
    io_error(e).is_some_and(|io| {
        io.to_string()
            .starts_with("failed to lookup address information")
    })
}

/// After the host's name did not resolve for the whole wait.
fn name_advice(db: &Database) -> String {
    format!(
        "The host name did not resolve for the whole wait. Check its spelling in {}; in \
         Kubernetes, a Service in another namespace is <service>.<namespace> (or \
         <service>.<namespace>.svc.cluster.local), and a name that resolves on your own machine \
         may not inside the cluster; in Docker Compose, use the database's service name, on a \
         network both services share. If the resolver itself fails (\"Temporary failure in \
         name resolution\"), check the DNS of this container; raise PORTCULLIS_WAIT_TIMEOUT if \
         the name is still being created.",
        db.source
    )
}

/// The operating system's error under `e`, if one is.
fn io_error(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = err.source();
    }
    None
}

/// After nothing accepted connections for the whole wait: when every host is this machine's
/// own (a loopback address, `localhost`, a Unix socket), the usual causes are a proxy in the
/// same pod that starts after portcullis, or `localhost` inside a container.
fn nothing_listens_locally(db: &Database) -> Option<String> {
    use tokio_postgres::config::Host;
    let local = db.hosts().all(|(h, _)| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    local.then(|| {
        format!(
            "Nothing accepted connections at {} on this machine itself for the whole wait. If \
             the database is reached through a proxy in the same pod or container network \
             (Cloud SQL Auth Proxy, a PgBouncer sidecar), it must start first: in Kubernetes, \
             init containers run before the pod's other containers, so run the proxy as a \
             native sidecar (an init container with restartPolicy: Always, listed before \
             portcullis; Kubernetes 1.29 and later); in Docker Compose, list it in depends_on. \
             Otherwise fix the host in {} (inside a container, localhost is the container \
             itself: use the database's service or host name), or raise \
             PORTCULLIS_WAIT_TIMEOUT.",
            db.host_port(),
            db.source
        )
    })
}

/// After "no route": the advice for a host that has only IPv6 addresses, which a network
/// without IPv6 cannot reach (Supabase's direct host, from GitHub Actions, Render or many
/// Docker and Kubernetes networks). `None` when every host has an IPv4 address too, or its
/// name does not resolve now.
async fn only_ipv6(db: &Database) -> Option<String> {
    for (name, port) in db.tcp_hosts() {
        let addresses: Vec<std::net::IpAddr> = match name.parse() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host((name, port)),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|found| found.map(|a| a.ip()).collect())
            .unwrap_or_default(),
        };
        if let Some(advice) = ipv6_only_advice(name, &addresses) {
            return Some(advice);
        }
    }
    None
}

/// The advice for `host`, whose `addresses` are all IPv6 (else `None`).
fn ipv6_only_advice(host: &str, addresses: &[std::net::IpAddr]) -> Option<String> {
    if addresses.is_empty() || !addresses.iter().all(std::net::IpAddr::is_ipv6) {
        return None;
    }
    let listed: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let has = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("{host} is an IPv6 address")
    } else {
        format!("{host} has only IPv6 addresses ({})", listed.join(", "))
    };
    Some(format!(
        "{has}, and this machine had no route to it: its network has no IPv6, as on GitHub \
         Actions runners and in many Docker, Kubernetes and hosting networks. Connect through an \
         address it can reach over IPv4: for Supabase, whose direct host db.<project>.supabase.co \
         has only IPv6 addresses, the session pooler's connection string (Supavisor in session \
         mode, port 5432 on <region>.pooler.supabase.com; not transaction mode on port 6543, \
         where the migration lock cannot work). Or give this network IPv6."
    ))
}

/// What to do when the server answered but kept refusing a connection for a reason that may
/// pass, by SQLSTATE; `None` for the rest (refused, reset, timed out: the network's advice).
fn up_but_refusing_advice(sqlstate: &str) -> Option<&'static str> {
    match sqlstate {
        "53300" => Some(
            "The server is up, but had no connection slot for this user for the whole wait: \
             max_connections (less the reserved slots), or the role's or database's CONNECTION \
             LIMIT, was reached. See who holds them (SELECT usename, application_name, state, \
             count(*) FROM pg_stat_activity GROUP BY 1, 2, 3 ORDER BY 4 DESC): often app pools \
             whose sizes add up, across replicas, to more than the limit, or idle sessions. End \
             or shrink those, or raise the limit, or raise PORTCULLIS_WAIT_TIMEOUT; a restart \
             may help.",
        ),
        "57P03" => Some(
            "The server is up, but was not accepting connections yet for the whole wait: it is \
             starting up or recovering (after a crash, replaying the WAL can take minutes), or \
             it is a standby with hot_standby off. Raise PORTCULLIS_WAIT_TIMEOUT to wait \
             longer, check the server's log for its progress, or point PORTCULLIS_DATABASE_URL \
             at the primary; a restart may help.",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_in_text_is_not_postgresql() {
        assert_eq!(
            text_answer(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n").as_deref(),
            Some("HTTP/1.1 400 Bad Request")
        );
        assert_eq!(
            text_answer(b"SSH-2.0-OpenSSH_9.2p1\r\n").as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1")
        );
        // What PostgreSQL answers: one byte, or a message with a binary length.
        assert_eq!(text_answer(b"S"), None);
        assert_eq!(text_answer(b"N"), None);
        assert_eq!(text_answer(b"E\0\0\0\x5aSFATAL\0"), None);
        assert_eq!(text_answer(b""), None);
    }

    #[test]
    fn a_host_with_only_ipv6_addresses_gets_the_advice_for_a_network_without_ipv6() {
        let v6: std::net::IpAddr = "2600:1f18:2e13::58b2".parse().unwrap();
        let v4: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let advice = ipv6_only_advice("db.abc.supabase.co", &[v6]).unwrap();
        assert!(
            advice.starts_with(
                "db.abc.supabase.co has only IPv6 addresses (2600:1f18:2e13::58b2), and this \
                 machine had no route to it"
            ),
            "{advice}"
        );
        assert!(advice.contains("session pooler"), "{advice}");
        let literal = ipv6_only_advice("2001:db8::1", &["2001:db8::1".parse().unwrap()]).unwrap();
        assert!(
            literal.starts_with("2001:db8::1 is an IPv6 address, and"),
            "{literal}"
        );
        // A host with an IPv4 address too, or none: no such advice.
        assert_eq!(ipv6_only_advice("db", &[v6, v4]), None);
        assert_eq!(ipv6_only_advice("db", &[v4]), None);
        assert_eq!(ipv6_only_advice("db", &[]), None);
    }

    #[test]
    fn a_refusal_of_an_unencrypted_connection_is_told_in_both_wordings() {
        // PostgreSQL 14 and later.
        assert!(refused_unencrypted(
            "no pg_hba.conf entry for host \"10.0.0.7\", user \"app\", database \"app\", no encryption"
        ));
        // PostgreSQL 13 and earlier, from a `reject` line or no line at all.
        assert!(refused_unencrypted(
            "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"app\", database \"app\", SSL off"
        ));
        assert!(!refused_unencrypted(
            "no pg_hba.conf entry for host \"10.0.0.7\", user \"app\", database \"app\", SSL encryption"
        ));
        assert!(!refused_unencrypted(
            "no pg_hba.conf entry for host \"10.0.0.7\", user \"app\", database \"app\", SSL on"
        ));
    }

    #[test]
    fn a_wait_that_ends_on_a_server_that_is_up_does_not_blame_the_network() {
        let db = Database {
            source: "PORTCULLIS_DATABASE_URL",
            pg: "postgres://app@db.internal:5432/app".parse().unwrap(),
            ssl_mode: SslMode::Disable,
            root_certs: None,
            client_cert: None,
        };
        let message = |sqlstate: &str, why: &str| {
            unreachable(
                &db,
                Duration::from_secs(30),
                12,
                why,
                up_but_refusing_advice(sqlstate).map(str::to_string),
            )
            .to_string()
        };
        let starting = message("57P03", "the database system is starting up (57P03)");
        assert!(starting.contains("starting up or recovering"), "{starting}");
        assert!(starting.contains("hot_standby off"), "{starting}");
        let full = message("53300", "sorry, too many clients already (53300)");
        assert!(full.contains("no connection slot"), "{full}");
        for text in [&starting, &full] {
            assert!(text.contains("within 30s (12 attempts"), "{text}");
            assert!(!text.contains("DNS"), "{text}");
        }
        let refused = message("08006", "connection refused");
        assert!(
            refused.contains("host, port, DNS, network policy"),
            "{refused}"
        );
    }
}
