//! Seeds on real PostgreSQL: the example app's seeds, idempotence, `changed` mode, a failing
//! seed (exit 9), seed variables (intact, harmless, never printed), env folders, natural order,
//! concurrent runners, the `seed` command and the opt-outs, and folder errors (exit 3).

use crate::run::*;
use crate::support::{free_port, query};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SEEDS_TABLE: &str = "drizzle.__portcullis_seeds";

/// A seeds folder in a temp dir, removed on drop.
struct SeedDir {
    dir: PathBuf,
}

static SEED_DIRS: AtomicUsize = AtomicUsize::new(0);

impl SeedDir {
    fn new() -> SeedDir {
        let dir = std::env::temp_dir().join(format!(
            "portcullis-seeds-{}-{}",
            std::process::id(),
            SEED_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        SeedDir { dir }
    }

    /// Writes `rel` (may be `env/name.sql`) with `sql`.
    fn write(&self, rel: &str, sql: &str) -> &SeedDir {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, sql).unwrap();
        self
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

impl Drop for SeedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `command` with a seeds folder.
fn seeded(url: &str, migrations: &Path, seeds: &Path) -> Command {
    let mut cmd = command(url, migrations);
    cmd.env("PORTCULLIS_SEEDS_DIR", seeds);
    cmd
}

fn one(url: &str, sql: &str) -> String {
    query(url, sql)[0][0]
        .clone()
        .unwrap_or_else(|| "NULL".into())
}

fn count(url: &str, table: &str) -> i64 {
    one(url, &format!("select count(*) from {table}"))
        .parse()
        .unwrap()
}

/// (name, run_count) of every tracking row, by name.
fn seed_runs(url: &str) -> Vec<(String, i64)> {
    query(
        url,
        &format!("select name, run_count from {SEEDS_TABLE} order by name"),
    )
    .into_iter()
    .map(|r| {
        (
            r[0].clone().unwrap(),
            r[1].as_deref().unwrap().parse().unwrap(),
        )
    })
    .collect()
}

/// Row counts of every table in every schema of the database, tracking tables included.
fn row_counts(url: &str) -> Vec<(String, i64)> {
    query(
        url,
        "select quote_ident(table_schema) || '.' || quote_ident(table_name) \
         from information_schema.tables \
         where table_schema not in ('pg_catalog', 'information_schema') \
         and table_type = 'BASE TABLE' order by 1",
    )
    .into_iter()
    .map(|r| {
        let t = r[0].clone().unwrap();
        let n = count(url, &t);
        (t, n)
    })
    .collect()
}

fn example_seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// The example app: its migrations, its seeds with the development rows, the admin's e-mail.
fn example(url: &str) -> Command {
    let mut cmd = seeded(url, &example_dir(), &example_seeds());
    cmd.env("PORTCULLIS_SEED_ENV", "development")
        .env("PORTCULLIS_SEED_VAR_ADMIN_EMAIL", "ops@example.com");
    cmd
}

// ---- the example app --------------------------------------------------------------------------

#[test]
fn the_example_migrations_and_seeds_three_times_leave_every_row_count_unchanged() {
    let url = fresh_db("seed_example");
    let first = run(example(&url).arg("migrate"));
    first.expect(0);
    assert!(
        first.stderr.contains("applied 4 migrations"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("seeds: ran 3 in",)
            && first.stderr.contains(
                "1_default_organisation.sql, 2_admin_user.sql, development/1_demo_data.sql"
            ),
        "{}",
        first.stderr
    );
    assert!(
        first
            .stderr
            .contains("created the seeds tracking table \"drizzle\".\"__portcullis_seeds\""),
        "{}",
        first.stderr
    );
    let after_first = row_counts(&url);
    let n = |t: &str| after_first.iter().find(|(name, _)| name == t).unwrap().1;
    assert_eq!(n("public.organisations"), 3, "{after_first:?}");
    assert_eq!(n("public.users"), 4);
    assert_eq!(n("public.memberships"), 5);
    assert_eq!(n("public.invitations"), 1);
    assert_eq!(n("drizzle.__portcullis_seeds"), 3);
    assert_eq!(
        one(
            &url,
            "select m.role::text from memberships m join users u on u.id = m.user_id \
             join organisations o on o.id = m.organisation_id \
             where u.email = 'ops@example.com' and o.slug = 'default'"
        ),
        "owner"
    );

    for _ in 0..2 {
        let again = run(example(&url).arg("migrate"));
        again.expect(0);
        assert!(
            again.stderr.contains("up to date, 4 migrations applied"),
            "{}",
            again.stderr
        );
        assert!(again.stderr.contains("seeds: ran 3 in"), "{}", again.stderr);
        assert_eq!(row_counts(&url), after_first);
    }
    assert_eq!(
        seed_runs(&url),
        [
            ("1_default_organisation.sql".to_string(), 3),
            ("2_admin_user.sql".to_string(), 3),
            ("development/1_demo_data.sql".to_string(), 3),
        ]
    );
    let first_last: Vec<Vec<Option<String>>> = query(
        &url,
        &format!("select first_applied_at < last_applied_at from {SEEDS_TABLE}"),
    );
    assert!(first_last.iter().all(|r| r[0].as_deref() == Some("t")));

    // Reference data deleted by hand comes back on the next deploy.
    crate::support::execute(
        &url,
        "delete from memberships; delete from invitations; delete from users",
    );
    run(example(&url).arg("migrate")).expect(0);
    assert_eq!(row_counts(&url)[..], after_first[..]);
}

#[test]
fn an_unset_seed_variable_exits_9_naming_the_variable_to_set() {
    let url = fresh_db("seed_novar");
    let out = run(seeded(&url, &example_dir(), &example_seeds()).arg("migrate"));
    out.expect(9);
    let file = example_seeds()
        .join("2_admin_user.sql")
        .display()
        .to_string();
    assert!(
        out.stderr.contains(&format!(
            "seed 2_admin_user.sql failed at {file}:9:1 (the statement starting there) in \
             statement 1 of 2"
        )),
        "{}",
        out.stderr
    );
    out.says("ERROR 42704");
    out.says("HINT: set PORTCULLIS_SEED_VAR_ADMIN_EMAIL for this run");
    out.says("The seed reads a variable this run was not given");
    out.never_says("Fix the SQL");
    // The migrations stay; the first seed, which worked, was rolled back with the second.
    assert_eq!(rows(&url).len(), 4);
    assert_eq!(count(&url, "organisations"), 0);
    assert!(!table_exists(&url, SEEDS_TABLE));
    assert_eq!(advisory_locks(&url), 0);
}

// ---- modes --------------------------------------------------------------------------------------

/// A deferred constraint fails at COMMIT, after every seed ran: the failure names the last seed
/// that ran, not the folder's last seed, which `changed` mode left out.
#[test]
fn a_commit_failure_in_changed_mode_names_the_last_seed_that_ran() {
    let url = fresh_db("seed_commit");
    let mut m = Folder::new();
    m.add(
        "0000_deferred",
        1,
        "create table parent (id int primary key);\n--> statement-breakpoint\n\
         create table child (parent_id int references parent (id) deferrable initially deferred);",
    );
    let seeds = SeedDir::new();
    seeds
        .write("1_a.sql", "select 1;\n")
        .write("2_b.sql", "select 2;\n");
    let changed = || {
        run(seeded(&url, m.path(), seeds.path())
            .env("PORTCULLIS_SEED_MODE", "changed")
            .arg("migrate"))
    };
    changed().expect(0);
    // 1_a now breaks the deferred foreign key; 2_b is unchanged and left out.
    seeds.write("1_a.sql", "insert into child values (42);\n");
    let out = changed();
    out.expect(9);
    out.says("23503");
    out.says("1_a.sql");
    out.never_says("2_b.sql");
    assert!(query(&url, "select * from child").is_empty());
}

#[test]
fn changed_mode_skips_an_unchanged_file_and_reruns_an_edited_one() {
    let url = fresh_db("seed_changed");
    let mut m = Folder::new();
    m.add(
        "0000_tally",
        1,
        "create table tally (name text primary key, n int not null);",
    );
    let seeds = SeedDir::new();
    let bump = |name: &str| {
        format!(
            "insert into tally values ('{name}', 1) \
             on conflict (name) do update set n = tally.n + 1;\n"
        )
    };
    seeds
        .write("1_a.sql", &bump("a"))
        .write("2_b.sql", &bump("b"));
    let changed = || {
        run(seeded(&url, m.path(), seeds.path())
            .env("PORTCULLIS_SEED_MODE", "changed")
            .arg("migrate"))
    };
    let tally = || {
        query(&url, "select name, n from tally order by name")
            .into_iter()
            .map(|r| format!("{}={}", r[0].as_deref().unwrap(), r[1].as_deref().unwrap()))
            .collect::<Vec<_>>()
    };

    changed().expect(0);
    assert_eq!(tally(), ["a=1", "b=1"]);
    let out = changed();
    out.expect(0);
    out.says("seeds: none ran, 2 unchanged left out (PORTCULLIS_SEED_MODE=changed)");
    assert_eq!(tally(), ["a=1", "b=1"]);
    assert_eq!(
        seed_runs(&url),
        [("1_a.sql".to_string(), 1), ("2_b.sql".to_string(), 1)]
    );

    // Edit one file: only it runs again, and its new hash is recorded.
    let edited = format!("-- now with a comment\n{}", bump("a"));
    seeds.write("1_a.sql", &edited);
    let out = changed();
    out.expect(0);
    assert!(
        out.stderr.contains("seeds: ran 1 in")
            && out.stderr.contains("1_a.sql, 1 unchanged left out"),
        "{}",
        out.stderr
    );
    assert_eq!(tally(), ["a=2", "b=1"]);
    assert_eq!(
        seed_runs(&url),
        [("1_a.sql".to_string(), 2), ("2_b.sql".to_string(), 1)]
    );
    assert_eq!(
        one(
            &url,
            &format!("select hash from {SEEDS_TABLE} where name = '1_a.sql'")
        ),
        portcullis::source::split::hash(&edited)
    );
    changed().expect(0);
    assert_eq!(tally(), ["a=2", "b=1"]);

    // The default mode, always, runs every file.
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    assert_eq!(tally(), ["a=3", "b=2"]);
}

// ---- a failing seed -------------------------------------------------------------------------

/// A session that locks the seeds' tracking table makes their bookkeeping wait: exit 7 naming
/// the table, no seed run, the migrations kept. With `PORTCULLIS_DDL_LOCK_TIMEOUT` (the seeds'
/// `lock_timeout`) shorter than the connect timeout, the server gives up first (55P03); with a
/// longer one, portcullis does after the connect timeout, and names who holds the lock.
#[test]
fn a_session_locking_the_seeds_table_is_exit_7_and_no_seed_runs() {
    let url = fresh_db("seed_table_locked");
    let mut m = Folder::new();
    m.add(
        "0000_log",
        1,
        "create table seed_log (id serial primary key);",
    );
    let seeds = SeedDir::new();
    seeds.write("1_log.sql", "insert into seed_log default values;");
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    assert_eq!(count(&url, "seed_log"), 1);
    m.add("0001_more", 2, "create table more_rows (id int);");
    let holder = hold_session(
        &format!("{url}&application_name=seeds-locker-test"),
        &format!("BEGIN; LOCK TABLE {SEEDS_TABLE} IN ACCESS EXCLUSIVE MODE"),
        "COMMIT",
    );

    let out = run(seeded(&url, m.path(), seeds.path())
        .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "300ms")
        .arg("migrate"));
    out.expect(7);
    out.says("reading \"drizzle\".\"__portcullis_seeds\" failed: ERROR 55P03");
    out.says("Another session held a lock this needed for longer than lock_timeout");
    out.says(
        "No seed of this run was applied; migrations committed before the seeds stay applied.",
    );

    let out = run(
        seeded(&format!("{url}&connect_timeout=2"), m.path(), seeds.path())
            .env("PORTCULLIS_DDL_LOCK_TIMEOUT", "1m")
            .arg("migrate"),
    );
    out.expect(7);
    out.says(
        "while reading \"drizzle\".\"__portcullis_seeds\", the session waited 2s (the connect \
         timeout) for a lock on drizzle.__portcullis_seeds (AccessShareLock), which another \
         session holds: pid ",
    );
    out.says("(\"seeds-locker-test\", idle in transaction");
    out.says("No seed of this run was applied");
    assert_eq!(count(&url, "seed_log"), 1, "no seed ran");
    assert!(
        table_exists(&url, "more_rows"),
        "the migration stays applied"
    );
    assert_eq!(rows(&url).len(), 2);
    assert_eq!(advisory_locks(&url), 0);
    holder.release();
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    assert_eq!(count(&url, "seed_log"), 2);
}

/// A seed that deadlocks with the app (each updates a row the other then updates) is rolled
/// back and retried, like a seed that waited too long for a lock, not failed as if its SQL
/// were wrong (see `AppTransaction`: PostgreSQL cancels the seed's side).
#[test]
fn a_seed_that_deadlocks_with_the_app_is_rolled_back_and_retried() {
    let url = fresh_db("seed_deadlock");
    let mut m = Folder::new();
    m.add(
        "0000_sd",
        1,
        "create table sd_a (id int primary key, v int not null);\n--> statement-breakpoint\n\
         create table sd_b (id int primary key, v int not null);\n--> statement-breakpoint\n\
         insert into sd_a values (1, 0);\n--> statement-breakpoint\ninsert into sd_b values (1, 0);",
    );
    run(command(&url, m.path()).arg("migrate")).expect(0);
    let seeds = SeedDir::new();
    seeds.write(
        "1_both.sql",
        "update sd_a set v = v + 1 where id = 1;\nupdate sd_b set v = v + 1 where id = 1;\n",
    );
    let app = AppTransaction::start(
        &url,
        "UPDATE sd_b SET v = v + 10 WHERE id = 1",
        "UPDATE sd_a SET v = v + 10 WHERE id = 1",
    );
    let started = Instant::now();
    let child = spawn(seeded(&url, m.path(), seeds.path()).arg("seed"));
    // The seed holds sd_a's row and waits for sd_b's; now the app asks for sd_a's.
    wait_until_blocked(&url);
    app.then();
    let out = finish(child, started, Duration::from_secs(60));
    let app_update = app.finish();
    out.expect(0);
    out.says("seed 1_both.sql deadlocked with another session, so PostgreSQL cancelled it (");
    out.says("waits for ShareLock on transaction ");
    out.says("the seeds were rolled back, retry 1 of 10");
    assert_eq!(
        app_update,
        Ok(()),
        "the app's side was not the one cancelled"
    );
    // The app's +10 and one run of the seed (+1) each, nothing of the cancelled attempt.
    assert_eq!(one(&url, "select v from sd_a"), "11");
    assert_eq!(one(&url, "select v from sd_b"), "11");
    assert_eq!(seed_runs(&url), vec![("1_both.sql".to_string(), 1)]);
}

#[test]
fn a_failing_seed_exits_9_commits_nothing_of_the_seeds_and_keeps_the_migrations() {
    let url = fresh_db("seed_fail");
    let mut m = Folder::new();
    m.add(
        "0000_items",
        1,
        "create table items (id int primary key, label text not null);",
    );
    let seeds = SeedDir::new();
    seeds
        .write(
            "1_ok.sql",
            "insert into items values (1, 'one') on conflict (id) do update set label = 'one';",
        )
        .write(
            "2_dup.sql",
            "-- two rows with the same key\ninsert into items values (5, 'five') on conflict do nothing;\n\ninsert into items values (2, 'two'),\n  (2, 'again');\n",
        );
    let out = run(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    out.expect(9);
    let file = seeds.file("2_dup.sql");
    assert!(
        out.stderr.contains(&format!(
            "seed 2_dup.sql failed at {file}:4:1 (the statement starting there) in statement 2 \
             of 2 (`insert into items values (2, '…'),`): ERROR 23505"
        )),
        "{}",
        out.stderr
    );
    out.says("DETAIL: Key (id)=(2) already exists.");
    out.says("The seeds' transaction was rolled back");
    out.says("exit_code=9");
    // Migrations committed; nothing of the seeds, not even the tracking table.
    assert_eq!(rows(&url).len(), 1);
    assert!(table_exists(&url, "items"));
    assert_eq!(count(&url, "items"), 0);
    assert!(!table_exists(&url, SEEDS_TABLE));
    assert_eq!(advisory_locks(&url), 0);

    // A server position: the exact line and column, and the server's HINT.
    seeds.write(
        "2_dup.sql",
        "select 1;\n\nselect id,\n       lable from items;\n",
    );
    let out = run(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    out.expect(9);
    assert!(
        out.stderr.contains(&format!(
            "seed 2_dup.sql failed at {file}:4:8 in statement 2 of 2 (`select id,`): ERROR 42703"
        )),
        "{}",
        out.stderr
    );
    out.says("HINT: Perhaps you meant to reference the column \"items.label\"");
    assert_eq!(count(&url, "items"), 0);
    assert!(!table_exists(&url, SEEDS_TABLE));

    // A failure inside a DO block names its PL/pgSQL context.
    seeds.write("2_dup.sql", "do $$\nbegin\n  perform 1 / 0;\nend\n$$;\n");
    let out = run(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    out.expect(9);
    out.says("ERROR 22012");
    out.says("CONTEXT: ");

    // Fixed: both seeds run, twice without change.
    seeds.write(
        "2_dup.sql",
        "insert into items values (2, 'two') on conflict (id) do update set label = excluded.label;",
    );
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    assert_eq!(count(&url, "items"), 2);
    assert_eq!(
        seed_runs(&url),
        [("1_ok.sql".to_string(), 2), ("2_dup.sql".to_string(), 2)]
    );
}

/// A seed on a server that takes only reads (a hot standby, a replica, a former primary; here
/// `default_transaction_read_only`) is refused whatever its SQL: exit 6 pointing at the
/// primary, as for a migration, not exit 9 "Fix the SQL".
#[test]
fn a_seed_on_a_server_that_takes_only_reads_is_exit_6_not_a_fault_of_its_sql() {
    let url = fresh_db("seed_read_only");
    let db = db_name(&url);
    let mut m = Folder::new();
    m.add("0000_items", 1, "create table items (id int primary key);");
    let seeds = SeedDir::new();
    seeds.write(
        "1_items.sql",
        "insert into items values (1) on conflict do nothing;",
    );
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    crate::support::execute(
        &url,
        &format!("alter database \"{db}\" set default_transaction_read_only = on"),
    );
    let out = run(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    let at = format!(
        "seed 1_items.sql failed at {}:1:1 (the statement starting there) in statement 1 of 1",
        seeds.file("1_items.sql")
    );
    out.advises(
        6,
        &[
            &at,
            "ERROR 25006 cannot execute INSERT in a read-only transaction",
            "The seeds' transaction was rolled back",
            "The server accepts only reads: it is a hot standby",
            "exit_code=6",
        ],
    );
    assert_eq!(seed_runs(&url), [("1_items.sql".to_string(), 1)]);
    assert_eq!(advisory_locks(&url), 0);
}

/// pg_dump's header sets lock_timeout and statement_timeout to 0 and search_path to '' for the
/// rest of the session, which in a seed carries over to every seed after it: each is warned
/// about, with its line, on every run. The seeds still run; here the later seed's unqualified
/// name then fails, as the warning says it would.
#[test]
fn a_seed_that_changes_the_session_is_warned_about() {
    let url = fresh_db("seed_set_timeout");
    let mut m = Folder::new();
    m.add("0000_items", 1, "create table items (id int primary key);");
    let seeds = SeedDir::new();
    seeds.write(
        "1_dump.sql",
        "SET statement_timeout = 0;\nSET lock_timeout = 0;\n\ninsert into items values (1) on \
         conflict do nothing;\n",
    );
    let out = run(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    out.expect(0);
    let file = seeds.file("1_dump.sql");
    out.says(&format!(
        "WARN {file}:2:1: SET lock_timeout replaces the lock_timeout portcullis gives the seeds' \
         transaction (PORTCULLIS_DDL_LOCK_TIMEOUT)"
    ));
    out.says(&format!("WARN {file}:1:1: SET statement_timeout replaces"));
    assert_eq!(count(&url, "items"), 1);

    seeds
        .write(
            "1_dump.sql",
            "SELECT pg_catalog.set_config('search_path', '', false);\n\nINSERT INTO \
             public.items VALUES (2) ON CONFLICT DO NOTHING;\n",
        )
        .write(
            "2_more.sql",
            "insert into items values (3) on conflict do nothing;\n",
        );
    let out = run(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    out.says(&format!(
        "WARN {file}:1:1: this sets search_path for every seed that runs after it"
    ));
    out.expect(9);
    out.says("ERROR 42P01 relation \"items\" does not exist");
    // The failure points back at the line that caused it, not only at the failing file.
    out.says(&format!(
        "{file}:1:1 sets search_path for what runs after it in the seeds' transaction"
    ));
    out.never_says("Fix the SQL");
    assert_eq!(count(&url, "items"), 1);

    // In `changed` mode a recorded seed that sets search_path is left out: it changes nothing,
    // and a later seed's missing name is that seed's own fault.
    std::fs::remove_file(seeds.path().join("2_more.sql")).unwrap();
    run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
    seeds.write("2_more.sql", "insert into itemz values (3);\n");
    let out = run(seeded(&url, m.path(), seeds.path())
        .env("PORTCULLIS_SEED_MODE", "changed")
        .arg("migrate"));
    out.expect(9);
    out.says("ERROR 42P01 relation \"itemz\" does not exist");
    out.says(&format!("Fix the SQL in {}", seeds.file("2_more.sql")));
    assert!(
        !out.stderr
            .contains("sets search_path for what runs after it"),
        "{}",
        out.stderr
    );
    assert_eq!(count(&url, "items"), 2);
}

// ---- seed variables ---------------------------------------------------------------------------

/// Seed variables reach the server through a temporary table (see the test above); a user
/// that may not create one still gets them set, as bound parameters, and is told what that
/// means for a server that logs statements.
#[test]
fn without_the_temporary_privilege_seed_variables_still_arrive_with_a_warning() {
    let url = fresh_db("seed_vars_no_temp");
    let db = db_name(&url).to_string();
    let role = format!("pc_no_temp_{}", std::process::id());
    crate::support::execute(
        &url,
        &format!(
            "create role {role} login password 'pc-pw'; \
             revoke temporary on database \"{db}\" from public; \
             grant create on database \"{db}\" to {role}; \
             grant create on schema public to {role}"
        ),
    );
    let as_role = crate::support::Cluster::shared().url_with(&role, "pc-pw", &db);
    let mut m = Folder::new();
    m.add("0000_notes", 1, "create table notes (v text not null);");
    let seeds = SeedDir::new();
    seeds.write(
        "1_notes.sql",
        "insert into notes values (current_setting('portcullis.note'));",
    );
    let out = run(seeded(&as_role, m.path(), seeds.path())
        .env("PORTCULLIS_SEED_VAR_NOTE", "kept out of sight")
        .arg("migrate"));
    out.expect(0);
    out.says(
        "the database user may not create temporary tables in this database, so the seed \
         variables' values (portcullis.note) go to the server as bound parameters",
    );
    out.never_says("kept out of sight");
    assert_eq!(one(&url, "select v from notes"), "kept out of sight");
}

#[test]
fn a_seed_variable_with_quotes_and_semicolons_arrives_intact_and_harmless() {
    let url = fresh_db("seed_vars");
    let mut m = Folder::new();
    m.add(
        "0000_notes",
        1,
        "create table notes (k text primary key, v text not null);\n--> statement-breakpoint\n\
         create table users (id int);",
    );
    let seeds = SeedDir::new();
    seeds.write(
        "1_notes.sql",
        "insert into notes values ('injection', current_setting('portcullis.note')),\n\
         ('dollars', current_setting('portcullis.other'))\n\
         on conflict (k) do update set v = excluded.v;",
    );
    let injection = "x'); drop table users; --";
    let dollars = "$$ \"quoted\" \\ ; select pg_sleep(10); $$ ünï\ttab\nline\r\\.\n\\.";
    // A server that logs every statement, bound parameters included, gets no value either.
    let db = log_statements(&url);
    for _ in 0..2 {
        run(seeded(&url, m.path(), seeds.path())
            .env("PORTCULLIS_SEED_VAR_NOTE", injection)
            .env("PORTCULLIS_SEED_VAR_Other", dollars)
            .arg("migrate"))
        .expect(0);
        assert_eq!(
            query(&url, "select k, v from notes order by k"),
            [
                [Some("dollars".to_string()), Some(dollars.to_string())],
                [Some("injection".to_string()), Some(injection.to_string())],
            ]
        );
        assert!(table_exists(&url, "users"));
    }
    let logged = server_log(&db, "portcullis@it-runner");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("current_setting('portcullis.note')")),
        "the seed's statement was not logged: {}",
        logged.join("\n")
    );
    for value in ["drop table users", "select pg_sleep(10)", "ünï"] {
        assert!(
            !logged.iter().any(|l| l.contains(value)),
            "{value:?} in the server log: {}",
            logged.join("\n")
        );
    }
    // The settings are transaction-local: nothing of them is left on the server.
    assert_eq!(
        one(
            &url,
            "select count(*) from pg_db_role_setting where setconfig::text like '%portcullis.%'"
        ),
        "0"
    );
}

#[test]
fn seed_variable_values_never_appear_in_any_output() {
    let secret = "s3cr3t-'; drop table users; --";
    let url = fresh_db("seed_secret");
    let mut m = Folder::new();
    m.add(
        "0000_notes",
        1,
        "create table notes (v text primary key check (length(v) < 5));",
    );
    let failing = SeedDir::new();
    failing.write(
        "1_note.sql",
        "insert into notes values (current_setting('portcullis.note')) on conflict do nothing;",
    );
    let fine = SeedDir::new();
    fine.write(
        "1_note.sql",
        "select current_setting('portcullis.note');\n\
         select set_config('application_name', 'x', true);",
    );
    let with_secret = |seeds: &Path| {
        let mut cmd = seeded(&url, m.path(), seeds);
        cmd.env("PORTCULLIS_SEED_VAR_NOTE", secret);
        cmd
    };
    let outputs = vec![
        // The server quotes the value in its DETAIL ("Failing row contains ...").
        run(with_secret(failing.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("migrate")),
        run(with_secret(failing.path())
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("migrate")),
        run(with_secret(fine.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("migrate")),
        run(with_secret(fine.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("seed")),
        run(with_secret(fine.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("plan")),
        run(with_secret(fine.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .args(["status", "--format", "json"])),
        run(with_secret(fine.path())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("status")),
        run(with_secret(fine.path())
            .env("PORTCULLIS_SEED_VAR_BAD-NAME", secret)
            .arg("migrate")),
        run(with_secret(fine.path())
            .env("PORTCULLIS_SEED_VAR_OTHER_TYPO", secret)
            .env("PORTCULLIS_SEED_MOD", "changed")
            .arg("migrate")),
    ];
    let codes: Vec<i32> = outputs.iter().map(|o| o.code).collect();
    assert_eq!(codes, [9, 9, 0, 0, 0, 0, 0, 2, 2], "{outputs:#?}");
    for o in &outputs {
        assert!(
            !o.all().contains(secret) && !o.all().contains("s3cr3t"),
            "a seed variable's value was printed (exit {}):\n{}",
            o.code,
            o.all()
        );
    }
    assert!(
        outputs[0]
            .stderr
            .contains("Failing row contains (<PORTCULLIS_SEED_VAR_NOTE>)"),
        "{}",
        outputs[0].stderr
    );
    assert!(
        outputs[2]
            .stderr
            .contains("with the settings portcullis.note"),
        "{}",
        outputs[2].stderr
    );
}

// ---- env folders and order --------------------------------------------------------------------

#[test]
fn env_specific_seeds_run_only_for_their_env_after_the_common_ones_in_natural_order() {
    let mut m = Folder::new();
    m.add(
        "0000_ran",
        1,
        "create table ran (id serial primary key, seed text not null unique);",
    );
    let seeds = SeedDir::new();
    for name in [
        "10_late.sql",
        "2_early.sql",
        "1_first.sql",
        "staging/1_s.sql",
        "staging/10_s.sql",
        "staging/9_s.sql",
        "development/1_d.sql",
    ] {
        seeds.write(
            name,
            &format!("insert into ran (seed) values ('{name}') on conflict (seed) do nothing;"),
        );
    }
    seeds.write("README.md", "not a seed");
    seeds.write("notes/1_x.sql", "select nonsense;");
    let ran = |url: &str| {
        query(url, "select seed from ran order by id")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect::<Vec<_>>()
    };
    let common = ["1_first.sql", "2_early.sql", "10_late.sql"];

    let url = fresh_db("seed_env_none");
    for _ in 0..2 {
        run(seeded(&url, m.path(), seeds.path()).arg("migrate")).expect(0);
        assert_eq!(ran(&url), common);
    }

    let url = fresh_db("seed_env_staging");
    for _ in 0..2 {
        run(seeded(&url, m.path(), seeds.path())
            .env("PORTCULLIS_SEED_ENV", "staging")
            .arg("migrate"))
        .expect(0);
        let mut expected = common.to_vec();
        expected.extend(["staging/1_s.sql", "staging/9_s.sql", "staging/10_s.sql"]);
        assert_eq!(ran(&url), expected);
    }
    assert_eq!(count(&url, SEEDS_TABLE), 6);

    let url = fresh_db("seed_env_dev");
    run(seeded(&url, m.path(), seeds.path()).args(["migrate", "--seed-env", "development"]))
        .expect(0);
    let mut expected = common.to_vec();
    expected.push("development/1_d.sql");
    assert_eq!(ran(&url), expected);

    // An env without a folder runs the common seeds and says so.
    let url = fresh_db("seed_env_prod");
    let out = run(seeded(&url, m.path(), seeds.path())
        .env("PORTCULLIS_SEED_ENV", "production")
        .arg("migrate"));
    out.expect(0);
    out.says("no seeds for PORTCULLIS_SEED_ENV=production");
    assert_eq!(ran(&url), common);
}

#[test]
fn a_missing_seeds_folder_means_no_seeds() {
    let url = fresh_db("seed_missing");
    let mut m = Folder::new();
    m.add("0000_a", 1, "create table sm_a (id int);");
    let missing = m.path().join("nowhere");
    for _ in 0..2 {
        let out = run(seeded(&url, m.path(), &missing).arg("migrate"));
        out.expect(0);
        assert!(
            out.stderr.contains(&format!(
                "no seeds: {} does not exist (PORTCULLIS_SEEDS_DIR)",
                missing.display()
            )),
            "{}",
            out.stderr
        );
    }
    assert!(!table_exists(&url, SEEDS_TABLE));
    let out = run(seeded(&url, m.path(), &missing).arg("seed"));
    out.expect(0);
    out.says("seeds: none in");
}

// ---- concurrency ------------------------------------------------------------------------------

/// A migration and two seeds for the race tests: the migration and the first seed each sleep
/// (with different lengths, so a test can tell which one is running), and each seed records its
/// transaction in `runs`.
fn race_folders() -> (Folder, SeedDir) {
    let mut m = Folder::new();
    m.add(
        "0000_race",
        1,
        "create table flags (name text primary key, value int not null);\n\
         --> statement-breakpoint\n\
         create table runs (id bigserial primary key, seed text not null, tx bigint not null);\n\
         --> statement-breakpoint\n\
         select pg_sleep(0.61);",
    );
    let seeds = SeedDir::new();
    seeds
        .write(
            "1_a.sql",
            "insert into flags values ('a', 1) on conflict (name) do update set value = excluded.value;\n\
             insert into runs (seed, tx) values ('1_a', txid_current());\n\
             select pg_sleep(0.62);",
        )
        .write(
            "2_b.sql",
            "insert into flags values ('b', 2) on conflict (name) do update set value = excluded.value;\n\
             insert into runs (seed, tx) values ('2_b', txid_current());",
        );
    (m, seeds)
}

/// The seeds' transactions, in order: (seed, transaction id) per row of `runs`.
fn seed_transactions(url: &str) -> Vec<(String, String)> {
    query(url, "select seed, tx::text from runs order by id")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
}

/// A runner that arrives while another is still migrating waits for it, and leaves the seeds to
/// it: they run after this runner started, once, not once per runner.
#[test]
fn a_runner_arriving_during_the_migrations_leaves_the_seeds_to_the_runner_it_waited_for() {
    let url = fresh_db("seed_race_m");
    let (m, seeds) = race_folders();
    let started = Instant::now();
    let first = spawn(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    wait_for_statement(&url, "pg_sleep(0.61)");
    let second = spawn(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    let (first, second) = (
        finish(first, started, Duration::from_secs(60)),
        finish(second, started, Duration::from_secs(60)),
    );
    first.expect(0);
    second.expect(0);
    assert!(
        first.stderr.contains("applied 1 migration"),
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains("seeds: ran 2 in"), "{}", first.stderr);
    assert!(
        second.stderr.contains("waiting for the migration lock"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains(
            "up to date, 1 migration applied, nothing pending; seeds: all 2 ran after this \
             runner started, in the run it waited for"
        ),
        "{}",
        second.stderr
    );
    let runs = seed_transactions(&url);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].1, runs[1].1, "one transaction");
    assert_eq!(
        seed_runs(&url),
        [("1_a.sql".to_string(), 1), ("2_b.sql".to_string(), 1)]
    );
    assert_eq!(advisory_locks(&url), 0);
}

/// A runner that arrives while another is already running the seeds cannot count that run (data
/// deleted just before it started might not be back), so it runs them itself, after the first,
/// each run whole and in turn.
#[test]
fn a_runner_arriving_during_the_seeds_runs_them_again_after_the_first() {
    let url = fresh_db("seed_race_s");
    let (m, seeds) = race_folders();
    let started = Instant::now();
    let first = spawn(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    wait_for_statement(&url, "pg_sleep(0.62)");
    let second = spawn(seeded(&url, m.path(), seeds.path()).arg("migrate"));
    let outputs: Vec<Output> = [first, second]
        .into_iter()
        .map(|c| finish(c, started, Duration::from_secs(60)))
        .collect();
    for o in &outputs {
        o.expect(0);
        assert!(o.stderr.contains("seeds: ran 2 in"), "{}", o.stderr);
    }
    assert!(outputs[0].stderr.contains("applied 1 migration"));
    assert!(
        outputs[1]
            .stderr
            .contains("up to date, 1 migration applied"),
        "{}",
        outputs[1].stderr
    );
    // Each run's seeds ran whole, one run after the other: 1_a, 2_b of one transaction, then
    // 1_a, 2_b of the other.
    let runs = seed_transactions(&url);
    let order: Vec<&str> = runs.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(order, ["1_a", "2_b", "1_a", "2_b"]);
    assert_eq!(runs[0].1, runs[1].1);
    assert_eq!(runs[2].1, runs[3].1);
    assert_ne!(runs[0].1, runs[2].1);
    assert_eq!(count(&url, "flags"), 2);
    assert_eq!(
        seed_runs(&url),
        [("1_a.sql".to_string(), 2), ("2_b.sql".to_string(), 2)]
    );
    assert_eq!(advisory_locks(&url), 0);
}

// ---- commands and opt-outs ---------------------------------------------------------------------

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn seed_command_no_seed_flag_seeds_false_plan_and_status() {
    let url = fresh_db("seed_cmds");
    let mut m = Folder::new();
    m.add(
        "0000_kv",
        1,
        "create table kv (k text primary key, v text not null);",
    );
    let seeds = SeedDir::new();
    seeds.write(
        "1_kv.sql",
        "insert into kv values ('plan', current_setting('portcullis.plan'))\n\
         on conflict (k) do update set v = excluded.v;",
    );
    let cmd = || {
        let mut c = seeded(&url, m.path(), seeds.path());
        c.env("PORTCULLIS_SEED_VAR_PLAN", "pro");
        c
    };

    // Opting out: the migrations run, the seeds do not, and nothing of them is created.
    let out = run(cmd().args(["migrate", "--no-seed"]));
    out.expect(0);
    out.says("seeds are off for this run");
    let out = run(cmd().env("PORTCULLIS_SEEDS", "false").arg("migrate"));
    out.expect(0);
    out.says("seeds are off for this run");
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(count(&url, "kv"), 0);
    assert!(!table_exists(&url, SEEDS_TABLE));

    // plan lists the seed that would run, and changes nothing.
    let out = run(cmd().arg("plan"));
    out.expect(0);
    assert!(
        out.stdout.contains(
            "-- seeds: 1 of 1 in ".to_string().as_str()
        ) && out
            .stdout
            .contains("would run after the migrations, in this order, in one transaction (PORTCULLIS_SEED_MODE=always), with the settings portcullis.plan."),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "--   1_kv.sql ({}): new: never ran here",
            seeds.file("1_kv.sql")
        )),
        "{}",
        out.stdout
    );
    out.says("1 seed would run");
    let out = run(cmd().env("PORTCULLIS_SEEDS", "false").arg("plan"));
    out.expect(0);
    assert!(!out.stdout.contains("-- seeds"), "{}", out.stdout);
    assert!(!table_exists(&url, SEEDS_TABLE));

    // status before: the seed is new, the table not created yet.
    let doc = json(&run(cmd().args(["status", "--format", "json"])));
    assert_eq!(doc["seeds"]["table_exists"], false);
    assert_eq!(doc["seeds"]["mode"], "always");
    assert_eq!(doc["seeds"]["files"][0]["name"], "1_kv.sql");
    assert_eq!(doc["seeds"]["files"][0]["state"], "new");
    assert_eq!(doc["seeds"]["files"][0]["run_count"], 0);
    assert_eq!(doc["seeds"]["files"][0]["next_run"], true);
    assert!(!table_exists(&url, SEEDS_TABLE));

    // `seed` runs the seeds only, under the lock, twice without change.
    for runs in 1..=2 {
        let out = run(cmd().arg("seed"));
        out.expect(0);
        assert!(
            out.stderr.contains("seeds: ran 1 in") && out.stderr.contains("1_kv.sql"),
            "{}",
            out.stderr
        );
        assert_eq!(
            query(&url, "select k, v from kv"),
            [[Some("plan".to_string()), Some("pro".to_string())]]
        );
        assert_eq!(seed_runs(&url), [("1_kv.sql".to_string(), runs)]);
    }

    // status after: applied, with its runs and last run.
    let doc = json(&run(cmd().args(["status", "--format", "json"])));
    let f = &doc["seeds"]["files"][0];
    assert_eq!(f["state"], "applied");
    assert_eq!(f["run_count"], 2);
    assert!(f["last_applied_at"].as_str().unwrap().ends_with(" UTC"));
    assert_eq!(doc["seeds"]["table"], "\"drizzle\".\"__portcullis_seeds\"");
    assert_eq!(doc["seeds"]["summary"], "1 seed, 1 applied; migrate runs 1");
    let out = run(cmd().arg("status"));
    out.expect(0);
    assert!(
        out.stdout
            .contains("SEED      STATE    RUNS  LAST RUN (UTC)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1_kv.sql  applied  2"),
        "{}",
        out.stdout
    );

    // changed mode: plan says the unchanged seed is left out; an edit makes it run again.
    let out = run(cmd().env("PORTCULLIS_SEED_MODE", "changed").arg("plan"));
    out.expect(0);
    assert!(
        out.stdout.contains("-- seeds: 0 of 1")
            && out.stdout.contains("unchanged, left out (mode changed)"),
        "{}",
        out.stdout
    );
    seeds.write(
        "1_kv.sql",
        "insert into kv values ('plan', current_setting('portcullis.plan') || '+')\n\
         on conflict (k) do update set v = excluded.v;",
    );
    let doc = json(&run(cmd()
        .env("PORTCULLIS_SEED_MODE", "changed")
        .args(["status", "--format", "json"])));
    assert_eq!(doc["seeds"]["files"][0]["state"], "changed");
    assert!(doc["seeds"]["files"][0]["recorded_hash"].is_string());

    // A tracking row whose file was renamed away shows as recorded only.
    std::fs::rename(
        seeds.path().join("1_kv.sql"),
        seeds.path().join("1_kv_renamed.sql"),
    )
    .unwrap();
    let doc = json(&run(cmd().args(["status", "--format", "json"])));
    assert_eq!(doc["seeds"]["files"][0]["name"], "1_kv_renamed.sql");
    assert_eq!(doc["seeds"]["files"][0]["state"], "new");
    assert_eq!(doc["seeds"]["recorded_only"][0]["name"], "1_kv.sql");
    assert_eq!(doc["seeds"]["recorded_only"][0]["run_count"], 2);
    std::fs::rename(
        seeds.path().join("1_kv_renamed.sql"),
        seeds.path().join("1_kv.sql"),
    )
    .unwrap();

    // `seed` on a database whose migrations are pending warns, then fails like any seed would.
    let url2 = fresh_db("seed_cmds_pending");
    let out = run(seeded(&url2, m.path(), seeds.path())
        .env("PORTCULLIS_SEED_VAR_PLAN", "pro")
        .arg("seed"));
    out.expect(9);
    assert!(
        out.stderr.contains("1 migration(s) of") && out.stderr.contains("are not applied yet"),
        "{}",
        out.stderr
    );
    out.says("ERROR 42P01");
}

// ---- folder errors ----------------------------------------------------------------------------

#[test]
fn an_unreadable_seed_an_empty_name_a_commit_or_what_only_psql_can_run_exit_3_before_connecting() {
    let closed = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let seeds = SeedDir::new();
    seeds
        .write("1_ok.sql", "select 1;")
        .write(".sql", "select 1;")
        .write("3_commit.sql", "insert into t values (1);\ncommit;\n")
        // END is COMMIT's synonym.
        .write("4_end.sql", "insert into t values (2);\nEND;\n")
        // pg_dump's data sections, and a COPY to the client: a file sent as SQL can do neither.
        .write(
            "5_dump.sql",
            "\\restrict k1\nSET statement_timeout = 0;\n\nCOPY public.t (id, name) FROM stdin;\n\\N\tone\n\\.\n\\unrestrict k1\n",
        )
        .write(
            "6_out.sql",
            "-- COPY t FROM stdin;\ncopy (select 1) to stdout;\n",
        );
    std::os::unix::fs::symlink(
        "/nonexistent/portcullis/seed.sql",
        seeds.path().join("2_gone.sql"),
    )
    .unwrap();
    for args in [
        &["migrate"][..],
        &["seed"],
        &["validate", "--offline"],
        &["plan"],
    ] {
        let out = run(seeded(&closed, &example_dir(), seeds.path())
            .env("PORTCULLIS_WAIT_TIMEOUT", "30s")
            .args(args));
        out.expect(3);
        // Not one connection attempt: the folder is checked first.
        assert!(
            !out.stderr.contains("waiting for"),
            "{args:?}: {}",
            out.stderr
        );
        out.says("the seeds folder has 7 problems");
        for (file, problem) in [
            (".sql", ": a seed file needs a name before .sql"),
            (
                "2_gone.sql",
                ": cannot read the seed file (it is a broken symbolic link)",
            ),
            ("3_commit.sql", ":2:1: COMMIT would end the transaction"),
            ("4_end.sql", ":2:1: END would end the transaction"),
            (
                "5_dump.sql",
                ":4:1: COPY ... FROM STDIN reads its rows from the client's input",
            ),
            (
                "5_dump.sql",
                ":1:1: `\\restrict` is a psql meta-command, which the server, given the file as \
                 SQL, does not know (pg_dump writes",
            ),
            (
                "6_out.sql",
                ":2:1: COPY ... TO STDOUT sends its rows to the client",
            ),
        ] {
            out.says(&format!("{}{problem}", seeds.file(file)));
        }
    }
    // --no-seed does not read the seeds at all.
    let out = run(seeded(&closed, &example_dir(), seeds.path())
        .env("PORTCULLIS_WAIT_TIMEOUT", "0")
        .args(["migrate", "--no-seed"]));
    out.expect(5);
}

#[test]
fn sigterm_during_a_seed_rolls_back_the_seeds_and_says_the_migrations_stay() {
    let url = fresh_db("seed_sigterm");
    let mut folder = Folder::new();
    folder.add("0000_a", 1, "create table st_seeded (id int);");
    let seeds = SeedDir::new();
    seeds.write(
        "1_slow.sql",
        "insert into st_seeded values (1);\nselect pg_sleep(30);\n",
    );
    let (out, _) = terminate_while_running(
        seeded(&url, folder.path(), seeds.path()).arg("migrate"),
        &url,
        "pg_sleep(30)",
    );
    out.expect(143);
    out.says("interrupted by SIGTERM while running seed 1_slow");
    out.says("the migrations are already committed and stay applied");
    // The migration stays; the seed's row went with its transaction.
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(count(&url, "st_seeded"), 0);
}
