//! The exit-code contract. Scripts and orchestrators (Kubernetes restart policies, compose
//! `service_completed_successfully`) depend on these numbers; README mirrors this table and the
//! integration tests assert each one.

/// Every way a run can end, as the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Migrated, or nothing to do.
    Success = 0,
    /// A bug in portcullis.
    Internal = 1,
    /// Configuration or command-line usage invalid.
    Config = 2,
    /// Migrations (or seeds) folder invalid.
    Source = 3,
    /// The tracking table disagrees with the folder.
    History = 4,
    /// Database not reachable within the wait timeout (a restart may help).
    Unreachable = 5,
    /// Database refused us for good (authentication, missing database, TLS).
    Refused = 6,
    /// Advisory lock not acquired within the lock wait timeout (a restart may help).
    LockTimeout = 7,
    /// A migration failed and its transaction was rolled back.
    MigrationFailed = 8,
    /// A seed failed and the seeds' transaction was rolled back.
    SeedFailed = 9,
    /// Interrupted by SIGINT.
    Interrupted = 130,
    /// Interrupted by SIGTERM.
    Terminated = 143,
}

impl ExitCode {
    /// The numeric status handed to the operating system.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether restarting the same run unchanged may succeed (the database may come up, the
    /// lock holder may finish). Used in messages so operators know whether to wait or act.
    pub fn restart_may_help(self) -> bool {
        matches!(
            self,
            ExitCode::Unreachable
                | ExitCode::LockTimeout
                | ExitCode::Interrupted
                | ExitCode::Terminated
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_interface_table() {
        let table = [
            (ExitCode::Success, 0),
            (ExitCode::Internal, 1),
            (ExitCode::Config, 2),
            (ExitCode::Source, 3),
            (ExitCode::History, 4),
            (ExitCode::Unreachable, 5),
            (ExitCode::Refused, 6),
            (ExitCode::LockTimeout, 7),
            (ExitCode::MigrationFailed, 8),
            (ExitCode::SeedFailed, 9),
            (ExitCode::Interrupted, 130),
            (ExitCode::Terminated, 143),
        ];
        for (code, n) in table {
            assert_eq!(code.code(), n, "{code:?}");
        }
        assert!(ExitCode::Unreachable.restart_may_help());
        assert!(!ExitCode::Refused.restart_may_help());
        assert!(!ExitCode::MigrationFailed.restart_may_help());
    }
}
