//! The one error type. Each variant is a class of failure with its own exit code; the message
//! inside is a full sentence, written where the subject (variable, file, migration, statement)
//! is known, and it always ends with what the operator should do next.

use crate::exit::ExitCode;
use crate::source::lexer::Command;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration or usage invalid; the message names the variable or flag.
    #[error("{0}")]
    Config(String),
    /// The migrations folder is unusable; the message names the file (and line:column).
    #[error("{0}")]
    Source(String),
    /// The tracking table disagrees with the folder; the message names each migration.
    #[error("{0}")]
    History(String),
    /// The database did not accept connections before the wait deadline.
    #[error("{0}")]
    Unreachable(String),
    /// The database refused us in a way that waiting cannot fix.
    #[error("{0}")]
    Refused(String),
    /// Another runner held the advisory lock for the whole lock wait timeout.
    #[error("{0}")]
    LockTimeout(String),
    /// A migration failed and was rolled back.
    #[error("{0}")]
    MigrationFailed(Box<MigrationFailure>),
    /// A seed failed and the seeds' transaction was rolled back.
    #[error("{0}")]
    SeedFailed(Box<SeedFailure>),
    /// A bug, or something the database did that we did not expect.
    #[error("{0}")]
    Internal(String),
    /// SIGINT (2) or SIGTERM (15) arrived; what was running was cancelled and rolled back.
    #[error("{message}")]
    Interrupted { signal: i32, message: String },
}

impl Error {
    /// The exit code for this error: the contract in `exit.rs`, chosen here and applied in `main`.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Config,
            Error::Source(_) => ExitCode::Source,
            Error::History(_) => ExitCode::History,
            Error::Unreachable(_) => ExitCode::Unreachable,
            Error::Refused(_) => ExitCode::Refused,
            Error::LockTimeout(_) => ExitCode::LockTimeout,
            Error::MigrationFailed(_) => ExitCode::MigrationFailed,
            Error::SeedFailed(_) => ExitCode::SeedFailed,
            Error::Internal(_) => ExitCode::Internal,
            Error::Interrupted { signal: 2, .. } => ExitCode::Interrupted,
            Error::Interrupted { .. } => ExitCode::Terminated,
        }
    }

    /// A failed migration: exit 8, or exit 6 when the server refuses it whatever its SQL.
    pub fn migration_failed(failure: MigrationFailure) -> Error {
        match failure.cause() {
            Cause::Refused(_) => Error::Refused(failure.to_string()),
            _ => Error::MigrationFailed(Box::new(failure)),
        }
    }

    /// A failed seed: exit 9, or exit 6 when the server refuses it whatever its SQL.
    pub fn seed_failed(failure: SeedFailure) -> Error {
        match failure.cause() {
            Cause::Refused(_) => Error::Refused(failure.to_string()),
            _ => Error::SeedFailed(Box::new(failure)),
        }
    }
}

/// Everything an operator needs to find and fix a failed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFailure {
    /// Journal tag of the failed migration.
    pub tag: String,
    /// Path of its SQL file as configured (relative paths stay relative).
    pub file: String,
    /// 1-based number of the failed chunk (statement-breakpoint section) and how many there are.
    pub chunk: usize,
    pub chunks: usize,
    /// 1-based line and column inside the file, from the server's error position when it sent
    /// one, else where the chunk starts.
    pub line: usize,
    pub column: usize,
    /// Whether line:column points at the error itself (true) or only at the chunk's start.
    pub exact_position: bool,
    /// The first non-blank line of the failed statement, for orientation.
    pub statement_excerpt: String,
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// What the failed statement does (`ALTER TABLE` ...), when known.
    pub command: Command,
    /// What happened to the run's other work (rolled back, or committed in `each` mode).
    pub consequence: String,
    /// What to do, when the run knows more than the SQLSTATE says (a database that already has
    /// what the migrations create, while the tracking table is empty); else by [`cause`].
    pub advice: Option<String>,
}

