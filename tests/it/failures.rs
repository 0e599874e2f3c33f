//! Every exit code of the contract that `migrate` can produce, each on a real PostgreSQL (or
//! before connecting, for configuration and folder errors), with the message an operator sees.

use crate::run::*;
use crate::support::{Cluster, PASSWORD, execute, free_port, query, try_query};
use std::process::Command;
use std::time::{Duration, Instant};

// ---- 2: configuration -------------------------------------------------------------------

#[test]
fn exit_2_for_bad_configuration_before_anything_else() {
    let url = Cluster::shared().url("postgres");
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMOUT", "5s")
        .arg("migrate"));
    out.expect(2);
    out.says("did you mean PORTCULLIS_WAIT_TIMEOUT");
    // That error lists every known name; it is about none of the flags given with it.
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMOUT", "5s")
        .args(["--migrations-dir", "migrations", "migrate"]));
    out.expect(2);
    out.says("did you mean PORTCULLIS_WAIT_TIMEOUT");
    out.never_says("was given as");

    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "10")
        .arg("migrate"));
    out.expect(2);
    out.says("PORTCULLIS_LOCK_WAIT_TIMEOUT");

    // A flag value is checked the same way, and the message says which flag it was.
    let out = run(command(&url, &example_dir()).args(["migrate", "--out-of-order", "sometimes"]));
    out.expect(2);
    out.says("PORTCULLIS_OUT_OF_ORDER");
    out.says("PORTCULLIS_OUT_OF_ORDER was given as --out-of-order on the command line");
    // A bad connection string given as --database-url: the flag is named (an operator would
    // look for PORTCULLIS_DATABASE_URL in the manifest in vain), the password is not shown.
    let bad = format!("postgres://app:{PASSWORD}@db:99999/app");
    let out = run(command(&url, &example_dir()).args(["--database-url", &bad, "migrate"]));
    out.expect(2);
    out.says("not a valid PostgreSQL connection string");
    out.says("PORTCULLIS_DATABASE_URL was given as --database-url on the command line");
    out.never_says(PASSWORD);
    // The same setting from the environment names no flag.
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_DATABASE_URL", &bad)
        .arg("migrate"));
    out.expect(2);
    out.says("PORTCULLIS_DATABASE_URL is not a valid");
    out.never_says("--database-url on");

    // A libpq parameter portcullis cannot use: what to do about it, before any connection.
    let out = run(command(&format!("{url}&gssencmode=disable"), &example_dir()).arg("migrate"));
    out.expect(2);
    out.says("`gssencmode` is libpq's setting for GSSAPI (Kerberos) encryption");
    out.never_says(PASSWORD);

    // Unknown flags and commands are usage errors.
    run(command(&url, &example_dir()).arg("--no-such-flag")).expect(2);
    run(command(&url, &example_dir()).arg("frobnicate")).expect(2);
    // A connection string put where a command belongs is not quoted back (it holds the
    // password), on stderr or in the termination log.
    let log = std::env::temp_dir().join(format!("portcullis-argv-{}.log", std::process::id()));
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_TERMINATION_LOG", &log)
        .arg(&url));
    out.expect(2);
    out.says("unrecognized subcommand '(an argument that may hold a password, not shown)'");
    let reason = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    for text in [&out.stderr, &reason] {
        assert!(!text.contains(PASSWORD), "the password was shown: {text}");
    }
    // With JSON logs, the usage error is a JSON line like every other failure.
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_LOG_FORMAT", "json")
        .arg(&url));
    out.expect(2);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert_eq!(lines[0]["exit_code"], 2);
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("'(an argument that may hold a password, not shown)'"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(PASSWORD));

    // No database at all.
    let out = run(std::process::Command::new(BIN).env_clear().arg("migrate"));
    out.expect(2);
    out.says("DATABASE_URL");
}

#[test]
fn help_and_version_exit_0() {
    let out = run(std::process::Command::new(BIN).arg("--help"));
    out.expect(0);
    assert!(out.stdout.contains("migrate") && out.stdout.contains("--wait-timeout"));
    let out = run(std::process::Command::new(BIN).arg("--version"));
    out.expect(0);
    assert!(out.stdout.starts_with("portcullis "));
}

// ---- 3: folder ------------------------------------------------------------------------------

/// Folder errors exit 3 without connecting: the URL points at a closed port, and the run must
/// not wait for it.
fn folder_error(folder: &Folder) -> Output {
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_WAIT_TIMEOUT", "30s")
        .arg("migrate"));
    out.expect(3);
    // Not one connection attempt: the folder is checked first.
    out.never_says("waiting for");
    out
}

#[test]
fn exit_3_for_a_missing_folder_or_journal() {
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let out = run(command(&url, std::path::Path::new("/nonexistent/drizzle")).arg("migrate"));
    out.expect(3);
    out.says("/nonexistent/drizzle");

    let folder = Folder::new();
    std::fs::remove_file(folder.path().join("meta/_journal.json")).unwrap();
    let out = folder_error(&folder);
    out.says("no meta/_journal.json");
    out.never_says("A journal is in");

    // The project root (or drizzle/) given instead of the `out` folder, or its meta/ folder:
    // the message names the folder that holds the journal.
    let mut project = Folder::new();
    project.add("0000_a", 1, "select 1;");
    let meta = project.path().join("meta");
    let out = run(command(&url, &meta).arg("migrate"));
    out.expect(3);
    out.says(&format!(
        "A journal is in {}: is that the folder meant?",
        project.path().display()
    ));
    std::fs::rename(project.path(), folder.path().join("drizzle")).unwrap();
    let out = folder_error(&folder);
    out.says(&format!(
        "A journal is in {}: is that the folder meant?",
        folder.path().join("drizzle").display()
    ));
}

#[test]
fn exit_3_for_malformed_journal_with_line_and_column() {
    let folder = Folder::new();
    folder.write(
        "meta/_journal.json",
        b"{\n  \"entries\": [\n    { \"tag\": \"0000_a\", \"when\": 1 },\n  ]\n}",
    );
    let out = folder_error(&folder);
    out.says("_journal.json:4:3: malformed JSON");

    // A folder drizzle-kit generated for another database.
    folder.write(
        "meta/_journal.json",
        br#"{"version":"5","dialect":"mysql","entries":[{"idx":0,"version":"5","when":1,"tag":"0000_a","breakpoints":true}]}"#,
    );
    folder.write("0000_a.sql", b"CREATE TABLE `a` (`id` int);");
    let out = folder_error(&folder);
    out.says("_journal.json says \"dialect\": \"mysql\": drizzle-kit generated these migrations for MySQL");
}

#[test]
fn exit_3_for_missing_file_duplicate_tag_and_bad_when_all_listed() {
    let mut folder = Folder::new();
    folder
        .add("0000_a", 1, "select 1;")
        .add_raw("0001_b", "\"yesterday\"", b"select 1;")
        .add("0002_c", 3, "select 1;")
        .add("0002_c", 4, "select 1;")
        .add("0004_gone", 5, "select 1;");
    std::fs::remove_file(folder.path().join("0004_gone.sql")).unwrap();
    let out = folder_error(&folder);
    out.says("0001_b");
    out.says("same tag 0002_c");
    // The missing file is reported once the journal itself is valid: fix and rerun.
    let mut folder = Folder::new();
    folder
        .add("0000_a", 1, "select 1;")
        .add("0001_gone", 2, "x");
    std::fs::remove_file(folder.path().join("0001_gone.sql")).unwrap();
    let out = folder_error(&folder);
    out.says("0001_gone.sql");
    out.says("does not exist");
    out.says("Restore the file");

    // Renamed on a file system that ignores case (macOS, Windows): the near name is shown.
    std::fs::write(folder.path().join("0001_Gone.sql"), "x").unwrap();
    let out = folder_error(&folder);
    out.says(
        "names this file, but the file does not exist. The folder has `0001_Gone.sql`, a name \
         that differs only in letter case or spaces",
    );
    out.says("Rename it to 0001_gone.sql (`git mv`)");
}

