//! Configuration: the environment (and flags, given as overrides of the same variables) turned
//! into one typed [`Config`], rejected at once with the variable's name when anything is off.
//!
//! This is the only module that reads the environment. Tests call [`Config::from_vars`] with a
//! list of pairs and never touch the process environment. The database password lives only inside
//! [`tokio_postgres::Config`], whose `Debug` redacts it; nothing here formats the raw URL.

use crate::error::Error;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::Host;

/// Every `PORTCULLIS_*` variable this version understands (without the prefix). Anything else
/// with the prefix is a configuration error: a typo must not fall back to a default silently.
pub const KNOWN_PORTCULLIS_VARS: &[&str] = &[
    "DATABASE_URL",
    "MIGRATIONS_DIR",
    "SEEDS_DIR",
    "SEEDS",
    "SEED_ENV",
    "SEED_MODE",
    "MIGRATIONS_SCHEMA",
    "MIGRATIONS_TABLE",
    "WAIT_TIMEOUT",
    "LOCK_WAIT_TIMEOUT",
    "OUT_OF_ORDER",
    "TRANSACTION",
    "DDL_LOCK_TIMEOUT",
    "DDL_LOCK_RETRIES",
    "STATEMENT_TIMEOUT",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "TERMINATION_LOG",
];

/// What to do with a migration older than the newest applied one that was never applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutOfOrder {
    /// Refuse with exit 4 and name each one (the default).
    Error,
    /// Apply them, in journal order, together with the normal pending ones.
    Apply,
    /// Skip them with a warning: drizzle-kit 0.x's silent behaviour.
    Skip,
}

/// Which seed files a run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedMode {
    /// Every file on every run (the scripts must be idempotent), the default.
    Always,
    /// Only files that are new or whose hash differs from the recorded one.
    Changed,
}

/// How pending migrations are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionMode {
    /// All pending migrations in one transaction, as drizzle does.
    All,
    /// One transaction per migration.
    Each,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    /// libpq tries plaintext first; we treat it like `prefer` (TLS first, plaintext fallback).
    Allow,
    Prefer,
    /// Encrypt, without verifying the certificate (libpq's meaning when no root cert is given;
    /// with one, libpq and portcullis verify the chain as for `verify-ca`).
    Require,
    /// Encrypt and verify the chain against the root certificate(s), not the host name.
    VerifyCa,
    /// Encrypt, verify the chain and that the certificate names the host.
    VerifyFull,
}