impl MigrationFailure {
    fn cause(&self) -> Cause {
        cause(
            &self.sqlstate,
            &self.message,
            self.hint.as_deref(),
            self.command,
        )
    }
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.exact_position {
            format!("{}:{}:{}", self.file, self.line, self.column)
        } else {
            format!("{}:{} (the statement starting there)", self.file, self.line)
        };
        let advice = advice(&self.advice, self.cause(), || {
            format!(
                "Fix the SQL in {} (or the database state it conflicts with) and deploy again.",
                self.file
            )
        });
        write!(
            f,
            "migration {} failed at {} in statement {} of {} (`{}`): {}. {} {advice}",
            self.tag,
            at,
            self.chunk,
            self.chunks,
            self.statement_excerpt,
            server_error(
                &self.sqlstate,
                &self.message,
                self.detail.as_deref(),
                self.hint.as_deref(),
                None
            ),
            self.consequence,
        )
    }
}

/// Everything an operator needs to find and fix a failed seed. The server's texts in here have
/// already had the seed variables' values redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFailure {
    /// The seed's name (its path under the seeds folder) and its file.
    pub name: String,
    pub file: String,
    /// 1-based number of the failed statement in the file and how many there are.
    pub statement: usize,
    pub statements: usize,
    /// 1-based line and column inside the file: the error itself when the server sent a
    /// position, else the start of the failed statement.
    pub line: usize,
    pub column: usize,
    pub exact_position: bool,
    pub statement_excerpt: String,
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// What the failed statement does (`ALTER TABLE` ...), when known.
    pub command: Command,
    /// Where in PL/pgSQL (a `DO` block) it happened, when the server says.
    pub context: Option<String>,
    /// What to do, when the run knows more than the SQLSTATE says (an earlier seed changed
    /// search_path); else by [`cause`].
    pub advice: Option<String>,
}

impl SeedFailure {
    fn cause(&self) -> Cause {
        cause(
            &self.sqlstate,
            &self.message,
            self.hint.as_deref(),
            self.command,
        )
    }
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.exact_position {
            format!("{}:{}:{}", self.file, self.line, self.column)
        } else {
            format!(
                "{}:{}:{} (the statement starting there)",
                self.file, self.line, self.column
            )
        };
        let advice = advice(&self.advice, self.cause(), || {
            format!(
                "Fix the SQL in {} (or the data it conflicts with; seeds must be idempotent, \
                 e.g. INSERT ... ON CONFLICT DO UPDATE) and deploy again.",
                self.file
            )
        });
        write!(
            f,
            "seed {} failed at {} in statement {} of {} (`{}`): {}. The seeds' transaction was \
             rolled back: no seed of this run was applied or recorded, and migrations applied \
             before the seeds stay committed. {advice}",
            self.name,
            at,
            self.statement,
            self.statements,
            self.statement_excerpt,
            server_error(
                &self.sqlstate,
                &self.message,
                self.detail.as_deref(),
                self.hint.as_deref(),
                self.context.as_deref()
            ),
        )
    }
}

