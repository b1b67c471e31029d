//! The opening of the report: the machine and the build, read before anything runs (a fact
//! that cannot be read fails the run rather than printing as "0 cores"), and the header of
//! `RESULTS.md` that names the command, the date, the machine, the stack and bundler the agents
//! ran on, and the cadences each section's figures come from.

use std::fmt::Write as _;
use std::path::Path;

use eyre::WrapErr;

use super::{Bench, Cadence};

/// The machine and the build, read before anything runs: a fact that cannot be read fails the
/// run rather than printing as "0 cores" or an empty kernel.
#[derive(Debug)]
pub(super) struct Machine {
    /// "Machine: …. Agents: `…` (built with `--release`)".
    description: String,
    /// When the run started.
    date: String,
}

pub(super) fn machine(agent: &Path) -> eyre::Result<Machine> {
    let read =
        |path: &str| std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read {path}"));
    // Only some architectures name the CPU model in /proc/cpuinfo.
    let model = read("/proc/cpuinfo")?
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or_else(
            || "unknown CPU model".to_string(),
            |l| l.trim_start_matches([' ', '\t', ':']).to_string(),
        );
    let cores = std::thread::available_parallelism()
        .wrap_err("cannot count the CPU cores")?
        .get();
    let meminfo = read("/proc/meminfo")?;
    let memory_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .ok_or_else(|| eyre::eyre!("/proc/meminfo has no MemTotal line in kB"))?;
    let kernel = read("/proc/sys/kernel/osrelease")?;
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .wrap_err("cannot run date")?;
    let build = if agent.components().any(|c| c.as_os_str() == "release") {
        "built with `--release`"
    } else {
        "a debug build: figures are not representative"
    };
    Ok(Machine {
        description: format!(
            "Machine: {model}, {cores} cores, {memory_gib:.0} GiB, Linux {}. Agents: `{}` \
             ({build})",
            kernel.trim(),
            agent.display()
        ),
        date: String::from_utf8_lossy(&date.stdout).trim().to_string(),
    })
}

pub(super) fn header(
    bench: &Bench<'_>,
    machine: &Machine,
    steady: Cadence,
) -> eyre::Result<String> {
    let command: Vec<String> = std::env::args().collect();
    let bundler = bench
        .bundler
        .as_deref()
        .ok_or_else(|| eyre::eyre!("no devnet ran, so the bundler used is unknown"))?;
    let mut out = String::from("# AttestMesh benchmarks\n\n");
    writeln!(
        out,
        "Written by `make bench`, which ran `{}` on {}.\n",
        command.join(" "),
        machine.date
    )?;
    writeln!(
        out,
        "{}, each in its own network namespace with its own attestmesh0, on the devnet: anvil \
         with the EntryPoint v0.7 at its canonical address; bundler: {bundler}; the gas \
         manager and gateway emulators; dstack simulators. The agents reach anvil through a \
         counting pass-through proxy in the benchmark's process (`FaultProxy`).\n",
        machine.description
    )?;
    let mut ran_where = Vec::new();
    if bench.args.join_size > 0 {
        ran_where.push(format!("the join: {}", Cadence::BASE.label()));
    }
    ran_where.push(format!(
        "the steady state, the messages and the indexer: {}",
        steady.label()
    ));
    writeln!(
        out,
        "**Block time:** {}. Each table names the cadence of its figures (Base's is 2 s \
         blocks); {}. {} run(s) per size and cadence.\n",
        capitalised(&bench.ran_at.join(" and ")),
        ran_where.join("; "),
        bench.args.runs
    )?;
    out.push_str(
        "These are measurements of one machine, not guarantees; the tests assert no time. \
         Targets are printed beside the figures they concern: figures, not assertions.\n\n",
    );
    Ok(out)
}

/// `text` with its first letter in upper case.
fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
