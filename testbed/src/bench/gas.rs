//! Gas per operation: not measured here but read from forge's gas snapshots (`snapshots/*.json`,
//! which `make test` checks), every entry as one row of the gas section, sorted by name.

use std::fmt::Write as _;
use std::path::Path;

use eyre::WrapErr;

pub(super) fn gas_table(snapshots: &Path) -> eyre::Result<String> {
    let mut out = String::from(
        "## Gas per operation\n\nFrom forge's gas snapshots (`snapshots/`, checked by `make test`: \
         a change that moves one fails until re-recorded).\n\n| operation | gas |\n| --- | ---: |\n",
    );
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(snapshots)
        .wrap_err_with(|| format!("cannot read {}", snapshots.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let values: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&path)?)
                .wrap_err_with(|| format!("{} is not a snapshot", path.display()))?;
        let group = path
            .file_stem()
            .ok_or_else(|| eyre::eyre!("{} has no file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        for (name, gas) in values {
            let gas = gas.as_str().ok_or_else(|| {
                eyre::eyre!("{}: {name} is not a gas figure: {gas}", path.display())
            })?;
            entries.push((format!("{group}: {name}"), gas.to_string()));
        }
    }
    entries.sort();
    for (name, gas) in entries {
        writeln!(out, "| {name} | {gas} |")?;
    }
    out.push('\n');
    Ok(out)
}