/// What only a client such as psql can run cannot run from a file sent to the server as SQL: a
/// COPY through the client (pg_dump's `COPY ... FROM stdin` data, or `COPY ... TO STDOUT`), or
/// a psql meta-command (the `\restrict` line pg_dump writes since August 2025). A migration about to be applied that holds
/// one is exit 3 before anything is applied, naming file:line:column, in `validate` (offline and
/// online), `plan` and `migrate`; before, `migrate` applied the migrations before it in the
/// transaction and then ended with exit 5 "the server is shutting down" or exit 8 "syntax
/// error". One applied already (drizzle runs a `COPY ... TO STDOUT`, discarding the rows) is
/// history: only offline `validate`, which cannot tell, names it.
#[test]
fn exit_3_for_what_only_psql_can_run_before_anything_is_applied() {
    let url = fresh_db("client_copy");
    let shown = "COPY (SELECT 1) TO STDOUT;\n";
    let mut folder = Folder::new();
    folder.add("0000_shown", 1, shown);
    // Applied by drizzle: its tracking row, with the file's sha256.
    execute(
        &url,
        &format!(
            "create schema drizzle; create table drizzle.__drizzle_migrations (id serial primary \
             key, hash text not null, created_at bigint); insert into \
             drizzle.__drizzle_migrations (hash, created_at) values \
             (encode(sha256(convert_to('{}', 'UTF8')), 'hex'), 1)",
            shown.replace('\n', "' || chr(10) || '")
        ),
    );
    migrate(&url, folder.path()).expect(0);
    folder
        .add("0001_table", 2, "CREATE TABLE cc_a (id int);")
        .add(
            "0002_dump",
            3,
            "\\restrict k1\nINSERT INTO cc_a VALUES (0);\n--> statement-breakpoint\nCOPY cc_a (id) FROM stdin;\n1\n\\.\n",
        );
    let file = folder.path().join("0002_dump.sql").display().to_string();
    let dump = format!("{file}:4:1: COPY ... FROM STDIN reads its rows from the client's input");
    let restrict = format!("{file}:1:1: `\\restrict` is a psql meta-command");
    let out = run(command(&url, folder.path()).args(["validate", "--offline"]));
    out.expect(3);
    out.says("validate found 3 problems");
    out.says(&dump);
    out.says(&restrict);
    out.says(&format!(
        "{}:1:1: COPY ... TO STDOUT sends its rows to the client",
        folder.path().join("0000_shown.sql").display()
    ));
    for args in [&["validate"][..], &["plan"], &["migrate"]] {
        let out = run(command(&url, folder.path()).args(args));
        out.expect(3);
        out.says(&dump);
        out.says(&restrict);
        assert!(
            !out.stderr.contains("TO STDOUT"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = migrate(&url, folder.path());
    out.says("Nothing was applied; fix the files, then deploy again.");
    assert!(!table_exists(&url, "cc_a"));
    assert_eq!(rows(&url).len(), 1);
    assert_eq!(advisory_locks(&url), 0);

    folder.write(
        "0002_dump.sql",
        b"INSERT INTO cc_a VALUES (0);\n--> statement-breakpoint\nINSERT INTO cc_a VALUES (1);\n",
    );
    migrate(&url, folder.path()).expect(0);
    assert_eq!(rows(&url).len(), 3);
    assert_eq!(
        query(&url, "select count(*) from cc_a")[0][0].as_deref(),
        Some("2")
    );
}

// ---- 4: history disagrees ---------------------------------------------------------------

fn three() -> Folder {
    let mut f = Folder::new();
    f.add("0000_a", 1000, "create table h_a (id int);")
        .add("0001_b", 2000, "create table h_b (id int);")
        .add("0002_c", 3000, "create table h_c (id int);");
    f
}

#[test]
fn exit_4_for_out_of_order_unless_told_to_apply_or_skip() {
    let url = fresh_db("ooo");
    let mut folder = Folder::new();
    folder
        .add("0000_a", 1000, "create table o_a (id int);")
        .add("0002_c", 3000, "create table o_c (id int);");
    migrate(&url, folder.path()).expect(0);
    // A branch merged later: older `when`, never applied.
    let mut merged = Folder::new();
    merged
        .add("0000_a", 1000, "create table o_a (id int);")
        .add("0001_b", 2000, "create table o_b (id int);")
        .add("0002_c", 3000, "create table o_c (id int);")
        .add("0003_d", 4000, "create table o_d (id int);");
    let out = migrate(&url, merged.path());
    out.expect(4);
    out.says("0001_b");
    out.says("PORTCULLIS_OUT_OF_ORDER=apply");
    assert!(!table_exists(&url, "o_d"), "nothing applied on refusal");

    let out = run(command(&url, merged.path())
        .env("PORTCULLIS_OUT_OF_ORDER", "skip")
        .arg("migrate"));
    out.expect(0);
    out.says("skipped");
    assert!(table_exists(&url, "o_d") && !table_exists(&url, "o_b"));

    let out = run(command(&url, merged.path())
        .env("PORTCULLIS_OUT_OF_ORDER", "apply")
        .arg("migrate"));
    out.expect(0);
    assert!(table_exists(&url, "o_b"));
    let r = rows(&url);
    assert_eq!(r.len(), 4);
    assert_eq!(r[3].1, "2000", "the out-of-order row keeps its own when");
    migrate(&url, merged.path()).expect(0);
}

#[test]
fn exit_4_for_an_edited_file_but_not_for_line_endings_only() {
    let url = fresh_db("edited");
    let folder = three();
    migrate(&url, folder.path()).expect(0);
    folder.write("0001_b.sql", b"create table h_b (id bigint);");
    let out = migrate(&url, folder.path());
    out.expect(4);
    assert!(
        out.stderr.contains("0001_b") && out.stderr.contains("edited"),
        "{}",
        out.stderr
    );
    out.says("0001_b.sql");

    folder.write("0001_b.sql", b"create table h_b (id int);");
    let mut crlf = three();
    crlf.add("0003_d", 4000, "create table h_d (id int);\n");
    migrate(&url, crlf.path()).expect(0);
    crlf.write("0003_d.sql", b"create table h_d (id int);\r\n");
    let out = migrate(&url, crlf.path());
    out.expect(0);
    out.says("line endings");
}

#[test]
fn exit_4_for_null_created_at_with_the_fix() {
    let url = fresh_db("nullrow");
    let folder = three();
    migrate(&url, folder.path()).expect(0);
    execute(
        &url,
        "update drizzle.__drizzle_migrations set created_at = null where id = 2",
    );
    let out = migrate(&url, folder.path());
    out.expect(4);
    out.says("created_at NULL");
    out.says("SET created_at = 2000 WHERE id = 2");
}

#[test]
fn exit_4_for_a_mistyped_created_at() {
    let url = fresh_db("mistyped");
    execute(
        &url,
        "create schema drizzle; create table drizzle.__drizzle_migrations \
         (id serial primary key, hash text not null, created_at timestamp)",
    );
    let out = migrate(&url, three().path());
    out.expect(4);
    out.says("created_at");
    out.says("timestamp");
    assert!(!table_exists(&url, "h_a"));
}

// ---- 5 and 6: waiting and refusal --------------------------------------------------------

#[test]
fn exit_5_when_nothing_answers_within_the_wait_timeout() {
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "2s")
        .arg("migrate"));
    out.expect(5);
    // It waited the whole timeout, and then stopped (not another whole wait later).
    assert!(out.elapsed >= Duration::from_secs(2), "{:?}", out.elapsed);
    assert!(out.elapsed < Duration::from_secs(12), "{:?}", out.elapsed);
    out.says("connection refused");
    out.says("did not accept connections within 2s");
    out.says("waiting for 127.0.0.1:");
    // Nothing listens on this machine's own address: a proxy sidecar that starts after an init
    // container, or localhost inside a container.
    out.says("Nothing accepted connections at 127.0.0.1:");
    out.says("run the proxy as a native sidecar");
    out.says("inside a container, localhost is the container itself");

    // An IPv6 address is shown in brackets, so that its port stands apart.
    let port = free_port();
    let url = format!("postgres://postgres:{PASSWORD}@[::1]:{port}/x");
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "0")
        .arg("migrate"));
    out.expect(5);
    out.says(&format!(
        "the database at [::1]:{port}/x did not accept connections"
    ));

    // A host name that does not resolve (.invalid never does): the usual causes of that.
    let url = format!("postgres://postgres:{PASSWORD}@pc-no-such-host.invalid:5432/x");
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "1s")
        .arg("migrate"));
    out.expect(5);
    out.says("failed to lookup address information");
    out.says(
        "The host name did not resolve for the whole wait. Check its spelling in DATABASE_URL",
    );
    out.says("<service>.<namespace>");
    out.never_says("Check that it is running");
}

/// A network without IPv6 (GitHub Actions runners, many Docker and Kubernetes networks) and a
/// host with only IPv6 addresses (Supabase's direct host, db.<project>.supabase.co): "Network
/// is unreachable" until the deadline, and the exit-5 message says why and what to use
/// instead. Here in a network namespace of its own with only the loopback device, and its own
/// /etc/hosts (a mount namespace), so it needs root, as CI runs; `ip` is iproute2's.
#[test]
fn exit_5_for_a_host_with_only_ipv6_addresses_from_a_network_without_ipv6_says_so() {
    // In a folder removed on drop, so that a failing run leaves nothing behind either.
    let scratch = Folder::new();
    scratch.write(
        "hosts",
        b"127.0.0.1 localhost\n2001:db8::10 db.pc-test.supabase.co\n",
    );
    let hosts = scratch.path().join("hosts");
    let in_namespace = |url: &str| {
        let inner = command(url, &example_dir());
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--mount", "sh", "-c"])
            .arg(
                "ip link set lo up && mount --bind \"$PC_HOSTS\" /etc/hosts && exec \"$PC_BIN\" \
                 migrate",
            )
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PC_HOSTS", &hosts)
            .env("PC_BIN", BIN)
            .stdin(std::process::Stdio::null());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.env("PORTCULLIS_WAIT_TIMEOUT", "1s");
        let out = run(&mut cmd);
        assert!(
            !out.stderr.contains("unshare:") && !out.stderr.contains("mount:"),
            "this test needs root (a network and a mount namespace) and iproute2's `ip`: {}",
            out.stderr
        );
        out
    };
    let out = in_namespace(&format!(
        "postgres://postgres:{PASSWORD}@db.pc-test.supabase.co:5432/postgres"
    ));
    out.expect(5);
    out.says("Network is unreachable");
    out.says("db.pc-test.supabase.co has only IPv6 addresses (2001:db8::10), and this machine had no route to it");
    out.says("the session pooler's connection string");
    out.never_says("Check that it is running");
    out.never_says(PASSWORD);
    // An IPv4 address the namespace has no route to either: the general advice.
    let out = in_namespace(&format!(
        "postgres://postgres:{PASSWORD}@10.9.9.9:5432/postgres"
    ));
    out.expect(5);
    out.says("Network is unreachable");
    out.says("Check that it is running and reachable from here");
    out.never_says("IPv6");
    out.never_says("native sidecar");
}

