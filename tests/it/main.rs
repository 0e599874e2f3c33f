//! One integration-test binary: every scenario against real PostgreSQL clusters (see support).
mod commands;
mod failures;
mod harness_smoke;
mod migrate_basics;
#[allow(dead_code)] // shared with tests/conformance and tests/v1, which use other helpers
mod run;
mod safety;
mod seeds;
mod support;
mod v1_layout;
