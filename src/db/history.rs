//! Drizzle's tracking table: created exactly as drizzle creates it when absent (0.x's shape for a
//! journal folder, 1.0's for a folder-layout one), inspected for a shape drizzle can work with,
//! read whole, and upgraded to 1.0's shape the way drizzle 1.0 does it (drizzle-compat.md 2.2,
//! 4.4, E23-E30).

use super::{Session, qualified, query_failed, quote_ident, schema_query_failed};
use crate::config::format_duration;
use crate::error::Error;
use crate::plan::HistoryRow;
use crate::source::Layout;
use std::time::Duration;

/// What we learned about the table, needed to write rows drizzle would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: String,
    pub name: String,
    /// `"schema"."table"`, for SQL and messages.
    pub qualified: String,
    /// The table has drizzle 1.0's `name` column: fill it so drizzle 1.0 does not re-apply.
    pub has_name_column: bool,
    /// Whether this run created the schema or table.
    pub created: bool,
}

/// One column, as `pg_attribute` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type` output, e.g. `bigint`, `numeric`, `character varying(64)`.
    pub ty: String,
    pub not_null: bool,
    /// Has a default or is an identity column.
    pub has_default: bool,
}

const SCHEMA_EXISTS: &str = "select exists(select 1 from pg_namespace where nspname = $1)";
/// Other tables that look like drizzle's tracking table: by name (the default name, or ours in
/// another schema), or under any name (drizzle's `migrations.table` setting) by its columns:
/// `id`, a text `hash` and a bigint `created_at` (an app's table with a timestamp `created_at`
/// does not count).
const ELSEWHERE: &str = "\
select n.nspname::text, c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and not (n.nspname = $1 and c.relname = $2)
   and n.nspname not in ('pg_catalog', 'information_schema')
   and (c.relname in ('__drizzle_migrations', $2)
        or (select count(*) from pg_attribute a where a.attrelid = c.oid and a.attnum > 0
             and not a.attisdropped
             and (a.attname = 'id'
                  or (a.attname = 'hash' and a.atttypid in ('text'::regtype, 'varchar'::regtype))
                  or (a.attname = 'created_at'
                      and a.atttypid in ('int8'::regtype, 'numeric'::regtype)))) = 3)
 order by 1, 2";

/// drizzle-orm's DDL for the table, verbatim apart from the quoted names: 0.x's for a journal
/// folder, 1.0's (with `name` and `applied_at`) for a folder-layout one.
fn create_table_sql(qualified: &str, layout: Layout) -> String {
    match layout {
        Layout::Journal => format!(
            "CREATE TABLE IF NOT EXISTS {qualified} (\n\t\t\tid SERIAL PRIMARY KEY,\n\t\t\thash text NOT NULL,\n\t\t\tcreated_at bigint\n\t\t)"
        ),
        Layout::Folders => format!(
            "\n\t\t\tCREATE TABLE IF NOT EXISTS {qualified} (\n\t\t\t\tid SERIAL PRIMARY KEY,\n\t\t\t\thash text NOT NULL,\n\t\t\t\tcreated_at bigint,\n\t\t\t\tname text,\n\t\t\t\tapplied_at timestamp with time zone DEFAULT now()\n\t\t\t)\n\t\t"
        ),
    }
}

