//! Small blocking SQL helpers for assertions. Each call opens its own
//! connection on a fresh current-thread tokio runtime running on a scoped
//! helper thread, so they also work inside `#[tokio::test]` functions.

use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Upper bound for one helper call, so a test bug (e.g. a lock wait) fails
/// instead of hanging CI forever.
const HELPER_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `sql` with the simple-query protocol and returns every row of every
/// statement, all values as text (`None` for NULL). Panics with the SQL and
/// the error on failure.
pub fn query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    try_query(url, sql).unwrap_or_else(|e| panic!("query failed: {e}\n  url: {url}\n  sql: {sql}"))
}

/// Like [`query`], returning the error text instead of panicking.
pub fn try_query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    block_on(url, sql, |client, sql| async move {
        let messages = client.simple_query(&sql).await.map_err(describe)?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    })
}

/// Runs `sql` (may contain several statements) with `batch_execute`. Panics
/// with the SQL and the error on failure.
pub fn execute(url: &str, sql: &str) {
    try_execute(url, sql)
        .unwrap_or_else(|e| panic!("execute failed: {e}\n  url: {url}\n  sql: {sql}"))
}

/// Like [`execute`], returning the error text (including the SQLSTATE for
/// server errors, e.g. `... (SQLSTATE 28P01)`) instead of panicking.
pub fn try_execute(url: &str, sql: &str) -> Result<(), String> {
    block_on(url, sql, |client, sql| async move {
        client.batch_execute(&sql).await.map_err(describe)
    })
}

/// Human-readable error text; server errors include severity, message,
/// detail/hint and SQLSTATE.
pub fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" DETAIL: {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" HINT: {h}"));
            }
            s.push_str(&format!(" (SQLSTATE {})", db.code().code()));
            s
        }
        None => e.to_string(),
    }
}

fn block_on<T, F, Fut>(url: &str, sql: &str, f: F) -> Result<T, String>
where
    T: Send,
    F: FnOnce(tokio_postgres::Client, String) -> Fut + Send,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("building a tokio runtime: {e}"))?;
            rt.block_on(async move {
                let work = async move {
                    let (client, connection) = tokio_postgres::connect(&url, NoTls)
                        .await
                        .map_err(|e| format!("connect: {}", describe(e)))?;
                    let conn = tokio::spawn(connection);
                    let result = f(client, sql).await;
                    // The client was moved into `f` and is dropped by now:
                    // let the connection send Terminate and close cleanly.
                    let _ = conn.await;
                    result
                };
                tokio::time::timeout(HELPER_TIMEOUT, work)
                    .await
                    .map_err(|_| format!("timed out after {HELPER_TIMEOUT:?}"))?
            })
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