/// A wrong port where something else answers: an HTTP server (a web port, a database's HTTP
/// API), or an SSH server, which speaks first. Exit 6 at once, naming what answered, instead of
/// retrying "bytes remaining on stream" (or, with sslmode=require, "does not support TLS")
/// until the deadline. The servers here are the test's own, on loopback ports.
#[test]
fn exit_6_at_once_when_what_answers_is_not_postgresql() {
    use std::io::{Read, Write};
    let serve = |first_words: &'static [u8], speaks_first: bool| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if !speaks_first {
                    let _ = stream.read(&mut [0u8; 256]);
                }
                let _ = stream.write_all(first_words);
            }
        });
        port
    };
    let http = serve(
        b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nConnection: close\r\n\r\n",
        false,
    );
    let ssh = serve(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", true);
    for (port, answered) in [
        (
            http,
            "it answered `HTTP/1.1 400 Bad Request` (an HTTP server)",
        ),
        (
            ssh,
            "it answered `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3` (an SSH server)",
        ),
    ] {
        for sslmode in ["disable", "prefer", "require"] {
            let url =
                format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/x?sslmode={sslmode}");
            let out = run(command(&url, &example_dir())
                .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
                .arg("migrate"));
            out.expect(6);
            out.says(&format!(
                "what answers at 127.0.0.1:{port} is not PostgreSQL"
            ));
            out.says(answered);
            out.says("Check the host and port in DATABASE_URL");
            out.never_says("sslmode=disable or sslmode=prefer");
            out.never_says(PASSWORD);
            assert!(out.elapsed < Duration::from_secs(20), "{:?}", out.elapsed);
        }
    }
}

#[test]
fn exit_6_fast_for_a_wrong_password_or_a_missing_database() {
    let cluster = Cluster::shared();
    // Refused for good at the first attempt: no retry, nowhere near the 60 s wait.
    let refused_at_once = |url: &str| {
        let out = run(command(url, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
            .arg("migrate"));
        out.expect(6);
        out.never_says("(attempt");
        assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
        out
    };
    let out = refused_at_once(&cluster.url_with("postgres", "wrong-password", "postgres"));
    out.says("authentication failed");
    out.says("28P01");

    let out = refused_at_once(&cluster.url("no_such_database"));
    out.says("3D000");
    out.says("no_such_database");

    // channel_binding=require (as in Neon's URLs) to a server reached without TLS: refused by
    // the client for good, not retried for the whole wait as a network fault.
    let out = refused_at_once(
        &cluster
            .url("postgres")
            .replace("sslmode=disable", "sslmode=disable&channel_binding=require"),
    );
    out.says("authentication failed: server did not use channel binding");
    out.says("Use sslmode=require (or verify-full), or leave channel_binding=require out");

    // A user without CONNECT on the database: refused for good, with the grant that fixes it.
    let url = fresh_db("noconnect");
    let db = db_name(&url);
    execute(
        &url,
        &format!(
            "do $$ begin create role pc_noconnect login password 'pc-pw'; exception when \
             duplicate_object then null; end $$; revoke connect on database \"{db}\" from public"
        ),
    );
    let out = refused_at_once(&cluster.url_with("pc_noconnect", "pc-pw", db));
    out.says("42501");
    out.says("GRANT CONNECT ON DATABASE");

    // A role whose password expired: the server's words are a wrong password's, so the message
    // names the other cause too.
    let role = format!("pc_expired_{}", std::process::id());
    execute(
        &url,
        &format!("create role {role} login password 'pc-pw' valid until '2000-01-01'"),
    );
    let out = refused_at_once(&cluster.url_with(&role, "pc-pw", db));
    out.says("28P01");
    out.says("a password past the role's VALID UNTIL date is refused with the same words");

    // A role that may not log in: the ALTER ROLE that fixes it.
    let role = format!("pc_nologin_{}", std::process::id());
    execute(
        &url,
        &format!("create role {role} nologin password 'pc-pw'"),
    );
    let out = refused_at_once(&cluster.url_with(&role, "pc-pw", db));
    out.says(&format!(
        "role \"{role}\" is not permitted to log in (28000)"
    ));
    out.says(&format!("ALTER ROLE \"{role}\" LOGIN"));

    // A database closed to connections (for maintenance): the ALTER DATABASE that reopens it.
    let closed = fresh_db("closed");
    let closed_name = db_name(&closed);
    execute(
        &url,
        &format!("alter database \"{closed_name}\" allow_connections false"),
    );
    let out = refused_at_once(&closed);
    out.says("is not currently accepting connections (55000)");
    out.says(&format!(
        "ALTER DATABASE \"{closed_name}\" ALLOW_CONNECTIONS true"
    ));
    execute(
        &url,
        &format!("alter database \"{closed_name}\" allow_connections true"),
    );
}

/// A server that takes only reads (a hot standby, a read replica, a former primary after a
/// failover; here `default_transaction_read_only`) refuses every write with 25006: exit 6,
/// saying so and pointing at the primary, whether the first write is portcullis's own (the
/// tracking table) or a migration's. Not exit 1 "please report", not exit 8 "fix the SQL".
/// Reading commands still work there.
#[test]
fn exit_6_on_a_server_that_takes_only_reads() {
    let url = fresh_db("read_only");
    let db = db_name(&url);
    let read_only = format!("alter database \"{db}\" set default_transaction_read_only = on");
    execute(&url, &read_only);
    let out = migrate(&url, &example_dir());
    out.expect(6);
    out.says("ERROR 25006 cannot execute CREATE SCHEMA in a read-only transaction");
    out.says("The server accepts only reads: it is a hot standby");
    out.says("add target_session_attrs=read-write");

    // Migrated on the primary, then a new migration meets the read-only server.
    execute(
        &url,
        &format!(
            "begin read write; alter database \"{db}\" reset default_transaction_read_only; \
             commit"
        ),
    );
    let mut folder = Folder::new();
    folder.add("0000_ro", 1, "CREATE TABLE ro_a (id int);");
    migrate(&url, folder.path()).expect(0);
    execute(&url, &read_only);
    folder.add("0001_ro", 2, "CREATE TABLE ro_b (id int);");
    let out = migrate(&url, folder.path());
    out.advises(
        6,
        &[
            "migration 0001_ro failed at ",
            "in statement 1 of 1 (`CREATE TABLE ro_b (id int);`)",
            "ERROR 25006 cannot execute CREATE TABLE in a read-only transaction",
            "The server accepts only reads",
        ],
    );
    out.says("The transaction was rolled back");
    run(command(&url, folder.path()).arg("status")).expect(0);
    assert_eq!(rows(&url).len(), 1);
}

#[test]
fn exit_6_when_tls_is_required_but_the_server_has_none() {
    let url = Cluster::shared()
        .url("postgres")
        .replace("sslmode=disable", "sslmode=require");
    let out = run(command(&url, &example_dir()).arg("migrate"));
    out.expect(6);
    out.says("TLS");
    // The same in libpq's keyword/value form, whose sslmode was once overridden by the
    // default (prefer), which connected without TLS.
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=postgres sslmode=require",
        Cluster::shared().port()
    );
    let out = run(command(&kv, &example_dir()).arg("migrate"));
    out.expect(6);
    out.says("TLS");
}

#[test]
fn the_database_appearing_three_seconds_late_is_waited_for() {
    let port = free_port();
    let mut cluster = Cluster::init(port);
    let url = cluster.url("postgres");
    let started = Instant::now();
    let child = spawn(
        command(&url, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "30s")
            .arg("migrate"),
    );
    std::thread::sleep(Duration::from_secs(3));
    cluster.start();
    let out = finish(child, started, Duration::from_secs(40));
    out.expect(0);
    assert!(
        out.stderr.contains(&format!(
            "waiting for 127.0.0.1:{port}: connection refused (attempt 1"
        )),
        "{}",
        out.stderr
    );
    out.says("accepts connections");
    assert_eq!(rows(&url).len(), 4);
}

// ---- 7: lock ---------------------------------------------------------------------------------

#[test]
fn exit_7_when_another_runner_keeps_the_lock() {
    let url = fresh_db("locked");
    let key = portcullis::db::lock::key("drizzle", "__drizzle_migrations");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let holder_url = format!("{url}&application_name=lock-holder-test");
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&holder_url, tokio_postgres::NoTls))
        .unwrap();
    let conn_task = rt.spawn(conn);
    rt.block_on(client.query_one("select pg_advisory_lock($1)", &[&key]))
        .unwrap();
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_LOCK_WAIT_TIMEOUT", "2s")
        .arg("migrate"));
    out.expect(7);
    out.says("lock-holder-test");
    out.says("waiting for the migration lock");
    // The whole reason, as one sentence an operator reads (no line-continuation gaps).
    out.says(
        "another runner held the migration lock for \"drizzle\".\"__drizzle_migrations\" for \
         the whole PORTCULLIS_LOCK_WAIT_TIMEOUT (2s); held by pid ",
    );
    out.says("If that runner is stuck, stop it (SELECT pg_terminate_backend(<pid>)); if it is");
    assert!(
        !table_exists(&url, "users"),
        "nothing applied without the lock"
    );

    // Once released, the next run goes through.
    rt.block_on(client.query_one("select pg_advisory_unlock($1)", &[&key]))
        .unwrap();
    drop(client);
    conn_task.abort();
    migrate(&url, &example_dir()).expect(0);
}