/// Checks that drizzle (and we) can use the table: `hash` text-like and long enough,
/// `created_at` bigint or numeric (pg-proxy), `id` generated, no other required column.
/// Returns every problem found.
pub fn check_columns(qualified: &str, columns: &[Column]) -> Result<bool, Vec<String>> {
    let mut problems = Vec::new();
    let find = |n: &str| columns.iter().find(|c| c.name == n);
    match find("hash") {
        None => problems.push("it has no `hash` column".to_string()),
        Some(c) => {
            let ok = c.ty == "text"
                || c.ty == "character varying"
                || varchar_len(&c.ty).is_some_and(|n| n >= 64);
            if !ok {
                problems.push(format!(
                    "its `hash` column is {}, which cannot hold a 64-character sha256 hex; \
                     drizzle creates it as text",
                    c.ty
                ));
            }
        }
    }
    match find("created_at") {
        None => problems.push("it has no `created_at` column".to_string()),
        Some(c) if c.ty == "bigint" || c.ty == "numeric" || c.ty.starts_with("numeric(") => {}
        Some(c) => {
            let why = match c.ty.as_str() {
                "integer" | "smallint" => "too small for millisecond timestamps: inserts overflow",
                t if t.starts_with("timestamp") || t == "date" => {
                    "drizzle reads it as a number, gets NaN, and then never applies anything"
                }
                t if t == "text" || t.contains("char") => {
                    "it sorts as text, so drizzle picks the wrong newest migration once values \
                     differ in length"
                }
                _ => "drizzle compares it as a number of milliseconds",
            };
            problems.push(format!(
                "its `created_at` column is {} ({why}); drizzle creates it as bigint. Convert it \
                 (ALTER TABLE {qualified} ALTER COLUMN created_at TYPE bigint USING ...) after \
                 taking a backup",
                c.ty
            ));
        }
    }
    match find("id") {
        Some(c) if !c.has_default => problems.push(
            "its `id` column has no default, so inserts without an id fail; drizzle creates it \
             as SERIAL"
                .to_string(),
        ),
        _ => {}
    }
    for c in columns {
        if !matches!(
            c.name.as_str(),
            "id" | "hash" | "created_at" | "name" | "applied_at"
        ) && c.not_null
            && !c.has_default
        {
            problems.push(format!(
                "its column `{}` is NOT NULL without a default, so drizzle's inserts fail",
                c.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(columns.iter().any(|c| c.name == "name"))
    } else {
        Err(problems)
    }
}

fn varchar_len(ty: &str) -> Option<u32> {
    ty.strip_prefix("character varying(")
        .or_else(|| ty.strip_prefix("character("))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
}

/// A row as stored, `created_at` still as text (it may not be a number in a damaged table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub id: i64,
    pub hash: String,
    pub created_at: Option<String>,
    /// `applied_at` as text, when the table has that column (drizzle 1.0 shape).
    pub applied_at: Option<String>,
    /// `name`, when the table has that column (drizzle 1.0 shape) and it is not NULL.
    pub name: Option<String>,
}

/// Everything read from the tracking table, without judging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub table: Table,
    pub exists: bool,
    pub columns: Vec<Column>,
    pub raw: Vec<RawRow>,
    /// When the table has no rows (`prepare` only): other tables that look like drizzle's
    /// tracking table, qualified, which a changed `migrations.schema`/`table` setting leaves.
    pub elsewhere: Vec<String>,
}

impl Snapshot {
    /// Problems with the table's shape (empty when drizzle can use it).
    pub fn shape_problems(&self) -> Vec<String> {
        if !self.exists {
            return Vec::new();
        }
        check_columns(&self.table.qualified, &self.columns)
            .err()
            .unwrap_or_default()
    }

    /// The rows whose `created_at` is not a whole number (mistyped or damaged values).
    pub fn unparsable(&self) -> Vec<&RawRow> {
        self.raw
            .iter()
            .filter(|r| {
                r.created_at
                    .as_deref()
                    .is_some_and(|t| t.parse::<i64>().is_err())
            })
            .collect()
    }

    /// The rows as the planner sees them; unparsable `created_at` values count as NULL (the
    /// caller reports them separately).
    pub fn rows(&self) -> Vec<HistoryRow> {
        self.raw
            .iter()
            .map(|r| HistoryRow {
                id: r.id,
                hash: r.hash.clone(),
                created_at: r.created_at.as_deref().and_then(|t| t.parse().ok()),
                name: r.name.clone(),
            })
            .collect()
    }

    /// The type of `created_at` as `format_type` prints it.
    pub fn created_at_type(&self) -> Option<&str> {
        self.columns
            .iter()
            .find(|c| c.name == "created_at")
            .map(|c| c.ty.as_str())
    }

    /// Whether `portcullis repair` can fix every shape problem: only `created_at`'s type is
    /// wrong (repair converts it to bigint).
    fn repair_fixes_shape(&self) -> bool {
        let mut columns = self.columns.clone();
        match columns.iter_mut().find(|c| c.name == "created_at") {
            Some(c) => c.ty = "bigint".into(),
            None => return false,
        }
        check_columns(&self.table.qualified, &columns).is_ok()
    }

    /// Refuses a table drizzle cannot use or rows it cannot read (exit 4), as `migrate` must.
    pub fn require_usable(&self) -> Result<Vec<HistoryRow>, Error> {
        let q = &self.table.qualified;
        let problems = self.shape_problems();
        if !problems.is_empty() {
            let next = if self.repair_fixes_shape() {
                "`portcullis repair` shows how it would fix the table."
            } else {
                "After taking a backup, alter the table to drizzle's shape by hand (drizzle \
                 creates id SERIAL PRIMARY KEY, hash text NOT NULL, created_at bigint); \
                 `portcullis repair` only fixes created_at."
            };
            return Err(Error::History(format!(
                "the tracking table {q} does not have the shape drizzle gives it, so neither \
                 drizzle nor portcullis can use it safely; nothing was applied. {}. {next}",
                problems.join("; ").trim_end_matches('.')
            )));
        }
        let bad: Vec<String> = self
            .unparsable()
            .iter()
            .map(|r| {
                format!(
                    "id {}: created_at {}",
                    r.id,
                    r.created_at.as_deref().unwrap_or("")
                )
            })
            .collect();
        if !bad.is_empty() {
            return Err(Error::History(format!(
                "{q} has created_at values that are not whole milliseconds ({}); drizzle only \
                 writes integers. `portcullis repair` shows how it would fix them; nothing was \
                 applied.",
                bad.join(", ")
            )));
        }
        Ok(self.rows())
    }
}

/// What the catalogs say about the tracking table, in one exchange: whether the schema exists,
/// the relation's kind (`None`: no such relation), and its columns.
struct Catalog {
    schema_exists: bool,
    kind: Option<String>,
    columns: Vec<Column>,
}

/// One row per column of the relation, or one row of NULLs after the first column when there is
/// no such relation.
const CATALOG: &str = "\
select n.oid is not null, c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       a.attnotnull, a.atthasdef or a.attidentity <> ''
  from (select 1) one
  left join pg_namespace n on n.nspname = $1
  left join pg_class c on c.relnamespace = n.oid and c.relname = $2
  left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
 order by a.attnum";

/// The rows of a table in drizzle 0.x's shape, or 1.0's (`named`: with a `name` column).
/// `applied_at` is not read (only `status` shows it).
fn rows_of_shape(qualified: &str, named: bool) -> String {
    format!(
        "select id::int8, hash::text, created_at::text, null::text, {} from {qualified} \
         order by id",
        if named { "name::text" } else { "null::text" }
    )
}

/// Reads [`Catalog`], parameters typed so that it is one round trip (no separate prepare).
async fn catalog(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<Catalog, Error> {
    use tokio_postgres::types::Type;
    let rows = client
        .query_typed(CATALOG, &[(&schema, Type::NAME), (&table, Type::NAME)])
        .await
        .map_err(|e| query_failed("looking up the tracking table", &e))?;
    let first = rows.first();
    Ok(Catalog {
        schema_exists: first.is_some_and(|r| r.get(0)),
        kind: first.and_then(|r| r.get(1)),
        columns: rows
            .iter()
            .filter_map(|r| {
                Some(Column {
                    name: r.get::<_, Option<String>>(2)?,
                    ty: r.get(3),
                    not_null: r.get(4),
                    has_default: r.get(5),
                })
            })
            .collect(),
    })
}

/// Reads the table without changing anything (no DDL): for `status`, `plan`, `validate`, `await`.
pub async fn read(session: &Session, schema: &str, table: &str) -> Result<Snapshot, Error> {
    let found = catalog(session.client(), schema, table).await?;
    read_with(session, schema, table, found).await
}

/// The cheap read of an existing table, for a `migrate` run that finds nothing to do (the common
/// case: a pod start, or a runner that queued behind another): the columns as a `SELECT *`
/// describes them (parsed, not planned) and the rows as `COPY ... TO STDOUT` sends them. Neither
/// runs the planner or resolves an operator, which is most of what the catalog query and the
/// `SELECT ... ORDER BY` cost a session whose caches are cold: a fresh one, or one whose caches
/// another runner's migrations flushed while it waited. Measured on PostgreSQL 15 in fresh
/// sessions, the COPY costs the server 0.4 ms of CPU and the catalog query with the ordered
/// `SELECT` 2.5 ms; a whole no-op run went from 10.7 to 8.5 ms of server CPU.
///
/// `release` (the shared unlock of a runner that queued, and its key) goes out with the COPY, so
/// that it is sent whatever comes of the read. `None` when the table cannot be read this way or
/// has a column, type or value this read does not judge (no table, a view, another shape, a
/// damaged row): the caller then takes the normal path, which explains any problem. What it
/// cannot see is whether `id` has a default, which matters only to an insert; every run that
/// inserts takes the normal path ([`prepare`]) first. `applied_at` is not read (only `status`
/// shows it).
pub async fn read_quickly(
    session: &Session,
    schema: &str,
    table: &str,
    release: Option<(&str, i64)>,
) -> Option<Snapshot> {
    use tokio_postgres::types::Type;
    let client = session.client();
    let q = qualified(schema, table);
    let (select_all, copy_all) = (format!("select * from {q}"), format!("copy {q} to stdout"));
    let (described, copy) = tokio::join!(client.prepare(&select_all), client.prepare(&copy_all));
    // Nothing more is asked of a table that is not there (one error in the server's log, not
    // two, on a database's first run).
    let copied = async {
        described.as_ref().ok()?;
        let stream = client.copy_out(copy.as_ref().ok()?).await.ok()?;
        let mut stream = std::pin::pin!(stream);
        let mut text = Vec::new();
        while let Some(chunk) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
        {
            text.extend_from_slice(&chunk.ok()?);
        }
        Some(text)
    };
    let released = async {
        let (sql, key) = release?;
        let key_param: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] =
            [(&key, Type::INT8)];
        Some(client.query_typed(sql, &key_param).await)
    };
    let (copied, released) = tokio::join!(copied, released);
    if let Some(Err(e)) = released {
        tracing::debug!(
            "could not release the shared migration lock ({e}); the server releases it with the \
             session"
        );
    }
    let fallback = |why: &str| {
        tracing::debug!("{q}: {why}, so it is read the usual way (catalogs, then rows)");
    };
    let described = match described {
        Ok(statement) => statement,
        Err(e) => {
            let why = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_string());
            fallback(&format!("it cannot be described ({why})"));
            return None;
        }
    };
    let Some(columns) = quick_columns(described.columns()) else {
        fallback("it has a column that is not drizzle's, or of a type not judged here");
        return None;
    };
    let Some(raw) = copied.and_then(|text| copy_rows(&text, &columns)) else {
        fallback("COPY failed or sent a row not judged here");
        return None;
    };
    tracing::debug!("read {q} with COPY: {} rows", raw.len());
    // COPY reads a plain table only (a view, a partitioned or foreign table refuses it).
    let found = Catalog {
        schema_exists: true,
        kind: Some("r".to_string()),
        columns,
    };
    let mut snapshot = snapshot_of(schema, table, found).ok()?;
    snapshot.raw = raw;
    Some(snapshot)
}

