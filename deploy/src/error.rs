//! Errors of the operator routines: each says what is wrong and what to do about it.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = DeployError> = std::result::Result<T, E>;

/// A failed routine. The message is written for the operator who ran it.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Something that must hold before the routine acts does not; nothing was sent.
    #[error("precondition failed: {problem}. What to do: {advice}")]
    Precondition { problem: String, advice: String },
    /// The routine ran, but what it left behind is not what it must be.
    #[error("post-deploy check failed: {problem}. What to do: {advice}")]
    Postcondition { problem: String, advice: String },
    /// An argument that cannot be used.
    #[error("invalid {what}: {problem}")]
    Input { what: String, problem: String },
    /// A chain read or write (the message names the call, the endpoint and the decoded revert).
    #[error(transparent)]
    Chain(#[from] attestmesh_chain::ChainError),
    /// A local file or process could not be used.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `forge script` failed or timed out.
    #[error(
        "forge script script/Deploy.s.sol failed ({status}); full output in {}; its last lines:\n{tail}",
        log.display()
    )]
    Forge {
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// An HTTP endpoint could not be asked or answered something unreadable.
    #[error("{url}: {problem}")]
    Http { url: String, problem: String },
    /// A live service answered, but not with the identity it must have (field note 4).
    #[error("{service} identity check of {url} failed:\n  - {}", problems.join("\n  - "))]
    Identity {
        service: &'static str,
        url: String,
        problems: Vec<String>,
    },
}

impl DeployError {
    /// A [`DeployError::Precondition`].
    pub fn precondition(problem: impl Into<String>, advice: impl Into<String>) -> Self {
        DeployError::Precondition {
            problem: problem.into(),
            advice: advice.into(),
        }
    }

    /// A [`DeployError::Postcondition`].
    pub fn postcondition(problem: impl Into<String>, advice: impl Into<String>) -> Self {
        DeployError::Postcondition {
            problem: problem.into(),
            advice: advice.into(),
        }
    }

    /// A [`DeployError::Input`].
    pub fn input(what: impl Into<String>, problem: impl Into<String>) -> Self {
        DeployError::Input {
            what: what.into(),
            problem: problem.into(),
        }
    }
}