/// Where trusted root certificates come from (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// A PEM file.
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`).
    System,
}

/// The typed configuration of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: Database,
    pub migrations_dir: PathBuf,
    /// Seeds (PORTCULLIS_SEEDS_DIR, _SEEDS, _SEED_ENV, _SEED_MODE, _SEED_VAR_*).
    pub seeds: Seeds,
    pub migrations_schema: String,
    pub migrations_table: String,
    pub wait_timeout: Duration,
    pub lock_wait_timeout: Duration,
    pub out_of_order: OutOfOrder,
    pub transaction: TransactionMode,
    pub ddl_lock_timeout: Duration,
    pub ddl_lock_retries: u32,
    pub statement_timeout: Duration,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
}

/// Where and how to connect. `Debug` never shows the password (tokio-postgres redacts it).
#[derive(Clone)]
pub struct Database {
    /// Where the connection settings came from (`DATABASE_URL`, `DATABASE_URL_FILE`,
    /// `PORTCULLIS_DATABASE_URL` or `the PG* variables`), for messages that say what to fix.
    pub source: &'static str,
    pub pg: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_certs: Option<RootCerts>,
    /// Client certificate and key (PEM files), presented when the server asks.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("target", &self.target())
            .field("ssl_mode", &self.ssl_mode)
            .field("root_certs", &self.root_certs)
            .field("client_cert", &self.client_cert)
            .field("password", &self.pg.get_password().map(|_| "<redacted>"))
            .finish()
    }
}

/// `name:port`, an IPv6 address in brackets as in a URL (`[2001:db8::1]:5432`), so that the
/// port stands apart.
pub fn tcp_address(name: &str, port: u16) -> String {
    if name.contains(':') {
        format!("[{name}]:{port}")
    } else {
        format!("{name}:{port}")
    }
}

impl Database {
    /// `host:port/dbname`, for messages. Never contains the password.
    pub fn target(&self) -> String {
        format!(
            "{}/{}",
            self.host_port(),
            self.pg.get_dbname().unwrap_or("?")
        )
    }

    /// `host:port` (several joined with `,`), for "waiting for ..." lines.
    pub fn host_port(&self) -> String {
        self.hosts()
            .map(|(h, port)| match h {
                Host::Tcp(name) => tcp_address(name, port),
                Host::Unix(path) => format!("{}/.s.PGSQL.{port}", path.display()),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Each host with its port (a single port applies to every host, as in libpq).
    pub fn hosts(&self) -> impl Iterator<Item = (&Host, u16)> {
        let ports = self.pg.get_ports();
        self.pg.get_hosts().iter().enumerate().map(move |(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            (h, port)
        })
    }

    /// The TCP hosts with their ports (Unix sockets left out).
    pub fn tcp_hosts(&self) -> impl Iterator<Item = (&str, u16)> {
        self.hosts().filter_map(|(h, port)| match h {
            Host::Tcp(name) => Some((name.as_str(), port)),
            Host::Unix(_) => None,
        })
    }

    pub fn user(&self) -> &str {
        self.pg.get_user().unwrap_or("?")
    }
}

/// The `PORTCULLIS_*` variables, as envy reads them (values still text: each is converted below
/// so that a bad value is reported with its variable's name).
#[derive(Debug, Default, Deserialize)]
struct RawPortcullis {
    database_url: Option<String>,
    migrations_dir: Option<String>,
    seeds_dir: Option<String>,
    seeds: Option<String>,
    seed_env: Option<String>,
    seed_mode: Option<String>,
    migrations_schema: Option<String>,
    migrations_table: Option<String>,
    wait_timeout: Option<String>,
    lock_wait_timeout: Option<String>,
    out_of_order: Option<String>,
    transaction: Option<String>,
    ddl_lock_timeout: Option<String>,
    ddl_lock_retries: Option<String>,
    statement_timeout: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    // Read by `termination_log_path` (main needs it even when the configuration is invalid).
    #[allow(dead_code)]
    termination_log: Option<String>,
}

/// The unprefixed variables: the URL, its file, libpq's `PG*` and the host name.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    database_url: Option<String>,
    database_url_file: Option<String>,
    pghost: Option<String>,
    pgport: Option<String>,
    pguser: Option<String>,
    pgpassword: Option<String>,
    pgdatabase: Option<String>,
    pgsslmode: Option<String>,
    pgsslrootcert: Option<String>,
    pgsslcert: Option<String>,
    pgsslkey: Option<String>,
    pgappname: Option<String>,
    hostname: Option<String>,
    home: Option<String>,
}

impl Config {
    /// Reads the process environment (plus the kernel's host name when `HOSTNAME` is unset).
    /// `overrides` are flag values given as the variables they override.
    pub fn from_env(overrides: &[(String, String)]) -> Result<Config, Error> {
        let mut vars: Vec<(String, String)> = Vec::new();
        let mut not_utf8 = Vec::new();
        for (k, v) in std::env::vars_os() {
            match (k.into_string(), v.into_string()) {
                (Ok(k), Ok(v)) => vars.push((k, v)),
                // A setting we read must never be skipped silently (that would fall back to a
                // default, e.g. ./migrations); other variables are none of our business.
                (Ok(k), Err(_))
                    if k.starts_with("PORTCULLIS_")
                        || k.starts_with("DATABASE_URL")
                        || k.starts_with("PG") =>
                {
                    not_utf8.push(k)
                }
                _ => {}
            }
        }
        if !not_utf8.is_empty() {
            not_utf8.sort();
            return Err(Error::Config(format!(
                "{} contain(s) bytes that are not valid UTF-8; portcullis reads only UTF-8 \
                 settings and will not ignore one silently. Fix the value (paths included), or \
                 unset the variable.",
                not_utf8.join(", ")
            )));
        }
        if !vars.iter().any(|(k, _)| k == "HOSTNAME")
            && let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        {
            vars.push(("HOSTNAME".into(), name.trim().to_string()));
        }
        vars.extend(overrides.iter().cloned());
        Config::from_vars(vars)
    }

    /// Builds the configuration from `(name, value)` pairs; a later pair wins over an earlier
    /// one of the same name (so flags appended after the environment override it).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        // Last value wins, empty means unset (templated manifests often leave a variable empty).
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in vars {
            let (k, v) = (k.into(), v.into());
            if v.is_empty() {
                map.remove(&k);
            } else {
                map.insert(k, v);
            }
        }
        reject_unknown(&map)?;

        let p: RawPortcullis = envy::prefixed("PORTCULLIS_")
            .from_iter(map.iter().map(|(k, v)| (k.clone(), v.clone())))
            .map_err(|e| Error::Config(format!("cannot read PORTCULLIS_* variables: {e}")))?;
        let env: RawEnv = envy::from_iter(map.iter().map(|(k, v)| (k.clone(), v.clone())))
            .map_err(|e| Error::Config(format!("cannot read the environment: {e}")))?;

        let seeds = seeds_config(&p, &map)?;
        let database = database_config(&p, &env)?;
        let migrations_schema = identifier(
            "PORTCULLIS_MIGRATIONS_SCHEMA",
            p.migrations_schema.as_deref(),
            "drizzle",
        )?;
        let migrations_table = identifier(
            "PORTCULLIS_MIGRATIONS_TABLE",
            p.migrations_table.as_deref(),
            "__drizzle_migrations",
        )?;

        Ok(Config {
            database,
            migrations_dir: PathBuf::from(p.migrations_dir.as_deref().unwrap_or("./migrations")),
            seeds,
            migrations_schema,
            migrations_table,
            wait_timeout: duration_var("PORTCULLIS_WAIT_TIMEOUT", &p.wait_timeout, "60s")?,
            lock_wait_timeout: duration_var(
                "PORTCULLIS_LOCK_WAIT_TIMEOUT",
                &p.lock_wait_timeout,
                "10m",
            )?,
            out_of_order: choice(
                "PORTCULLIS_OUT_OF_ORDER",
                &p.out_of_order,
                OutOfOrder::Error,
                "error, apply, skip",
            )?,
            transaction: choice(
                "PORTCULLIS_TRANSACTION",
                &p.transaction,
                TransactionMode::All,
                "all, each",
            )?,
            ddl_lock_timeout: duration_var(
                "PORTCULLIS_DDL_LOCK_TIMEOUT",
                &p.ddl_lock_timeout,
                "5s",
            )?,
            ddl_lock_retries: match &p.ddl_lock_retries {
                None => 10,
                Some(v) => v.trim().parse::<u32>().map_err(|_| {
                    Error::Config(format!(
                        "PORTCULLIS_DDL_LOCK_RETRIES={v:?} is not a whole number of retries \
                         (e.g. 10, or 0 for none)."
                    ))
                })?,
            },
            statement_timeout: duration_var(
                "PORTCULLIS_STATEMENT_TIMEOUT",
                &p.statement_timeout,
                "0",
            )?,
            log_format: choice(
                "PORTCULLIS_LOG_FORMAT",
                &p.log_format,
                LogFormat::Text,
                "text, json",
            )?,
            log_level: choice(
                "PORTCULLIS_LOG_LEVEL",
                &p.log_level,
                LogLevel::Info,
                "error, warn, info, debug, trace",
            )?,
        })
    }
}

/// Reads only the logging variables, leniently, so that logging can be set up before the full
/// configuration is validated (and a configuration error can itself be logged as JSON).
pub fn logging_from_env() -> (LogFormat, LogLevel) {
    let get = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let format = match get("PORTCULLIS_LOG_FORMAT").as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let level = match get("PORTCULLIS_LOG_LEVEL").as_deref() {
        Some("error") => LogLevel::Error,
        Some("warn") => LogLevel::Warn,
        Some("debug") => LogLevel::Debug,
        Some("trace") => LogLevel::Trace,
        _ => LogLevel::Info,
    };
    (format, level)
}

/// Where to write the one-line failure reason Kubernetes shows in `kubectl describe pod`, and
/// whether it was named explicitly: `PORTCULLIS_TERMINATION_LOG` (created if missing), else
/// `/dev/termination-log` (written only when it exists). Read leniently, because a configuration
/// error must be reported there too.
pub fn termination_log_path() -> (std::path::PathBuf, bool) {
    match std::env::var_os("PORTCULLIS_TERMINATION_LOG").filter(|v| !v.is_empty()) {
        Some(p) => (std::path::PathBuf::from(p), true),
        None => (std::path::PathBuf::from("/dev/termination-log"), false),
    }
}

/// Whether `PORTCULLIS_<rest>` is one of the variables Kubernetes injects for a Service named
/// `portcullis` (`PORTCULLIS_SERVICE_HOST`, `PORTCULLIS_PORT_5432_TCP`, ...). They are not ours
/// and not typos, so they are not refused.
fn kubernetes_service_link(rest: &str) -> bool {
    rest == "PORT"
        || rest.starts_with("PORT_")
        || rest == "SERVICE_HOST"
        || rest == "SERVICE_PORT"
        || rest.starts_with("SERVICE_PORT_")
}

fn reject_unknown(map: &BTreeMap<String, String>) -> Result<(), Error> {
    let unknown: Vec<&str> = map
        .keys()
        .filter_map(|k| k.strip_prefix("PORTCULLIS_"))
        .filter(|rest| !KNOWN_PORTCULLIS_VARS.contains(rest))
        .filter(|rest| !rest.starts_with(SEED_VAR_PREFIX))
        .filter(|rest| !kubernetes_service_link(rest))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = unknown
        .iter()
        .map(|rest| match closest_known(rest) {
            Some(known) => format!("PORTCULLIS_{rest} (did you mean PORTCULLIS_{known}?)"),
            None => format!("PORTCULLIS_{rest}"),
        })
        .collect();
    Err(Error::Config(format!(
        "unknown configuration variable{}: {}. portcullis refuses unknown PORTCULLIS_* names so \
         that a typo never falls back to a default; fix or remove {}. Known names: {}.",
        if unknown.len() > 1 { "s" } else { "" },
        described.join(", "),
        if unknown.len() > 1 { "them" } else { "it" },
        KNOWN_PORTCULLIS_VARS
            .iter()
            .map(|k| format!("PORTCULLIS_{k}"))
            .chain([format!("PORTCULLIS_{SEED_VAR_PREFIX}<NAME>")])
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The known name within edit distance 3 of `name`, if any (for "did you mean").
fn closest_known(name: &str) -> Option<&'static str> {
    KNOWN_PORTCULLIS_VARS
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn choice<T: for<'de> Deserialize<'de>>(
    name: &str,
    value: &Option<String>,
    default: T,
    allowed: &str,
) -> Result<T, Error> {
    let Some(raw) = value else {
        return Ok(default);
    };
    let lowered = raw.trim().to_ascii_lowercase();
    serde_json::from_value(serde_json::Value::String(lowered)).map_err(|_| {
        Error::Config(format!(
            "{name}={raw:?} is not one of the accepted values: {allowed}."
        ))
    })
}

fn identifier(name: &str, value: Option<&str>, default: &str) -> Result<String, Error> {
    let v = value.unwrap_or(default);
    if v.contains('\0') {
        return Err(Error::Config(format!(
            "{name} contains a NUL character, which PostgreSQL identifiers cannot hold."
        )));
    }
    if v.len() > 63 {
        return Err(Error::Config(format!(
            "{name}={v:?} is {} bytes long; PostgreSQL truncates identifiers to 63 bytes, so \
             drizzle and portcullis would disagree on the name. Use a shorter name.",
            v.len()
        )));
    }
    Ok(v.to_string())
}

fn duration_var(name: &str, value: &Option<String>, default: &str) -> Result<Duration, Error> {
    let raw = value.as_deref().unwrap_or(default);
    parse_duration(raw).map_err(|why| Error::Config(format!("{name}={raw:?}: {why}")))
}

/// Parses `500ms`, `30s`, `10m`, `1h`, `1m30s`, and `0`. A bare number other than 0 is refused:
/// `30` could mean seconds or milliseconds, and guessing wrong silently is worse than asking.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; write it like 500ms, 30s, 10m or 1h".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "expected a number at {rest:?}; write durations like 500ms, 30s, 10m or 1h"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| "number too large".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "" => {
                return Err(format!(
                    "{number} has no unit; write it like {number}s or {number}ms"
                ));
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?}; use ms, s, m or h (e.g. 30s, 10m)"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Formats a duration the way it is written in configuration (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return if ms < 1000 {
            format!("{ms}ms")
        } else {
            format!("{:.1}s", d.as_secs_f64())
        };
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Which variable supplied the connection string, for error messages.
fn url_source(p: &RawPortcullis, env: &RawEnv) -> Result<Option<(String, &'static str)>, Error> {
    if let Some(url) = &p.database_url {
        return Ok(Some((url.clone(), "PORTCULLIS_DATABASE_URL")));
    }
    match (&env.database_url, &env.database_url_file) {
        (Some(_), Some(_)) => Err(Error::Config(
            "both DATABASE_URL and DATABASE_URL_FILE are set; they are exclusive. Keep the one \
             you mean (DATABASE_URL_FILE for a mounted secret) and unset the other, or set \
             PORTCULLIS_DATABASE_URL, which takes precedence over both."
                .into(),
        )),
        (Some(url), None) => Ok(Some((url.clone(), "DATABASE_URL"))),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::Config(format!(
                    "{}: cannot read the file ({e}). Check that the secret is mounted at that \
                     path and readable by this user.",
                    named_path("DATABASE_URL_FILE", file)
                ))
            })?;
            let url = text.trim().to_string();
            if url.is_empty() {
                return Err(Error::Config(format!(
                    "DATABASE_URL_FILE={file}: the file is empty; it should hold one connection \
                     string such as postgres://user:password@host:5432/dbname."
                )));
            }
            Ok(Some((url, "DATABASE_URL_FILE")))
        }
        (None, None) => Ok(None),
    }
}

fn parse_ssl_mode(source: &str, raw: &str) -> Result<SslMode, Error> {
    match raw {
        "disable" => Ok(SslMode::Disable),
        "allow" => Ok(SslMode::Allow),
        "prefer" => Ok(SslMode::Prefer),
        "require" => Ok(SslMode::Require),
        "verify-ca" => Ok(SslMode::VerifyCa),
        "verify-full" => Ok(SslMode::VerifyFull),
        "no-verify" => Err(Error::Config(format!(
            "{source}: sslmode=\"no-verify\" is node-postgres's, not PostgreSQL's; its \
             equivalent is sslmode=require (encrypted, the certificate not checked), or \
             sslmode=verify-full to check it too."
        ))),
        other => Err(Error::Config(format!(
            "{source}: sslmode={other:?} is not one of disable, allow, prefer, require, \
             verify-ca, verify-full."
        ))),
    }
}

/// libpq's TLS parameters taken out of a URL's query string (tokio-postgres knows only some).
#[derive(Debug, Default)]
struct TlsParams {
    mode: Option<String>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Takes the libpq TLS parameters out of a `postgres://` URL's query string and returns the URL