/// The table's columns as [`Column`]s, when each is one of drizzle's five and of a type whose
/// `format_type` name follows from the row description alone; `None` otherwise.
fn quick_columns(described: &[tokio_postgres::Column]) -> Option<Vec<Column>> {
    described
        .iter()
        .map(|c| quick_column(c.name(), c.type_(), c.type_modifier()))
        .collect()
}

/// One column of [`quick_columns`]. Whether a column is NOT NULL or has a default is not in a
/// row description: `id` is taken to have its default (see [`read_quickly`]), and no other
/// column is judged on it, since only drizzle's five are taken.
fn quick_column(name: &str, ty: &tokio_postgres::types::Type, modifier: i32) -> Option<Column> {
    use tokio_postgres::types::Type;
    if !matches!(name, "id" | "hash" | "created_at" | "name" | "applied_at") {
        return None;
    }
    let ty = match (ty, modifier) {
        (&Type::INT2, _) => "smallint".to_string(),
        (&Type::INT4, _) => "integer".to_string(),
        (&Type::INT8, _) => "bigint".to_string(),
        (&Type::TEXT, _) => "text".to_string(),
        (&Type::VARCHAR, -1) => "character varying".to_string(),
        (&Type::VARCHAR, m) if m > 4 => format!("character varying({})", m - 4),
        (&Type::NUMERIC, -1) => "numeric".to_string(),
        (&Type::TIMESTAMPTZ, -1) => "timestamp with time zone".to_string(),
        (&Type::TIMESTAMP, -1) => "timestamp without time zone".to_string(),
        _ => return None,
    };
    Some(Column {
        name: name.to_string(),
        ty,
        not_null: false,
        has_default: name == "id",
    })
}