/// The portcullis sessions (main and second connections) still in the server for `url`'s
/// database, once the server has let them go (at most 10 s): none, or how many.
fn portcullis_sessions_left(url: &str) -> usize {
    let started = Instant::now();
    loop {
        let n: usize = crate::support::query(
            url,
            "select count(*) from pg_stat_activity where application_name like 'portcullis@%' \
             and datname = current_database()",
        )[0][0]
            .as_deref()
            .and_then(|n| n.parse().ok())
            .expect("a count");
        if n == 0 || started.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A session that locks the tracking table (an `ALTER TABLE` left in an open transaction, a
/// `VACUUM FULL`, a `LOCK TABLE`) makes the read of it wait. That is not a connection that
/// stopped answering: the exit is 7, naming the table, the lock and who holds it, not 5 sending
/// the operator to the network; portcullis ends its own waiting session, so nothing of it stays
/// queued behind the blocker holding the migration lock.
#[test]
fn exit_7_naming_the_session_that_locks_the_tracking_table() {
    let url = fresh_db("table_locked");
    migrate(&url, &example_dir()).expect(0);
    let holder = hold_session(
        &format!("{url}&application_name=table-locker-test"),
        "BEGIN; LOCK TABLE drizzle.__drizzle_migrations IN ACCESS EXCLUSIVE MODE",
        "COMMIT",
    );
    let out = run(command(&format!("{url}&connect_timeout=2"), &example_dir()).arg("migrate"));
    out.expect(7);
    out.says(
        "while reading the tracking table, the session waited 2s (the connect timeout) for a \
         lock on drizzle.__drizzle_migrations (AccessShareLock), which another session holds: \
         pid ",
    );
    out.says("(\"table-locker-test\", idle in transaction, transaction open ");
    out.says("LOCK TABLE drizzle.__drizzle_migrations IN ACCESS EXCLUSIVE MODE`)");
    out.says("The database is up: the lock, not the network, kept the answer from coming.");
    out.says("The server still had that session (process ");
    out.says("so portcullis ended it from a new connection (pg_terminate_backend)");
    out.says("Finish or end the blocking session (SELECT pg_terminate_backend(<pid>))");
    assert!(
        !out.stderr.contains("stopped answering"),
        "a lock wait is not a lost connection:\n{}",
        out.stderr
    );
    // With the blocker still there, nothing of the run is left in the server.
    assert_eq!(
        portcullis_sessions_left(&url),
        0,
        "the waiting session was ended"
    );
    assert_eq!(advisory_locks(&url), 0, "the migration lock is free");
    // The reading commands say the same.
    for name in ["status", "plan", "validate"] {
        let out = run(command(&format!("{url}&connect_timeout=2"), &example_dir()).arg(name));
        out.expect(7);
        out.says("for a lock on drizzle.__drizzle_migrations (AccessShareLock)");
        out.says("(\"table-locker-test\", idle in transaction");
    }
    assert_eq!(portcullis_sessions_left(&url), 0);
    holder.release();
    migrate(&url, &example_dir()).expect(0);
}

/// A runner queued behind one that dies (kill -9) takes over: the server drops the dead
/// runner's session, which rolls its work back and releases the lock, and the queued runner
/// finds the migrations still pending, takes the lock and applies them.
#[test]
fn a_queued_runner_takes_over_when_the_runner_it_waited_for_is_killed() {
    let url = fresh_db("takeover");
    let mut folder = Folder::new();
    folder.add("0000_a", 1, "create table to_a (id int);").add(
        "0001_b",
        2,
        "create table to_b (id int);\n--> statement-breakpoint\nselect pg_sleep(2.01);",
    );
    let started = Instant::now();
    let mut first = spawn(command(&url, folder.path()).arg("migrate"));
    wait_for_statement(&url, "pg_sleep(2.01)");
    let second = spawn(command(&url, folder.path()).arg("migrate"));
    wait_for_statement(&url, "pg_advisory_lock_shared");
    first.kill().unwrap();
    first.wait().unwrap();
    let out = finish(second, started, Duration::from_secs(60));
    out.expect(0);
    out.says("waiting for the migration lock");
    out.says("applied 2 migrations");
    assert_eq!(rows(&url).len(), 2);
    assert!(table_exists(&url, "to_a") && table_exists(&url, "to_b"));
    assert_eq!(advisory_locks(&url), 0);
}

/// A statement_timeout set on the database or role for the app, shorter than a migration,
/// does not cut a replica's wait for the migration lock short: the runner queued behind the
/// one migrating waits it out and finds nothing left to do. (Before, the wait ended after the
/// statement_timeout with exit 1, "please report it".)
#[test]
fn a_database_statement_timeout_does_not_cut_the_wait_for_the_lock_short() {
    let url = fresh_db("lock_wait_st");
    set_for_database(&url, "statement_timeout = '500ms'");
    let mut folder = Folder::new();
    folder.add(
        "0000_slow",
        1,
        "CREATE TABLE \"lw_slow\" (\"id\" integer);\n--> statement-breakpoint\n\
         SELECT pg_sleep(2.02);",
    );
    let started = Instant::now();
    let first = spawn(command(&url, folder.path()).arg("migrate"));
    wait_for_statement(&url, "pg_sleep(2.02)");
    let second = spawn(command(&url, folder.path()).arg("migrate"));
    let out = finish(second, started, Duration::from_secs(30));
    out.expect(0);
    out.says("waiting for the migration lock");
    out.says("the runner this one waited for left nothing to do");
    finish(first, started, Duration::from_secs(30)).expect(0);
    assert_eq!(rows(&url).len(), 1);
}

/// A queued runner holds no lock on the tracking table while it waits, so a holder that alters
/// the table (drizzle 1.0's upgrade, `repair --apply`) is not blocked by it. Regression: the
/// cache warm-up (since removed) read the table in the same transaction as the wait and kept its
/// lock.
#[test]
fn a_queued_runner_never_blocks_the_holder_from_altering_the_tracking_table() {
    let url = fresh_db("queued_alter");
    migrate(&url, &example_dir()).expect(0);
    let key = portcullis::db::lock::key("drizzle", "__drizzle_migrations");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&url, tokio_postgres::NoTls))
        .unwrap();
    let conn_task = rt.spawn(conn);
    rt.block_on(client.query_one("select pg_advisory_lock($1)", &[&key]))
        .unwrap();
    let started = Instant::now();
    let child = spawn(command(&url, &example_dir()).arg("migrate"));
    wait_for_statement(&url, "pg_advisory_lock_shared");
    rt.block_on(client.batch_execute(
        "SET lock_timeout = '3s'; \
         ALTER TABLE drizzle.__drizzle_migrations ADD COLUMN note text; \
         RESET lock_timeout",
    ))
    .expect("the holder altered the tracking table while a runner was queued (lock_timeout 3s)");
    rt.block_on(client.query_one("select pg_advisory_unlock($1)", &[&key]))
        .unwrap();
    let out = finish(child, started, Duration::from_secs(30));
    out.expect(0);
    out.says("the runner this one waited for left nothing to do");
    drop(client);
    conn_task.abort();
}

/// SIGTERM while queued for the lock: the wait is cancelled at once (exit 143), and the runner
/// leaves nothing behind, not even its place in the queue.
#[test]
fn sigterm_while_queued_for_the_lock_exits_143_at_once() {
    let url = fresh_db("queued_term");
    let holder = hold_lock(&url);
    let (out, took) = terminate_while_running(
        command(&url, &example_dir()).arg("migrate"),
        &url,
        "pg_advisory_lock_shared",
    );
    out.expect(143);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    out.says("interrupted by SIGTERM while waiting for the migration lock");
    // Only the test's own lock is left; nothing was applied.
    assert_eq!(advisory_locks(&url), 1);
    assert!(!table_exists(&url, "users"));
    drop(holder);
}

// ---- 8: a failing migration ------------------------------------------------------------------

#[test]
fn exit_8_a_failing_third_of_five_rolls_everything_back_and_names_file_and_line() {
    let url = fresh_db("fail3");
    let mut folder = Folder::new();
    folder
        .add("0000_a", 1, "create table f_a (id int);")
        .add("0001_b", 2, "create table f_b (id int);")
        .add(
            "0002_c",
            3,
            "create table f_c (id int);\n--> statement-breakpoint\n-- add a column\nALTER TABLE f_c\n  ADD COLUMN note txet;",
        )
        .add("0003_d", 4, "create table f_d (id int);")
        .add("0004_e", 5, "create table f_e (id int);");
    let out = migrate(&url, folder.path());
    out.expect(8);
    let file = folder.path().join("0002_c.sql").display().to_string();
    assert!(
        out.stderr.contains(&format!("{file}:5:")),
        "names file:line:col\n{}",
        out.stderr
    );
    out.says("statement 2 of 2");
    out.says("42704");
    out.says("type \"txet\" does not exist");
    out.says("none of the 5 migrations of this transaction were applied");
    for t in ["f_a", "f_b", "f_c", "f_d", "f_e"] {
        assert!(!table_exists(&url, t), "{t} must be rolled back");
    }
    assert!(rows(&url).is_empty());
    assert_eq!(advisory_locks(&url), 0);

    // Fix the file: the next run applies all five.
    folder.write("0002_c.sql", b"create table f_c (id int);");
    migrate(&url, folder.path()).expect(0);
    assert_eq!(rows(&url).len(), 5);
}

/// A transaction's statements and tracking rows go to the server together, without waiting for
/// each answer. The server must then refuse everything after a failed statement: the sequence
/// that statement 3 and the next migration would bump (a change that no rollback undoes) shows
/// that neither ran, as when statements are sent one by one.
#[test]
fn exit_8_nothing_after_the_failed_statement_of_a_migration_runs() {
    let url = fresh_db("pipefail");
    execute(&url, "create sequence pipe_seq");
    let mut folder = Folder::new();
    folder
        .add(
            "0000_p",
            1,
            "create table p_a (id int);\n--> statement-breakpoint\nselect * from p_missing;\n--> statement-breakpoint\nselect nextval('pipe_seq');",
        )
        .add("0001_q", 2, "select nextval('pipe_seq');");
    let out = migrate(&url, folder.path());
    out.expect(8);
    out.says("statement 2 of 3");
    out.says("42P01");
    out.says("relation \"p_missing\" does not exist");
    assert!(!table_exists(&url, "p_a"), "statement 1 was rolled back");
    assert_eq!(
        crate::support::query(&url, "select is_called from pipe_seq")[0][0].as_deref(),
        Some("f"),
        "statement 3 and 0001_q must not have run"
    );
    assert!(rows(&url).is_empty(), "no tracking row");
    assert_eq!(advisory_locks(&url), 0);
}

/// `statement_timeout` bounds each statement, not a whole migration sent in one go: three
/// statements of 1.2 s each under a 2 s `statement_timeout`, with 1 s to wait for an answer
/// beyond it (`connect_timeout=1`), take 3.6 s and succeed.
#[test]
fn statement_timeout_counts_per_statement_in_a_migration_sent_together() {
    let url = format!("{}&connect_timeout=1", fresh_db("pipeslow"));
    let mut folder = Folder::new();
    folder.add(
        "0000_slow",
        1,
        "select pg_sleep(1.2);\n--> statement-breakpoint\nselect pg_sleep(1.2);\n--> statement-breakpoint\nselect pg_sleep(1.2);",
    );
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_STATEMENT_TIMEOUT", "2s")
        .arg("migrate"));
    out.expect(0);
    assert!(
        out.elapsed >= Duration::from_millis(3600),
        "the three statements ran: {:?}",
        out.elapsed
    );
    assert_eq!(rows(&url).len(), 1);
}