/// Whose fault a failed statement (a migration's or a seed's) is, read from its SQLSTATE: the
/// one place that decides both the advice and, through the constructors above, the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The SQL, or the data or schema it conflicts with, in no way more precise: "Fix the SQL",
    /// exit 8 or 9.
    TheSql,
    /// Something outside the SQL that a later run may not meet (a timeout, a cancel, a
    /// deadlock, a full disk, a missing privilege), or a change the rows already in the table
    /// break (a NOT NULL column without a default, a unique index over duplicates): this
    /// advice instead, exit 8 or 9.
    Advice(&'static str),
    /// The server takes no writes at all: this advice, exit 6, since no run against the same
    /// server can succeed and no file needs a change.
    Refused(&'static str),
}

/// The last sentence of a failed statement's message: `own` advice when the run knows more,
/// else the SQLSTATE's ([`cause`]), else `fix_the_sql`.
fn advice(own: &Option<String>, cause: Cause, fix_the_sql: impl FnOnce() -> String) -> String {
    match (own, cause) {
        (Some(advice), _) => advice.clone(),
        (None, Cause::Advice(advice) | Cause::Refused(advice)) => advice.to_string(),
        (None, Cause::TheSql) => fix_the_sql(),
    }
}

/// What to do about SQLSTATE 25006 (a write on a server that takes only reads).
pub(crate) const READ_ONLY: &str = "The server accepts only reads: it is a hot standby (a read \
     replica, or a former primary after a failover), or default_transaction_read_only is on for \
     this database or role; nothing was written. Point PORTCULLIS_DATABASE_URL at the primary \
     (with several hosts, add target_session_attrs=read-write to the URL), or turn \
     default_transaction_read_only off for the migration role.";

/// The advice of a few codes depends on more than the code. The server's message tells most
/// precisely, but only in English: in the language of another `lc_messages`, what the failed
/// statement does (`command`) and SQL words in the HINT tell instead, so each such case below
/// matches either way.
fn cause(sqlstate: &str, message: &str, hint: Option<&str>, command: Command) -> Cause {
    use Command::*;
    let advice = match sqlstate {
        "25006" => return Cause::Refused(READ_ONLY),
        // A change the rows already in the table break.
        // An ALTER TABLE's 23502 is always about rows already there.
        "23502" if message.contains("contains null values") || command == AlterTable => {
            "The table has rows, and the new NOT NULL column has no value for them. Give it a \
             DEFAULT in the same statement (ADD COLUMN ... NOT NULL DEFAULT ...), or add it \
             nullable, fill it (UPDATE) and SET NOT NULL in a later migration; then deploy \
             again."
        }
        "23505"
            if message.starts_with("could not create unique index")
                || matches!(command, CreateIndex | AlterTable) =>
        {
            "The table already holds duplicates of the new unique key (the DETAIL names one). \
             Remove or merge them first (in this migration before the index, or in an earlier \
             one), then deploy again."
        }
        // The HINT (`You might need to specify "USING n::integer"`) keeps the SQL word.
        "42804"
            if message.contains("cannot be cast automatically")
                || (command == AlterTable && hint.is_some_and(|h| h.contains("USING"))) =>
        {
            "drizzle-kit writes a column type change without a USING clause, and PostgreSQL has \
             no automatic conversion between these types, so this fails on every database, \
             empty or not. Edit the migration (it was not applied, here or anywhere) to convert \
             the values as the HINT shows: ALTER COLUMN ... SET DATA TYPE <type> USING \
             <column>::<type>; then deploy again."
        }
        "23503" => {
            "A row refers to a row that does not exist (the DETAIL names it). If this adds a \
             foreign key, fix or delete the rows that break it first, or add it NOT VALID and \
             VALIDATE CONSTRAINT it once they are clean; if this inserts, insert the referenced \
             row first. Then deploy again."
        }
        "23514"
            if message.contains("is violated by some row")
                || matches!(command, AlterTable | AlterDomain) =>
        {
            "Rows already in the table break the new CHECK constraint. Fix them first, or add \
             the constraint NOT VALID and VALIDATE CONSTRAINT it once they are clean; then \
             deploy again."
        }
        // Not the SQL's fault.
        "57014" if message.contains("statement timeout") => {
            "It ran longer than PORTCULLIS_STATEMENT_TIMEOUT allows. If it needs longer, raise \
             it (0 turns it off); an index on a big table is better built with CREATE INDEX \
             CONCURRENTLY, which portcullis runs outside a transaction. Then deploy again."
        }
        "40001" => {
            "PostgreSQL cancelled the transaction to keep it serializable: the database or role \
             runs transactions at REPEATABLE READ or SERIALIZABLE (default_transaction_isolation), \
             and another session changed the same rows meanwhile; nothing is wrong with the SQL. \
             Deploy again (a restart may help), at a quieter time if it recurs, or let the \
             migration role run at READ COMMITTED (ALTER ROLE ... SET \
             default_transaction_isolation = 'read committed')."
        }
        "25P04" => {
            "The server ended the session: the transaction ran longer than transaction_timeout \
             (PostgreSQL 17 and later). portcullis turns that limit off for its own session, \
             so a statement of the migrations or seeds set it (SET transaction_timeout); remove \
             that, or bound single statements with PORTCULLIS_STATEMENT_TIMEOUT instead, then \
             deploy again."
        }
        "25P03" => {
            "The server ended the session: it waited for portcullis's next statement inside the \
             transaction for longer than idle_in_transaction_session_timeout (a slow network \
             path, or a runner starved of CPU); nothing is wrong with the SQL. Raise that \
             timeout for the migration role (ALTER ROLE ... SET \
             idle_in_transaction_session_timeout = ...), then deploy again."
        }
        "57014" if message.contains("user request") => {
            "Another session cancelled it (pg_cancel_backend, an operator or a watchdog); \
             nothing is wrong with the SQL. Deploy again; a restart may help."
        }
        // The server's text in another language (lc_messages): which of the two is unknown.
        "57014" => {
            "It was cancelled: either it ran longer than PORTCULLIS_STATEMENT_TIMEOUT allows \
             (raise it, or 0 turns it off), or another session cancelled it (pg_cancel_backend, \
             an operator or a watchdog); nothing is wrong with the SQL. Then deploy again."
        }
        "40P01" => {
            "It deadlocked with another session (often the app, taking the same tables' locks \
             in another order), and PostgreSQL cancelled this side; nothing is wrong with the \
             SQL. Deploy again, at a quieter time if it recurs; a restart may help."
        }
        "55P04" => {
            "An enum value cannot be used in the transaction that added it, and every pending \
             migration runs in one transaction (drizzle's way). Mark the migration that adds \
             the value (ALTER TYPE ... ADD VALUE) with a first line `-- portcullis: \
             no-transaction`, so that it commits on its own, or set PORTCULLIS_TRANSACTION=each \
             when the value comes from an earlier migration; then deploy again."
        }
        // "extension "x" is not available" (0A000); older releases said "could not open
        // extension control file" (58P01).
        "0A000" | "58P01"
            if (message.starts_with("extension ") && message.ends_with("is not available"))
                || message.contains("extension control file") =>
        {
            "The database server does not have this extension installed; nothing is wrong with \
             the SQL. Install it where PostgreSQL runs (its operating-system package; for \
             pgvector in Docker, an image that has it, such as pgvector/pgvector), or enable it \
             on a managed database (its list of supported extensions), then deploy again."
        }
        // In another language (or, rarely, something else the extension's script does not
        // support): the usual cause, hedged.
        "0A000" | "58P01" if command == CreateExtension => {
            "The server could not create this extension; its message says why, and usually it \
             is that the extension is not installed where PostgreSQL runs. Then install it there \
             (its operating-system package; for pgvector in Docker, an image that has it, such as \
             pgvector/pgvector), or enable it on a managed database (its list of supported \
             extensions), and deploy again."
        }
        "42501" if message.starts_with("permission denied to create extension") => {
            "Creating this extension takes a superuser (PostgreSQL lets other users create only \
             the extensions marked trusted), and no grant changes that. Have a superuser (on a \
             managed database, its admin user or console) run CREATE EXTENSION once; the \
             migration's CREATE EXTENSION IF NOT EXISTS then passes. Then deploy again."
        }
        // The same refusal in another language, or a trusted extension without CREATE on the
        // database.
        "42501" if command == CreateExtension => {
            "Creating an extension takes a superuser, unless the extension is marked trusted \
             (pgcrypto, pg_trgm, ...), which then takes CREATE on the database; the server's \
             message and HINT say which applies. For the first, have a superuser (on a managed \
             database, its admin user or console) run CREATE EXTENSION once, and the \
             migration's CREATE EXTENSION IF NOT EXISTS then passes; for the second, GRANT \
             CREATE ON DATABASE <db> TO <user>. Then deploy again."
        }
        "42501" => {
            "The database user lacks a privilege this statement needs (the server's message says \
             which); nothing is wrong with the SQL. Grant it, or run migrations as the owner of \
             the schema and tables (since PostgreSQL 15, creating in schema public takes GRANT \
             CREATE ON SCHEMA public TO <user>), then deploy again."
        }
        "22P05" => {
            "The database's encoding (the second the message names) cannot store this \
             character; the position above points at it. Leave it out of the file, or \
             keep the data in a database created with ENCODING 'UTF8' (an existing database's \
             encoding cannot be changed: dump it and restore it into a new one), then deploy \
             again."
        }
        "53100" => {
            "The server ran out of disk space; nothing is wrong with the SQL. Free space on the \
             volume that holds the file the message names, or grow it (a path under \
             pg_tblspc/<oid>/ is in a tablespace: select spcname, pg_tablespace_location(oid) \
             from pg_tablespace), then deploy again."
        }
        "53200" | "53400" => {
            "The server ran out of memory or hit a configured limit (its message or HINT names \
             it, such as temp_file_limit or max_locks_per_transaction); nothing is wrong with \
             the SQL. Raise that limit, or apply fewer migrations per transaction \
             (PORTCULLIS_TRANSACTION=each holds fewer locks at once), then deploy again."
        }
        _ => return Cause::TheSql,
    };
    Cause::Advice(advice)
}

/// The server's error as one clause: `ERROR <sqlstate> <message>`, then its DETAIL, HINT and
/// CONTEXT (one line) when it sent them, without the final period the server's texts usually
/// end with, so that the caller's next sentence brings the only one.
pub(crate) fn server_error(
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
    context: Option<&str>,
) -> String {
    // Each part without its final period, so that no ".;" comes between them.
    let part = |text: &str| text.trim_end_matches('.').to_string();
    let mut text = format!("ERROR {sqlstate} {}", part(message));
    if let Some(detail) = detail {
        text.push_str(&format!("; DETAIL: {}", part(detail)));
    }
    if let Some(hint) = hint {
        text.push_str(&format!("; HINT: {}", part(hint)));
    }
    if let Some(context) = context {
        text.push_str(&format!(
            "; CONTEXT: {}",
            part(&context.replace('\n', " / "))
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statement 1 of 1 of drizzle/0001_users.sql failed with `sqlstate` and `message`, nothing
    /// committed.
    fn migration_failure(sqlstate: &str, message: &str) -> MigrationFailure {
        MigrationFailure {
            tag: "0001_users".into(),
            file: "drizzle/0001_users.sql".into(),
            chunk: 1,
            chunks: 1,
            line: 1,
            column: 1,
            exact_position: false,
            statement_excerpt: "CREATE TABLE users (id int)".into(),
            sqlstate: sqlstate.into(),
            message: message.into(),
            detail: None,
            hint: None,
            command: Command::Other,
            consequence: "Nothing was committed.".into(),
            advice: None,
        }
    }

    #[test]
    fn the_parts_of_a_server_error_end_without_their_periods() {
        // PostgreSQL's DETAIL and HINT are sentences that end with a period.
        assert_eq!(
            server_error(
                "0A000",
                "extension \"x\" is not available",
                Some(
                    "Could not open extension control file \"x.control\": No such file or directory."
                ),
                Some(
                    "The extension must first be installed on the system where PostgreSQL is running."
                ),
                None
            ),
            "ERROR 0A000 extension \"x\" is not available; DETAIL: Could not open extension \
             control file \"x.control\": No such file or directory; HINT: The extension must first \
             be installed on the system where PostgreSQL is running"
        );
    }

    #[test]
    fn a_server_text_ending_with_a_period_is_not_doubled() {
        let failure = MigrationFailure {
            detail: Some("Key (id)=(1) already exists.".into()),
            ..migration_failure(
                "23505",
                "duplicate key value violates unique constraint \"users_pkey\"",
            )
        };
        let text = failure.to_string();
        assert!(
            text.contains(
                "DETAIL: Key (id)=(1) already exists. Nothing was committed. Fix the SQL"
            ),
            "{text}"
        );
        assert!(!text.contains(".."), "{text}");
    }

    #[test]
    fn failures_that_are_not_the_sqls_say_what_to_do_instead() {
        let failure =
            |sqlstate: &str, message: &str| migration_failure(sqlstate, message).to_string();
        // (SQLSTATE, the server's message, what the advice must say): none of them is "Fix the
        // SQL".
        let cases = [
            (
                "57014",
                "canceling statement due to statement timeout",
                "PORTCULLIS_STATEMENT_TIMEOUT",
            ),
            (
                "57014",
                "canceling statement due to user request",
                "Another session cancelled it",
            ),
            // The server's own language (here German): both causes are named.
            (
                "57014",
                "storniere Anfrage wegen Zeitüberschreitung der Anweisung",
                "PORTCULLIS_STATEMENT_TIMEOUT",
            ),
            (
                "57014",
                "storniere Anfrage wegen Zeitüberschreitung der Anweisung",
                "pg_cancel_backend",
            ),
            ("40P01", "deadlock detected", "deadlocked"),
            (
                "42804",
                "column \"n\" cannot be cast automatically to type integer",
                "USING <column>::<type>",
            ),
            (
                "0A000",
                "extension \"vector\" is not available",
                "does not have this extension installed",
            ),
            (
                "58P01",
                "could not open extension control file \"/usr/share/postgresql/15/extension/vector.control\": No such file or directory",
                "does not have this extension installed",
            ),
            (
                "42501",
                "permission denied to create extension \"postgis\"",
                "Have a superuser",
            ),
            (
                "55P04",
                "unsafe use of new value \"b\" of enum type role",
                "-- portcullis: no-transaction",
            ),
            ("53100", "could not extend file", "out of disk space"),
            (
                "40001",
                "could not serialize access due to concurrent update",
                "default_transaction_isolation = 'read committed'",
            ),
            (
                "25P04",
                "terminating connection due to transaction timeout",
                "SET transaction_timeout",
            ),
            (
                "25P03",
                "terminating connection due to idle-in-transaction timeout",
                "idle_in_transaction_session_timeout",
            ),
            (
                "42501",
                "permission denied for schema public",
                "GRANT CREATE ON SCHEMA public TO <user>",
            ),
            (
                "53200",
                "out of shared memory",
                "PORTCULLIS_TRANSACTION=each",
            ),
            (
                "23502",
                "column \"c\" of relation \"t\" contains null values",
                "NOT NULL DEFAULT",
            ),
            (
                "23505",
                "could not create unique index \"u\"",
                "duplicates of the new",
            ),
            (
                "23514",
                "check constraint \"k\" of relation \"t\" is violated by some row",
                "NOT VALID",
            ),
        ];
        for (sqlstate, message, says) in cases {
            let text = failure(sqlstate, message);
            assert!(text.contains(says), "{sqlstate} {message}: {text}");
            assert!(
                !text.contains("Fix the SQL"),
                "{sqlstate} {message}: {text}"
            );
        }
        // Near misses keep "Fix the SQL" or their own advice: an INSERT's own NOT NULL
        // violation, and a 0A000 that is not about an extension.
        let insert = failure(
            "23502",
            "null value in column \"c\" of relation \"t\" violates not-null",
        );
        assert!(insert.contains("Fix the SQL"), "{insert}");
        let feature = failure("0A000", "cannot use subquery in check constraint");
        assert!(!feature.contains("extension"), "{feature}");
        assert!(failure("42601", "syntax error").contains("Fix the SQL in drizzle/0001_users.sql"));
    }

    /// A server whose `lc_messages` is not English (the messages below are PostgreSQL 15's in
    /// German): the failed statement's command, and the SQL word in a HINT, tell what the
    /// English text would.
    #[test]
    fn in_another_language_the_statement_and_the_hint_tell_the_cause() {
        use Command::*;
        let failure = |sqlstate: &str, message: &str, hint: Option<&str>, command: Command| {
            MigrationFailure {
                hint: hint.map(str::to_string),
                command,
                ..migration_failure(sqlstate, message)
            }
            .to_string()
        };
        let not_null = "Spalte »name« von Relation »child« enthält NULL-Werte";
        let unique = "konnte Unique Index »child_v« nicht erstellen";
        let cast = "Spalte »n« kann nicht automatisch in Typ integer umgewandelt werden";
        let using = Some("Sie müssen möglicherweise »USING n::integer« angeben.");
        let check = "Check-Constraint »k« von Relation »child« wird von irgendeiner Zeile verletzt";
        let absent = "Erweiterung »pc_absent« ist nicht verfügbar";
        let superuser = "keine Berechtigung, um Erweiterung »dblink« zu erzeugen";
        // (SQLSTATE, message, HINT, command, what the advice says; None: "Fix the SQL").
        let cases = [
            (
                "23502",
                not_null,
                None,
                AlterTable,
                Some("NOT NULL DEFAULT"),
            ),
            ("23502", not_null, None, Other, None),
            (
                "23505",
                unique,
                None,
                CreateIndex,
                Some("duplicates of the new"),
            ),
            (
                "23505",
                unique,
                None,
                AlterTable,
                Some("duplicates of the new"),
            ),
            ("23505", unique, None, Other, None),
            (
                "42804",
                cast,
                using,
                AlterTable,
                Some("USING <column>::<type>"),
            ),
            // A default of the wrong type: its HINT has no USING.
            (
                "42804",
                cast,
                Some("Sie müssen den Ausdruck umschreiben oder eine Typumwandlung vornehmen."),
                AlterTable,
                None,
            ),
            ("42804", cast, using, Other, None),
            ("23514", check, None, AlterTable, Some("NOT VALID")),
            ("23514", check, None, AlterDomain, Some("NOT VALID")),
            ("23514", check, None, Other, None),
            (
                "0A000",
                absent,
                None,
                CreateExtension,
                Some("not installed where PostgreSQL runs"),
            ),
            ("0A000", absent, None, Other, None),
            (
                "42501",
                superuser,
                None,
                CreateExtension,
                Some("unless the extension is marked trusted"),
            ),
        ];
        for (sqlstate, message, hint, command, says) in cases {
            let text = failure(sqlstate, message, hint, command);
            match says {
                Some(says) => {
                    assert!(text.contains(says), "{sqlstate} {command:?}: {text}");
                    assert!(
                        !text.contains("Fix the SQL"),
                        "{sqlstate} {command:?}: {text}"
                    );
                }
                None => assert!(
                    text.contains("Fix the SQL"),
                    "{sqlstate} {command:?}: {text}"
                ),
            }
        }
        // Another 42501 in another language keeps the general advice.
        let schema = failure("42501", "keine Berechtigung für Schema public", None, Other);
        assert!(schema.contains("GRANT CREATE ON SCHEMA public"), "{schema}");
    }

    #[test]
    fn a_server_that_takes_only_reads_is_exit_6_for_a_migration_and_a_seed_alike() {
        let migration = |sqlstate: &str| {
            Error::migration_failed(migration_failure(
                sqlstate,
                "cannot execute CREATE TABLE in a read-only transaction",
            ))
        };
        let seed = |sqlstate: &str| {
            Error::seed_failed(SeedFailure {
                name: "users.sql".into(),
                file: "seeds/users.sql".into(),
                statement: 1,
                statements: 1,
                line: 1,
                column: 1,
                exact_position: false,
                statement_excerpt: "INSERT INTO users VALUES (1)".into(),
                sqlstate: sqlstate.into(),
                message: "cannot execute INSERT in a read-only transaction".into(),
                detail: None,
                hint: None,
                command: Command::Other,
                context: None,
                advice: None,
            })
        };
        for refused in [migration("25006"), seed("25006")] {
            assert_eq!(refused.exit_code(), ExitCode::Refused);
            let text = refused.to_string();
            assert!(text.contains("ERROR 25006"), "{text}");
            assert!(
                text.contains("Point PORTCULLIS_DATABASE_URL at the primary"),
                "{text}"
            );
            assert!(!text.contains("Fix the SQL"), "{text}");
        }
        assert_eq!(migration("23505").exit_code(), ExitCode::MigrationFailed);
        assert_eq!(seed("23505").exit_code(), ExitCode::SeedFailed);
        assert!(
            seed("23505")
                .to_string()
                .contains("Fix the SQL in seeds/users.sql")
        );
    }
}