/// The rows of `COPY ... TO STDOUT`'s text format (one line per row, fields separated by tabs,
/// `\N` for NULL, backslash escapes), in `id` order; `None` when a line does not have one field
/// per column, or `id` or `hash` is not what drizzle's shape allows.
fn copy_rows(text: &[u8], columns: &[Column]) -> Option<Vec<RawRow>> {
    let at = |n: &str| columns.iter().position(|c| c.name == n);
    let (id, hash, created_at, name) = (at("id")?, at("hash")?, at("created_at")?, at("name"));
    let text = std::str::from_utf8(text).ok()?;
    let mut rows = Vec::new();
    for line in text.split_terminator('\n') {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns.len() {
            return None;
        }
        rows.push(RawRow {
            id: copy_field(fields[id])?.parse().ok()?,
            hash: copy_field(fields[hash])?,
            created_at: copy_field(fields[created_at]),
            applied_at: None,
            name: name.and_then(|i| copy_field(fields[i])),
        });
    }
    rows.sort_by_key(|r| r.id);
    Some(rows)
}

/// One field of COPY's text format, unescaped; `None` for NULL (`\N`).
fn copy_field(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    if !field.contains('\\') {
        return Some(field.to_string());
    }
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if b != b'\\' || i == bytes.len() {
            out.push(b);
            continue;
        }
        let c = bytes[i];
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => out.push(copy_number(bytes, &mut i, 8, u32::from(c - b'0'))),
            b'x' if bytes.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                out.push(copy_number(bytes, &mut i, 16, 0));
            }
            other => out.push(other),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The rest of an escaped byte in COPY's text format: up to two more digits of `radix` from
/// `bytes[*i..]` after the value `first` (`\ooo` octal, `\xhh` hex), as the byte they make.
fn copy_number(bytes: &[u8], i: &mut usize, radix: u32, first: u32) -> u8 {
    let mut v = first;
    for _ in 0..2 {
        let Some(d) = bytes.get(*i).and_then(|&d| (d as char).to_digit(radix)) else {
            break;
        };
        v = v * radix + d;
        *i += 1;
    }
    v as u8
}

fn raw_row(r: &tokio_postgres::Row) -> RawRow {
    RawRow {
        id: r.get(0),
        hash: r.get(1),
        created_at: r.get(2),
        applied_at: r.get(3),
        name: r.get(4),
    }
}

/// The snapshot of what `found` describes, rows not read yet.
fn snapshot_of(schema: &str, table: &str, found: Catalog) -> Result<Snapshot, Error> {
    let qualified = qualified(schema, table);
    let mut snapshot = Snapshot {
        table: Table {
            schema: schema.to_string(),
            name: table.to_string(),
            qualified: qualified.clone(),
            has_name_column: false,
            created: false,
        },
        exists: false,
        columns: Vec::new(),
        raw: Vec::new(),
        elsewhere: Vec::new(),
    };
    match found.kind.as_deref() {
        None => return Ok(snapshot),
        Some("r" | "p") => {}
        Some(other) => {
            return Err(Error::History(format!(
                "{qualified} exists but is not a table (pg_class.relkind {other:?}); drizzle \
                 needs a plain table there. Rename that object or set \
                 PORTCULLIS_MIGRATIONS_SCHEMA / PORTCULLIS_MIGRATIONS_TABLE to drizzle.config's \
                 migrations.schema / migrations.table."
            )));
        }
    }
    snapshot.exists = true;
    snapshot.columns = found.columns;
    snapshot.table.has_name_column = snapshot.columns.iter().any(|c| c.name == "name");
    Ok(snapshot)
}

