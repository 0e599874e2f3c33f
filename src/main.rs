//! The `portcullis` binary: parse flags, set up logging, read the configuration, run the command
//! on a small single-threaded runtime, and turn the result into the exit code. The only place
//! that exits.

use clap::{Parser, Subcommand};
use portcullis::config::{self, Config};
use portcullis::exit::ExitCode;
use std::process;

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "Apply drizzle-kit migrations to PostgreSQL before the app starts: wait for the \
             database, take an advisory lock, apply exactly as drizzle-kit would, exit with a \
             documented code.",
    after_help = "Every flag has an environment variable of the same meaning (see README); the \
                  flag wins. Prefer DATABASE_URL or DATABASE_URL_FILE over --database-url, which \
                  other users of the machine can see in the process list.\n\nExit codes: 0 ok, \
                  1 internal error (a bug), 2 configuration, 3 migrations folder, 4 history \
                  disagrees with folder, 5 database unreachable (retry), 6 refused \
                  (auth/database/TLS), 7 lock timeout (retry), 8 migration failed, 9 seed failed, \
                  130/143 interrupted."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Wait for the database, lock, apply pending migrations, run the seeds, unlock (the
    /// default).
    Migrate {
        /// Print what would be applied (like `plan`) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave the seeds out of this run (like PORTCULLIS_SEEDS=false).
        #[arg(long)]
        no_seed: bool,
    },
    /// Every migration's state: applied, pending, out-of-order, edited, unknown rows. Read-only.
    Status {
        /// text (an aligned table) or json (one document, shape documented in README).
        #[arg(long, value_enum, default_value = "text")]
        format: FormatArg,
    },
    /// The migrations `migrate` would apply now, in order, with their SQL. Changes nothing.
    Plan,
    /// Check the folder (and, unless --offline, the tracking table against it); exit 0, 3 or 4.
    Validate {
        /// Check the folder only; do not connect.
        #[arg(long)]
        offline: bool,
    },
    /// Record migrations as applied without running them (for a schema made by `drizzle-kit
    /// push` or restored from a dump), with exactly the rows drizzle writes.
    Baseline {
        /// Record up to and including this tag (default: all).
        #[arg(long, value_name = "TAG")]
        to: Option<String>,
        /// Record even when the table already has other rows.
        #[arg(long)]
        force: bool,
    },
    /// Fix a damaged tracking table (created_at type, NULLs, duplicates) after a backup; shows
    /// the changes, makes them only with --apply.
    Repair {
        /// Make the changes (in one transaction, under the lock, after copying the table).
        #[arg(long)]
        apply: bool,
    },
    /// Wait until the database accepts connections, then exit 0.
    Wait,
    /// For app containers: wait until no migration of this folder is pending (a peer migrated).
    Await,
    /// Wait for the database, lock, run the seeds only (in one transaction), unlock.
    Seed,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum FormatArg {
    Text,
    Json,
}

/// Flags override the environment variable named in each help line.
#[derive(clap::Args, Debug, Default)]
struct Flags {
    /// Connection string; overrides DATABASE_URL, DATABASE_URL_FILE and PORTCULLIS_DATABASE_URL.
    /// Visible in `ps`: prefer the environment
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// drizzle-kit `out` folder (PORTCULLIS_MIGRATIONS_DIR) [default: ./migrations]
    #[arg(long, global = true, value_name = "DIR")]
    migrations_dir: Option<String>,
    /// Seed scripts folder (PORTCULLIS_SEEDS_DIR) [default: ./seeds]
    #[arg(long, global = true, value_name = "DIR")]
    seeds_dir: Option<String>,
    /// Also run the seeds of this subfolder (PORTCULLIS_SEED_ENV)
    #[arg(long, global = true, value_name = "ENV")]
    seed_env: Option<String>,
    /// always | changed (PORTCULLIS_SEED_MODE) [default: always]
    #[arg(long, global = true, value_name = "MODE")]
    seed_mode: Option<String>,
    /// Tracking table schema (PORTCULLIS_MIGRATIONS_SCHEMA) [default: drizzle]
    #[arg(long, global = true, value_name = "NAME")]
    migrations_schema: Option<String>,
    /// Tracking table name (PORTCULLIS_MIGRATIONS_TABLE) [default: __drizzle_migrations]
    #[arg(long, global = true, value_name = "NAME")]
    migrations_table: Option<String>,
    /// How long to wait for the database (PORTCULLIS_WAIT_TIMEOUT) [default: 60s]
    #[arg(long, global = true, value_name = "DURATION")]
    wait_timeout: Option<String>,
    /// How long to wait for the lock (PORTCULLIS_LOCK_WAIT_TIMEOUT) [default: 10m]
    #[arg(long, global = true, value_name = "DURATION")]
    lock_wait_timeout: Option<String>,
    /// error | apply | skip (PORTCULLIS_OUT_OF_ORDER) [default: error]
    #[arg(long, global = true, value_name = "POLICY")]
    out_of_order: Option<String>,
    /// all | each (PORTCULLIS_TRANSACTION) [default: all]
    #[arg(long, global = true, value_name = "MODE")]
    transaction: Option<String>,
    /// lock_timeout while migrating (PORTCULLIS_DDL_LOCK_TIMEOUT) [default: 5s]
    #[arg(long, global = true, value_name = "DURATION")]
    ddl_lock_timeout: Option<String>,
    /// Retries after a lock timeout (PORTCULLIS_DDL_LOCK_RETRIES) [default: 10]
    #[arg(long, global = true, value_name = "N")]
    ddl_lock_retries: Option<String>,
    /// statement_timeout while migrating (PORTCULLIS_STATEMENT_TIMEOUT) [default: 0, none]
    #[arg(long, global = true, value_name = "DURATION")]
    statement_timeout: Option<String>,
    /// text | json (PORTCULLIS_LOG_FORMAT) [default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    /// error | warn | info | debug | trace (PORTCULLIS_LOG_LEVEL) [default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
}

impl Flags {
    /// Each flag given: the variable it overrides (its long name is [`flag_of`] that variable)
    /// and its value.
    fn given(&self) -> Vec<(&'static str, &String)> {
        [
            ("PORTCULLIS_DATABASE_URL", &self.database_url),
            ("PORTCULLIS_MIGRATIONS_DIR", &self.migrations_dir),
            ("PORTCULLIS_SEEDS_DIR", &self.seeds_dir),
            ("PORTCULLIS_SEED_ENV", &self.seed_env),
            ("PORTCULLIS_SEED_MODE", &self.seed_mode),
            ("PORTCULLIS_MIGRATIONS_SCHEMA", &self.migrations_schema),
            ("PORTCULLIS_MIGRATIONS_TABLE", &self.migrations_table),
            ("PORTCULLIS_WAIT_TIMEOUT", &self.wait_timeout),
            ("PORTCULLIS_LOCK_WAIT_TIMEOUT", &self.lock_wait_timeout),
            ("PORTCULLIS_OUT_OF_ORDER", &self.out_of_order),
            ("PORTCULLIS_TRANSACTION", &self.transaction),
            ("PORTCULLIS_DDL_LOCK_TIMEOUT", &self.ddl_lock_timeout),
            ("PORTCULLIS_DDL_LOCK_RETRIES", &self.ddl_lock_retries),
            ("PORTCULLIS_STATEMENT_TIMEOUT", &self.statement_timeout),
            ("PORTCULLIS_LOG_FORMAT", &self.log_format),
            ("PORTCULLIS_LOG_LEVEL", &self.log_level),
        ]
        .into_iter()
        .filter_map(|(var, v)| v.as_ref().map(|v| (var, v)))
        .collect()
    }

    /// The flags as the variables they override, appended after the environment.
    fn as_overrides(&self) -> Vec<(String, String)> {
        self.given()
            .into_iter()
            .map(|(var, v)| (var.to_string(), v.clone()))
            .collect()
    }

    /// Configuration errors about a value begin with the variable it is read from; a flag sets
    /// that variable for the run, so an error about a value given as a flag says which flag it
    /// was. (Other errors may list variable names, such as the known ones after an unknown
    /// variable: they are not about the flag.)
    fn credit(&self, e: portcullis::error::Error) -> portcullis::error::Error {
        use portcullis::error::Error;
        let Error::Config(msg) = e else {
            return e;
        };
        let named: Vec<String> = self
            .given()
            .into_iter()
            .filter(|(var, _)| is_about(&msg, var))
            .map(|(var, _)| format!("{var} was given as {} on the command line", flag_of(var)))
            .collect();
        if named.is_empty() {
            Error::Config(msg)
        } else {
            Error::Config(format!("{msg} ({})", named.join("; ")))
        }
    }
}

/// The flag that sets `var`: `PORTCULLIS_LOCK_WAIT_TIMEOUT` is `--lock-wait-timeout`.
fn flag_of(var: &str) -> String {
    let name = var.strip_prefix("PORTCULLIS_").unwrap_or(var);
    format!("--{}", name.to_ascii_lowercase().replace('_', "-"))
}

/// Whether `msg` is about the variable `var`: it begins with that name, and not with a longer
/// one that starts with it (`PORTCULLIS_SEEDS` in `PORTCULLIS_SEEDS_DIR`).
fn is_about(msg: &str, var: &str) -> bool {
    msg.strip_prefix(var)
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
}

/// Whether the logs are JSON lines, once logging is set up: a panic is then reported as one.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> process::ExitCode {
    // A panic is a bug: report it as one (exit 1) instead of an abort signal.
    std::panic::set_hook(Box::new(|info| {
        let reason = format!("internal error (a bug, please report it): {info}");
        if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(exit_code = ExitCode::Internal.code(), "{reason}");
        } else {
            eprintln!("portcullis: {reason}");
        }
        write_termination_log(&format!("exit {}: {reason}", ExitCode::Internal.code()));
        process::exit(i32::from(ExitCode::Internal.code()));
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; usage errors exit 2, and their first line
            // (what was wrong) goes to the termination log like any failure's reason.
            if !e.use_stderr() {
                let _ = e.print();
                return process::ExitCode::SUCCESS;
            }
            // The parser quotes the argument it did not expect, which may be a connection
            // string given in the wrong place: its password is hidden.
            let args: Vec<String> = std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let text = config::hide_secret_arguments(&e.to_string(), &args);
            let first = text.lines().next().unwrap_or_default();
            let reason = format!(
                "{}; see --help",
                first.strip_prefix("error: ").unwrap_or(first)
            );
            // With JSON logs (from the environment: the flags could not be read), stderr stays
            // one JSON object per line; otherwise the parser's text, usage included.
            let (format, level) = config::logging_from_env();
            if format == config::LogFormat::Json {
                portcullis::logging::init(format, level);
                tracing::error!(exit_code = ExitCode::Config.code(), "{reason}");
            } else {
                eprint!("{text}");
            }
            write_termination_log(&format!("exit {}: {reason}", ExitCode::Config.code()));
            return process::ExitCode::from(ExitCode::Config.code());
        }
    };
    let overrides = cli.flags.as_overrides();

    // Logging first (leniently), so that a configuration error is itself logged in the chosen
    // format; the strict check of these variables happens in Config right after.
    let (mut format, mut level) = config::logging_from_env();
    if let Ok(c) = Config::from_vars(
        overrides
            .iter()
            .filter(|(k, _)| k.starts_with("PORTCULLIS_LOG_"))
            .cloned()
            .chain([("DATABASE_URL".into(), "postgres://x@localhost/x".into())]),
    ) {
        if cli.flags.log_format.is_some() {
            format = c.log_format;
        }
        if cli.flags.log_level.is_some() {
            level = c.log_level;
        }
    }
    portcullis::logging::init(format, level);
    JSON_LOGS.store(
        format == config::LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );

    let code = match run(
        cli.command.unwrap_or(Command::Migrate {
            dry_run: false,
            no_seed: false,
        }),
        &overrides,
    )
    .map_err(|e| cli.flags.credit(e))
    {
        Ok(outcome) => {
            if !outcome.stdout.is_empty() {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                // A closed pipe (`portcullis status | head`) is not an error of the run.
                let _ = out.write_all(outcome.stdout.as_bytes());
                let _ = out.flush();
            }
            tracing::info!("{}", outcome.summary);
            ExitCode::Success
        }
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(exit_code = code.code(), "{e}");
            write_termination_log(&format!("exit {}: {e}", code.code()));
            code
        }
    };
    process::ExitCode::from(code.code())
}

