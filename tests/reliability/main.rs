//! The reliability and security suite (issue 10): process, server and network faults, contention
//! and hostile input against the real binary and real PostgreSQL clusters, with nothing lost and
//! the password never shown. Bounded in time and on loopback only; measured figures go to
//! `target/tmp/reliability-figures.txt` (see README, "Reliability").

#[path = "../it/support/mod.rs"]
mod support;

#[allow(dead_code)] // the integration suite's helpers; not all are used here
#[path = "../it/run.rs"]
mod run;

mod capture;
mod contention;
mod hostile_input;
mod network_faults;
mod process_faults;
mod properties;
mod proxy;
mod secrets;
mod server_faults;