async fn read_with(
    session: &Session,
    schema: &str,
    table: &str,
    found: Catalog,
) -> Result<Snapshot, Error> {
    let client = session.client();
    let mut snapshot = snapshot_of(schema, table, found)?;
    if !snapshot.exists {
        return Ok(snapshot);
    }
    let qualified = snapshot.table.qualified.clone();
    let has = |n: &str| snapshot.columns.iter().any(|c| c.name == n);
    if !(has("id") && has("hash") && has("created_at")) {
        // The shape check reports what is missing; there is nothing to read.
        return Ok(snapshot);
    }
    let applied_at = if has("applied_at") {
        "applied_at::text"
    } else {
        "null::text"
    };
    let name = if has("name") {
        "name::text"
    } else {
        "null::text"
    };
    snapshot.raw = client
        .query_typed(
            &format!(
                "select id::int8, hash::text, created_at::text, {applied_at}, {name} from \
                 {qualified} order by id"
            ),
            &[],
        )
        .await
        .map_err(|e| query_failed(&format!("reading {qualified}"), &e))?
        .iter()
        .map(raw_row)
        .collect();
    Ok(snapshot)
}

/// Creates the migrations schema when it is absent (only then, so a role without database
/// CREATE privilege works with an existing schema, E30). Returns whether it was created. Shared
/// by the tracking table and the seeds table.
pub(crate) async fn ensure_schema(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<bool, Error> {
    let exists: bool = client
        .query_one(SCHEMA_EXISTS, &[&schema])
        .await
        .map_err(|e| query_failed("checking the migrations schema", &e))?
        .get(0);
    if exists {
        return Ok(false);
    }
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(schema)
        ))
        .await
        .map_err(|e| {
            schema_query_failed(
                &format!("creating schema {}", quote_ident(schema)),
                &e,
                true,
            )
        })?;
    Ok(true)
}

/// Creates the schema and table when absent, issuing DDL only then (so a role without CREATE
/// privilege works on an existing table, E30), in the shape the folder's drizzle creates.
/// Returns whether anything was created, and what the catalogs say now.
async fn ensure(
    session: &Session,
    schema: &str,
    table: &str,
    layout: Layout,
) -> Result<(bool, Catalog), Error> {
    let client = session.client();
    let qualified = qualified(schema, table);
    let found = catalog(client, schema, table).await?;
    if found.kind.is_some() {
        return Ok((false, found));
    }
    // One message: the schema (only when absent) and the table. The catalogs are read again in
    // the same round trip; that answer counts only when the DDL went through.
    let ddl = create_table_sql(&qualified, layout);
    let schema_existed = found.schema_exists;
    let ddl = if schema_existed {
        ddl
    } else {
        format!(
            "CREATE SCHEMA IF NOT EXISTS {};\n{ddl}",
            quote_ident(schema)
        )
    };
    let (created, found) = tokio::join!(client.batch_execute(&ddl), catalog(client, schema, table));
    created
        .map_err(|e| schema_query_failed(&format!("creating {qualified}"), &e, !schema_existed))?;
    tracing::info!("created the tracking table {qualified}");
    Ok((true, found?))
}

/// For `migrate`: ensure the table, read it, refuse what drizzle cannot use, and warn when an
/// empty table sits beside another drizzle tracking table (a changed migrations.schema/table).
/// An existing table costs two exchanges: the catalogs, then the rows.
pub async fn prepare(
    session: &Session,
    schema: &str,
    table: &str,
    layout: Layout,
) -> Result<Snapshot, Error> {
    let (created, found) = ensure(session, schema, table, layout).await?;
    // A table created a moment ago under our lock has no rows to read.
    let mut snapshot = if created {
        snapshot_of(schema, table, found)?
    } else {
        read_with(session, schema, table, found).await?
    };
    snapshot.table.created = created;
    let rows = snapshot.require_usable()?;
    if rows.is_empty() {
        use tokio_postgres::types::Type;
        let others: Vec<String> = session
            .client()
            .query_typed(ELSEWHERE, &[(&schema, Type::NAME), (&table, Type::NAME)])
            .await
            .map_err(|e| query_failed("looking for other tracking tables", &e))?
            .iter()
            .map(|r| qualified(&r.get::<_, String>(0), &r.get::<_, String>(1)))
            .collect();
        snapshot.elsewhere.clone_from(&others);
        if !others.is_empty() {
            tracing::warn!(
                "{} is empty, but {} exist(s); if this database was migrated with another \
                 migrations.schema/table setting, set PORTCULLIS_MIGRATIONS_SCHEMA and \
                 PORTCULLIS_MIGRATIONS_TABLE to match, or every migration will run again",
                snapshot.table.qualified,
                others.join(", ")
            );
        }
    }
    Ok(snapshot)
}

