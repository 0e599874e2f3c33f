//! Interoperability with the real drizzle-kit / drizzle-orm 1.0 release candidate, pinned in
//! tests/v1/package.json and package-lock.json and installed with `npm ci` (see drizzle.rs), on
//! real PostgreSQL clusters from the integration-test harness of tests/it.
#[path = "../it/support/mod.rs"]
mod support;

#[allow(dead_code)] // shared with tests/it and tests/conformance, which use other helpers
#[path = "../it/run.rs"]
mod run;

mod drizzle;
mod interop;
