//! Fallback for `Cluster::shared()` when no local server binaries exist:
//! a `postgres:16-alpine` container via testcontainers' blocking runner.

use std::process::{Command, Stdio};
use std::time::Duration;

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

use super::proc::{self, Janitor};

const IMAGE_TAG: &str = "16-alpine";

pub(crate) struct DockerPostgres {
    pub(crate) host: String,
    pub(crate) port: u16,
    _container: Container<Postgres>,
    _janitor: Janitor,
}

/// Whether `docker info` succeeds within 10 s.
pub(crate) fn daemon_available() -> bool {
    let Ok(mut child) = Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    match proc::wait_timeout(&mut child, Duration::from_secs(10)) {
        Ok(true) => child.wait().is_ok_and(|s| s.success()),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }
}

impl DockerPostgres {
    pub(crate) fn start(password: &str) -> Result<DockerPostgres, String> {
        let container = Postgres::default()
            .with_user("postgres")
            .with_password(password)
            .with_tag(IMAGE_TAG)
            .with_cmd(["-c", "fsync=off", "-c", "max_connections=200"])
            .start()
            .map_err(|e| format!("starting postgres:{IMAGE_TAG}: {e}"))?;
        // The container lives in a never-dropped static: have a janitor
        // `docker rm -f` it when this process exits.
        let janitor = Janitor::for_container(container.id())?;
        let host = container
            .get_host()
            .map_err(|e| format!("container host: {e}"))?
            .to_string();
        // We ask for the IPv4 mapping; don't let "localhost" resolve to ::1.
        let host = if host == "localhost" {
            "127.0.0.1".to_string()
        } else {
            host
        };
        let port = container
            .get_host_port_ipv4(5432)
            .map_err(|e| format!("container port: {e}"))?;
        Ok(DockerPostgres {
            host,
            port,
            _container: container,
            _janitor: janitor,
        })
    }
}