/// without them, plus their (percent-decoded) values.
fn take_tls_params(url: &str) -> (String, TlsParams) {
    let mut p = TlsParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), p);
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => p.mode = Some(percent_decode(v)),
            Some(("sslrootcert", v)) => p.rootcert = Some(percent_decode(v)),
            Some(("sslcert", v)) => p.cert = Some(percent_decode(v)),
            Some(("sslkey", v)) => p.key = Some(percent_decode(v)),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rebuilt, p)
}

/// Takes the libpq TLS parameters out of a libpq `keyword=value` connection string (`host=db
/// user=app sslmode=verify-full ...`) and returns the string without them, plus their values.
/// Left in, tokio-postgres would read `sslmode` its own way (refusing verify-ca and verify-full)
/// and the mode resolved here would then override the one the string asked for. Follows
/// libpq's syntax: pairs separated by whitespace, optional whitespace around `=`, a value
/// either single-quoted or ending at whitespace, `\` escaping the next character. A string it
/// cannot read is returned whole, for tokio-postgres to report.
fn take_tls_params_kv(s: &str) -> (String, TlsParams) {
    let whole = || (s.to_string(), TlsParams::default());
    let mut p = TlsParams::default();
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let pair_start = rest;
        let Some(eq) = rest.find('=') else {
            return whole();
        };
        let key = rest[..eq].trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return whole();
        }
        rest = rest[eq + 1..].trim_start();
        let Some((value, len)) = kv_value(rest) else {
            return whole();
        };
        rest = &rest[len..];
        let pair = &pair_start[..pair_start.len() - rest.len()];
        match key {
            "sslmode" => p.mode = Some(value),
            "sslrootcert" => p.rootcert = Some(value),
            "sslcert" => p.cert = Some(value),
            "sslkey" => p.key = Some(value),
            _ => kept.push(pair),
        }
        rest = rest.trim_start();
    }
    (kept.join(" "), p)
}

/// Why tokio-postgres could not read a connection string: its cause (`unknown option `x``,
/// `invalid value for option `port``, ...), which it leaves out of its own message. Nothing of
/// the string's values is repeated: the cause that quotes a character of it (`... but got
/// `c``) is cut before that, and an unknown option's name is left out where it may be the
/// rest of a password: one with a space in a keyword/value string, or one with an unencoded
/// '&' in a URL's `password=` parameter.
fn parse_failure(e: &tokio_postgres::Error, url: &str, is_url: bool) -> String {
    use std::error::Error as _;
    let Some(cause) = e.source().map(|c| c.to_string()) else {
        return e.to_string();
    };
    if let Some(cut) = cause.find(" but got") {
        return format!("{e}: {}", &cause[..cut]);
    }
    if cause == "invalid value for option `target_session_attrs`" {
        return format!(
            "{e}: {cause}. portcullis takes target_session_attrs=any or read-write; a \
             migration needs the primary, which read-write picks (where libpq's primary would)"
        );
    }
    let password_param = url
        .split_once('?')
        .is_some_and(|(_, query)| query.contains("password="));
    if cause.starts_with("unknown option") && (!is_url || password_param) {
        return format!(
            "{e}: an unknown option, not named here since it may be part of a value; {}",
            if is_url {
                "percent-encode '&' and '=' in parameter values (%26, %3D)"
            } else {
                "put values with spaces in single quotes"
            }
        );
    }
    if let Some(hint) = cause
        .strip_prefix("unknown option `")
        .and_then(|rest| rest.split('`').next())
        .and_then(foreign_parameter)
    {
        return format!("{e}: {cause}. {hint}");
    }
    format!("{e}: {cause}")
}

/// What to do about a URL parameter that another client of the same database (the app's
/// driver, Prisma) understands and PostgreSQL's own clients do not: teams share one
/// DATABASE_URL between the app and its migrations.
fn foreign_parameter(name: &str) -> Option<String> {
    Some(match name {
        "schema" => {
            "`schema` is Prisma's parameter, not PostgreSQL's: remove it from the URL portcullis \
             gets (the tracking table's schema is PORTCULLIS_MIGRATIONS_SCHEMA; the migrations \
             name their own)"
        }
        "pgbouncer" => {
            "`pgbouncer=true` is Prisma's flag for a transaction-mode PgBouncer, where the \
             migration lock cannot work: give portcullis the database's direct URL \
             (PORTCULLIS_DATABASE_URL)"
        }
        "connection_limit" | "pool_timeout" | "socket_timeout" | "statement_cache_size" => {
            return Some(format!(
                "`{name}` is Prisma's parameter, not PostgreSQL's: remove it from the URL \
                 portcullis gets"
            ));
        }
        "ssl" => {
            "`ssl=...` is node-postgres's parameter; PostgreSQL's is sslmode: sslmode=require \
             (encrypted, the certificate not checked) or sslmode=verify-full (checked too)"
        }
        // libpq's own parameters that portcullis has no use for, or cannot honour.
        "gssencmode" => {
            "`gssencmode` is libpq's setting for GSSAPI (Kerberos) encryption, which portcullis \
             never uses: with disable or prefer it changes nothing here, so remove it; for \
             encryption use sslmode"
        }
        "sslcompression" => "`sslcompression` has done nothing since PostgreSQL 14: remove it",
        "fallback_application_name" => {
            "portcullis names its own sessions (application_name portcullis@<host name>): \
             remove `fallback_application_name`"
        }
        "sslsni" => {
            "portcullis always sends the host name in the TLS handshake, as libpq's default \
             sslsni=1 does: remove `sslsni`"
        }
        "ssl_min_protocol_version" | "ssl_max_protocol_version" => {
            return Some(format!(
                "portcullis speaks TLS 1.2 and 1.3 only (a minimum of TLSv1.2 or lower already \
                 holds): remove `{name}`"
            ));
        }
        "requiressl" => "`requiressl=1` is libpq's old spelling of sslmode=require: write that",
        "service" => {
            "portcullis does not read pg_service.conf: put the host, port, user and database in \
             the URL, and the password in it or in PGPASSWORD (or the whole URL in a file named \
             by DATABASE_URL_FILE)"
        }
        "passfile" => {
            "portcullis does not read a password file (.pgpass): put the password in the URL \
             or in PGPASSWORD, or the whole URL in a file named by DATABASE_URL_FILE (a \
             Kubernetes or Docker secret)"
        }
        "require_auth" => {
            "portcullis cannot enforce `require_auth`: remove it. It authenticates the way the \
             server asks (SCRAM, MD5 or a clear-text password), and channel_binding=require \
             insists on SCRAM with channel binding over TLS"
        }
        "sslcrl" | "sslcrldir" | "sslcertmode" | "sslpassword" | "sslkeylogfile" | "krbsrvname"
        | "gsslib" | "gssdelegation" | "requirepeer" | "replication" => {
            return Some(format!(
                "`{name}` is a libpq parameter that portcullis does not support: remove it from \
                 the URL portcullis gets"
            ));
        }
        _ => return None,
    }
    .to_string())
}

/// `text` (the command-line parser's complaint) with every argument of `args` that may hold a
/// connection string or a password replaced by a note that says so (a `--flag=value` shown as
/// `'--flag=***'`): the parser quotes an argument given in the wrong place whole, whatever its
/// syntax (a quote or a space in the password, a string split in two by the shell). Then
/// [`hide_credentials`], for what is left.
pub fn hide_secret_arguments(text: &str, args: &[String]) -> String {
    let mut out = text.to_string();
    for arg in args {
        // A space too: a keyword/value string, or part of one split by the shell.
        if !(looks_secret(arg) || arg.contains([' ', '\t'])) {
            continue;
        }
        let shown = match arg.split_once('=') {
            Some((flag, _)) if flag.starts_with("--") && !flag.contains(char::is_whitespace) => {
                format!("'{flag}=***'")
            }
            _ => "'(an argument that may hold a password, not shown)'".to_string(),
        };
        out = out.replace(&format!("'{arg}'"), &shown);
    }
    hide_credentials(&out)
}

