//! The one error type that carries an exit code. Anything else that goes wrong is an
//! `anyhow::Error` and exits 1.

use std::fmt;

/// Exit codes of the contract (see SPEC "Budget levels and exit codes").
pub mod code {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    // 2 is clap's usage error.
    pub const NOTHING_TO_DO: u8 = 3;
    pub const BUSY: u8 = 4;
    /// A write under a claim the session no longer holds (a stale fencing token).
    pub const LOST: u8 = 5;
    /// The fleet store could not be reached, or stopped answering, within its timeout.
    pub const UNREACHABLE: u8 = 6;
}

#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Bad input or state: exit 1, nothing changed.
    pub fn user(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::ERROR,
            message: message.into(),
        }
        .into()
    }

    /// No ready task: exit 3.
    pub fn nothing_to_do(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::NOTHING_TO_DO,
            message: message.into(),
        }
        .into()
    }

    /// A live session already holds what was asked for: exit 4.
    pub fn busy(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::BUSY,
            message: message.into(),
        }
        .into()
    }
}

impl Failure {
    /// The session lost its task (its claim's token is stale): exit 5, nothing changed.
    pub fn lost(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::LOST,
            message: message.into(),
        }
        .into()
    }
}

impl Failure {
    /// The fleet store cannot be reached or stopped answering: exit 6; nothing was written
    /// (each store write is one transaction), so the same command can simply be run again.
    pub fn unreachable(message: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::UNREACHABLE,
            message: message.into(),
        }
        .into()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error that reached `main`.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(code::ERROR, |failure| failure.code)
}

/// One line, whatever the error chain: `error: outer: inner`. Messages quote user input, so
/// terminal control bytes are dropped.
pub fn one_line(err: &anyhow::Error) -> String {
    crate::core::text::strip_controls(&format!("{err:#}").replace('\n', " ")).into_owned()
}
