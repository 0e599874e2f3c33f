//! One integration-test binary: every scenario against real PostgreSQL clusters (see support).
mod commands;
mod failures;
mod harness_smoke;
mod migrate_basics;
mod run;
mod safety;
mod seeds;
mod support;
mod v1_layout;