fn run(
    command: Command,
    overrides: &[(String, String)],
) -> Result<portcullis::Outcome, portcullis::error::Error> {
    let mut overrides = overrides.to_vec();
    if let Command::Migrate { no_seed: true, .. } = command {
        overrides.push(("PORTCULLIS_SEEDS".into(), "false".into()));
    }
    // `validate --offline` never connects, so it runs without any connection setting too (in
    // CI, say): on a placeholder nobody connects to.
    if let Command::Validate { offline: true } = command {
        let given = |k: &str| {
            std::env::var_os(k).is_some_and(|v| !v.is_empty())
                || overrides.iter().any(|(o, v)| o == k && !v.is_empty())
        };
        if ![
            "DATABASE_URL",
            "DATABASE_URL_FILE",
            "PORTCULLIS_DATABASE_URL",
            "PGHOST",
        ]
        .into_iter()
        .any(given)
        {
            overrides.push((
                "PORTCULLIS_DATABASE_URL".into(),
                "postgres://offline@localhost/offline".into(),
            ));
        }
    }
    let cfg = Config::from_env(&overrides)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            portcullis::error::Error::Internal(format!("cannot start the runtime: {e}"))
        })?;
    use portcullis::Command as C;
    let command = match command {
        Command::Migrate { dry_run: false, .. } => C::Migrate,
        Command::Migrate { dry_run: true, .. } | Command::Plan => C::Plan,
        Command::Status { format } => C::Status {
            format: match format {
                FormatArg::Text => portcullis::Format::Text,
                FormatArg::Json => portcullis::Format::Json,
            },
            colour: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        },
        Command::Validate { offline } => C::Validate { offline },
        Command::Baseline { to, force } => C::Baseline { to, force },
        Command::Repair { apply } => C::Repair { apply },
        Command::Wait => C::Wait,
        Command::Await => C::Await,
        Command::Seed => C::Seed,
    };
    runtime.block_on(run_until_signal(&command, &cfg))
}