/// A statement that fails for a reason that is not its SQL is not "fix the SQL": past
/// PORTCULLIS_STATEMENT_TIMEOUT the message says to raise it; cancelled by another session
/// (pg_cancel_backend), it says so. Both roll the migration back (exit 8).
#[test]
fn exit_8_for_a_timeout_or_a_cancel_says_what_to_do_instead_of_fixing_the_sql() {
    let url = fresh_db("not_the_sql");
    let mut folder = Folder::new();
    folder.add(
        "0000_slow",
        1,
        "create table nts (id int);\n--> statement-breakpoint\nselect pg_sleep(3);",
    );
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_STATEMENT_TIMEOUT", "1s")
        .arg("migrate"));
    out.advises(
        8,
        &[
            "ERROR 57014 canceling statement due to statement timeout",
            "It ran longer than PORTCULLIS_STATEMENT_TIMEOUT allows. If it needs longer, raise it",
        ],
    );

    let started = Instant::now();
    let child = spawn(command(&url, folder.path()).arg("migrate"));
    wait_for_statement(&url, "pg_sleep(3)");
    crate::support::execute(
        &url,
        "select pg_cancel_backend(pid) from pg_stat_activity where query like '%pg_sleep(3)%' \
         and application_name = 'portcullis@it-runner' and datname = current_database()",
    );
    let out = finish(child, started, Duration::from_secs(30));
    out.expect(8);
    out.says("ERROR 57014 canceling statement due to user request");
    out.says("Another session cancelled it (pg_cancel_backend");
    out.never_says("Fix the SQL");
    assert_eq!(rows(&url).len(), 0);
    assert!(!table_exists(&url, "nts"), "rolled back");
}

/// A configured limit the migration runs into (53400; here temp_file_limit, which a big sort
/// on a small work_mem hits) is not the SQL's fault: the advice names the limit to raise.
#[test]
fn exit_8_for_a_configured_limit_says_to_raise_it_instead_of_fixing_the_sql() {
    let url = fresh_db("temp_limit");
    let mut folder = Folder::new();
    folder.add(
        "0000_sorted",
        1,
        "SET temp_file_limit = '64kB';\n--> statement-breakpoint\nSET work_mem = '64kB';\n\
         --> statement-breakpoint\nCREATE TABLE sorted AS SELECT g FROM generate_series(1, \
         200000) g ORDER BY g DESC;",
    );
    let out = migrate(&url, folder.path());
    out.expect(8);
    // PostgreSQL 18 quotes the setting's name.
    out.says("ERROR 53400 temporary file size exceeds ");
    assert!(
        out.stderr.contains("temp_file_limit (64kB)")
            || out.stderr.contains("\"temp_file_limit\" (64kB)"),
        "{}",
        out.stderr
    );
    out.says("hit a configured limit (its message or HINT names it");
    out.says("Raise that limit");
    out.never_says("Fix the SQL");
    assert!(rows(&url).is_empty());
    assert!(!table_exists(&url, "sorted"));
}

/// A full disk (53100) is not the SQL's fault: the advice says to free space. Here the
/// migration fills a tablespace on a 1 MiB volume of the test's own server.
#[test]
fn exit_8_on_a_full_disk_says_to_free_space_instead_of_fixing_the_sql() {
    let mut cluster = Cluster::init(free_port());
    let volume = cluster.start_with_small_volume(1 << 20);
    let db = cluster.create_database("disk_full");
    let url = cluster.url(&db);
    execute(
        &url,
        &format!("create tablespace small location '{}'", volume.display()),
    );
    let mut folder = Folder::new();
    folder.add(
        "0000_big",
        1,
        "CREATE TABLE \"big\" (\"v\" text) TABLESPACE small;\n--> statement-breakpoint\n\
         INSERT INTO \"big\" SELECT repeat(md5(g::text), 8) FROM generate_series(1, 20000) g;",
    );
    let out = migrate(&url, folder.path());
    out.advises(
        8,
        &[
            "ERROR 53100 could not extend file",
            "No space left on device",
            "The server ran out of disk space; nothing is wrong with the SQL.",
            "a path under pg_tblspc/<oid>/ is in a tablespace",
        ],
    );
    assert!(rows(&url).is_empty());
    assert!(!table_exists(&url, "big"));
    // The rollback left nothing on the full volume: a tablespace with any file in it cannot
    // be dropped.
    execute(&url, "drop tablespace small");
    cluster.stop();
}

/// The shared lock table full (53200 "out of shared memory", max_locks_per_transaction): many
/// pending migrations in drizzle's one transaction hold a lock on every table they create until
/// it commits. The advice says to raise the limit or apply fewer migrations per transaction, and
/// the second way works. Here on the test's own server, with the smallest lock table it allows.
#[test]
fn exit_8_when_the_lock_table_is_full_says_how_and_transaction_each_applies_the_same_folder() {
    let mut cluster = Cluster::init(free_port());
    cluster.start_with(&[
        "-c",
        "max_locks_per_transaction=10",
        "-c",
        "max_connections=20",
    ]);
    let db = cluster.create_database("locks_full");
    let url = cluster.url(&db);
    let mut folder = Folder::new();
    for i in 0..60u8 {
        let sql: Vec<String> = (0..30)
            .map(|t| format!("CREATE TABLE \"lk_{i}_{t}\" (\"id\" integer PRIMARY KEY);"))
            .collect();
        folder.add(
            &format!("{i:04}_tables"),
            i64::from(i) + 1,
            &sql.join("\n--> statement-breakpoint\n"),
        );
    }
    let out = migrate(&url, folder.path());
    out.advises(
        8,
        &[
            "ERROR 53200 out of shared memory",
            "max_locks_per_transaction",
            "Raise that limit, or apply fewer migrations per transaction",
        ],
    );
    assert!(rows(&url).is_empty());
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_TRANSACTION", "each")
        .arg("migrate"));
    out.expect(0);
    assert_eq!(rows(&url).len(), 60);
    cluster.stop();
}

/// A database that runs transactions at SERIALIZABLE (or REPEATABLE READ): a migration that
/// updates a row another session changed after the migration's snapshot is cancelled (40001).
/// Not the SQL's fault: the advice says to deploy again, or how to run at READ COMMITTED, and a
/// run without the concurrent change applies it.
#[test]
fn exit_8_for_a_serialization_failure_says_to_deploy_again() {
    let url = fresh_db("serializable");
    execute(
        &url,
        "create table ser (k int primary key, v int); insert into ser values (1, 0)",
    );
    set_for_database(&url, "default_transaction_isolation = 'serializable'");
    let mut folder = Folder::new();
    folder.add(
        "0000_update",
        1,
        "SELECT pg_sleep(2);\n--> statement-breakpoint\nUPDATE \"ser\" SET \"v\" = 1 WHERE \"k\" = 1;",
    );
    let child = spawn(command(&url, folder.path()).arg("migrate"));
    let started = Instant::now();
    wait_for_statement(&url, "pg_sleep(2)");
    // The migration's snapshot is taken: this change comes after it.
    execute(&url, "update ser set v = 2 where k = 1");
    let out = finish(child, started, Duration::from_secs(30));
    out.advises(
        8,
        &[
            "ERROR 40001 could not serialize access due to concurrent update",
            "PostgreSQL cancelled the transaction to keep it serializable",
        ],
    );
    assert!(rows(&url).is_empty());
    migrate(&url, folder.path()).expect(0);
    assert_eq!(
        query(&url, "select v from ser where k = 1")[0][0].as_deref(),
        Some("1")
    );
}

