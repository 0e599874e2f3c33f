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
                  2 configuration, 3 migrations folder, 4 history disagrees with folder, 5 \
                  database unreachable (retry), 6 refused (auth/database/TLS), 7 lock timeout \
                  (retry), 8 migration failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Command {
    /// Wait for the database, lock, apply pending migrations, unlock (the default).
    Migrate,
}

/// Flags override the environment variable named in each help line.
#[derive(clap::Args, Debug, Default)]
struct Flags {
    /// Connection string (DATABASE_URL). Visible in `ps`: prefer the environment.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// drizzle-kit `out` folder (PORTCULLIS_MIGRATIONS_DIR) [default: ./migrations]
    #[arg(long, global = true, value_name = "DIR")]
    migrations_dir: Option<String>,
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
    /// The flags as the variables they override, appended after the environment.
    fn as_overrides(&self) -> Vec<(String, String)> {
        let pairs = [
            ("PORTCULLIS_DATABASE_URL", &self.database_url),
            ("PORTCULLIS_MIGRATIONS_DIR", &self.migrations_dir),
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
        ];
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect()
    }
}

fn main() -> process::ExitCode {
    // A panic is a bug: report it as one (exit 1) instead of an abort signal.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("portcullis: internal error (a bug, please report it): {info}");
        process::exit(i32::from(ExitCode::Internal.code()));
    }));

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; usage errors exit 2.
            let _ = e.print();
            return process::ExitCode::from(if e.use_stderr() {
                ExitCode::Config.code()
            } else {
                0
            });
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

    let code = match run(cli.command.unwrap_or(Command::Migrate), &overrides) {
        Ok(summary) => {
            tracing::info!("{summary}");
            ExitCode::Success
        }
        Err(e) => {
            let code = e.exit_code();
            tracing::error!(exit_code = code.code(), "{e}");
            code
        }
    };
    process::ExitCode::from(code.code())
}

fn run(
    command: Command,
    overrides: &[(String, String)],
) -> Result<String, portcullis::error::Error> {
    let cfg = Config::from_env(overrides)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            portcullis::error::Error::Internal(format!("cannot start the runtime: {e}"))
        })?;
    match command {
        Command::Migrate => runtime
            .block_on(portcullis::migrate(&cfg))
            .map(|o| o.summary),
    }
}
