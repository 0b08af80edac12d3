//! `vvram check`: validate policies.

use crate::load::{LoadError, PolicySource, load_policy, machine_from_args, unbounded_machine};
use clap::Args;
use std::process::ExitCode;
use vvram_policy::{needs_machine, resolve};

/// Validate policy files (exit 0 when all are valid, 2 when one is not).
///
/// Messages go to stderr as FILE:LINE:COLUMN: MESSAGE. With --devices and --host (or a
/// [machine] table in the file) donations are also checked against the machine; without
/// one, a policy in fixed sizes is still checked against itself (the streaming cache and
/// the reserve must fit in each local budget, pin_ahead in the host donations).
///
/// Example: vvram check examples/policies/*.toml
#[derive(Args)]
#[command(after_help = "Examples:\n  vvram check examples/policies/*.toml\n  vvram check my.toml --devices 0:24GiB --host 64GiB\n  vvram check --alloc \"cuda:0,20gb;cpu,*\" --json")]
pub struct CheckArgs {
    /// Policy files (TOML).
    #[arg(required_unless_present = "alloc")]
    policies: Vec<String>,
    /// Check a DisTorch2 allocation string instead, e.g. "cuda:0,2.5gb;cpu,*".
    #[arg(long)]
    alloc: Option<String>,
    /// GPUs of the machine to check against, e.g. "0:24GiB,1:24GiB".
    #[arg(long)]
    devices: Option<String>,
    /// Host RAM of the machine to check against, e.g. 64GiB.
    #[arg(long)]
    host: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `vvram check`.
pub fn run(args: &CheckArgs) -> ExitCode {
    let machine = match machine_from_args(args.devices.as_deref(), args.host.as_deref()) {
        Ok(machine) => machine,
        Err(message) => {
            eprintln!("vvram check: {message}");
            return ExitCode::from(2);
        }
    };
    let mut sources: Vec<PolicySource> = args.policies.iter().map(|p| PolicySource::File(p)).collect();
    if let Some(alloc) = &args.alloc {
        sources.push(PolicySource::Allocation(alloc));
    }
    let mut reports = Vec::new();
    let mut all_valid = true;
    for source in &sources {
        let name = match source {
            PolicySource::File(path) => path.to_string(),
            PolicySource::Allocation(_) => "--alloc".to_string(),
        };
        let result = load_policy(source).and_then(|policy| match &machine {
            Some(machine) => resolve(&policy, machine).map(|_| ()).map_err(LoadError::Invalid),
            None if needs_machine(&policy) => Ok(()),
            None => resolve(&policy, &unbounded_machine(&policy)).map(|_| ()).map_err(LoadError::Invalid),
        });
        let error = result.err();
        if let Some(error) = &error {
            eprintln!("{error}");
            all_valid = false;
        }
        reports.push(serde_json::json!({
            "policy": name,
            "valid": error.is_none(),
            "error": error.map(|e| match e {
                LoadError::Invalid(e) => serde_json::json!({
                    "line": e.location.line, "column": e.location.column, "message": e.message,
                }),
                LoadError::Io(message) => serde_json::json!({ "message": message }),
            }),
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
    }
    if all_valid { ExitCode::SUCCESS } else { ExitCode::from(2) }
}