/// An extension only a superuser may create (here dblink; PostGIS and TimescaleDB are others),
/// from a migration run by an ordinary owner: exit 8 saying to have a superuser create it once,
/// not to grant a privilege, and after that the same migration passes (`IF NOT EXISTS`).
#[test]
fn exit_8_for_an_extension_only_a_superuser_may_create_says_how() {
    let cluster = Cluster::shared();
    let url = fresh_db("extension");
    let db = db_name(&url).to_string();
    let role = format!("pc_ext_{}", std::process::id());
    execute(
        &url,
        &format!(
            "create role {role} login password 'pc-pw'; alter database \"{db}\" owner to {role}; \
             alter schema public owner to {role}"
        ),
    );
    let as_owner = cluster.url_with(&role, "pc-pw", &db);
    let mut folder = Folder::new();
    folder.add(
        "0000_ext",
        1,
        "CREATE EXTENSION IF NOT EXISTS \"dblink\";\n--> statement-breakpoint\n\
         CREATE TABLE \"ext_t\" (\"id\" integer);",
    );
    let out = migrate(&as_owner, folder.path());
    out.expect(8);
    out.says("ERROR 42501 permission denied to create extension \"dblink\"");
    out.says("Have a superuser (on a managed database, its admin user or console) run CREATE EXTENSION once");
    out.never_says("Grant it");
    out.never_says("Fix the SQL");
    assert!(rows(&url).is_empty());
    execute(&url, "create extension dblink");
    migrate(&as_owner, folder.path()).expect(0);
    assert!(table_exists(&url, "ext_t"));

    // An extension the server does not have at all (pgvector on a plain postgres image).
    folder.add(
        "0001_absent",
        2,
        "CREATE EXTENSION IF NOT EXISTS \"pc_absent_extension\";",
    );
    let out = migrate(&as_owner, folder.path());
    out.advises(
        8,
        &[
            "pc_absent_extension",
            "The database server does not have this extension installed",
        ],
    );
    assert_eq!(rows(&url).len(), 1);
}

/// drizzle-kit's column type change without USING (text to integer): the advice says to add
/// the USING clause the HINT shows, and the migration so edited applies.
#[test]
fn exit_8_for_a_type_change_without_using_says_to_add_it() {
    let url = fresh_db("cast");
    let mut folder = Folder::new();
    folder.add(
        "0000_t",
        1,
        "CREATE TABLE \"cast_t\" (\"n\" text);\n--> statement-breakpoint\n\
         INSERT INTO \"cast_t\" VALUES ('1'), ('22');",
    );
    migrate(&url, folder.path()).expect(0);
    folder.add(
        "0001_int",
        2,
        "ALTER TABLE \"cast_t\" ALTER COLUMN \"n\" SET DATA TYPE integer;",
    );
    let out = migrate(&url, folder.path());
    out.advises(
        8,
        &[
            "ERROR 42804 column \"n\" cannot be cast automatically to type integer",
            "HINT: You might need to specify \"USING n::integer\"",
            "drizzle-kit writes a column type change without a USING clause",
        ],
    );
    folder.write(
        "0001_int.sql",
        b"ALTER TABLE \"cast_t\" ALTER COLUMN \"n\" SET DATA TYPE integer USING \"n\"::integer;",
    );
    migrate(&url, folder.path()).expect(0);
    assert_eq!(
        query(&url, "select sum(n) from cast_t")[0][0].as_deref(),
        Some("23")
    );
}

/// drizzle's classic trap: a migration adds an enum value to a type of an earlier deploy and a
/// later one of the same deploy uses it, all in one transaction (55P04). The message says how
/// to get out, and the way it gives (the marker on the migration that adds the value) works.
/// (PostgreSQL 18 lets a transaction use the new values of a type it created itself, so the
/// type comes from a deploy before.)
#[test]
fn exit_8_for_a_new_enum_value_used_in_the_same_transaction_says_how_to_split_it() {
    let url = fresh_db("enum_value");
    let mut folder = Folder::new();
    folder.add(
        "0000_role",
        1,
        "CREATE TYPE \"public\".\"ev_role\" AS ENUM('a');\n--> statement-breakpoint\n\
         CREATE TABLE \"ev_u\" (\"r\" \"ev_role\" DEFAULT 'a');",
    );
    migrate(&url, folder.path()).expect(0);
    folder
        .add(
            "0001_add",
            2,
            "ALTER TYPE \"public\".\"ev_role\" ADD VALUE 'b';",
        )
        .add(
            "0002_use",
            3,
            "ALTER TABLE \"ev_u\" ALTER COLUMN \"r\" SET DEFAULT 'b';",
        );
    let out = migrate(&url, folder.path());
    out.advises(
        8,
        &[
            "ERROR 55P04 unsafe use of new value \"b\" of enum type ev_role",
            "Mark the migration that adds the value (ALTER TYPE ... ADD VALUE) with a first line \
             `-- portcullis: no-transaction`",
        ],
    );
    assert_eq!(rows(&url).len(), 1);

    folder.write(
        "0001_add.sql",
        b"-- portcullis: no-transaction\nALTER TYPE \"public\".\"ev_role\" ADD VALUE 'b';",
    );
    migrate(&url, folder.path()).expect(0);
    assert_eq!(rows(&url).len(), 3);
}

/// A migration role that may not create the tracking table's schema (exit 6), then may not
/// create in schema public (PostgreSQL 15 and later revoke it from everyone; exit 8): each
/// failure says which grant is missing, not "please report" or "Fix the SQL", and the grants it
/// names are enough.
#[test]
fn a_missing_privilege_is_named_with_its_grant() {
    let cluster = Cluster::shared();
    let url = fresh_db("no_create");
    let db = db_name(&url);
    execute(
        &url,
        "do $$ begin create role pc_nocreate login password 'pc-pw'; exception when \
         duplicate_object then null; end $$; revoke create on schema public from public",
    );
    let as_role = cluster.url_with("pc_nocreate", "pc-pw", db);
    let mut folder = Folder::new();
    folder.add("0000_t", 1, "CREATE TABLE \"nc_t\" (\"id\" integer);");
    // Not even the tracking table's schema: exit 6, naming the grant.
    let out = migrate(&as_role, folder.path());
    out.expect(6);
    out.says("ERROR 42501 permission denied for database");
    out.says("Creating the tracking table's schema takes CREATE on the database");
    execute(
        &url,
        &format!("grant create on database \"{db}\" to pc_nocreate"),
    );
    let out = migrate(&as_role, folder.path());
    out.advises(
        8,
        &[
            "ERROR 42501 permission denied for schema public",
            "The database user lacks a privilege this statement needs",
            "GRANT CREATE ON SCHEMA public TO <user>",
        ],
    );

    execute(&url, "grant create on schema public to pc_nocreate");
    migrate(&as_role, folder.path()).expect(0);
    assert!(table_exists(&url, "nc_t"));
}

/// A first run whose migration finds what it creates already there, while the tracking table
/// is empty: the schema was made without drizzle's migrator (`drizzle-kit push`, a restore), or
/// the history is in a table drizzle.config names differently. Still exit 8 and rolled back,
/// but the advice is `baseline`, or the settings naming the other table, not "fix the SQL".
#[test]
fn exit_8_on_a_schema_made_without_the_tracking_table_names_baseline_or_the_other_table() {
    let url = fresh_db("pushed");
    let init = std::fs::read_to_string(example_dir().join("0000_init.sql")).unwrap();
    execute(&url, &init);
    // An app's table with those column names but a timestamp is not taken for a tracking table.
    execute(
        &url,
        "create table files (id serial primary key, hash text, created_at timestamptz)",
    );
    let out = migrate(&url, &example_dir());
    out.expect(8);
    out.says("ERROR 42710 type \"membership_role\" already exists");
    out.says(
        "\"drizzle\".\"__drizzle_migrations\" had no rows before this run, yet the database \
         already has what 0000_init creates.",
    );
    out.says("record them as applied without running them with `portcullis baseline`");
    out.never_says("Other tables");
    out.never_says("(or the database state");
    assert!(rows(&url).is_empty());
    run(command(&url, &example_dir()).args(["baseline", "--to", "0000_init"])).expect(0);
    migrate(&url, &example_dir()).expect(0);
    assert_eq!(rows(&url).len(), 4);

    // Migrated under drizzle.config's own migrations.schema and .table, then run without them.
    let url = fresh_db("custom_table");
    let custom = |cmd: &mut std::process::Command| {
        cmd.env("PORTCULLIS_MIGRATIONS_SCHEMA", "custom")
            .env("PORTCULLIS_MIGRATIONS_TABLE", "migs");
    };
    let mut cmd = command(&url, &example_dir());
    custom(&mut cmd);
    run(cmd.arg("migrate")).expect(0);
    let out = migrate(&url, &example_dir());
    out.expect(8);
    out.says("Other tables with drizzle's tracking columns exist: \"custom\".\"migs\"");
    out.says("set PORTCULLIS_MIGRATIONS_SCHEMA and PORTCULLIS_MIGRATIONS_TABLE to match");
    out.says("is empty, but \"custom\".\"migs\" exist(s)");
    let mut cmd = command(&url, &example_dir());
    custom(&mut cmd);
    let out = run(cmd.arg("migrate"));
    out.expect(0);
    out.says("nothing pending");
}

