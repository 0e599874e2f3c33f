#!/usr/bin/env python3
"""portcullis's benchmark harness. Run it through ./bench/run.sh, which builds and installs
everything, generates the drizzle folders and starts the throwaway PostgreSQL this talks to.

Scenarios (all tools interleaved round by round, the order rotated every round):
  noop      `migrate` with nothing pending (folder already applied), N = 200 and 1000
  full      full apply of the folder on a fresh empty database (CREATE DATABASE ... TEMPLATE
            template0 before each run, not timed), N = 200 and 1000
  replicas  1, 10 and 50 portcullis processes started at once on a fresh empty database (N=200);
            and, as the floor under that goal, one portcullis migrating while k-1 clients that
            only connect and leave (psql `select 1`, `portcullis wait`) start with it; and
            the CPU each such round took: the server's (its backends, from the postmaster's
            /proc entry) and the clients' (wait4)
  cold      process start -> first byte the server receives, through a loopback TCP proxy
  latency   full apply (N=200) through a loopback proxy that delays every byte by half of
            LATENCY_MS (default 2) each way: a database a network away, as from a CI runner

Tools: portcullis (release binary), drizzle-kit's CLI `migrate`, drizzle-orm's `migrate()` from
bench/orm-migrate.mjs on node-postgres, and psql (the floor: `psql -1 -f all.sql` for a full
apply, the three statements drizzle sends on a no-op for a no-op).

Wall time is measured around fork/exec/wait of each process; peak RSS is GNU time's %M (see
timed() for why through GNU time), taken in separate runs for the no-op. Results: results.json in the work
directory, RESULTS.md and results.png in bench/. `bench.py --report-only RESULTS_JSON` redraws
RESULTS.md and the chart from saved results.
"""

import datetime as dt
import hashlib
import json
import os
import platform
import queue
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

TOOLS = ["portcullis", "drizzle-kit", "drizzle-orm", "psql"]
LABELS = {
    "portcullis": "portcullis",
    "drizzle-kit": "drizzle-kit migrate",
    "drizzle-orm": "drizzle-orm migrate()",
    "psql": "psql (floor)",
}
COLORS = {"portcullis": "#1f77b4", "drizzle-kit": "#d62728", "drizzle-orm": "#ff7f0e",
          "psql": "#7f7f7f"}
