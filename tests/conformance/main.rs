//! Conformance suite: portcullis against the real drizzle-kit, on the same databases.
//!
//! portcullis promises that drizzle-kit and portcullis can take turns on one database. These tests
//! check that promise against the real thing instead of our reading of drizzle's source: the
//! pinned `drizzle-kit`, `drizzle-orm` and `pg` from `tests/conformance/drizzle/package-lock.json`
//! are installed with `npm ci` into `target/tmp/conformance-node/<lockfile hash>/` (once; later
//! runs reuse it), and every scenario compares a database migrated by portcullis (alone, or taking
//! turns with drizzle-kit) with a twin database migrated by `drizzle-kit migrate` alone: the whole
//! `pg_dump` and the tracking rows, byte for byte.
//!
//! Node.js and npm must be installed. A failed install fails the tests; they never skip.
//!
//! * [`generated`]: migrations written at test time by the real `drizzle-kit generate` from the
//!   schema steps in `tests/conformance/drizzle/steps/`, applied alone and in turns for every k.
//! * [`edge_cases`]: hand-made folders for the edge cases of drizzle-compat.md section 6 that both
//!   tools must treat the same, successes and failures alike.
//! * [`hashes`]: the recorded hash, pinned against node's crypto and drizzle-orm's own
//!   `readMigrationFiles` on inputs where encodings matter.
//! * [`large`]: a 1000-migration corpus from `../shared/bench/gen_corpus.py`.
//! * [`differences`]: every place where portcullis deliberately does not do what drizzle does,
//!   each shown next to what drizzle-kit really does.
//!
//! Shared pieces: [`kit`] (npm install, drizzle-kit CLI, node helpers) and [`twin`] (scratch
//! folders, journal prefixes, database state and its comparison).

#[path = "../it/support/mod.rs"]
mod support;

// Reused from the `it` binary; not every helper is needed here.
#[allow(dead_code)]
#[path = "../it/run.rs"]
mod run;

mod kit;
mod twin;

mod differences;
mod edge_cases;
mod generated;
mod hashes;
mod large;