/// `text` with the password of every `scheme://user:password@` and every `password=...` pair
/// replaced by `***`: for text that may quote a connection string given where it should not
/// be (a command-line argument the parser rejects).
pub fn hide_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path, the query, or the end of the quoted word; a password
        // with an unencoded '@' or '/' is hidden up to the last '@' before that.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`'))
            .unwrap_or(tail.len());
        let word = &tail[..end];
        match (word.find(':'), word.rfind('@')) {
            (Some(colon), Some(at)) if colon < at => {
                out.push_str(&word[..=colon]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut hidden = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("password=") {
        let (head, tail) = rest.split_at(at + "password=".len());
        hidden.push_str(head);
        hidden.push_str("***");
        // The value as libpq reads it (to the end of the text when left open): an escaped
        // quote inside does not end it.
        rest = &tail[kv_value(tail).map_or(tail.len(), |(_, len)| len)..];
    }
    hidden.push_str(rest);
    hidden
}

/// The value at the start of `rest` in libpq's keyword/value syntax (single-quoted, or up to
/// whitespace; `\` escapes the next character) and how many bytes of `rest` it takes; `None`
/// when a quote or an escape is left open.
fn kv_value(rest: &str) -> Option<(String, usize)> {
    let quoted = rest.starts_with('\'');
    let body = if quoted { &rest[1..] } else { rest };
    let opening = usize::from(quoted);
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' if quoted => return Some((value, opening + i + 1)),
            c if !quoted && c.is_whitespace() => return Some((value, i)),
            c => value.push(c),
        }
    }
    (!quoted).then_some((value, rest.len()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // On bytes: the two after a '%' may be the start of a multi-byte character.
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that a certificate or key file named by `source` can be read.
fn readable(source: &str, path: &str) -> Result<PathBuf, Error> {
    std::fs::File::open(path).map_err(|e| {
        Error::Config(format!(
            "{}: cannot read the file ({e}). Mount it into the container, or fix the path.",
            named_path(source, path)
        ))
    })?;
    Ok(PathBuf::from(path))
}

/// Whether a value that should be a path or a plain argument may hold a secret instead: a
/// connection string (`://`, `user:pass@`, `key=value`, the word password) or a PEM block.
fn looks_secret(value: &str) -> bool {
    value.contains("://")
        || value.contains(['@', '=', '\n'])
        || value.contains("-----BEGIN")
        || value.to_ascii_lowercase().contains("password")
}

/// `NAME=path` for a message about a file, unless the value looks like the secret itself,
/// pasted where its path belongs (a connection string in DATABASE_URL_FILE, a PEM key in
/// PGSSLKEY): then only the name, and why.
fn named_path(name: &str, path: &str) -> String {
    if looks_secret(path) {
        format!(
            "{name} (its value is not shown: it looks like a connection string or a key itself, \
             not the path of a file that holds one)"
        )
    } else {
        format!("{name}={path}")
    }
}

/// What the TLS settings resolve to: mode, trusted roots, client certificate and key.
type TlsSettings = (SslMode, Option<RootCerts>, Option<(PathBuf, PathBuf)>);

/// Resolves sslmode, sslrootcert, sslcert and sslkey the way libpq does.
fn tls_settings(source_name: &str, url: TlsParams, env: &RawEnv) -> Result<TlsSettings, Error> {
    let explicit_mode = match (&url.mode, &env.pgsslmode) {
        (Some(m), _) => Some(parse_ssl_mode(source_name, m)?),
        (None, Some(m)) => Some(parse_ssl_mode("PGSSLMODE", m)?),
        (None, None) => None,
    };
    let (root_source, root) = match (&url.rootcert, &env.pgsslrootcert) {
        (Some(r), _) => (format!("{source_name} sslrootcert"), Some(r.clone())),
        (None, Some(r)) => ("PGSSLROOTCERT".to_string(), Some(r.clone())),
        (None, None) => (String::new(), None),
    };
    let mut root_certs = match root.as_deref() {
        Some("system") => Some(RootCerts::System),
        Some(path) => Some(RootCerts::File(readable(&root_source, path)?)),
        // libpq's default root certificate file, used when it exists.
        None => env
            .home
            .as_ref()
            .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
            .filter(|p| p.is_file())
            .map(RootCerts::File),
    };
    let mode = match (explicit_mode, &root_certs) {
        // libpq 16: sslrootcert=system means verify-full, and refuses weaker modes.
        (None, Some(RootCerts::System)) => SslMode::VerifyFull,
        (Some(m), Some(RootCerts::System)) if m != SslMode::VerifyFull => {
            return Err(Error::Config(format!(
                "{root_source}=system asks for the operating system's certificate store, which \
                 libpq only allows with sslmode=verify-full; set sslmode=verify-full (or give a \
                 CA file instead of `system`)."
            )));
        }
        // libpq: `require` with a root certificate verifies the chain like verify-ca.
        (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
        (Some(m), _) => m,
        (None, _) => SslMode::Prefer,
    };
    if mode >= SslMode::VerifyCa && root_certs.is_none() {
        return Err(Error::Config(format!(
            "sslmode={} needs trusted root certificates to verify the server: set sslrootcert \
             (in the URL) or PGSSLROOTCERT to the CA's PEM file, or to `system` for the \
             operating system's store.",
            if mode == SslMode::VerifyCa {
                "verify-ca"
            } else {
                "verify-full"
            }
        )));
    }
    if mode < SslMode::Require {
        // Under disable/allow/prefer libpq does not verify; neither do we.
        root_certs = None;
    }
    let cert = match (&url.cert, &env.pgsslcert) {
        (Some(c), _) => Some((format!("{source_name} sslcert"), c.clone())),
        (None, Some(c)) => Some(("PGSSLCERT".to_string(), c.clone())),
        (None, None) => None,
    };
    let key = match (&url.key, &env.pgsslkey) {
        (Some(k), _) => Some((format!("{source_name} sslkey"), k.clone())),
        (None, Some(k)) => Some(("PGSSLKEY".to_string(), k.clone())),
        (None, None) => None,
    };
    let client_cert = match (cert, key) {
        (None, None) => None,
        (Some((cs, c)), Some((ks, k))) => Some((readable(&cs, &c)?, readable(&ks, &k)?)),
        (Some((cs, _)), None) | (None, Some((cs, _))) => {
            return Err(Error::Config(format!(
                "{cs} is set without its pair: a client certificate needs both sslcert and \
                 sslkey (or PGSSLCERT and PGSSLKEY)."
            )));
        }
    };
    Ok((mode, root_certs, client_cert))
}

/// Adds `:port` to every host of a URL whose authority names no port.
fn with_default_port(url: &str, port: u16) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let hosts = &authority[host_start..];
    let has_port = hosts
        .split(',')
        .any(|h| h.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')));
    if hosts.is_empty() || has_port {
        return url.to_string();
    }
    let hosts = hosts
        .split(',')
        .map(|h| format!("{h}:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{}{}{}{}",
        &url[..scheme_end],
        &authority[..host_start],
        hosts,
        &rest[end..]
    )
}

/// Refuses a URL whose first '@' comes after its host part (in the path or the parameters).
/// tokio-postgres ends the user and password at the first '@' wherever it is, so
/// `?password=p@ss` would make `ss` the host and put the start of the password in every message
/// that names the database, and a '?' inside the password would hide `sslmode` from the TLS
/// settings. libpq ends the user and password at the first '/' or '?', and does not read such
/// strings as meant either. An '@' in a parameter after a proper `user:password@` is fine: both
/// read that one. The string is not shown: it holds the password.
fn refuse_late_at(url: &str, name: &str) -> Result<(), Error> {
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if rest.find('@').is_some_and(|at| at > host_end) {
        return Err(Error::Config(format!(
            "{name} has an '@' after a '/' or '?', so it cannot be read the way libpq reads it \
             (not shown: it may hold a password). A password (or user) with '@', '/', '?' or \
             '#' must have them percent-encoded (%40, %2F, %3F, %23): \
             postgres://user:p%40ss@host:5432/dbname; in a parameter too: ?password=p%40ss."
        )));
    }
    Ok(())
}

fn database_config(p: &RawPortcullis, env: &RawEnv) -> Result<Database, Error> {
    let source = url_source(p, env)?;
    let (mut pg, url_tls, source_name) = match &source {
        Some((url, name)) => {
            let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
            if is_url {
                refuse_late_at(url, name)?;
            }
            let (mut clean, tls) = if is_url {
                take_tls_params(url)
            } else {
                take_tls_params_kv(url)
            };
            // tokio-postgres fills in 5432 for a URL without a port; libpq uses PGPORT first.
            if let (true, Some(port)) = (is_url, &env.pgport) {
                let port: u16 = port.trim().parse().map_err(|_| {
                    Error::Config(format!("PGPORT={port:?} is not a port number (1-65535)."))
                })?;
                clean = with_default_port(&clean, port);
            }
            let pg = tokio_postgres::Config::from_str(&clean).map_err(|e| {
                Error::Config(format!(
                    "{name} is not a valid PostgreSQL connection string ({}). Expected \
                     postgres://user:password@host:5432/dbname?sslmode=require; characters such \
                     as @ : / in the password must be percent-encoded.",
                    parse_failure(&e, url, is_url)
                ))
            })?;
            (pg, tls, *name)
        }
        None => (
            tokio_postgres::Config::new(),
            TlsParams::default(),
            "the PG* variables",
        ),
    };

    // libpq and tokio-postgres end the user and password at the first '@', so a password with
    // an unencoded '@' leaves the rest of it in the host name, which every message would show.
    if pg
        .get_hosts()
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if name.contains('@')))
    {
        return Err(Error::Config(format!(
            "{source_name}: the host name contains '@', which means the password (or user) \
             contains an '@' that is not percent-encoded. Write it as %40 (and ':' as %3A, '/' \
             as %2F, '?' as %3F, '#' as %23): postgres://user:p%40ss@host:5432/dbname."
        )));
    }
    if pg.get_hosts().is_empty() {
        match &env.pghost {
            Some(hosts) => {
                for h in hosts.split(',') {
                    pg.host(h.trim());
                }
            }
            None => {
                return Err(Error::Config(
                    "no database given: set DATABASE_URL (or DATABASE_URL_FILE, or \
                     PORTCULLIS_DATABASE_URL) to postgres://user:password@host:5432/dbname, or \
                     set libpq's PGHOST, PGUSER, PGPASSWORD and PGDATABASE."
                        .into(),
                ));
            }
        }
    }
    if pg.get_ports().is_empty()
        && let Some(port) = &env.pgport
    {
        let port: u16 = port.trim().parse().map_err(|_| {
            Error::Config(format!("PGPORT={port:?} is not a port number (1-65535)."))
        })?;
        pg.port(port);
    }
    if pg.get_user().is_none() {
        match &env.pguser {
            Some(u) => {
                pg.user(u);
            }
            None => {
                return Err(Error::Config(match source {
                    Some(_) => format!(
                        "no database user: {source_name} names none and PGUSER is unset. Put \
                         the user in the URL (postgres://USER:password@host/db) or set PGUSER."
                    ),
                    None => "no database user: PGUSER is unset and no connection string names \
                             one. Set PGUSER, or DATABASE_URL to \
                             postgres://USER:password@host:5432/dbname."
                        .to_string(),
                }));
            }
        }
    }
    if pg.get_password().is_none()
        && let Some(pw) = &env.pgpassword
    {
        pg.password(pw.as_bytes());
    }
    if pg.get_dbname().is_none() {
        if let Some(db) = &env.pgdatabase {
            pg.dbname(db);
        } else {
            // libpq's default: the database named like the user.
            let user = pg.get_user().unwrap_or_default().to_string();
            pg.dbname(&user);
        }
    }
    let (mut ssl_mode, root_certs, client_cert) = tls_settings(source_name, url_tls, env)?;
    // Unix-domain sockets never use TLS (libpq ignores sslmode there).
    if pg.get_hosts().iter().all(|h| matches!(h, Host::Unix(_))) {
        ssl_mode = SslMode::Disable;
    }
    if pg.get_application_name().is_none() {
        let name = match (&env.pgappname, &env.hostname) {
            (Some(app), _) => app.clone(),
            (None, Some(host)) => format!("portcullis@{host}"),
            (None, None) => "portcullis".to_string(),
        };
        // application_name is cut to 63 bytes by the server; cut on a char boundary ourselves.
        let mut end = name.len().min(63);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        pg.application_name(&name[..end]);
    }
    Ok(Database {
        source: source_name,
        pg,
        ssl_mode,
        root_certs,
        client_cert,
    })
}

/// `PORTCULLIS_SEED_VAR_<NAME>` (without `PORTCULLIS_`): each becomes the transaction-local
/// setting `portcullis.<name>` that seeds read with `current_setting`.
pub const SEED_VAR_PREFIX: &str = "SEED_VAR_";

/// The seeds phase: where the scripts are, whether and which of them run, and their variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds {
    /// PORTCULLIS_SEEDS_DIR (default `./seeds`); a missing folder means no seeds.
    pub dir: PathBuf,
    /// PORTCULLIS_SEEDS=false (or `migrate --no-seed`) leaves the phase out of `migrate`/`plan`.
    pub enabled: bool,
    /// PORTCULLIS_SEED_ENV: the subfolder whose files run after the common ones.
    pub env: Option<String>,
    pub mode: SeedMode,
    pub vars: SeedVars,
}

/// One seed variable. Its value never reaches output: `Debug` hides it, nothing here formats
/// it, and `db::seeds` only binds it as a query parameter.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedVar {
    /// The environment variable, e.g. `PORTCULLIS_SEED_VAR_ADMIN_EMAIL`.
    pub variable: String,
    /// The setting seeds read, e.g. `portcullis.admin_email`.
    pub setting: String,
    value: String,
}

impl SeedVar {
    /// The value, for binding as a parameter. Never format it into a message.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SeedVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedVar")
            .field("variable", &self.variable)
            .field("setting", &self.setting)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// Every `PORTCULLIS_SEED_VAR_*`, sorted by variable name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedVars(Vec<SeedVar>);

impl SeedVars {
    pub fn iter(&self) -> std::slice::Iter<'_, SeedVar> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The settings' names (`portcullis.admin_email, ...`), for messages.
    pub fn settings(&self) -> String {
        self.0
            .iter()
            .map(|v| v.setting.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `text` with every variable's value replaced by `<PORTCULLIS_SEED_VAR_NAME>`, longest
    /// value first. For text that came from the server, which may quote a value (a DETAIL such
    /// as "Failing row contains (...)").
    pub fn redact(&self, text: &str) -> String {
        let mut by_length: Vec<&SeedVar> = self.0.iter().filter(|v| !v.value.is_empty()).collect();
        by_length.sort_by_key(|v| std::cmp::Reverse(v.value.len()));
        let mut out = text.to_string();
        for v in by_length {
            out = redact_one(&out, &v.value, &format!("<{}>", v.variable));
        }
        out
    }
}

/// `text` with `value` replaced by `mark`, and so any start of it at least [`MIN_PREFIX`]
/// bytes long: the server cuts the long values it quotes (a DETAIL shows the first 64 bytes of
/// each column, then `...`).
fn redact_one(text: &str, value: &str, mark: &str) -> String {
    const MIN_PREFIX: usize = 16;
    let mut probe = value.len().min(MIN_PREFIX);
    while !value.is_char_boundary(probe) {
        probe -= 1;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&value[..probe]) {
        let tail = &rest[at..];
        let mut matched = tail
            .bytes()
            .zip(value.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        while !tail.is_char_boundary(matched) {
            matched -= 1;
        }
        out.push_str(&rest[..at]);
        out.push_str(mark);
        rest = &tail[matched..];
    }
    out.push_str(rest);
    out
}

fn seeds_config(p: &RawPortcullis, map: &BTreeMap<String, String>) -> Result<Seeds, Error> {
    let enabled = match &p.seeds {
        None => true,
        Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                return Err(Error::Config(format!(
                    "PORTCULLIS_SEEDS={raw:?} is not true or false; false leaves the seeds out of \
                     `migrate` (like `migrate --no-seed`)."
                )));
            }
        },
    };
    let env = match &p.seed_env {
        None => None,
        Some(raw) => {
            let e = raw.trim();
            if e.is_empty() || e == "." || e == ".." || e.contains(['/', '\\', '\0']) {
                return Err(Error::Config(format!(
                    "PORTCULLIS_SEED_ENV={raw:?} is not a folder name; it names one subfolder of \
                     the seeds folder (e.g. staging for seeds/staging/), without slashes."
                )));
            }
            Some(e.to_string())
        }
    };
    let mode = choice(
        "PORTCULLIS_SEED_MODE",
        &p.seed_mode,
        SeedMode::Always,
        "always, changed",
    )?;
    let mut vars: Vec<SeedVar> = Vec::new();
    let mut problems = Vec::new();
    for (variable, value) in map {
        let Some(name) = variable
            .strip_prefix("PORTCULLIS_")
            .and_then(|rest| rest.strip_prefix(SEED_VAR_PREFIX))
        else {
            continue;
        };
        // PostgreSQL accepts a custom setting name part made of letters, digits and `_`, not
        // starting with a digit. The value is never part of a message.
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!(
                "{variable}: the part after PORTCULLIS_SEED_VAR_ must be letters, digits and \
                 underscores, not starting with a digit (it becomes the setting portcullis.<name>)"
            ));
            continue;
        }
        if value.contains('\0') {
            problems.push(format!(
                "{variable} contains a NUL character, which a PostgreSQL setting cannot hold"
            ));
            continue;
        }
        let setting = format!("portcullis.{}", name.to_ascii_lowercase());
        if let Some(other) = vars.iter().find(|v| v.setting == setting) {
            problems.push(format!(
                "{} and {variable} both become the setting {setting} (names are lowercased); \
                 keep one",
                other.variable
            ));
            continue;
        }
        vars.push(SeedVar {
            variable: variable.clone(),
            setting,
            value: value.clone(),
        });
    }
    if !problems.is_empty() {
        return Err(Error::Config(format!("{}.", problems.join("; "))));
    }
    Ok(Seeds {
        dir: PathBuf::from(p.seeds_dir.as_deref().unwrap_or("./seeds")),
        enabled,
        env,
        mode,
        vars: SeedVars(vars),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, Error> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const URL: &str = "postgres://app:hunter2-secret@db.internal:6543/shop";

    #[test]
    fn defaults_follow_the_interface() {
        let c = cfg(&[("DATABASE_URL", URL)]).unwrap();
        assert_eq!(c.migrations_dir, PathBuf::from("./migrations"));
        assert_eq!(c.migrations_schema, "drizzle");
        assert_eq!(c.migrations_table, "__drizzle_migrations");
        assert_eq!(c.wait_timeout, Duration::from_secs(60));
        assert_eq!(c.lock_wait_timeout, Duration::from_secs(600));
        assert_eq!(c.out_of_order, OutOfOrder::Error);
        assert_eq!(c.transaction, TransactionMode::All);
        assert_eq!(c.ddl_lock_timeout, Duration::from_secs(5));
        assert_eq!(c.ddl_lock_retries, 10);
        assert_eq!(c.statement_timeout, Duration::ZERO);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.database.ssl_mode, SslMode::Prefer);
        assert_eq!(c.database.target(), "db.internal:6543/shop");
    }

    #[test]
    fn later_values_override_earlier_ones_like_flags_do() {
        let c = cfg(&[
            ("DATABASE_URL", URL),
            ("PORTCULLIS_WAIT_TIMEOUT", "5s"),
            ("PORTCULLIS_WAIT_TIMEOUT", "2m"),
        ])
        .unwrap();
        assert_eq!(c.wait_timeout, Duration::from_secs(120));
    }

    #[test]
    fn every_value_is_parsed() {
        let c = cfg(&[
            ("DATABASE_URL", URL),
            ("PORTCULLIS_MIGRATIONS_DIR", "/app/drizzle"),
            ("PORTCULLIS_MIGRATIONS_SCHEMA", "Ops"),
            ("PORTCULLIS_MIGRATIONS_TABLE", "my \"table\""),
            ("PORTCULLIS_WAIT_TIMEOUT", "0"),
            ("PORTCULLIS_LOCK_WAIT_TIMEOUT", "1m30s"),
            ("PORTCULLIS_OUT_OF_ORDER", "Apply"),
            ("PORTCULLIS_TRANSACTION", "each"),
            ("PORTCULLIS_DDL_LOCK_TIMEOUT", "500ms"),
            ("PORTCULLIS_DDL_LOCK_RETRIES", "3"),
            ("PORTCULLIS_STATEMENT_TIMEOUT", "1h"),
            ("PORTCULLIS_LOG_FORMAT", "json"),
            ("PORTCULLIS_LOG_LEVEL", "debug"),
        ])
        .unwrap();
        assert_eq!(c.migrations_dir, PathBuf::from("/app/drizzle"));
        assert_eq!(c.migrations_schema, "Ops");
        assert_eq!(c.migrations_table, "my \"table\"");
        assert_eq!(c.wait_timeout, Duration::ZERO);
        assert_eq!(c.lock_wait_timeout, Duration::from_secs(90));
        assert_eq!(c.out_of_order, OutOfOrder::Apply);
        assert_eq!(c.transaction, TransactionMode::Each);
        assert_eq!(c.ddl_lock_timeout, Duration::from_millis(500));
        assert_eq!(c.ddl_lock_retries, 3);
        assert_eq!(c.statement_timeout, Duration::from_secs(3600));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, LogLevel::Debug);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PORTCULLIS_WAIT_TIMEOUT", "30"),
            ("PORTCULLIS_WAIT_TIMEOUT", "-1s"),
            ("PORTCULLIS_LOCK_WAIT_TIMEOUT", "10 minutes"),
            ("PORTCULLIS_OUT_OF_ORDER", "maybe"),
            ("PORTCULLIS_TRANSACTION", "none"),
            ("PORTCULLIS_DDL_LOCK_RETRIES", "-2"),
            ("PORTCULLIS_LOG_FORMAT", "xml"),
            ("PORTCULLIS_LOG_LEVEL", "loud"),
        ] {
            let err = cfg(&[("DATABASE_URL", URL), (var, value)]).unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{var}");
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn unknown_portcullis_variables_are_refused_with_a_suggestion() {
        let err = cfg(&[("DATABASE_URL", URL), ("PORTCULLIS_WAIT_TIMOUT", "5s")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PORTCULLIS_WAIT_TIMOUT"), "{msg}");
        assert!(
            msg.contains("did you mean PORTCULLIS_WAIT_TIMEOUT"),
            "{msg}"
        );
        // Kubernetes service links for a Service named `portcullis` are not ours either.
        for (k, v) in [
            ("PORTCULLIS_PORT", "tcp://10.0.0.9:5432"),
            ("PORTCULLIS_PORT_5432_TCP_ADDR", "10.0.0.9"),
            ("PORTCULLIS_SERVICE_HOST", "10.0.0.9"),
            ("PORTCULLIS_SERVICE_PORT_HTTP", "80"),
        ] {
            assert!(cfg(&[("DATABASE_URL", URL), (k, v)]).is_ok(), "{k}");
        }
        // Other prefixes are not ours to judge.
        assert!(cfg(&[("DATABASE_URL", URL), ("PORTCULLISX", "1")]).is_ok());
    }

    #[test]
    fn seeds_settings_have_defaults_and_are_checked() {
        let c = cfg(&[("DATABASE_URL", URL)]).unwrap();
        assert_eq!(c.seeds.dir, PathBuf::from("./seeds"));
        assert!(c.seeds.enabled);
        assert_eq!(c.seeds.env, None);
        assert_eq!(c.seeds.mode, SeedMode::Always);
        assert!(c.seeds.vars.is_empty());

        let c = cfg(&[
            ("DATABASE_URL", URL),
            ("PORTCULLIS_SEEDS_DIR", "/app/seeds"),
            ("PORTCULLIS_SEEDS", "false"),
            ("PORTCULLIS_SEED_ENV", "staging"),
            ("PORTCULLIS_SEED_MODE", "Changed"),
        ])
        .unwrap();
        assert_eq!(c.seeds.dir, PathBuf::from("/app/seeds"));
        assert!(!c.seeds.enabled);
        assert_eq!(c.seeds.env.as_deref(), Some("staging"));
        assert_eq!(c.seeds.mode, SeedMode::Changed);

        for (var, value) in [
            ("PORTCULLIS_SEEDS", "maybe"),
            ("PORTCULLIS_SEED_ENV", "../prod"),
            ("PORTCULLIS_SEED_ENV", "a/b"),
            ("PORTCULLIS_SEED_MODE", "sometimes"),
        ] {
            let err = cfg(&[("DATABASE_URL", URL), (var, value)]).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn seed_variables_become_lowercase_settings_and_never_show() {
        let secret = "x'); drop table users; --";
        let c = cfg(&[
            ("DATABASE_URL", URL),
            ("PORTCULLIS_SEED_VAR_ADMIN_EMAIL", secret),
            ("PORTCULLIS_SEED_VAR_plan_2", "pro"),
        ])
        .unwrap();
        let vars: Vec<(&str, &str, &str)> = c
            .seeds
            .vars
            .iter()
            .map(|v| (v.variable.as_str(), v.setting.as_str(), v.value()))
            .collect();
        assert_eq!(
            vars,
            [
                (
                    "PORTCULLIS_SEED_VAR_ADMIN_EMAIL",
                    "portcullis.admin_email",
                    secret
                ),
                ("PORTCULLIS_SEED_VAR_plan_2", "portcullis.plan_2", "pro"),
            ]
        );
        let dump = format!("{c:?}");
        assert!(!dump.contains(secret) && !dump.contains("pro\""), "{dump}");
        assert!(dump.contains("portcullis.admin_email"), "{dump}");
        assert_eq!(
            c.seeds
                .vars
                .redact(&format!("Failing row contains ({secret}, pro)")),
            "Failing row contains (<PORTCULLIS_SEED_VAR_ADMIN_EMAIL>, <PORTCULLIS_SEED_VAR_plan_2>)"
        );

        // A long value that the server quotes cut short is hidden too.
        let token = "tok_".repeat(30);
        let c = cfg(&[("DATABASE_URL", URL), ("PORTCULLIS_SEED_VAR_TOKEN", &token)]).unwrap();
        assert_eq!(
            c.seeds
                .vars
                .redact(&format!("Failing row contains (7, {}...).", &token[..64])),
            "Failing row contains (7, <PORTCULLIS_SEED_VAR_TOKEN>...)."
        );

        // Bad names and clashes are refused, naming the variable but never the value.
        for vars in [
            vec![("PORTCULLIS_SEED_VAR_", secret)],
            vec![("PORTCULLIS_SEED_VAR_2FA", secret)],
            vec![("PORTCULLIS_SEED_VAR_ADMIN-EMAIL", secret)],
            vec![
                ("PORTCULLIS_SEED_VAR_ADMIN", secret),
                ("PORTCULLIS_SEED_VAR_admin", secret),
            ],
        ] {
            let mut all = vec![("DATABASE_URL", URL)];
            all.extend(vars.iter().copied());
            let err = cfg(&all).unwrap_err().to_string();
            assert!(err.contains(vars[0].0), "{err}");
            assert!(!err.contains(secret), "{err}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let c = cfg(&[("DATABASE_URL", URL), ("PORTCULLIS_WAIT_TIMEOUT", "")]).unwrap();
        assert_eq!(c.wait_timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_password_never_shows_in_debug_or_errors() {
        let c = cfg(&[("DATABASE_URL", URL)]).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("hunter2"), "{dump}");
        assert_eq!(c.database.pg.get_password(), Some(&b"hunter2-secret"[..]));
        // A malformed URL: the error must not echo it.
        let err = cfg(&[("DATABASE_URL", "postgres://app:hunter2@db:notaport/x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("DATABASE_URL"));
    }

    #[test]
    fn libpq_variables_fill_what_the_url_leaves_out() {
        let c = cfg(&[
            ("DATABASE_URL", "postgres://db.internal/shop"),
            ("PGUSER", "app"),
            ("PGPASSWORD", "pw"),
            ("PGPORT", "5433"),
            ("PGSSLMODE", "require"),
        ])
        .unwrap();
        assert_eq!(c.database.user(), "app");
        assert_eq!(c.database.pg.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.database.target(), "db.internal:5433/shop");
        assert_eq!(c.database.ssl_mode, SslMode::Require);

        let c = cfg(&[
            ("PGHOST", "10.0.0.5"),
            ("PGUSER", "app"),
            ("PGDATABASE", "shop"),
        ])
        .unwrap();
        assert_eq!(c.database.target(), "10.0.0.5:5432/shop");
        // An IPv6 address is shown in brackets, so that its port stands apart.
        let c = cfg(&[("DATABASE_URL", "postgres://app@[2001:db8::5]:6543/shop")]).unwrap();
        assert_eq!(c.database.target(), "[2001:db8::5]:6543/shop");
        let c = cfg(&[("PGHOST", "::1"), ("PGUSER", "app"), ("PGDATABASE", "shop")]).unwrap();
        assert_eq!(c.database.target(), "[::1]:5432/shop");

        // The URL's own sslmode wins over PGSSLMODE.
        let c = cfg(&[
            ("DATABASE_URL", "postgres://u@h/db?sslmode=disable"),
            ("PGSSLMODE", "require"),
        ])
        .unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::Disable);
    }

    #[test]
    fn url_sources_have_a_precedence_and_exclusions() {
        let dir = std::env::temp_dir().join(format!("portcullis-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "postgres://u:p@fromfile/db\n").unwrap();
        let file = file.to_str().unwrap();

        let c = cfg(&[("DATABASE_URL_FILE", file)]).unwrap();
        assert_eq!(c.database.target(), "fromfile:5432/db");
        let err = cfg(&[("DATABASE_URL_FILE", file), ("DATABASE_URL", URL)]).unwrap_err();
        assert!(err.to_string().contains("exclusive"));
        let c = cfg(&[
            ("DATABASE_URL", URL),
            ("PORTCULLIS_DATABASE_URL", "postgres://u@direct/db"),
        ])
        .unwrap();
        assert_eq!(c.database.target(), "direct:5432/db");
        // A path is named, so that a wrong mount can be told from a missing one.
        let err = cfg(&[("DATABASE_URL_FILE", "/nonexistent/secret")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("DATABASE_URL_FILE=/nonexistent/secret")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_secret_pasted_where_a_path_belongs_is_not_shown() {
        let err = cfg(&[("DATABASE_URL_FILE", "postgres://app:hunter2@db/shop")]).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("DATABASE_URL_FILE (its value is not shown"),
            "{text}"
        );
        let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----";
        let err = cfg(&[
            ("DATABASE_URL", "postgres://app@db/shop?sslmode=require"),
            ("PGSSLCERT", "/etc/hostname"),
            ("PGSSLKEY", key),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("MIIEvQIBADANBgkq"), "{text}");
        assert!(text.contains("PGSSLKEY (its value is not shown"), "{text}");
    }

    #[test]
    fn an_at_sign_after_the_host_part_is_refused_without_showing_it() {
        for url in [
            "postgres://db/shop?user=app&password=p@SECRET",
            "postgres://app:p?SECRET@db/shop?sslmode=require",
            "postgres://app:p/SECRET@db/shop",
        ] {
            let text = cfg(&[("DATABASE_URL", url)]).unwrap_err().to_string();
            assert!(text.contains("after a '/' or '?'"), "{url}: {text}");
            assert!(!text.contains("SECRET"), "{url}: {text}");
        }
        // Encoded, it is read as meant.
        let c = cfg(&[(
            "DATABASE_URL",
            "postgres://db/shop?user=app&password=p%40ss",
        )])
        .unwrap();
        assert_eq!(c.database.target(), "db:5432/shop");
        // An '@' in a parameter after the user and password is read as meant too.
        let c = cfg(&[(
            "DATABASE_URL",
            "postgres://app:pw@db/shop?application_name=deploy@ci",
        )])
        .unwrap();
        assert_eq!(c.database.target(), "db:5432/shop");
        assert_eq!(c.database.pg.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn a_url_parameter_split_by_an_unencoded_ampersand_is_not_named() {
        let err = cfg(&[("DATABASE_URL", "postgres://app@db/shop?password=ab&cd=ef")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown option"), "{text}");
        assert!(!text.contains("cd"), "{text}");
    }

    #[test]
    fn a_percent_before_a_multi_byte_character_is_kept_as_it_is() {
        assert_eq!(percent_decode("%1é%41"), "%1éA");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn missing_database_is_a_config_error() {
        let err = cfg(&[]).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"));
        let err = cfg(&[("PGHOST", "h")]).unwrap_err();
        assert!(err.to_string().contains("PGUSER"));
    }

    #[test]
    fn an_unencoded_at_sign_in_the_password_is_refused_without_showing_it() {
        let err = cfg(&[("DATABASE_URL", "postgres://app:p@ss@db:5432/x")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("%40"), "{text}");
        assert!(!text.contains("ss@db"), "{text}");
        // Encoded, it is the password it was meant to be.
        let c = cfg(&[("DATABASE_URL", "postgres://app:p%40ss@db:5432/x")]).unwrap();
        assert_eq!(c.database.pg.get_password(), Some(&b"p@ss"[..]));
    }

    #[test]
    fn a_connection_string_that_cannot_be_read_says_why_without_its_values() {
        let says = |url: &str| cfg(&[("DATABASE_URL", url)]).unwrap_err().to_string();
        let text = says("postgres://u:pw@h/db?port=abc");
        assert!(text.contains("invalid value for option `port`"), "{text}");
        let text = says("postgres://u:pw@h/db?colour=red");
        assert!(text.contains("unknown option `colour`"), "{text}");
        // A password with an unquoted space: its rest would be read as an option.
        let text = says("host=h user=u password=open sesame=1");
        assert!(text.contains("an unknown option"), "{text}");
        assert!(!text.contains("sesame"), "{text}");
        let text = says("host=h user=u password 's3cret'");
        assert!(text.contains("unexpected character at byte"), "{text}");
        assert!(!text.contains("got"), "{text}");
    }

    #[test]
    fn parameters_of_the_apps_driver_or_prisma_say_what_postgresql_wants_instead() {
        let says = |url: &str| cfg(&[("DATABASE_URL", url)]).unwrap_err().to_string();
        let text = says("postgres://u:pw@h/db?schema=public");
        assert!(text.contains("`schema` is Prisma's parameter"), "{text}");
        assert!(text.contains("PORTCULLIS_MIGRATIONS_SCHEMA"), "{text}");
        let text = says("postgres://u:pw@h/db?sslmode=require&pgbouncer=true");
        assert!(
            text.contains("give portcullis the database's direct URL"),
            "{text}"
        );
        let text = says("postgres://u:pw@h/db?connection_limit=5");
        assert!(
            text.contains("`connection_limit` is Prisma's parameter"),
            "{text}"
        );
        let text = says("postgres://u:pw@h/db?ssl=true");
        assert!(
            text.contains("node-postgres's parameter; PostgreSQL's is sslmode"),
            "{text}"
        );
        let text = says("postgres://u:pw@h/db?sslmode=no-verify");
        assert!(text.contains("its equivalent is sslmode=require"), "{text}");
        // Still an error: a client that ignored them would connect differently from the app.
        assert!(!says("postgres://u:pw@h/db?colour=red").contains("Prisma"));
        assert!(!says("postgres://u:pw@h/db?ssl=true").contains("pw"));
    }

    #[test]
    fn libpq_parameters_portcullis_cannot_use_say_what_to_do() {
        let says = |url: &str| cfg(&[("DATABASE_URL", url)]).unwrap_err().to_string();
        for (query, advice) in [
            (
                "gssencmode=disable",
                "with disable or prefer it changes nothing here",
            ),
            ("sslcompression=0", "has done nothing since PostgreSQL 14"),
            (
                "fallback_application_name=x",
                "portcullis names its own sessions",
            ),
            (
                "sslsni=1",
                "always sends the host name in the TLS handshake",
            ),
            (
                "ssl_min_protocol_version=TLSv1.2",
                "speaks TLS 1.2 and 1.3 only",
            ),
            ("requiressl=1", "old spelling of sslmode=require"),
            ("service=prod", "does not read pg_service.conf"),
            ("passfile=/x", "does not read a password file (.pgpass)"),
            (
                "require_auth=scram-sha-256",
                "cannot enforce `require_auth`",
            ),
            (
                "sslcrl=/x",
                "`sslcrl` is a libpq parameter that portcullis does not support",
            ),
            ("target_session_attrs=primary", "which read-write picks"),
        ] {
            let text = says(&format!("postgres://u:pw@h/db?{query}"));
            assert!(text.contains(advice), "{query}: {text}");
            assert!(!text.contains("pw@"), "{query}: {text}");
        }
        // In a keyword/value string, a parameter is not named (it may be the rest of a
        // password), but the failure is still a configuration error.
        assert!(says("host=h user=u gssencmode=disable").contains("an unknown option"));
    }

    #[test]
    fn arguments_that_may_hold_a_secret_are_not_quoted() {
        let args: Vec<String> = [
            "migrate",
            "postgres://app:pa'ss@db/x",
            "host=db password = s3cret",
            "--database-url=postgres://app:pa",
            "ss@db/x",
            "--dry-rn",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let said = "error: unexpected argument 'postgres://app:pa'ss@db/x' found; \
                    'host=db password = s3cret'; '--database-url=postgres://app:pa'; \
                    unrecognized subcommand 'ss@db/x'; unexpected argument '--dry-rn'";
        let text = hide_secret_arguments(said, &args);
        assert_eq!(
            text,
            "error: unexpected argument '(an argument that may hold a password, not shown)' \
             found; '(an argument that may hold a password, not shown)'; '--database-url=***'; \
             unrecognized subcommand '(an argument that may hold a password, not shown)'; \
             unexpected argument '--dry-rn'"
        );
    }

    #[test]
    fn credentials_are_hidden_in_quoted_text() {
        assert_eq!(
            hide_credentials("unexpected argument 'postgres://app:s3cret@db:5432/x?a=b' found"),
            "unexpected argument 'postgres://app:***@db:5432/x?a=b' found"
        );
        // An unencoded '@' in the password is hidden up to the last '@'.
        assert_eq!(
            hide_credentials("'postgresql://app:p@ss@db/x'"),
            "'postgresql://app:***@db/x'"
        );
        assert_eq!(
            hide_credentials("'host=db password=s3cret user=app' and password='a b' x"),
            "'host=db password=*** user=app' and password=*** x"
        );
        assert_eq!(
            hide_credentials("password='it\\'s secret' user=app"),
            "password=*** user=app"
        );
        // Nothing to hide: unchanged.
        for plain in [
            "postgres://app@db/x",
            "https://example.com/a:b",
            "no url here",
        ] {
            assert_eq!(hide_credentials(plain), plain);
        }
    }

    #[test]
    fn keyword_value_strings_keep_their_tls_settings() {
        let (rest, p) = take_tls_params_kv(
            " host=db  user = app sslmode=require password='a b\\'c' sslrootcert='/etc/my ca.pem'",
        );
        assert_eq!(rest, "host=db user = app password='a b\\'c'");
        assert_eq!(p.mode.as_deref(), Some("require"));
        assert_eq!(p.rootcert.as_deref(), Some("/etc/my ca.pem"));
        let (rest, p) = take_tls_params_kv("sslkey=/k\\ ey sslcert = /c dbname=x");
        assert_eq!(rest, "dbname=x");
        assert_eq!(
            (p.key.as_deref(), p.cert.as_deref()),
            (Some("/k ey"), Some("/c"))
        );
        // What it cannot read is left whole, for tokio-postgres to report.
        assert_eq!(take_tls_params_kv("host='db").0, "host='db");
        assert_eq!(take_tls_params_kv("host db").0, "host db");

        // The mode the string asks for is the mode used; PGSSLMODE only fills in.
        let c = cfg(&[(
            "DATABASE_URL",
            "host=h user=u password='p w' sslmode=require",
        )])
        .unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::Require);
        assert_eq!(c.database.pg.get_password(), Some(&b"p w"[..]));
        let c = cfg(&[
            ("DATABASE_URL", "host=h user=u sslmode=require"),
            ("PGSSLMODE", "disable"),
        ])
        .unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::Require);
        let c = cfg(&[("DATABASE_URL", "host=h user=u"), ("PGSSLMODE", "disable")]).unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::Disable);
        // verify-full works in this form too (tokio-postgres alone refuses it).
        let ca = std::env::temp_dir().join(format!("portcullis-kv-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not parsed here").unwrap();
        let s = format!(
            "host=h user=u sslmode=verify-full sslrootcert='{}'",
            ca.display()
        );
        let c = cfg(&[("DATABASE_URL", s.as_str())]).unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.database.root_certs, Some(RootCerts::File(ca.clone())));
        std::fs::remove_file(&ca).unwrap();
    }

    #[test]
    fn tls_settings_follow_libpq() {
        let dir = std::env::temp_dir().join(format!("portcullis-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not parsed here").unwrap();
        let ca = ca.to_str().unwrap();
        // Verification needs a root certificate.
        let err = cfg(&[("DATABASE_URL", "postgres://u@h/db?sslmode=verify-full")]).unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        let url = format!("postgres://u@h/db?sslmode=verify-full&sslrootcert={ca}");
        let c = cfg(&[("DATABASE_URL", url.as_str())]).unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.database.root_certs, Some(RootCerts::File(ca.into())));
        // require + a root certificate = verify-ca, as in libpq.
        let c = cfg(&[
            ("DATABASE_URL", "postgres://u@h/db?sslmode=require"),
            ("PGSSLROOTCERT", ca),
        ])
        .unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::VerifyCa);
        // sslrootcert=system implies verify-full and refuses weaker modes.
        let c = cfg(&[("DATABASE_URL", "postgres://u@h/db?sslrootcert=system")]).unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::VerifyFull);
        let weak = "postgres://u@h/db?sslrootcert=system&sslmode=require";
        assert!(cfg(&[("DATABASE_URL", weak)]).is_err());
        // Missing files and half a client certificate are configuration errors.
        let err =
            cfg(&[("DATABASE_URL", "postgres://u@h/db?sslrootcert=/nope/ca.pem")]).unwrap_err();
        assert!(err.to_string().contains("/nope/ca.pem"), "{err}");
        assert!(cfg(&[("DATABASE_URL", "postgres://u@h/db"), ("PGSSLCERT", ca)]).is_err());
        // Unix sockets never use TLS.
        let c = cfg(&[(
            "DATABASE_URL",
            "postgres://u@%2Frun%2Fpg/db?sslmode=require",
        )])
        .unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::Disable);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            cfg(&[
                ("DATABASE_URL", "postgres://u@h/db"),
                ("PGSSLMODE", "bogus")
            ])
            .is_err()
        );
        let c = cfg(&[(
            "DATABASE_URL",
            "postgres://u@h/db?sslmode=require&connect_timeout=3",
        )])
        .unwrap();
        assert_eq!(c.database.ssl_mode, SslMode::Require);
        assert_eq!(
            c.database.pg.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
    }

    #[test]
    fn application_name_carries_the_host_name() {
        let c = cfg(&[("DATABASE_URL", URL), ("HOSTNAME", "web-7d9f-abcde")]).unwrap();
        assert_eq!(
            c.database.pg.get_application_name(),
            Some("portcullis@web-7d9f-abcde")
        );
        let c = cfg(&[("DATABASE_URL", URL), ("PGAPPNAME", "deployer")]).unwrap();
        assert_eq!(c.database.pg.get_application_name(), Some("deployer"));
    }

    #[test]
    fn pgport_applies_only_when_the_url_has_no_port() {
        assert_eq!(
            with_default_port("postgres://u:p@h/db?x=1", 7),
            "postgres://u:p@h:7/db?x=1"
        );
        assert_eq!(
            with_default_port("postgres://u@h:5/db", 7),
            "postgres://u@h:5/db"
        );
        assert_eq!(
            with_default_port("postgres://a,b/db", 7),
            "postgres://a:7,b:7/db"
        );
        assert_eq!(
            with_default_port("postgres://[::1]/db", 7),
            "postgres://[::1]:7/db"
        );
        assert_eq!(
            with_default_port("postgres:///db?host=/run", 7),
            "postgres:///db?host=/run"
        );
        let c = cfg(&[("DATABASE_URL", "postgres://u@h:5/db"), ("PGPORT", "7")]).unwrap();
        assert_eq!(c.database.target(), "h:5/db");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