TRACKING = '"drizzle"."__drizzle_migrations"'
# What drizzle-orm's migrator sends when nothing is pending (pg dialect, 0.45): the floor of a
# no-op is psql sending exactly these.
NOOP_SQL = """CREATE SCHEMA IF NOT EXISTS "drizzle";
CREATE TABLE IF NOT EXISTS "drizzle"."__drizzle_migrations" (
\tid SERIAL PRIMARY KEY,
\thash text NOT NULL,
\tcreated_at bigint
);
select id, hash, created_at from "drizzle"."__drizzle_migrations" order by created_at desc limit 1;
"""


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Settings:
    def __init__(self):
        e = os.environ
        self.root = e["BENCH_ROOT"]
        self.work = e["BENCH_WORK"]
        self.port = int(e["BENCH_PG_PORT"])
        self.password = e["BENCH_PG_PASSWORD"]
        self.psql = e["BENCH_PSQL"]
        # The postmaster, a child of run.sh on this machine: its /proc entry gives the CPU of
        # every server process that has ended (see server_cpu).
        self.pg_pid = int(e["BENCH_PG_PID"]) if e.get("BENCH_PG_PID") else None
        self.idle_server_processes = None  # set by scenario_replicas
        self.gnu_time = e.get("BENCH_GNU_TIME", "/usr/bin/time")
        self.portcullis = e["BENCH_PORTCULLIS"]
        self.sizes = [int(x) for x in e.get("SIZES", "200 1000").split()]
        self.replicas = [int(x) for x in e.get("REPLICAS", "1 10 50").split()]
        self.replica_size = env_int("REPLICA_N", 200)
        rounds = env_int("ROUNDS", 0)
        self.rounds = {
            "noop": env_int("ROUNDS_NOOP", rounds or 11),
            "full": env_int("ROUNDS_FULL", rounds or 5),
            "replicas": env_int("ROUNDS_REPLICAS", rounds or 5),
            "cold": env_int("ROUNDS_COLD", rounds or 11),
            "latency": env_int("ROUNDS_LATENCY", rounds or 3),
        }
        self.latency_ms = float(os.environ.get("LATENCY_MS", "2"))
        self.latency_size = env_int("LATENCY_N", 200)
        self.warmup = env_int("WARMUP", 1)
        self.scenarios = e.get("SCENARIOS", "noop full replicas cold latency").split()
        self.out_dir = os.path.join(self.root, "bench")
        self.bin_dir = os.path.join(self.root, "bench", "node_modules", ".bin")
        self.logs = os.path.join(self.work, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def url(self, db, port=None):
        return f"postgres://postgres:{self.password}@127.0.0.1:{port or self.port}/{db}"

    def corpus(self, n):
        d = os.path.join(self.work, f"n{n}")
        return {"dir": d, "drizzle": os.path.join(d, "drizzle"),
                "all_sql": os.path.join(d, "all.sql"),
                "config": os.path.join(d, "drizzle.config.ts"),
                "noop_sql": os.path.join(self.work, "noop.sql")}


# ---- running processes ---------------------------------------------------------------------

class Run:
    __slots__ = ("seconds", "rss_kib", "cpu", "rc")

    def __init__(self, seconds, rss_kib, cpu, rc):
        self.seconds, self.rss_kib, self.cpu, self.rc = seconds, rss_kib, cpu, rc


def spawn(argv, env, cwd, logfile):
    out = open(logfile, "wb")
    try:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    finally:
        out.close()


def reap(p):
    """wait4 the process: (exit code, rusage)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru


def timed(s, argv, env, cwd, logfile, rss=False):
    """Runs argv once: wall seconds, client CPU seconds (user + sys, children included), exit
    code and, with rss=True, peak RSS in KiB.

    Peak RSS comes from GNU time (`/usr/bin/time -f %M`) used as the launcher: Linux carries the
    high-water mark of the address space a process had before execve into its ru_maxrss, so a
    process forked from this Python (about 20 MiB) can never report less than that. GNU time
    forks from a ~2 MiB process, so what it reports is the tool's own peak. The launcher costs
    one more fork/exec (about a millisecond), which is why the no-op timings are taken in
    separate, direct runs."""
    rssfile = None
    if rss:
        rssfile = logfile + ".rss"
        argv = [s.gnu_time, "-f", "%M", "-o", rssfile, "--"] + argv
    t0 = time.perf_counter()
    p = spawn(argv, env, cwd, logfile)
    rc, ru = reap(p)
    t1 = time.perf_counter()
    peak = None
    if rssfile:
        with open(rssfile) as f:
            lines = [x for x in f.read().split() if x.isdigit()]
        peak = int(lines[-1]) if lines else None
    return Run(t1 - t0, peak, ru.ru_utime + ru.ru_stime, rc)


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def base_env(s):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PORTCULLIS_", "PG", "DATABASE_URL", "BENCH_"))}
    env["NO_COLOR"] = "1"
    return env


def command(s, tool, n, url, mode):
    """argv, env and cwd of one run of `tool` on the N-migration folder against `url`."""
    c = s.corpus(n)
    env = base_env(s)
    if tool == "portcullis":
        env.update(DATABASE_URL=url, PORTCULLIS_MIGRATIONS_DIR=c["drizzle"])
        return [s.portcullis, "migrate"], env, c["dir"]
    if tool == "drizzle-kit":
        env.update(DATABASE_URL=url)
        return [os.path.join(s.bin_dir, "drizzle-kit"), "migrate", "--config", c["config"]], env, c["dir"]
    if tool == "drizzle-orm":
        env.update(DATABASE_URL=url, MIGRATIONS_DIR=c["drizzle"])
        return ["node", os.path.join(s.root, "bench", "orm-migrate.mjs")], env, c["dir"]
    if tool == "psql":
        full = mode in ("full", "latency")
        sql = c["all_sql"] if full else c["noop_sql"]
        argv = [s.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        if full:
            argv.append("-1")
        return argv + ["-f", sql, url], env, c["dir"]
    raise ValueError(tool)


def run_tool(s, tool, n, url, mode, rss=False):
    argv, env, cwd = command(s, tool, n, url, mode)
    logfile = os.path.join(s.logs, f"{mode}-{tool}-{n}.log")
    r = timed(s, argv, env, cwd, logfile, rss)
    if r.rc != 0:
        raise SystemExit(f"{tool} ({mode}, N={n}) exited {r.rc}; its output:\n{tail(logfile)}")
    return r


def sql(s, query, db="postgres"):
    out = subprocess.run([s.psql, "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", s.url(db),
                          "-c", query], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed on {query!r}: {out.stderr}")
    return out.stdout.strip()


def fresh_db(s, name):
    sql(s, f'DROP DATABASE IF EXISTS "{name}"')
    sql(s, f'CREATE DATABASE "{name}" TEMPLATE template0')


def drop_db(s, name):
    sql(s, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def expected_rows(s, n):
    """(hash, when) of every migration, as drizzle records them."""
    c = s.corpus(n)
    with open(os.path.join(c["drizzle"], "meta", "_journal.json")) as f:
        entries = json.load(f)["entries"]
    rows = set()
    for e in entries:
        with open(os.path.join(c["drizzle"], e["tag"] + ".sql"), "rb") as f:
            rows.add((hashlib.sha256(f.read()).hexdigest(), int(e["when"])))
    return rows


def recorded_rows(s, db):
    out = sql(s, f"select hash, created_at from {TRACKING}", db)
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def each_once(s, db, expected):
    rows = [(h, int(w)) for h, w in recorded_rows(s, db)]
    return len(rows) == len(expected) and set(rows) == expected


def schema_fingerprint(s, db):
    """Counts of what the migrations create in public: equal for every tool or a run is wrong."""
    return sql(s, """select (select count(*) from pg_class where relnamespace = 'public'::regnamespace)
        || '/' || (select count(*) from pg_constraint where connamespace = 'public'::regnamespace)
        || '/' || (select count(*) from pg_enum)
        || '/' || (select count(*) from pg_attribute a join pg_class c on c.oid = a.attrelid
                   where c.relnamespace = 'public'::regnamespace and a.attnum > 0
                     and not a.attisdropped)""", db)


def rotated(items, r):
    k = r % len(items)
    return items[k:] + items[:k]


# ---- scenarios ---------------------------------------------------------------------------------

def scenario_noop(s, res):
    rounds, warm = s.rounds["noop"], s.warmup
    out = {n: {t: [] for t in TOOLS} for n in s.sizes}
    for n in s.sizes:
        db = f"noop_{n}"
        fresh_db(s, db)
        run_tool(s, "portcullis", n, s.url(db), "setup")
        if not each_once(s, db, expected_rows(s, n)):
            raise SystemExit(f"setup of {db} did not record every migration once")
    for r in range(warm + rounds):
        for n in s.sizes:
            for tool in rotated(TOOLS, r):
                run = run_tool(s, tool, n, s.url(f"noop_{n}"), "noop")
                peak = run_tool(s, tool, n, s.url(f"noop_{n}"), "noop", rss=True).rss_kib
                if r >= warm:
                    out[n][tool].append([run.seconds, peak, run.cpu])
        log(f"  no-op round {r + 1 - warm}/{rounds}" if r >= warm else "  no-op warm-up")
    for n in s.sizes:
        exp = expected_rows(s, n)
        if not each_once(s, f"noop_{n}", exp):
            raise SystemExit(f"after the no-op runs noop_{n} no longer holds each migration once")
    res["noop"] = {str(n): v for n, v in out.items()}


def full_apply(s, tool, n, mode, fingerprints, port=None, rss=False):
    """One full apply of the N-migration folder by `tool` on a database of its own, created just
    before (not timed) and dropped after; checks that every migration was recorded exactly once
    and that the schema built is the same as every other run's of that size (`fingerprints`)."""
    db = f"{mode}_{tool.replace('-', '_')}_{n}"
    fresh_db(s, db)
    run = run_tool(s, tool, n, s.url(db, port), mode, rss=rss)
    if tool != "psql" and not each_once(s, db, expected_rows(s, n)):
        raise SystemExit(f"{tool} ({mode}, N={n}): tracking rows are not each migration "
                         "exactly once")
    fp = schema_fingerprint(s, db)
    if fingerprints.setdefault(n, fp) != fp:
        raise SystemExit(f"{tool} ({mode}, N={n}) built a different schema "
                         f"({fp} vs {fingerprints[n]})")
    drop_db(s, db)
    return run


def scenario_full(s, res):
    rounds, warm = s.rounds["full"], s.warmup
    out = {n: {t: [] for t in TOOLS} for n in s.sizes}
    fingerprints = {}
    for r in range(warm + rounds):
        for n in s.sizes:
            for tool in rotated(TOOLS, r):
                run = full_apply(s, tool, n, "full", fingerprints, rss=True)
                if r >= warm:
                    out[n][tool].append([run.seconds, run.rss_kib, run.cpu])
        log(f"  full-apply round {r + 1 - warm}/{rounds}" if r >= warm else "  full-apply warm-up")
    res["full"] = {str(n): v for n, v in out.items()}
    res["schema_fingerprints"] = {str(n): v for n, v in fingerprints.items()}


def scenario_replicas(s, res):
    rounds, n = s.rounds["replicas"], s.replica_size
    exp = expected_rows(s, n)
    c = s.corpus(n)
    out = {k: [] for k in s.replicas}
    s.idle_server_processes = idle_server_processes(s)
    for r in range(s.warmup + rounds):
        for k in rotated(s.replicas, r):
            db = f"replicas_{k}"
            fresh_db(s, db)
            env = base_env(s)
            env.update(DATABASE_URL=s.url(db), PORTCULLIS_MIGRATIONS_DIR=c["drizzle"])
            wall, spawned, codes, cpu = at_once(
                s, k, lambda i: [s.portcullis, "migrate"], env, c["dir"],
                lambda i: os.path.join(s.logs, f"replica-{i}.log"))
            # The reference: as many psql processes that connect, run `select 1` and exit,
            # started the same way on the same server: what k connections at once cost here.
            def select1(url):
                return [s.psql, "-X", "-q", "-c", "select 1", url]
            floor_wall, _, floor_codes, floor_cpu = at_once(
                s, k, lambda i: select1(s.url(db)), base_env(s), c["dir"],
                lambda i: os.path.join(s.logs, f"replica-psql-{i}.log"))
            if any(floor_codes):
                raise SystemExit(f"{k} psql `select 1` at once: exit codes {sorted(set(floor_codes))}")
            once = each_once(s, db, exp)
            # The floor under the goal: one portcullis migrating an empty database while k-1
            # clients that only connect and leave start with it. No runner can cost less than
            # its connection, so no tool whose replicas each connect can do better than this.
            # Two such clients: psql (`select 1`), and `portcullis wait` (connect, the
            # pooler check's two statements, the second of which also sets
            # client_connection_check_interval, exit), the lightest one at hand.
            with_connects, with_connects_cpu = {}, {}
            if k > 1:
                fdb = f"replicas_floor_{k}"
                for name in ("psql", "wait"):
                    fresh_db(s, fdb)
                    fenv = dict(env, DATABASE_URL=s.url(fdb))
                    other = select1(s.url(fdb)) if name == "psql" else [s.portcullis, "wait"]
                    fwall, _, fcodes, fcpu = at_once(
                        s, k, lambda i: [s.portcullis, "migrate"] if i == 0 else other, fenv,
                        c["dir"], lambda i: os.path.join(s.logs, f"replica-floor-{name}-{i}.log"))
                    if any(fcodes) or not each_once(s, fdb, exp):
                        raise SystemExit(f"1 migrate + {k - 1} {name} at once: exit codes "
                                         f"{sorted(set(fcodes))}")
                    drop_db(s, fdb)
                    with_connects[name] = fwall
                    with_connects_cpu[name] = fcpu
            logs = [tail(os.path.join(s.logs, f"replica-{i}.log"), 400) for i in range(k)]
            applied = sum(1 for text in logs if "applying" in text)
            waits = [float(x) for text in logs
                     for x in re.findall(r"(?:took the migration lock after waiting|"
                                         r"the migration lock was released after) ([0-9.]+)s",
                                         text)]
            drop_db(s, db)
            if r >= s.warmup:
                out[k].append({"wall": wall, "spawn": spawned, "codes": codes, "once": once,
                               "psql_select1_wall": floor_wall,
                               "one_migrating_with_connects": with_connects,
                               "cpu": cpu, "psql_select1_cpu": floor_cpu,
                               "one_migrating_with_connects_cpu": with_connects_cpu,
                               "appliers": applied, "max_lock_wait": max(waits, default=0.0)})
            if any(codes) or not once:
                log(f"  replicas={k}: exit codes {sorted(set(codes))}, each once: {once}")
        log(f"  replicas round {r + 1 - s.warmup}/{rounds}" if r >= s.warmup else "  replicas warm-up")
    res["replicas"] = {"n": n, "runs": {str(k): v for k, v in out.items()}}


def server_processes(s):
    """The postmaster's child processes now (backends and background processes)."""
    try:
        with open(f"/proc/{s.pg_pid}/task/{s.pg_pid}/children") as f:
            return len(f.read().split())
    except (OSError, TypeError):
        return None


def server_cpu(s):
    """CPU seconds (user + system) of the postmaster plus every child process it has reaped:
    each backend counts once it has exited. Background processes that live on (checkpointer,
    WAL writer, ...) are not in it. None when the postmaster cannot be read."""
    try:
        with open(f"/proc/{s.pg_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted after the ")".
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def settle_server(s, idle, limit=5.0):
    """Waits (up to `limit` seconds) until the server is down to `idle` processes, so that the
    backends of what ran before have exited and their CPU is counted."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        n = server_processes(s)
        if n is None or n <= idle:
            return
        time.sleep(0.005)


def at_once(s, k, argv, env, cwd, log_path):
    """Starts k processes, the i-th running argv(i), at the same instant; returns (wall seconds from the start to the
    last exit, seconds spent forking, exit codes, CPU seconds {"server", "client"}).

    Every process is first a shell blocked reading one byte from a shared pipe; one write of k
    bytes releases them all, and each then execs argv. So the start is simultaneous, not the
    time it takes this script to fork k processes.

    CPU: "client" is the user + system time of the k processes (wait4); "server" is what the
    PostgreSQL processes that ended meanwhile used (server_cpu), taken after their backends
    have exited, or None when the postmaster cannot be read."""
    gate_r, gate_w = os.pipe()
    t_spawn = time.perf_counter()
    procs = []
    for i in range(k):
        with open(log_path(i), "wb") as logf:
            procs.append(subprocess.Popen(["/bin/sh", "-c", 'read -r _ && exec "$@"', "sh", *argv(i)],
                                          env=env, cwd=cwd, stdin=gate_r, stdout=logf,
                                          stderr=subprocess.STDOUT))
    os.close(gate_r)
    spawned = time.perf_counter() - t_spawn
    wait_at_gate([p.pid for p in procs])
    idle = s.idle_server_processes
    if idle is not None:
        settle_server(s, idle)
    cpu0 = server_cpu(s)
    t0 = time.perf_counter()
    os.write(gate_w, b"\n" * k)
    os.close(gate_w)
    results = [reap(p) for p in procs]
    wall = time.perf_counter() - t0
    cpu = {"client": sum(ru.ru_utime + ru.ru_stime for _, ru in results), "server": None}
    if cpu0 is not None:
        if idle is not None:
            settle_server(s, idle)
        cpu1 = server_cpu(s)
        cpu["server"] = None if cpu1 is None else cpu1 - cpu0
    return wall, spawned, [rc for rc, _ in results], cpu


def idle_server_processes(s, seconds=0.5):
    """How many processes the server has when nothing is connected: the fewest seen over
    `seconds` (its background processes, without a passing autovacuum worker)."""
    seen = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        n = server_processes(s)
        if n is None:
            return None
        seen.append(n)
        time.sleep(0.01)
    return min(seen)


def wait_at_gate(pids, limit=5.0):
    """Waits (up to `limit` seconds) until every process sleeps in a pipe read."""
    deadline = time.perf_counter() + limit
    waiting = set(pids)
    while waiting and time.perf_counter() < deadline:
        for pid in list(waiting):
            try:
                with open(f"/proc/{pid}/wchan") as f:
                    if "pipe_read" in f.read():
                        waiting.discard(pid)
            except OSError:
                waiting.discard(pid)
        if waiting:
            time.sleep(0.005)
    time.sleep(0.02)


def half_close(sock):
    """Passes the end of one direction on (the other side reads EOF), if the socket is still up."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class LoopbackProxy:
    """TCP proxy on a free loopback port to the server on `upstream_port`: each accepted
    connection gets its own connection upstream, handed to `relay(client, upstream)` on a thread
    of its own. `accepted(now)` hears of each connection as it is accepted."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            c, _ = self.lsock.accept()
            self.accepted_at(time.perf_counter())
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            c.close()
            return
        for x in (c, u):
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.relay(c, u)

    def accepted_at(self, now):
        pass

    def relay(self, c, u):
        raise NotImplementedError


class FirstByteProxy(LoopbackProxy):
    """A loopback proxy that timestamps (perf_counter) the first connection and the first byte
    a client sends after `arm()`."""

    def __init__(self, upstream_port):
        self.lock = threading.Lock()
        self.accepted = self.first_byte = None
        super().__init__(upstream_port)

    def arm(self):
        with self.lock:
            self.accepted = self.first_byte = None

    def accepted_at(self, now):
        with self.lock:
            if self.accepted is None:
                self.accepted = now

    def relay(self, c, u):
        threading.Thread(target=self._pump, args=(u, c, False), daemon=True).start()
        self._pump(c, u, True)

    def _pump(self, src, dst, from_client):
        try:
            while True:
                data = src.recv(65536)
                if from_client and data and self.first_byte is None:
                    now = time.perf_counter()
                    with self.lock:
                        if self.first_byte is None:
                            self.first_byte = now
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            half_close(dst)
            if not from_client:
                src.close()
                dst.close()


def scenario_cold(s, res):
    rounds, warm = s.rounds["cold"], s.warmup
    proxy = FirstByteProxy(s.port)
    out = {n: {t: [] for t in TOOLS} for n in s.sizes}
    for n in s.sizes:
        db = f"noop_{n}"
        if sql(s, f"select count(*) from pg_database where datname = '{db}'") != "1":
            fresh_db(s, db)
            run_tool(s, "portcullis", n, s.url(db), "setup")
    for r in range(warm + rounds):
        for n in s.sizes:
            for tool in rotated(TOOLS, r):
                argv, env, cwd = command(s, tool, n, s.url(f"noop_{n}", proxy.port), "cold")
                logfile = os.path.join(s.logs, f"cold-{tool}-{n}.log")
                proxy.arm()
                t0 = time.perf_counter()
                p = spawn(argv, env, cwd, logfile)
                rc, _ = reap(p)
                t1 = time.perf_counter()
                if rc != 0:
                    raise SystemExit(f"{tool} (cold start, N={n}) exited {rc}:\n{tail(logfile)}")
                if proxy.first_byte is None:
                    raise SystemExit(f"{tool} (cold start) never reached the proxy")
                if r >= warm:
                    out[n][tool].append([proxy.first_byte - t0, proxy.accepted - t0, t1 - t0])
        log(f"  cold-start round {r + 1 - warm}/{rounds}" if r >= warm else "  cold-start warm-up")
    res["cold"] = {str(n): v for n, v in out.items()}


class DelayProxy(LoopbackProxy):
    """A loopback proxy that hands every chunk of bytes on `delay` seconds after it arrived, in
    both directions and in order: a round trip costs 2 x `delay` more, while bytes in flight do
    not wait for each other (the link's bandwidth is not limited)."""

    def __init__(self, upstream_port, delay):
        self.delay = delay
        super().__init__(upstream_port)

    def relay(self, c, u):
        for src, dst in ((c, u), (u, c)):
            q = queue.Queue()
            threading.Thread(target=self._read, args=(src, q), daemon=True).start()
            # The server's side ends last (it answers the client's Terminate by closing).
            done = (c, u) if src is u else ()
            threading.Thread(target=self._write, args=(q, dst, done), daemon=True).start()

    def _read(self, src, q):
        try:
            while True:
                data = src.recv(65536)
                q.put((time.perf_counter() + self.delay, data))
                if not data:
                    break
        except OSError:
            q.put((0.0, b""))

    def _write(self, q, dst, close_after):
        try:
            while True:
                due, data = q.get()
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            half_close(dst)
            for sock in close_after:
                sock.close()


def scenario_latency(s, res):
    rounds, warm, n = s.rounds["latency"], s.warmup, s.latency_size
    proxy = DelayProxy(s.port, s.latency_ms / 2000)
    out = {t: [] for t in TOOLS}
    # The same checks as the local full apply, the schema included.
    fingerprints = {int(k): v for k, v in res.get("schema_fingerprints", {}).items()}
    for r in range(warm + rounds):
        for tool in rotated(TOOLS, r):
            run = full_apply(s, tool, n, "latency", fingerprints, port=proxy.port)
            if r >= warm:
                out[tool].append([run.seconds, run.cpu])
        log(f"  latency round {r + 1 - warm}/{rounds}" if r >= warm else "  latency warm-up")
    res["latency"] = {"n": n, "rtt_ms": s.latency_ms, "runs": out}


# ---- machine and versions --------------------------------------------------------------------

def capture(argv, **kw):
    try:
        return subprocess.run(argv, capture_output=True, text=True, **kw).stdout.strip()
    except OSError:
        return ""


def machine(s):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1048576:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def pkg(name):
        try:
            with open(os.path.join(s.root, "bench", "node_modules", name, "package.json")) as f:
                return json.load(f)["version"]
        except OSError:
            return "?"

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": mem,
        "loadavg_start": os.getloadavg(),
        "postgres": sql(s, "show server_version"),
        "pg_data": os.environ.get("BENCH_PG_DATA", "?"),
        "node": capture(["node", "--version"]),
        "drizzle-kit": pkg("drizzle-kit"),
        "drizzle-orm": pkg("drizzle-orm"),
        "pg": pkg("pg"),
        "psql": capture([s.psql, "--version"]),
        "portcullis": capture([s.portcullis, "--version"]),
        "portcullis_git": os.environ.get("BENCH_PORTCULLIS_REV") or
        "git " + capture(["git", "-C", s.root, "describe", "--always", "--dirty"]),
        "portcullis_bytes": os.path.getsize(s.portcullis),
        "rustc": capture(["rustc", "--version"]),
        "corpora": {str(n): corpus_stats(s, n) for n in sorted(set(s.sizes + [s.replica_size]))},
        "rounds": s.rounds,
        "warmup": s.warmup,
    }


def corpus_stats(s, n):
    c = s.corpus(n)
    try:
        with open(os.path.join(c["drizzle"], "meta", "_journal.json")) as f:
            entries = json.load(f)["entries"]
        statements = size = 0
        for e in entries:
            with open(os.path.join(c["drizzle"], e["tag"] + ".sql"), "rb") as f:
                text = f.read().decode()
            size += len(text.encode())
            statements += sum(1 for chunk in text.split("--> statement-breakpoint") if chunk.strip())
    except OSError:
        return {}
    return {"migrations": len(entries), "statements": statements, "sql_bytes": size}


# ---- report ------------------------------------------------------------------------------------

def fmt_s(sec):
    if sec != sec:
        return "n/a"
    ms = sec * 1000
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{sec:.2f} s"


def fmt_mib(kib):
    return f"{kib / 1024:.1f} MiB"


def fmt_x(r):
    if r != r:
        return "n/a"
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


def per_round_ratios(rows_a, rows_b, idx=0):
    return [a[idx] / b[idx] for a, b in zip(rows_a, rows_b) if b[idx] > 0]


def ratio(d, tool):
    """The median over rounds of portcullis' time ÷ `tool`'s, from a scenario's rows `d`."""
    return median(per_round_ratios(d["portcullis"], d[tool]))


def time_and_ratio(d, tool):
    """A table's cells for `tool`: its median time and portcullis ÷ tool (— in its own row)."""
    return [fmt_s(median([x[0] for x in d[tool]])),
            "—" if tool == "portcullis" else fmt_x(ratio(d, tool))]


def quartiles(xs):
    xs = sorted(xs)
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (float("nan"),) * 2
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def goals(res):
    """[(goal, measured text, met)]"""
    g = []
    noop = res.get("noop", {})
    for n in sorted(noop, key=int):
        d = noop[n]
        rk = ratio(d, "drizzle-kit")
        g.append((f"no-op N={n}: portcullis ≤ 1/10 of drizzle-kit's time",
                  f"{fmt_x(rk)} (1/{1 / rk:.0f})", rk <= 0.1))
        rp = ratio(d, "psql")
        g.append((f"no-op N={n}: portcullis ≤ 2x psql's floor", fmt_x(rp), rp <= 2.0))
    if noop:
        peak = max(median([x[1] for x in noop[n]["portcullis"]]) for n in noop)
        worst = max(max(x[1] for x in noop[n]["portcullis"]) for n in noop)
        g.append(("no-op: portcullis peak RSS < 15 MiB",
                  f"{fmt_mib(peak)} (median; max {fmt_mib(worst)})", worst < 15 * 1024))
    full = res.get("full", {})
    for n in sorted(full, key=int):
        d = full[n]
        r = ratio(d, "psql")
        g.append((f"full apply N={n}: portcullis ≤ 1.2x psql -1 -f", fmt_x(r), r <= 1.2))
    rep = res.get("replicas", {}).get("runs", {})
    if "50" in rep and "1" in rep:
        runs50 = rep["50"]
        codes_ok = all(not any(x["codes"]) for x in runs50)
        once_ok = all(x["once"] for x in runs50)
        nonzero = sum(1 for x in runs50 for c in x["codes"] if c)
        g.append(("50 replicas: every process exits 0",
                  f"{sum(len(x['codes']) for x in runs50) - nonzero}/"
                  f"{sum(len(x['codes']) for x in runs50)} exit 0 over {len(runs50)} rounds",
                  codes_ok))
        g.append(("50 replicas: each migration recorded exactly once",
                  f"{sum(1 for x in runs50 if x['once'])}/{len(runs50)} rounds", once_ok))
        ratios = [a["wall"] / b["wall"] for a, b in zip(runs50, rep["1"])]
        r = median(ratios)
        floors = floor_ratios(runs50, rep["1"])
        floor = "; ".join(f"1 migrating + 49 {FLOOR_LABELS[name]}: {fmt_x(x)}"
                          for name, x in floors.items())
        g.append(("50 replicas: total wall ≤ 1.5x a single run's",
                  fmt_x(r) + (f" (the floor, {floor})" if floor else ""), r <= 1.5))
    return g


FLOOR_LABELS = {"psql": "`psql -c 'select 1'`", "wait": "`portcullis wait`"}


def floor_ratios(runs_k, runs_1):
    """Median over rounds of (1 portcullis migrate + k-1 clients that only connect) ÷ (1
    portcullis alone in the same round), per kind of client."""
    names = sorted({n for x in runs_k for n in x.get("one_migrating_with_connects", {})})
    return {n: median([a["one_migrating_with_connects"][n] / b["wall"]
                       for a, b in zip(runs_k, runs_1)
                       if n in a.get("one_migrating_with_connects", {})])
            for n in names}


def cpu_rows(runs_k, runs_1, k):
    """Per kind of k-process round: [(label, rounds)], each round (wall, server CPU, client CPU)
    of that kind next to (wall, server CPU, client CPU) of the single run of the same round.
    Rounds without CPU figures (older results, no readable postmaster) are left out."""
    def full(cpu):
        return cpu and cpu.get("server") is not None and cpu.get("client") is not None
    kinds = [(f"{k} portcullis migrate", lambda x: (x["wall"], x.get("cpu")))]
    for name, label in FLOOR_LABELS.items():
        kinds.append((f"1 portcullis migrate + {k - 1} {label}",
                      lambda x, n=name: (x.get("one_migrating_with_connects", {}).get(n),
                                         x.get("one_migrating_with_connects_cpu", {}).get(n))))
    out = []
    for label, get in kinds:
        rounds = []
        for a, b in zip(runs_k, runs_1):
            wall, cpu = get(a)
            if wall is None or not full(cpu) or not full(b.get("cpu")):
                continue
            rounds.append(((wall, cpu["server"], cpu["client"]),
                           (b["wall"], b["cpu"]["server"], b["cpu"]["client"])))
        if rounds:
            out.append((label, rounds))
    return out


def replicas_cpu_section(runs, cores):
    """The CPU the replicas' rounds took, against what the 1.5x goal leaves on this machine."""
    if "1" not in runs or not cores:
        return []
    ks = [k for k in sorted(runs, key=int) if k != "1"]
    if not ks:
        return []
    k = ks[-1]
    n = int(k)
    rows = cpu_rows(runs[k], runs["1"], n)
    if not rows:
        return []
    singles = [(b["wall"], b["cpu"]["server"], b["cpu"]["client"]) for b in runs["1"]
               if b.get("cpu") and b["cpu"].get("server") is not None]
    L = [f"### Where the time goes: CPU ({k} replicas)\n",
         f"| processes | wall ÷ 1 replica | server CPU | client CPU | each of the {n - 1} others: "
         "server + client CPU | all CPU ÷ " + str(cores) + " cores, ÷ 1 replica's wall |",
         "|---|---|---|---|---|---|"]
    L.append(f"| 1 portcullis migrate | 1.00x ({fmt_s(median([w for w, _, _ in singles]))}) | "
             f"{fmt_s(median([sv for _, sv, _ in singles]))} | "
             f"{fmt_s(median([c for _, _, c in singles]))} | — | "
             f"{fmt_x(median([(sv + c) / cores / w for w, sv, c in singles]))} |")
    for label, rounds in rows:
        L.append(
            f"| {label} | {fmt_x(median([a[0] / b[0] for a, b in rounds]))} | "
            f"{fmt_s(median([a[1] for a, _ in rounds]))} | "
            f"{fmt_s(median([a[2] for a, _ in rounds]))} | "
            f"{fmt_s(median([(a[1] - b[1]) / (n - 1) for a, b in rounds]))} + "
            f"{fmt_s(median([(a[2] - b[2]) / (n - 1) for a, b in rounds]))} | "
            f"{fmt_x(median([(a[1] + a[2]) / cores / b[0] for a, b in rounds]))} |")
    budget = median([(1.5 * w * cores - sv - c) / (n - 1) for w, sv, c in singles])
    L.append(f"\nServer CPU is what the PostgreSQL processes that ended during the round used "
             f"(the postmaster's own time and its reaped children's, from /proc; the "
             f"checkpointer and WAL writer, which live on, are not in it); client CPU is the "
             f"processes' user + system time. \"Each of the others\" is the round's CPU minus "
             f"the single run's of the same round, divided by {n - 1}. The last column is a lower "
             f"bound on the ratio to the single run: no schedule can finish sooner than all "
             f"the CPU spread evenly over the {cores} cores. For {k} replicas to finish within "
             f"1.5x of one run here, even with every core busy from start to end, the "
             f"{n - 1} others may use at most (1.5 × wall × cores − the single run's CPU) ÷ "
             f"{n - 1} = **{fmt_s(budget)} of CPU each**, server and client together "
             f"(median over rounds).\n")
    return L


def write_markdown(res, path, chart_name):
    m = res["machine"]
    L = []
    L.append("# portcullis benchmark results\n")
    L.append(f"Generated by `./bench/run.sh` on {m['date']}. Figures are medians over the rounds; "
             "ratios are portcullis ÷ the other tool, computed within each round and then the "
             "median taken (the machine is shared and noisy, so only ratios within one run are "
             "comparable).\n")
    L.append("## Machine and versions\n")
    L.append(f"- machine: {m['cores']} cores, {m['cpu']}, {m['memory']} RAM, {m['kernel']} "
             f"(1-minute load average {m['loadavg_start'][0]:.1f} at the start, "
             f"{m.get('loadavg_end', [float('nan')])[0]:.1f} at the end: other jobs shared the machine)")
    L.append(f"- PostgreSQL {m['postgres']} on 127.0.0.1 (TCP, scram-sha-256), started by the bench "
             f"with fsync=off, data directory {m['pg_data']}")
    L.append(f"- {m['portcullis']} (release build, {m['portcullis_bytes'] / 1e6:.1f} MB; "
             f"{m['portcullis_git']}; {m['rustc']})")
    L.append(f"- node {m['node']}, drizzle-kit {m['drizzle-kit']}, drizzle-orm {m['drizzle-orm']}, "
             f"pg {m['pg']}; {m['psql']}")
    cs = m.get("corpora", {})
    L.append("- folders from gen_corpus.py: " + "; ".join(
        f"N={n}: {c.get('statements', '?')} statements, {c.get('sql_bytes', 0) / 1024:.0f} KiB of SQL"
        for n, c in sorted(cs.items(), key=lambda kv: int(kv[0]))))
    L.append(f"- rounds: {', '.join(f'{k} {v}' for k, v in m['rounds'].items())} "
             f"(+{m['warmup']} warm-up round each, not counted); measuring took "
             f"{m.get('bench_seconds', 0) / 60:.1f} min\n")

    L.append("## Goals\n")
    L.append("| goal | measured | verdict |")
    L.append("|---|---|---|")
    for goal, measured, met in goals(res):
        L.append(f"| {goal} | {measured} | {'met' if met else '**missed**'} |")
    L.append("")

    if "noop" in res:
        L.append("## No-op run (every migration already applied)\n")
        sizes = sorted(res["noop"], key=int)
        head = "| tool | " + " | ".join(f"N={n} time | N={n} portcullis ÷ tool" for n in sizes) \
            + " | peak RSS | client CPU (N=200) |"
        L.append(head)
        L.append("|---" * (1 + 2 * len(sizes) + 2) + "|")
        for tool in TOOLS:
            cells = [LABELS[tool]]
            for n in sizes:
                cells += time_and_ratio(res["noop"][n], tool)
            rss = [median([x[1] for x in res["noop"][n][tool]]) for n in sizes]
            cells.append(" / ".join(fmt_mib(x) for x in rss))
            n0 = "200" if "200" in res["noop"] else sizes[0]
            cells.append(fmt_s(median([x[2] for x in res["noop"][n0][tool]])))
            L.append("| " + " | ".join(cells) + " |")
        L.append("\nPeak RSS is listed per folder size (" + " / ".join(f"N={n}" for n in sizes)
                 + "), measured with GNU time (`%M`) in a second run of each tool every round, so "
                 "that the timed runs carry no launcher. Client CPU is user + system time of the "
                 "tool's processes. psql's no-op is the three statements drizzle sends when nothing is "
                 "pending (create schema/table if not exists, select the newest row).\n")

    if "full" in res:
        L.append("## Full apply on an empty database\n")
        sizes = sorted(res["full"], key=int)
        L.append("| tool | " + " | ".join(f"N={n} time | N={n} portcullis ÷ tool | N={n} peak RSS"
                                         for n in sizes) + " |")
        L.append("|---" * (1 + 3 * len(sizes)) + "|")
        for tool in TOOLS:
            cells = [LABELS[tool]]
            for n in sizes:
                d = res["full"][n]
                cells += time_and_ratio(d, tool) + [fmt_mib(median([x[1] for x in d[tool]]))]
            L.append("| " + " | ".join(cells) + " |")
        L.append("\nEach run gets its own database created from template0 just before it (not "
                 "timed). psql runs `psql -1 -f all.sql`: every statement of every migration in "
                 "one transaction, without the tracking table.\n")

    if "replicas" in res:
        rep = res["replicas"]
        L.append(f"## Replicas: portcullis processes started at once on an empty database "
                 f"(N={rep['n']})\n")
        L.append("| replicas | total wall | ÷ 1 replica (per round) | longest lock wait "
                 "| all exit 0 | each migration once | processes that applied "
                 "| as many `psql -c 'select 1'` at once |")
        L.append("|---|---|---|---|---|---|---|---|")
        one = rep["runs"].get("1", [])
        for k in sorted(rep["runs"], key=int):
            runs = rep["runs"][k]
            ratio = median([a["wall"] / b["wall"] for a, b in zip(runs, one)]) if one else float("nan")
            total = sum(len(x["codes"]) for x in runs)
            ok = sum(1 for x in runs for c in x["codes"] if c == 0)
            L.append(f"| {k} | {fmt_s(median([x['wall'] for x in runs]))} | {fmt_x(ratio)} | "
                     f"{fmt_s(median([x.get('max_lock_wait', 0.0) for x in runs]))} | {ok}/{total} | "
                     f"{sum(1 for x in runs if x['once'])}/{len(runs)} rounds | "
                     f"{'/'.join(str(a) for a in sorted(set(x['appliers'] for x in runs)))} | "
                     f"{fmt_s(median([x['psql_select1_wall'] for x in runs]))} |")
        L.append("\nThe processes are forked first, each a shell blocked on a shared pipe; one write "
                 "releases them all at the same instant, and each execs portcullis. Wall time runs "
                 "from that write to the last exit. \"Longest lock wait\" is "
                 "the largest wait a process logged (`the migration lock was released after` for a "
                 "runner queued behind the holder, `took the migration lock after waiting` for one "
                 "that polled; median over rounds). \"Processes that applied\" counts the processes that logged `applying` (one per round means the "
                 "others found nothing pending after waiting for the lock). The last column is a "
                 "reference, started the same way right after the portcullis processes of the "
                 "round: as many psql processes that each connect, run `select 1` and exit. It is "
                 "what that many connections at once cost on this machine, before any "
                 "work.\n")
        ks = [k for k in sorted(rep["runs"], key=int) if k != "1" and any(
            x.get("one_migrating_with_connects") for x in rep["runs"][k])]
        if ks and one:
            L.append("### The floor under the replicas goal\n")
            L.append("| replicas | k portcullis migrate (÷ 1 replica) | "
                     + " | ".join(f"1 portcullis migrate + k-1 {FLOOR_LABELS[n]} (÷ 1 replica)"
                                  for n in FLOOR_LABELS) + " |")
            L.append("|---" * (2 + len(FLOOR_LABELS)) + "|")
            for k in ks:
                runs = rep["runs"][k]
                fl = floor_ratios(runs, one)
                r = median([a["wall"] / b["wall"] for a, b in zip(runs, one)])
                cells = [k, f"{fmt_s(median([x['wall'] for x in runs]))} ({fmt_x(r)})"]
                for n in FLOOR_LABELS:
                    walls = [x["one_migrating_with_connects"][n] for x in runs
                             if n in x.get("one_migrating_with_connects", {})]
                    cells.append(f"{fmt_s(median(walls))} ({fmt_x(fl[n])})" if walls else "n/a")
                L.append("| " + " | ".join(cells) + " |")
            L.append("\nEvery replica must connect to learn whether another holds the lock, and "
                     "then wait for it. The last two columns start one portcullis migrating an "
                     "empty database together with k-1 clients that only connect and leave: "
                     "psql running `select 1`, and `portcullis wait` (connect, two one-line "
                     "statements, exit), the lightest client at hand. They do none of a "
                     "replica's work (no folder read, no lock, no wait, no read of the tracking "
                     "table), so they are a floor for any tool whose replicas each open a "
                     "connection. Same rounds, same start gate, each on a fresh database; ratios "
                     "are to the single run of the same round.\n")
        cpu_lines = replicas_cpu_section(rep["runs"], res["machine"].get("cores"))
        if cpu_lines:
            L.extend(cpu_lines)

    if "cold" in res:
        L.append("## Cold start: process start to the first byte the server receives\n")
        sizes = sorted(res["cold"], key=int)
        L.append("| tool | " + " | ".join(f"N={n} first byte | N={n} connect | N={n} whole no-op"
                                         for n in sizes) + " |")
        L.append("|---" * (1 + 3 * len(sizes)) + "|")
        for tool in TOOLS:
            cells = [LABELS[tool]]
            for n in sizes:
                d = res["cold"][n][tool]
                cells += [fmt_s(median([x[0] for x in d])), fmt_s(median([x[1] for x in d])),
                          fmt_s(median([x[2] for x in d]))]
            L.append("| " + " | ".join(cells) + " |")
        L.append("\nMethod: each tool connects to a loopback TCP proxy in the bench process that "
                 "forwards to PostgreSQL and timestamps (same monotonic clock) the accepted "
                 "connection and the first byte received from the client; the start is taken just "
                 "before fork/exec. \"first byte\" includes the fork/exec itself (well under 1 ms "
                 "here) and whatever the tool does before connecting (portcullis reads and hashes "
                 "the whole folder first). \"whole no-op\" is the same run end to end; it is a "
                 "separate set of runs from the table above, with every byte going through the "
                 "proxy.\n")

    if "latency" in res:
        lat = res["latency"]
        d = lat["runs"]
        L.append(f"## Full apply a network away: {lat['rtt_ms']:g} ms round trip (N={lat['n']})\n")
        L.append("| tool | time | portcullis ÷ tool |")
        L.append("|---|---|---|")
        for tool in TOOLS:
            L.append("| " + " | ".join([LABELS[tool]] + time_and_ratio(d, tool)) + " |")
        L.append(f"\nThe same full apply as above, through a loopback proxy in the bench that hands "
                 f"every chunk of bytes on {lat['rtt_ms'] / 2:g} ms after it arrived, each way (a "
                 "database in another zone, or reached from a CI runner). drizzle-kit, "
                 "drizzle-orm and psql wait for each statement's answer before sending the next; "
                 "portcullis sends a transaction's statements and tracking rows without waiting "
                 "for each answer (up to 256 in flight) and reads the answers in order.\n")

    L.append(f"![benchmark chart]({chart_name})\n")
    L.append("Raw per-round figures: `target/bench/results.json` after a run.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def write_chart(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = res["machine"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    fig.suptitle(f"portcullis vs drizzle-kit, drizzle-orm migrate() and psql — {m['date']}, "
                 f"{m['cores']} cores {m['cpu']}, PostgreSQL {m['postgres'].split()[0]}, "
                 f"node {m['node']} (medians; whiskers: quartiles)", fontsize=12)

    def bars(ax, data, groups, value, title, ylabel, log=False, fmt=None):
        width = 0.8 / len(TOOLS)
        for i, tool in enumerate(TOOLS):
            meds, lo, hi = [], [], []
            for g in groups:
                xs = [value(x) for x in data[g][tool]]
                md = median(xs)
                q1, q3 = quartiles(xs)
                meds.append(md)
                lo.append(md - q1)
                hi.append(q3 - md)
            xs = [j + (i - (len(TOOLS) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, meds, width, yerr=[lo, hi], capsize=2, color=COLORS[tool],
                   label=LABELS[tool])
            for x, md, up in zip(xs, meds, hi):
                ax.annotate(fmt(md) if fmt else f"{md:.0f}", (x, md + up), textcoords="offset points",
                            xytext=(0, 2), ha="center", fontsize=7)
        ax.set_xticks(range(len(groups)), [f"N={g}" for g in groups])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
            ax.set_ylim(top=ax.get_ylim()[1] * 8)
        else:
            ax.set_ylim(top=ax.get_ylim()[1] * 1.25)
        ax.grid(axis="y", alpha=0.3)

    ms = lambda v: f"{v:.0f}" if v >= 10 else f"{v:.1f}"  # noqa: E731
    if "noop" in res:
        sizes = sorted(res["noop"], key=int)
        bars(axes[0][0], res["noop"], sizes, lambda x: x[0] * 1000,
             "No-op run (nothing pending)", "ms (log)", log=True, fmt=ms)
        axes[0][0].legend(fontsize=8, loc="upper left")
        bars(axes[0][2], res["noop"], sizes, lambda x: x[1] / 1024,
             "Peak RSS of the no-op run", "MiB (log)", log=True, fmt=ms)
        axes[0][2].axhline(15, color="#1f77b4", ls="--", lw=1, label="goal: portcullis < 15 MiB")
        axes[0][2].legend(handles=[axes[0][2].get_lines()[-1]], fontsize=8, loc="upper left")
    if "full" in res:
        sizes = sorted(res["full"], key=int)
        bars(axes[0][1], res["full"], sizes, lambda x: x[0] * 1000,
             "Full apply on an empty database", "ms", fmt=ms)
    if "cold" in res:
        sizes = sorted(res["cold"], key=int)
        bars(axes[1][1], res["cold"], sizes, lambda x: x[0] * 1000,
             "Cold start: process start → first byte to the server", "ms (log)", log=True, fmt=ms)

    ax = axes[1][0]
    if "replicas" in res:
        rep = res["replicas"]["runs"]
        ks = sorted(rep, key=int)
        meds = [median([x["wall"] * 1000 for x in rep[k]]) for k in ks]
        q = [quartiles([x["wall"] * 1000 for x in rep[k]]) for k in ks]
        ax.bar([i - 0.27 for i in range(len(ks))], meds, 0.26, color=COLORS["portcullis"],
               yerr=[[md - a for md, (a, _) in zip(meds, q)], [b - md for md, (_, b) in zip(meds, q)]],
               capsize=3, label="portcullis migrate")
        for i, (md, (_, q3)) in enumerate(zip(meds, q)):
            ax.annotate(f"{md:.0f}", (i - 0.27, q3), xytext=(0, 3), textcoords="offset points",
                        ha="center", fontsize=7)
        floor = [(i, median(w)) for i, k in enumerate(ks)
                 if (w := [x["one_migrating_with_connects"]["wait"] * 1000 for x in rep[k]
                           if "wait" in x.get("one_migrating_with_connects", {})])]
        if floor:
            ax.bar([i for i, _ in floor], [md for _, md in floor], 0.26, color="#9ecae1",
                   label="1 migrate + k-1 `portcullis wait` (floor)")
            for i, md in floor:
                ax.annotate(f"{md:.0f}", (i, md), xytext=(0, 3), textcoords="offset points",
                            ha="center", fontsize=7)
        ref = [median([x["psql_select1_wall"] * 1000 for x in rep[k]]) for k in ks]
        ax.bar([i + 0.27 for i in range(len(ks))], ref, 0.26, color=COLORS["psql"],
               label="k psql -c 'select 1' (reference)")
        for i, md in enumerate(ref):
            ax.annotate(f"{md:.0f}", (i + 0.27, md), xytext=(0, 3), textcoords="offset points",
                        ha="center", fontsize=7)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, 0.93))
        if "1" in rep:
            ax.axhline(meds[ks.index("1")] * 1.5, color="k", ls="--", lw=1)
            ax.annotate("goal: 1.5x one replica", (0.02, meds[ks.index("1")] * 1.5),
                        xycoords=("axes fraction", "data"), xytext=(0, 3),
                        textcoords="offset points", fontsize=7)
        ax.set_xticks(range(len(ks)), [f"{k} at once" for k in ks])
        ax.set_title(f"Replicas: portcullis processes at once, empty DB, N={res['replicas']['n']}\n"
                     "(release of all → last exit)", fontsize=10)
        ax.set_ylabel("ms")
        ax.set_ylim(top=ax.get_ylim()[1] * 1.15)
        ax.grid(axis="y", alpha=0.3)

    # Goals: each per-round ratio divided by its limit; below 1 means the goal is met.
    ax = axes[1][2]
    series = []
    for n in sorted(res.get("noop", {}), key=int):
        d = res["noop"][n]
        series.append((f"no-op N={n}\n÷ drizzle-kit ≤ 0.1",
                       [r / 0.1 for r in per_round_ratios(d["portcullis"], d["drizzle-kit"])]))
        series.append((f"no-op N={n}\n÷ psql ≤ 2", [r / 2 for r in per_round_ratios(d["portcullis"], d["psql"])]))
    for n in sorted(res.get("full", {}), key=int):
        d = res["full"][n]
        series.append((f"full N={n}\n÷ psql ≤ 1.2", [r / 1.2 for r in per_round_ratios(d["portcullis"], d["psql"])]))
    rep = res.get("replicas", {}).get("runs", {})
    if "50" in rep and "1" in rep:
        series.append(("50 replicas\n÷ 1 ≤ 1.5", [a["wall"] / b["wall"] / 1.5 for a, b in zip(rep["50"], rep["1"])]))
    for i, (_, vals) in enumerate(series):
        md = median(vals)
        ax.scatter(vals, [i] * len(vals), s=12, color="#555555", alpha=0.6, zorder=3)
        ax.scatter([md], [i], s=70, marker="D", zorder=4,
                   color="#2ca02c" if md <= 1 else "#d62728")
    ax.axvline(1, color="k", ls="--", lw=1)
    ax.set_yticks(range(len(series)), [name.replace("\n", ": ") for name, _ in series], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    lo = min([0.1] + [v for _, vals in series for v in vals])
    hi = max([2.0] + [v for _, vals in series for v in vals])
    ax.set_xlim(lo / 1.5, hi * 1.5)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if lo / 1.5 <= t <= hi * 1.5]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("measured ÷ limit (log; left of 1 meets the goal)")
    ax.set_title("Goals: per-round ratio ÷ its limit (dots), median (diamond)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report-only":
        with open(sys.argv[2]) as f:
            res = json.load(f)
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)))
        write_chart(res, os.path.join(out, "results.png"))
        write_markdown(res, os.path.join(out, "RESULTS.md"), "results.png")
        return
    s = Settings()
    with open(s.corpus(0)["noop_sql"], "w") as f:
        f.write(NOOP_SQL)
    res = {"machine": machine(s)}
    started = time.perf_counter()
    for name, fn in (("noop", scenario_noop), ("full", scenario_full),
                     ("replicas", scenario_replicas), ("cold", scenario_cold),
                     ("latency", scenario_latency)):
        if name in s.scenarios:
            t = time.perf_counter()
            log(f"{name}: {s.rounds[name]} rounds")
            fn(s, res)
            log(f"{name}: done in {time.perf_counter() - t:.0f}s")
    res["machine"]["bench_seconds"] = time.perf_counter() - started
    res["machine"]["loadavg_end"] = os.getloadavg()
    with open(os.path.join(s.work, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    write_chart(res, os.path.join(s.out_dir, "results.png"))
    write_markdown(res, os.path.join(s.out_dir, "RESULTS.md"), "results.png")
    log(f"wrote {os.path.join(s.out_dir, 'RESULTS.md')} and results.png "
        f"({res['machine']['bench_seconds']:.0f}s of measuring)")
    for goal, measured, met in goals(res):
        log(f"  {'met   ' if met else 'MISSED'} {goal}: {measured}")


if __name__ == "__main__":
    main()
