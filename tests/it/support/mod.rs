//! Integration-test harness: real, throwaway PostgreSQL clusters started from
//! the local server binaries (no mocks).
//!
//! # Clusters
//!
//! * [`Cluster::shared()`] — one cluster per test process, started lazily;
//!   tests isolate themselves with [`Cluster::create_database`].
//! * [`Cluster::init`] / [`Cluster::start_new`] — a private cluster that a
//!   test can stop, restart, or crash ([`Cluster::kill9`]); stopped and
//!   deleted on drop.
//!
//! The first cluster of a process runs `initdb` once into a template
//! directory (~1 s); every cluster is then a `cp -a` of that template. The
//! superuser is `postgres` with password [`PASSWORD`] (scram-sha-256 over TCP
//! on 127.0.0.1; `trust` on the unix socket in the cluster's directory).
//! When the tests run as root, `initdb` and `postgres` run as the `postgres`
//! system user (`CommandExt::uid/gid`); the postmaster is always a *direct*
//! child of the test process.
//!
//! Server settings: `listen_addresses=127.0.0.1`, unix socket in the cluster
//! dir, `fsync=off`, `full_page_writes=off`, `max_connections=200`,
//! `shared_buffers=32MB`, `log_min_messages=warning`,
//! `dynamic_shared_memory_type=mmap` (DSM files live in PGDATA, so a killed
//! server leaks nothing in `/dev/shm`). `synchronous_commit` stays `on` on
//! purpose: with `fsync=off` it costs only a `write()`, and it makes
//! committed data survive [`Cluster::kill9`] (with it off, the last ~600 ms
//! of commits would be lost in crash tests). Server output goes to
//! [`Cluster::log_path`]; startup failures panic with its tail.
//!
//! Debug builds make each scram-sha-256 login cost ~100 ms of client CPU;
//! [`Cluster::socket_url`] (unix socket, `trust`) avoids it for setup and
//! assertions.
//!
//! If no local binaries exist but a Docker daemon answers, `shared()` falls
//! back to a `postgres:16-alpine` container (`init`/`start_new` then panic).
//! With neither, it panics with an installation hint — tests never skip.
//!
//! # Cleanup (no leftover servers or directories, however the process ends)
//!
//! 1. **Drop** of a private `Cluster`: fast shutdown (SIGINT), wait, remove
//!    its directory.
//! 2. **Normal process exit** (the shared cluster and the template are
//!    never-dropped statics): an `atexit` hook stops the shared server
//!    (SIGQUIT), reaps it and removes its directory.
//! 3. **Abnormal death** (SIGKILL, abort, ...): every server is spawned from
//!    one dedicated, never-exiting "pg-spawner" thread with
//!    `PR_SET_PDEATHSIG = SIGQUIT` (set in `pre_exec`, which std runs after
//!    the uid switch; Linux fires it when the *spawning thread* dies, hence
//!    the dedicated thread), so the kernel tells each postmaster to do an
//!    immediate shutdown when the test process dies.
//! 4. **Directories**: each cluster dir (`<scratch_root>/portcullis-it-<pid>-<n>`,
//!    see [`scratch_root`]: `/dev/shm` when roomy, else the temp dir) has a
//!    janitor — `sh` in its own process group, blocked in `read` on a pipe
//!    whose only write end the test process holds. When the process dies, the
//!    pipe closes, the janitor waits for the postmaster named in
//!    `data/postmaster.pid` to exit (escalating to SIGQUIT/SIGKILL itself
//!    after 5/10 s, after checking `/proc/PID/cmdline` names that data dir),
//!    then `rm -rf`s the directory. On a normal drop the harness closes the
//!    pipe itself and reaps the janitor.

#![allow(dead_code)] // not every test module uses every helper

mod cluster;
mod docker;
mod proc;
mod sql;

#[allow(unused_imports)] // re-exported for the test modules
pub use cluster::{Cluster, PASSWORD, free_port, pg_bin_dir, scratch_root};
#[allow(unused_imports)]
pub use sql::{describe, execute, query, try_execute, try_query};
