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

use crate::config::Database;
use crate::error::Error;

/// The one connection of a run. The advisory lock is a property of this session, so every
/// statement after locking goes through it.
pub struct Session {
    client: deadpool_postgres::Object,
    /// The server process serving us, for logs and for other runners' "who holds the lock".
    pub backend_pid: i32,
    pub database: Database,
}

impl Session {
    fn new(client: deadpool_postgres::Object, backend_pid: i32, database: Database) -> Session {
        Session {
            client,
            backend_pid,
            database,
        }
    }

    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        &self.client
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
        let mut text = format!("{what} failed: ERROR {} {}", db.code().code(), db.message());
        if let Some(d) = db.detail() {
            text.push_str(&format!("; DETAIL: {d}"));
        }
        if let Some(h) = db.hint() {
            text.push_str(&format!("; HINT: {h}"));
        }
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