/// drizzle 1.0's upgrade of a 0.x-shaped table, as drizzle runs it: in one transaction, add
/// `name` and `applied_at`, then give each row its folder's name and `applied_at` NULL ("applied
/// before the upgrade"). `names` comes from `upgrade::compute`, after the caller has judged the
/// whole run, so a refusal never leaves a half-upgraded table.
pub async fn upgrade(
    session: &Session,
    table: &mut Table,
    names: &[(i64, String)],
) -> Result<(), Error> {
    let client = session.client();
    let q = &table.qualified;
    let fail = |what: &str, e: tokio_postgres::Error| query_failed(what, &e);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| fail("BEGIN", e))?;
    let result = async {
        client
            .batch_execute(&format!(
                "ALTER TABLE {q} ADD COLUMN IF NOT EXISTS \"name\" text;\
                 ALTER TABLE {q} ADD COLUMN IF NOT EXISTS \"applied_at\" timestamp with time zone \
                 DEFAULT now()"
            ))
            .await
            .map_err(|e| fail(&format!("adding name and applied_at to {q}"), e))?;
        let update = format!(
            "UPDATE {q} SET \"name\" = $1::text, \"applied_at\" = NULL WHERE \"id\" = $2::int8"
        );
        for (id, name) in names {
            client
                .execute(&update, &[name, id])
                .await
                .map_err(|e| fail(&format!("naming row id {id} of {q}"), e))?;
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| fail("COMMIT", e))
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result?;
    table.has_name_column = true;
    tracing::info!(
        "upgraded {q} to drizzle 1.0's shape (added name and applied_at, named {} row{})",
        names.len(),
        if names.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// How long `repair --apply` waits for a lock another session holds on the table.
fn repair_lock_wait(session: &Session) -> Duration {
    (session.answer_timeout / 2).max(Duration::from_millis(1))
}

/// A statement of `repair --apply` failed; a lock wait that ran out, or a deadlock, says so.
fn repair_failed(session: &Session, q: &str, what: &str, e: &tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) {
        return Error::History(format!(
            "{what} deadlocked with another session that uses {q} (PostgreSQL ended this side); \
             nothing was changed. Run `portcullis repair --apply` again when the app or \
             drizzle-kit is not using the table."
        ));
    }
    if e.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) {
        return query_failed(what, e);
    }
    Error::History(format!(
        "another session kept a lock on {q} for {} while {what} (a transaction of drizzle-kit \
         or of the app that uses the table, or one left open); nothing was changed. Find it in \
         pg_locks / pg_stat_activity, then run `portcullis repair --apply` again.",
        format_duration(repair_lock_wait(session))
    ))
}

/// Inside `repair --apply`'s transaction: locks the table against writes (drizzle-kit takes no
/// lock of ours) and checks that its rows are still the ones the repair was planned from. For
/// the rest of the transaction a lock held elsewhere is waited for at most
/// [`repair_lock_wait`].
async fn unchanged_since(session: &Session, snapshot: &Snapshot) -> Result<(), Error> {
    let client = session.client();
    let t = &snapshot.table;
    let q = &t.qualified;
    // statement_timeout is off for the rest of the transaction: a database's or role's, meant
    // for the app, would cut the lock wait (bounded by lock_timeout here) or the backup short.
    client
        .batch_execute(&format!(
            "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = {}; \
             LOCK TABLE {q} IN SHARE ROW EXCLUSIVE MODE",
            repair_lock_wait(session).as_millis()
        ))
        .await
        .map_err(|e| repair_failed(session, q, "locking it", &e))?;
    let now: Vec<RawRow> = client
        .query_typed(&rows_of_shape(q, t.has_name_column), &[])
        .await
        .map_err(|e| query_failed(&format!("reading {q} again"), &e))?
        .iter()
        .map(raw_row)
        .collect();
    let same = now.len() == snapshot.raw.len()
        && now.iter().zip(&snapshot.raw).all(|(a, b)| {
            a.id == b.id && a.hash == b.hash && a.created_at == b.created_at && a.name == b.name
        });
    if !same {
        return Err(Error::History(format!(
            "{q} changed while repair was planning (another runner, such as drizzle-kit, wrote \
             to it: {} row(s) then, {} now); nothing was changed. Run `portcullis repair` again \
             to see the plan for what it holds now.",
            snapshot.raw.len(),
            now.len()
        )));
    }
    Ok(())
}