/// A change that the rows already in the table break (the classic trap of a migration generated
/// against an empty development database) gets advice on how to write it for the data there is,
/// not "fix the SQL": a NOT NULL column without a default, a unique index over duplicates, a
/// foreign key or CHECK constraint that rows violate.
#[test]
fn exit_8_for_a_change_the_existing_rows_break_says_how_to_write_it() {
    let url = fresh_db("data_breaks");
    let mut folder = Folder::new();
    folder.add(
        "0000_base",
        1,
        "CREATE TABLE parent (id int PRIMARY KEY);\n--> statement-breakpoint\nCREATE TABLE \
         child (id int, parent_id int, v int);\n--> statement-breakpoint\nINSERT INTO child \
         VALUES (1, 7, 0), (2, 7, 0);",
    );
    migrate(&url, folder.path()).expect(0);
    folder.add("0001_change", 2, "SELECT 1;");
    for (sql, error, advice) in [
        (
            "ALTER TABLE child ADD COLUMN name text NOT NULL;",
            "ERROR 23502 column \"name\" of relation \"child\" contains null values",
            "Give it a DEFAULT in the same statement (ADD COLUMN ... NOT NULL DEFAULT ...)",
        ),
        (
            "CREATE UNIQUE INDEX child_v ON child (v);",
            "ERROR 23505 could not create unique index \"child_v\"",
            "The table already holds duplicates of the new unique key",
        ),
        (
            "ALTER TABLE child ADD CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES \
             parent (id);",
            "ERROR 23503 insert or update on table \"child\" violates foreign key constraint",
            "add it NOT VALID and VALIDATE CONSTRAINT it once they are clean",
        ),
        (
            "ALTER TABLE child ADD CONSTRAINT child_v_positive CHECK (v > 0);",
            "ERROR 23514 check constraint \"child_v_positive\" of relation \"child\" is violated \
             by some row",
            "Rows already in the table break the new CHECK constraint",
        ),
    ] {
        folder.write("0001_change.sql", sql.as_bytes());
        let out = migrate(&url, folder.path());
        out.advises(8, &[error, advice]);
        assert_eq!(rows(&url).len(), 1);
    }
}

/// A database whose encoding is not UTF-8 (LATIN1 here; WIN1252 is the default of a Windows
/// install) cannot store every character a migration or seed may hold. The server names the
/// character by its bytes but gives no position: the message points at the character itself,
/// and says what to do instead of "Fix the SQL".
#[test]
fn exit_8_for_a_character_the_database_encoding_cannot_store_points_at_it() {
    let cluster = Cluster::shared();
    let db = format!("latin1_{}", std::process::id());
    execute(
        &cluster.url("postgres"),
        &format!(
            "create database {db} encoding 'LATIN1' template template0 lc_collate 'C' lc_ctype \
             'C'"
        ),
    );
    let url = cluster.url(&db);
    let mut folder = Folder::new();
    folder.add(
        "0000_emoji",
        1,
        "-- café is fine in LATIN1\nCREATE TABLE e (a text DEFAULT 'café ☕');",
    );
    let out = migrate(&url, folder.path());
    out.advises(
        8,
        &[
            "ERROR 22P05 character with byte sequence 0xe2 0x98 0x95",
            &format!(
                "failed at {}:2:38 in statement 1 of 1",
                folder.path().join("0000_emoji.sql").display()
            ),
            "The database's encoding (the second the message names) cannot store this character",
        ],
    );
    assert!(rows(&url).is_empty());
    // The same in a seed.
    folder.write("0000_emoji.sql", b"CREATE TABLE e (a text);");
    migrate(&url, folder.path()).expect(0);
    let seeds = Folder::new();
    seeds.write(
        "1_e.sql",
        "INSERT INTO e VALUES ('ok');\nINSERT INTO e VALUES ('☕');".as_bytes(),
    );
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .arg("seed"));
    out.expect(9);
    out.says(&format!(
        "failed at {}:2:24 in statement 2 of 2",
        seeds.path().join("1_e.sql").display()
    ));
    out.says("cannot store this character");
    execute(&cluster.url("postgres"), &format!("drop database {db}"));
}

#[test]
fn exit_8_reports_detail_and_hint() {
    let url = fresh_db("detail");
    let mut folder = Folder::new();
    folder.add(
        "0000_a",
        1,
        "create table d_a (id int primary key);\n--> statement-breakpoint\ninsert into d_a values (1), (1);",
    );
    let out = migrate(&url, folder.path());
    out.expect(8);
    out.says("23505");
    out.says("DETAIL: Key (id)=(1) already exists.");
}

// ---- kill -9 -----------------------------------------------------------------------------------

#[test]
fn kill_9_during_a_migration_leaves_nothing_half_applied() {
    let url = fresh_db("kill9");
    let mut folder = Folder::new();
    folder
        .add("0000_a", 1, "create table k_a (id int);")
        .add(
            "0001_b",
            2,
            "create table k_b (id int);\n--> statement-breakpoint\nselect pg_sleep(3);\n--> statement-breakpoint\ncreate table k_c (id int);",
        );
    let mut child = spawn(command(&url, folder.path()).arg("migrate"));
    // Wait until the sleep is running, then kill the runner outright.
    wait_for_statement(&url, "pg_sleep(3)");
    child.kill().unwrap();
    child.wait().unwrap();
    for t in ["k_a", "k_b", "k_c"] {
        assert!(
            !table_exists(&url, t),
            "{t} is not visible: the transaction never committed"
        );
    }
    assert!(rows(&url).is_empty());

    // The next run applies everything exactly once (the server ended the killed runner's
    // session, which released the lock).
    let out = migrate(&url, folder.path());
    out.expect(0);
    assert_eq!(rows(&url).len(), 2);
    for t in ["k_a", "k_b", "k_c"] {
        assert!(table_exists(&url, t), "{t}");
    }
}

/// A runner killed mid-statement does not leave its backend running that statement (and the
/// migration lock held) to the end: the server checks the connection every second while a
/// statement runs, and ends the session, rolling back and releasing the lock.
#[test]
fn kill_9_mid_statement_ends_the_servers_session_within_seconds() {
    let url = fresh_db("kill9_orphan");
    let mut folder = Folder::new();
    folder.add(
        "0000_a",
        1,
        "create table ko_a (id int);\n--> statement-breakpoint\nselect pg_sleep(60);",
    );
    let mut child = spawn(command(&url, folder.path()).arg("migrate"));
    wait_for_statement(&url, "pg_sleep(60)");
    child.kill().unwrap();
    child.wait().unwrap();
    server_let_go(&url, "pg_sleep(60)", Instant::now());
    assert!(!table_exists(&url, "ko_a"));
    assert!(rows(&url).is_empty());
}

/// A panic (a bug) mid-statement: exit 1 saying it is a bug, the reason in the termination log,
/// and the server ends the session (nothing applied, the lock released). The panic is asked for
/// through a variable that only debug builds read.
#[test]
fn a_panic_mid_run_exits_1_and_loses_nothing() {
    let url = fresh_db("panic");
    let mut folder = Folder::new();
    folder.add(
        "0000_a",
        1,
        "create table pa_a (id int);\n--> statement-breakpoint\nselect pg_sleep(30);",
    );
    let log = std::env::temp_dir().join(format!("portcullis-panic-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let started = Instant::now();
    let child = spawn(
        command(&url, folder.path())
            .env("PORTCULLIS_TERMINATION_LOG", &log)
            .env("__PORTCULLIS_TEST_PANIC_AFTER_MS", "4000")
            .arg("migrate"),
    );
    // The panic comes while the sleep runs, lock held (the run reaches it within milliseconds;
    // 4 s leaves a slow machine room).
    wait_for_statement(&url, "pg_sleep(30)");
    let out = finish(child, started, Duration::from_secs(20));
    let ended = Instant::now();
    out.expect(1);
    out.says("internal error (a bug, please report it)");
    out.says("__PORTCULLIS_TEST_PANIC_AFTER_MS");
    let reason = std::fs::read_to_string(&log).expect("termination log written");
    assert!(
        reason.starts_with("exit 1: internal error (a bug, please report it)"),
        "{reason}"
    );
    let _ = std::fs::remove_file(&log);
    server_let_go(&url, "pg_sleep(30)", ended);
    assert!(!table_exists(&url, "pa_a"));
    assert!(rows(&url).is_empty());
}

// ---- secrets -----------------------------------------------------------------------------------

#[test]
fn the_password_is_never_printed() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("secret");
    let url = cluster.url(&db);
    assert!(url.contains(PASSWORD));
    let bad_folder = Folder::new();
    std::fs::remove_file(bad_folder.path().join("meta/_journal.json")).unwrap();
    let mut failing = Folder::new();
    failing.add("0000_a", 1, "select nonsense;");
    let closed = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/x", free_port());
    let mut outputs = vec![
        run(command(&url, &example_dir())
            .env("PORTCULLIS_LOG_LEVEL", "trace")
            .arg("migrate")),
        run(command(&url, &example_dir())
            .env("PORTCULLIS_LOG_FORMAT", "json")
            .env("PORTCULLIS_LOG_LEVEL", "debug")
            .arg("migrate")),
        run(command(&url, bad_folder.path()).arg("migrate")),
        run(command(&fresh_db("secret2"), failing.path()).arg("migrate")),
        run(command(&closed, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "1s")
            .env("PORTCULLIS_LOG_LEVEL", "debug")
            .arg("migrate")),
        run(command(&cluster.url("missing_db"), &example_dir()).arg("migrate")),
        run(command(&url, &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "soon")
            .arg("migrate")),
        run(command(
            &format!("postgres://postgres:{PASSWORD}@127.0.0.1:notaport/x"),
            &example_dir(),
        )
        .arg("migrate")),
        run(command(&url, &example_dir()).arg("--help")),
        run(command(&url, &example_dir()).args([
            "migrate",
            "--database-url",
            &url,
            "--log-level",
            "trace",
        ])),
    ];
    let codes: Vec<i32> = outputs.iter().map(|o| o.code).collect();
    assert_eq!(codes, vec![0, 0, 3, 8, 5, 6, 2, 2, 0, 0]);
    for o in outputs.drain(..) {
        assert!(
            !o.all().contains(PASSWORD),
            "password printed (exit {}):\n{}",
            o.code,
            o.all()
        );
    }
}

/// A server that answers but is not accepting connections yet (57P03: starting up, recovering
/// after a crash, a standby with hot_standby off) is waited for, and when the wait ends before
/// it opens, the message says the server is up and what to do, not to check the network. Here a
/// real standby with nothing to replicate from and hot_standby off refuses every connection.
#[test]
fn exit_5_on_a_server_that_never_opens_says_it_is_up_but_not_accepting() {
    let mut standby = Cluster::init(free_port());
    standby.start_as_refusing_standby();
    let url = standby.url("postgres");
    let out = run(command(&url, &example_dir())
        .env("PORTCULLIS_WAIT_TIMEOUT", "2s")
        .arg("migrate"));
    out.expect(5);
    out.says("(57P03)");
    out.says("did not accept connections within 2s");
    out.says("The server is up, but was not accepting connections yet for the whole wait");
    out.never_says("DNS");
    standby.stop();
}

/// "Too many connections" (53300) is transient: portcullis waits and retries until a
/// connection is free, then migrates. Here the role's connection limit is 0 until the test has
/// seen the server refuse portcullis once (in the server's log), then lifted. Before that, a
/// wait that ends while the server is still full says so, and where to look, rather than
/// blaming the network.
#[test]
fn too_many_connections_is_waited_out() {
    let cluster = Cluster::shared();
    let db = cluster.create_database("busy_role");
    let admin = cluster.url(&db);
    let role = format!("pc_busy_{}", std::process::id());
    execute(
        &admin,
        &format!(
            "create role {role} login password 'pc-pw' connection limit 0; \
             alter database \"{db}\" owner to {role}"
        ),
    );
    let log = cluster.log_path().expect("the test cluster writes a log");
    let refusal = format!("too many connections for role \"{role}\"");
    let refused = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches(&refusal)
            .count()
    };
    let out = run(
        command(&cluster.url_with(&role, "pc-pw", &db), &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "2s")
            .arg("migrate"),
    );
    out.expect(5);
    out.says("did not accept connections within 2s");
    out.says(&format!("last error: {refusal} (53300)"));
    out.says("The server is up, but had no connection slot for this user");
    out.says("FROM pg_stat_activity GROUP BY");
    out.never_says("DNS");

    let before = refused();
    let started = Instant::now();
    let child = spawn(
        command(&cluster.url_with(&role, "pc-pw", &db), &example_dir())
            .env("PORTCULLIS_WAIT_TIMEOUT", "60s")
            .arg("migrate"),
    );
    while refused() == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server never refused portcullis"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    execute(&admin, &format!("alter role {role} connection limit -1"));
    let out = finish(child, started, Duration::from_secs(60));
    out.expect(0);
    out.says("too many connections");
    out.says("(attempt 1");
    assert_eq!(rows(&admin).len(), 4);
}