/// Runs the command; on SIGTERM or SIGINT cancels the running statement and gives the run a
/// moment to roll back and release the lock through its own error paths, then reports the
/// interruption (exit 143 / 130). A second signal ends the wait at once.
async fn run_until_signal(
    command: &portcullis::Command,
    cfg: &Config,
) -> Result<portcullis::Outcome, portcullis::error::Error> {
    use portcullis::interrupt;
    use tokio::signal::unix::{SignalKind, signal};
    let handlers =
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
    let (mut term, mut int) = handlers.map_err(|e| {
        portcullis::error::Error::Internal(format!("cannot install signal handlers: {e}"))
    })?;
    // Debug builds only (the tests run them): a panic at a chosen moment of the run, so that
    // the panic path (exit 1, the termination log, the server ending the session) is tested.
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("__PORTCULLIS_TEST_PANIC_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            panic!("the panic __PORTCULLIS_TEST_PANIC_AFTER_MS asked for");
        });
    }
    let work = portcullis::run(command, cfg);
    tokio::pin!(work);
    let sig = tokio::select! {
        result = &mut work => return result,
        _ = term.recv() => interrupt::SIGTERM,
        _ = int.recv() => interrupt::SIGINT,
    };
    tracing::warn!(
        "received {}: cancelling what is running ({}), rolling back, releasing the lock",
        if sig == interrupt::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        },
        interrupt::activity()
    );
    // One deadline for all of it, the cancel request included, so that the run ends within
    // about 1.5 s of the signal whatever the network does.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    tokio::select! {
        _ = tokio::time::timeout_at(deadline, interrupt::interrupt(sig)) => {}
        _ = term.recv() => return Err(leave_now("SIGTERM")),
        _ = int.recv() => return Err(leave_now("SIGINT")),
    }
    tokio::select! {
        // Work that finished anyway (a commit that raced the signal) reports what it did.
        result = &mut work => match result {
            Ok(outcome) => Ok(outcome),
            Err(e @ portcullis::error::Error::Interrupted { .. }) => Err(e),
            Err(_) => Err(interrupt::error()),
        },
        // Dropping the run closes the connection: the server ends the session, rolling back and
        // releasing the advisory lock.
        _ = tokio::time::sleep_until(deadline) => Err(interrupt::error()),
        _ = term.recv() => Err(leave_now("SIGTERM")),
        _ = int.recv() => Err(leave_now("SIGINT")),
    }
}