/// `repair --apply`: in one transaction, copies the table to `<table>_backup_<stamp>` in the same
/// schema, then applies `plan`. Returns the backup's qualified name. Touches no other table.
pub async fn apply_repair(
    session: &Session,
    snapshot: &Snapshot,
    plan: &crate::repair::RepairPlan,
    stamp: &str,
) -> Result<String, Error> {
    use crate::repair::Action;
    let client = session.client();
    let t = &snapshot.table;
    // Keep the backup name within 63 bytes by shortening the table part.
    let suffix = format!("_backup_{stamp}");
    let mut base = t.name.clone();
    while base.len() + suffix.len() > 63 {
        base.pop();
    }
    let backup = qualified(&t.schema, &format!("{base}{suffix}"));
    let fail =
        |what: &str, e: tokio_postgres::Error| repair_failed(session, &t.qualified, what, &e);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| fail("BEGIN", e))?;
    let result = async {
        unchanged_since(session, snapshot).await?;
        client
            .batch_execute(&format!("CREATE TABLE {backup} AS TABLE {}", t.qualified))
            .await
            .map_err(|e| fail(&format!("backing up {} to {backup}", t.qualified), e))?;
        for action in &plan.actions {
            match action {
                Action::ConvertToBigint { .. } => {
                    // Every kept row's value is an integer computed by the plan; inlining
                    // integers is safe, and one statement converts the column.
                    let deleted = plan.actions.iter().filter_map(|a| match a {
                        Action::DeleteDuplicate { id, .. } => Some(format!(" WHEN {id} THEN NULL")),
                        _ => None,
                    });
                    let cases: String = plan
                        .values
                        .iter()
                        .map(|(id, v)| format!(" WHEN {id} THEN {v}::bigint"))
                        .chain(deleted)
                        .collect();
                    // The table is locked and checked against the plan's snapshot, so every
                    // row has its WHEN (NULL for a duplicate deleted below); a row without one
                    // would make the conversion fail (a text that is not an integer), never
                    // turn its value into NULL.
                    let using = if cases.is_empty() {
                        "NULL::bigint".to_string()
                    } else {
                        format!("CASE id{cases} ELSE ('not planned: ' || id)::bigint END")
                    };
                    client
                        .batch_execute(&format!(
                            "ALTER TABLE {} ALTER COLUMN created_at TYPE bigint USING {using}",
                            t.qualified
                        ))
                        .await
                        .map_err(|e| fail("converting created_at to bigint", e))?;
                }
                Action::SetCreatedAt { id, to, .. } => {
                    client
                        .execute(
                            &format!(
                                "UPDATE {} SET created_at = $1::int8 WHERE id = $2::int8",
                                t.qualified
                            ),
                            &[to, id],
                        )
                        .await
                        .map_err(|e| fail(&format!("setting created_at of row {id}"), e))?;
                }
                Action::SetName { id, name } => {
                    client
                        .execute(
                            &format!(
                                "UPDATE {} SET \"name\" = $1::text WHERE id = $2::int8",
                                t.qualified
                            ),
                            &[name, id],
                        )
                        .await
                        .map_err(|e| fail(&format!("naming row {id}"), e))?;
                }
                Action::DeleteDuplicate { id, .. } => {
                    client
                        .execute(
                            &format!("DELETE FROM {} WHERE id = $1::int8", t.qualified),
                            &[id],
                        )
                        .await
                        .map_err(|e| fail(&format!("deleting duplicate row {id}"), e))?;
                }
            }
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| fail("COMMIT", e))
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result.map(|()| backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, not_null: bool, has_default: bool) -> Column {
        Column {
            name: name.into(),
            ty: ty.into(),
            not_null,
            has_default,
        }
    }

    fn drizzle_columns() -> Vec<Column> {
        vec![
            col("id", "integer", true, true),
            col("hash", "text", true, false),
            col("created_at", "bigint", false, false),
        ]
    }

    #[test]
    fn drizzle_shapes_are_accepted() {
        assert_eq!(check_columns("t", &drizzle_columns()), Ok(false));
        let mut numeric = drizzle_columns();
        numeric[2].ty = "numeric".into();
        assert_eq!(check_columns("t", &numeric), Ok(false));
        let mut v1 = drizzle_columns();
        v1.push(col("name", "text", false, false));
        v1.push(col("applied_at", "timestamp with time zone", false, true));
        assert_eq!(check_columns("t", &v1), Ok(true));
    }

    #[test]
    fn broken_shapes_are_explained() {
        for (ty, needle) in [
            ("integer", "overflow"),
            ("text", "sorts as text"),
            ("timestamp without time zone", "NaN"),
        ] {
            let mut cols = drizzle_columns();
            cols[2].ty = ty.into();
            let p = check_columns("t", &cols).unwrap_err();
            assert!(p[0].contains(needle), "{ty}: {p:?}");
        }
        let mut cols = drizzle_columns();
        cols[1].ty = "character varying(32)".into();
        cols[0].has_default = false;
        cols.push(col("owner", "text", true, false));
        let p = check_columns("t", &cols).unwrap_err();
        assert_eq!(p.len(), 3, "{p:?}");
        let mut cols = drizzle_columns();
        cols.remove(1);
        assert!(check_columns("t", &cols).unwrap_err()[0].contains("no `hash`"));
    }

    #[test]
    fn a_refused_shape_is_sent_to_repair_only_when_repair_fixes_it() {
        let refusal = |columns: Vec<Column>| {
            let q = "\"drizzle\".\"__drizzle_migrations\"";
            let snapshot = Snapshot {
                table: Table {
                    schema: "drizzle".into(),
                    name: "__drizzle_migrations".into(),
                    qualified: q.into(),
                    has_name_column: false,
                    created: false,
                },
                exists: true,
                columns,
                raw: Vec::new(),
                elsewhere: Vec::new(),
            };
            snapshot.require_usable().unwrap_err().to_string()
        };
        let mut cols = drizzle_columns();
        cols[2].ty = "integer".into();
        let text = refusal(cols);
        assert!(
            text.contains("after taking a backup. `portcullis repair` shows how"),
            "{text}"
        );
        let mut cols = drizzle_columns();
        cols[1].ty = "character varying(32)".into();
        let text = refusal(cols);
        assert!(text.contains("by hand"), "{text}");
        assert!(!text.contains("shows how"), "{text}");
    }

    #[test]
    fn copy_fields_are_unescaped_as_copy_from_would() {
        assert_eq!(copy_field("\\N"), None);
        assert_eq!(copy_field("plain").as_deref(), Some("plain"));
        assert_eq!(copy_field("").as_deref(), Some(""));
        assert_eq!(
            copy_field("a\\tb\\nc\\\\d\\re\\bf\\fg\\vh").as_deref(),
            Some("a\tb\nc\\d\re\u{8}f\u{c}g\u{b}h")
        );
        assert_eq!(copy_field("\\101\\x42\\q").as_deref(), Some("ABq"));
        assert_eq!(copy_field("\\N2").as_deref(), Some("N2"));
        assert_eq!(copy_field("\\").as_deref(), Some("\\"));
    }

    #[test]
    fn copy_rows_come_in_id_order_and_odd_ones_are_refused() {
        let zero = vec![
            col("id", "integer", true, true),
            col("hash", "text", true, false),
            col("created_at", "bigint", false, false),
        ];
        let rows = copy_rows(b"2\tbb\t20\n1\taa\t\\N\n", &zero).unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(rows[0].hash, "aa");
        assert_eq!(rows[0].created_at, None);
        assert_eq!(rows[1].created_at.as_deref(), Some("20"));
        assert_eq!(rows[1].name, None);
        assert_eq!(copy_rows(b"", &zero), Some(Vec::new()));
        // A field too many or too few, an id that is no number, a NULL hash.
        assert_eq!(copy_rows(b"1\taa\n", &zero), None);
        assert_eq!(copy_rows(b"1\taa\t1\tx\n", &zero), None);
        assert_eq!(copy_rows(b"x\taa\t1\n", &zero), None);
        assert_eq!(copy_rows(b"1\t\\N\t1\n", &zero), None);
        // 1.0's shape, in whatever order the columns stand.
        let one = vec![
            col("name", "text", false, false),
            col("created_at", "bigint", false, false),
            col("hash", "text", true, false),
            col("applied_at", "timestamp with time zone", false, true),
            col("id", "integer", true, true),
        ];
        let rows = copy_rows(b"2024_a\t5\tcc\t2024-01-01 00:00:00+00\t7\n", &one).unwrap();
        assert_eq!(rows[0].id, 7);
        assert_eq!(rows[0].name.as_deref(), Some("2024_a"));
        assert_eq!(rows[0].applied_at, None);
        assert_eq!(
            copy_rows(b"1\t2\n", &[col("id", "integer", true, true)]),
            None
        );
    }

    #[test]
    fn the_quick_read_takes_only_drizzles_columns_of_known_types() {
        use tokio_postgres::types::Type;
        let ty = |name: &str, t: &Type, m: i32| quick_column(name, t, m).map(|c| c.ty);
        assert_eq!(
            ty("hash", &Type::VARCHAR, 68).as_deref(),
            Some("character varying(64)")
        );
        assert_eq!(
            ty("hash", &Type::VARCHAR, -1).as_deref(),
            Some("character varying")
        );
        assert_eq!(
            ty("created_at", &Type::NUMERIC, -1).as_deref(),
            Some("numeric")
        );
        assert_eq!(
            ty("created_at", &Type::INT4, -1).as_deref(),
            Some("integer")
        );
        assert_eq!(ty("created_at", &Type::NUMERIC, 1_310_724), None);
        assert_eq!(ty("created_at", &Type::DATE, -1), None);
        assert_eq!(ty("hash", &Type::BPCHAR, 68), None);
        assert_eq!(ty("note", &Type::TEXT, -1), None);
        assert!(quick_column("id", &Type::INT4, -1).unwrap().has_default);
        assert!(!quick_column("hash", &Type::TEXT, -1).unwrap().has_default);
    }

    #[test]
    fn ddl_is_drizzles() {
        let q = "\"drizzle\".\"__drizzle_migrations\"";
        let sql = create_table_sql(q, Layout::Journal);
        assert!(sql.starts_with("CREATE TABLE IF NOT EXISTS \"drizzle\".\"__drizzle_migrations\""));
        assert!(sql.contains("id SERIAL PRIMARY KEY"));
        assert!(sql.contains("hash text NOT NULL"));
        assert!(sql.contains("created_at bigint"));
        assert!(!sql.contains("name"));
        let v1 = create_table_sql(q, Layout::Folders);
        assert!(v1.contains("CREATE TABLE IF NOT EXISTS \"drizzle\".\"__drizzle_migrations\""));
        assert!(v1.contains("created_at bigint,"));
        assert!(v1.contains("name text,"));
        assert!(v1.contains("applied_at timestamp with time zone DEFAULT now()"));
    }
}