/// A server whose messages come in another language (`lc_messages`; German here, as initdb
/// sets it on a German system): the advice the English text would pick comes from the SQLSTATE
/// and the failed statement instead, for a migration and for the connection. Needs the
/// de_DE.UTF-8 locale on this machine (`localedef -i de_DE -f UTF-8 de_DE.UTF-8`; `.ci/run`
/// makes it). A server built without translations (the npm packages of
/// `scripts/test-pg-versions.sh`) answers in English whatever `lc_messages` says; there this
/// test checks the same advice on the English path, and says so.
#[test]
fn the_advice_does_not_depend_on_the_language_of_the_server() {
    let locales = std::process::Command::new("locale")
        .arg("-a")
        .output()
        .expect("run `locale -a`");
    let locales = String::from_utf8_lossy(&locales.stdout).to_lowercase();
    assert!(
        locales.contains("de_de.utf8"),
        "this test needs the de_DE.UTF-8 locale: run `localedef -i de_DE -f UTF-8 de_DE.UTF-8` \
         (Debian's `locales` package), as .ci/run does; `locale -a` lists: {locales}"
    );
    let mut cluster = Cluster::init(free_port());
    cluster.start_with(&["-c", "lc_messages=de_DE.UTF-8"]);
    let db = cluster.create_database("german");
    let url = cluster.url(&db);
    let german = try_query(&url, "select 1/0")
        .expect_err("1/0 fails")
        .contains("Division durch Null");
    if !german {
        eprintln!(
            "NOTE: this server has no translations (built without NLS); the advice is checked \
             on the English path only"
        );
    }
    let mut folder = Folder::new();
    folder.add(
        "0000_base",
        1,
        "CREATE TABLE child (id int, v int, n text);\n--> statement-breakpoint\n\
         INSERT INTO child VALUES (1, 0, '1'), (2, 0, 'x');",
    );
    migrate(&url, folder.path()).expect(0);
    folder.add("0001_change", 2, "SELECT 1;");
    // (the migration, the server's words in German, the advice)
    for (sql, words, advice) in [
        (
            "ALTER TABLE child ADD COLUMN name text NOT NULL;",
            "enthält NULL-Werte",
            "Give it a DEFAULT in the same statement",
        ),
        (
            "CREATE UNIQUE INDEX child_v ON child (v);",
            "konnte Unique Index »child_v« nicht erstellen",
            "The table already holds duplicates of the new unique key",
        ),
        (
            "ALTER TABLE child ADD CONSTRAINT child_v_positive CHECK (v > 0);",
            "wird von irgendeiner Zeile verletzt",
            "add the constraint NOT VALID",
        ),
        (
            "ALTER TABLE child ALTER COLUMN n SET DATA TYPE integer;",
            "kann nicht automatisch in Typ integer umgewandelt werden",
            "ALTER COLUMN ... SET DATA TYPE <type> USING <column>::<type>",
        ),
        (
            "CREATE EXTENSION IF NOT EXISTS \"pc_absent_extension\";",
            "ist nicht verfügbar",
            "for pgvector in Docker, an image that has it",
        ),
    ] {
        folder.write("0001_change.sql", sql.as_bytes());
        let out = migrate(&url, folder.path());
        out.expect(8);
        if german {
            out.says(words);
        }
        out.says(advice);
        out.never_says("Fix the SQL");
        // The server's DETAIL and HINT are joined without a stray period.
        out.never_says(".;");
        assert_eq!(rows(&url).len(), 1);
    }

    // An extension only a superuser may create, by the owner of another database.
    let owner = format!("pc_de_owner_{}", std::process::id());
    let owned = cluster.create_database("german_owned");
    execute(
        &cluster.url(&owned),
        &format!(
            "create role {owner} login password 'pc-pw'; alter database \"{owned}\" owner to \
             {owner}; alter schema public owner to {owner}"
        ),
    );
    let mut extension = Folder::new();
    extension.add("0000_ext", 1, "CREATE EXTENSION IF NOT EXISTS \"dblink\";");
    let out = migrate(&cluster.url_with(&owner, "pc-pw", &owned), extension.path());
    out.expect(8);
    if german {
        out.says("keine Berechtigung, um Erweiterung »dblink« zu erzeugen");
    }
    out.says(
        "superuser (on a managed database, its admin user or console) run CREATE EXTENSION once",
    );
    out.never_says("Fix the SQL");

    // The tracking table's own schema, by a user without CREATE on the database.
    let user = format!("pc_de_user_{}", std::process::id());
    execute(
        &url,
        &format!(
            "create role {user} login password 'pc-pw'; revoke create on database \"{db}\" \
             from public"
        ),
    );
    let out = run(
        command(&cluster.url_with(&user, "pc-pw", &db), folder.path())
            .env("PORTCULLIS_MIGRATIONS_SCHEMA", "pc_de_schema")
            .arg("migrate"),
    );
    out.expect(6);
    if german {
        out.says("keine Berechtigung für Datenbank");
    }
    out.says("GRANT CREATE ON DATABASE <db> TO <user>");

    // A seed that reads a variable the run was not given: the variable is named.
    let seeds = Folder::new();
    seeds.write(
        "1_admin.sql",
        b"SELECT current_setting('portcullis.admin_email');",
    );
    let out = run(command(&url, folder.path())
        .env("PORTCULLIS_SEEDS_DIR", seeds.path())
        .arg("seed"));
    out.expect(9);
    if german {
        out.says("Konfigurationsparameter");
    }
    out.says("HINT: set PORTCULLIS_SEED_VAR_ADMIN_EMAIL for this run");
    out.says("The seed reads a variable this run was not given");
    out.never_says("Fix the SQL");

    // Connection refusals: a role without LOGIN, a database closed to connections.
    let nologin = format!("pc_de_nologin_{}", std::process::id());
    execute(
        &url,
        &format!("create role {nologin} nologin password 'pc-pw'"),
    );
    let out = migrate(&cluster.url_with(&nologin, "pc-pw", &db), folder.path());
    out.expect(6);
    if german {
        out.says("hat keine Berechtigung zum Einloggen (28000)");
        out.says("that the role may log in (LOGIN)");
    } else {
        out.says(&format!("ALTER ROLE \"{nologin}\" LOGIN"));
    }
    let closed = cluster.create_database("german_closed");
    execute(
        &url,
        &format!("alter database \"{closed}\" allow_connections false"),
    );
    let out = migrate(&cluster.url(&closed), folder.path());
    out.expect(6);
    if german {
        // Before the database's encoding is known, this cluster's C LC_CTYPE makes the server
        // transliterate its words to ASCII (`>>german_closed<<`, `gegenw?rtig`).
        out.says("keine Verbindungen (55000)");
    }
    out.says(&format!(
        "ALTER DATABASE \"{closed}\" ALLOW_CONNECTIONS true"
    ));
    cluster.stop();
}
