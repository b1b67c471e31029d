//! The `attestmesh-operator` command line: flags (`cli/args.rs`) → the routines of this crate
//! ([`execute`]) → a report, printed as text or, with `--json`, as one JSON document on stdout.
//! Logs go to stderr.

mod args;
mod execute;

pub use args::{
    ChainArgs, CheckIndexerArgs, Cli, ClusterArg, Command, ContractArgs, CreateClusterArgs,
    DeployArgs, SignerArgs, project_root,
};
pub use execute::{Output, execute};

use crate::error::DeployError;

/// Logs on stderr, `RUST_LOG` filters; by default this tool's progress at info, others at warn.
const DEFAULT_LOG_FILTER: &str = "warn,attestmesh::deploy=info";

/// Runs a parsed command line and prints its report (stdout). A failure is printed as
/// `error: …` on stderr (and, with `--json`, as `{"error": "…"}` on stdout) and exits 1.
pub async fn run(cli: Cli) -> std::process::ExitCode {
    if let Err(e) =
        attestmesh_service::logging::init(attestmesh_service::LogFormat::Human, DEFAULT_LOG_FILTER)
    {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let json = cli.json;
    match execute(cli.command).await {
        Ok(out) if json => match serde_json::to_string_pretty(&out.json) {
            Ok(text) => {
                println!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot print the JSON report: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Ok(out) => {
            println!("{}", out.text);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let message = error_message(&e);
            if json {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and each cause not already part of its message.
fn error_message(error: &DeployError) -> String {
    let mut message = error.to_string();
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(&format!("\n  caused by: {text}"));
        }
        next = cause.source();
    }
    message
}