/// A second signal: the run is dropped without waiting for the cancel to take. Closing the
/// connection makes the server end the session, which rolls back and releases the lock: at
/// once between statements, within about a second during one (client_connection_check_interval,
/// PostgreSQL 14 and later).
fn leave_now(signal: &str) -> portcullis::error::Error {
    tracing::warn!(
        "received a second {signal}: leaving without waiting for the cancel; closing the \
         connection ends this session in the server, which rolls back what it had not committed \
         and releases the lock"
    );
    portcullis::interrupt::error()
}

/// Writes the failure reason where Kubernetes reads it, when that file exists and is writable.
fn write_termination_log(reason: &str) {
    let (path, explicit) = config::termination_log_path();
    // Kubernetes keeps at most 4096 bytes; one line, cut on a character boundary.
    let mut line: String = reason.replace('\n', " ");
    let mut end = line.len().min(4000);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push('\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(explicit)
        .open(&path)
    {
        use std::io::Write;
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::{flag_of, is_about};

    #[test]
    fn a_flag_is_named_after_its_variable() {
        assert_eq!(flag_of("PORTCULLIS_DATABASE_URL"), "--database-url");
        assert_eq!(
            flag_of("PORTCULLIS_LOCK_WAIT_TIMEOUT"),
            "--lock-wait-timeout"
        );
    }

    /// `Flags::given` lists the flags by hand: every flag clap knows must be in it, under the
    /// variable it is named after.
    #[test]
    fn every_flag_overrides_the_variable_it_is_named_after() {
        use clap::{CommandFactory, Parser};
        let command = super::Cli::command();
        let longs: Vec<&str> = command
            .get_arguments()
            .filter(|a| a.is_global_set())
            .filter_map(|a| a.get_long())
            .collect();
        assert!(
            longs.contains(&"database-url") && longs.contains(&"log-level"),
            "{longs:?}"
        );
        for long in longs {
            let flag = format!("--{long}");
            let cli = super::Cli::try_parse_from(["portcullis", flag.as_str(), "x"]).unwrap();
            let given = cli.flags.given();
            assert_eq!(given.len(), 1, "{flag}: {given:?}");
            assert_eq!(flag_of(given[0].0), flag);
            assert_eq!(given[0].1, "x");
        }
    }

    #[test]
    fn an_error_is_about_the_variable_it_begins_with() {
        assert!(is_about(
            "PORTCULLIS_SEEDS=\"x\": not a boolean",
            "PORTCULLIS_SEEDS"
        ));
        assert!(is_about(
            "PORTCULLIS_DATABASE_URL is not a valid PostgreSQL connection string",
            "PORTCULLIS_DATABASE_URL"
        ));
        assert!(!is_about(
            "PORTCULLIS_SEEDS_DIR=/x cannot be read",
            "PORTCULLIS_SEEDS"
        ));
        assert!(!is_about(
            "DATABASE_URL is not valid",
            "PORTCULLIS_DATABASE_URL"
        ));
        // The unknown-variable error lists every known name; it is about none of them.
        assert!(!is_about(
            "unknown configuration variable: PORTCULLIS_WAIT_TIMOUT. portcullis refuses unknown \
             PORTCULLIS_* names ... Known names: PORTCULLIS_MIGRATIONS_DIR, ...",
            "PORTCULLIS_MIGRATIONS_DIR"
        ));
    }
}
