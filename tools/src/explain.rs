//! `vvram explain`: the resolved plan of a policy as a readable table.

use crate::load::{PolicySource, load_policy, machine_from_args, unbounded_machine};
use clap::Args;
use std::fmt::Write;
use std::process::ExitCode;
use vvram_policy::size::{MIB, format_size, parse_size};
use vvram_policy::{DevicePlan, Plan, Policy, Tier, needs_machine, resolve};

/// Size of the tensors a model is simulated as when showing where it lands.
const TENSOR_SIZE: u64 = 64 * MIB;

/// Show the plan a policy resolves to: per device the budget of each tier, the size
/// PyTorch will be told the card holds, the rule table, and where a model of a given
/// size would land.
#[derive(Args)]
#[command(after_help = "Examples:\n  vvram explain examples/policies/flux-dev-24gb.toml --model-size 24GiB --devices 0:24GiB --host 64GiB\n  vvram explain --alloc \"cuda:0,0.5;cpu,0.5\" --devices 0:12GiB --host 32GiB")]
pub struct ExplainArgs {
    /// Policy file (TOML).
    #[arg(required_unless_present = "alloc")]
    policy: Option<String>,
    /// Explain a DisTorch2 allocation string instead.
    #[arg(long, conflicts_with = "policy")]
    alloc: Option<String>,
    /// Size of a model to place, e.g. 24GiB.
    #[arg(long)]
    model_size: Option<String>,
    /// GPUs of the machine, e.g. "0:24GiB,1:24GiB" (default: the policy's [machine]).
    #[arg(long)]
    devices: Option<String>,
    /// Host RAM of the machine, e.g. 64GiB.
    #[arg(long)]
    host: Option<String>,
}

/// Runs `vvram explain`.
pub fn run(args: &ExplainArgs) -> ExitCode {
    let usage = |message: String| {
        eprintln!("vvram explain: {message}");
        ExitCode::from(2)
    };
    let model_size = match args.model_size.as_deref().map(parse_size).transpose() {
        Ok(size) => size,
        Err(e) => return usage(format!("--model-size: {e}")),
    };
    let given_machine = match machine_from_args(args.devices.as_deref(), args.host.as_deref()) {
        Ok(machine) => machine,
        Err(message) => return usage(message),
    };
    let source = match (&args.policy, &args.alloc) {
        (Some(path), _) => PolicySource::File(path),
        (None, Some(alloc)) => PolicySource::Allocation(alloc),
        (None, None) => return usage("give a policy file or --alloc".into()),
    };
    let policy = match load_policy(&source) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let (machine, machine_known) = match given_machine.or_else(|| policy.machine.clone()) {
        Some(machine) => (machine, true),
        None if needs_machine(&policy) => {
            return usage(format!(
                "{} gives amounts relative to the machine (`*`, fractions or shares): say which machine with --devices and --host, e.g. --devices 0:24GiB --host 64GiB",
                policy.origin
            ));
        }
        None => (unbounded_machine(&policy), false),
    };
    match resolve(&policy, &machine) {
        Ok(plan) => {
            print!("{}", render(&policy, &plan, machine_known, model_size));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

/// The plan as text.
pub fn render(policy: &Policy, plan: &Plan, machine_known: bool, model_size: Option<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Policy {}", policy.origin);
    if machine_known {
        let gpus: Vec<String> = plan
            .machine
            .devices
            .iter()
            .enumerate()
            .map(|(i, b)| format!("GPU {i} {}", format_size(*b)))
            .collect();
        let _ = writeln!(out, "Machine: {}; host {}", gpus.join(", "), format_size(plan.machine.host));
    } else {
        let _ = writeln!(out, "Machine: not given (--devices/--host): donations were not checked against it");
    }
    for device in &plan.devices {
        let _ = writeln!(out, "\nDevice {}", device.index);
        let _ = writeln!(out, "  {:<10} {:>12}", "tier", "budget");
        for (tier, bytes) in device.tiers() {
            let _ = writeln!(out, "  {:<10} {:>12}", tier.to_string(), format_size(bytes));
        }
        let virtual_total: u64 = device.tiers().map(|(_, b)| b).sum();
        let _ = writeln!(out, "  {:<10} {:>12}", "total", format_size(virtual_total));
        let _ = writeln!(
            out,
            "  PyTorch is told the card holds {}{}",
            format_size(device.reported_total),
            if device.reported_total == virtual_total { " (report = virtual)" } else { " (report = fixed size)" }
        );
        render_placement(&mut out, policy, plan, device);
        render_rules(&mut out, device);
        if let Some(model) = model_size {
            let fill = device.fill(model, TENSOR_SIZE, Some("load"), None);
            let _ = writeln!(
                out,
                "\n  A {} model loaded while phase = load, as {} tensors, lands{}:",
                format_size(model),
                format_size(TENSOR_SIZE),
                if device.is_automatic(TENSOR_SIZE, Some("load"), None) { " (at load: the reserve stays free while donors have room)" } else { "" }
            );
            for (tier, bytes) in &fill.per_tier {
                let _ = writeln!(
                    out,
                    "    {:<10} {:>12}  {:>5.1}%",
                    tier.to_string(),
                    format_size(*bytes),
                    *bytes as f64 * 100.0 / model as f64
                );
            }
            if fill.unplaced > 0 {
                let _ = writeln!(
                    out,
                    "    {:<10} {:>12}  does not fit: the application gets out-of-memory",
                    "no room",
                    format_size(fill.unplaced)
                );
            }
        }
    }
    let _ = writeln!(out, "\nHost pool: {} pinned ahead of need", format_size(plan.host_pool));
    let s = &plan.streaming;
    if s.enabled {
        let _ = writeln!(
            out,
            "Streaming: on; local cache {}, prefetch depth {}, weights {}",
            format_size(s.local_cache),
            s.prefetch_depth,
            if s.weights_read_only { "read-only" } else { "written back on eviction" }
        );
    } else {
        let _ = writeln!(out, "Streaming: off (donor-tier data is read across the link where it lies)");
    }
    out
}

/// Whether automatic placement is on, and the device's reserve with where it comes from.
fn render_placement(out: &mut String, policy: &Policy, plan: &Plan, device: &DevicePlan) {
    if !device.automatic {
        let why = if plan.automatic {
            "streaming is off: automatic placement needs the migration engine to tell weights from activations"
        } else {
            "[placement] automatic = false"
        };
        let _ = writeln!(out, "\n  Automatic placement: off ({why}) — the rules alone place every allocation; nothing is moved");
        return;
    }
    let _ = writeln!(out, "\n  Automatic placement: on — what no explicit rule places, vvram places by use and moves between tiers");
    let origin = match policy.placement.reserve {
        Some(_) => format!("set by `reserve` at line {}", policy.placement.at.line),
        None if plan.streaming.enabled => format!(
            "default: a quarter of the local budget {} less the streaming cache {}, rounded down to 2 MiB",
            format_size(device.local_budget),
            format_size(plan.streaming.local_cache)
        ),
        None => format!("default: a quarter of the local budget {}, rounded down to 2 MiB", format_size(device.local_budget)),
    };
    let _ = writeln!(out, "  Reserve: {} of the card kept free while the model loads ({origin})", format_size(device.reserve));
}

/// The rule table, each rule marked as fixing placement or leaving it to vvram.
fn render_rules(out: &mut String, device: &DevicePlan) {
    let leftover = if device.automatic { "is placed by use" } else { "uses every tier in order" };
    let _ = writeln!(
        out,
        "\n  Rules{} — first match wins; an allocation no rule matches {leftover}:",
        if device.default_rules { " (vvram's defaults: the policy gives none)" } else { "" }
    );
    let name_width = device.rules.iter().map(|r| r.name.as_deref().unwrap_or("-").chars().count()).max().unwrap_or(0).max(4);
    let when_width = device.rules.iter().map(|r| r.condition().chars().count()).max().unwrap_or(0).max(4);
    let tiers: Vec<String> = device.rules.iter().map(|r| r.tiers.iter().map(Tier::to_string).collect::<Vec<_>>().join(" → ")).collect();
    let tiers_width = tiers.iter().map(|t| t.chars().count()).max().unwrap_or(0).max(5);
    let _ = writeln!(out, "  {:<3} {:<name_width$}  {:<when_width$}  {:<tiers_width$}  placement", "#", "name", "when", "tiers");
    for (number, (rule, tiers)) in device.rules.iter().zip(&tiers).enumerate() {
        let placement = match (device.automatic, device.default_rules) {
            (true, true) => "by use (tiers: the order tried at load)",
            (true, false) => "fixed by this rule, never moved",
            (false, _) => "fixed by this rule",
        };
        let _ = writeln!(
            out,
            "  {:<3} {:<name_width$}  {:<when_width$}  {:<tiers_width$}  {placement}",
            number + 1,
            rule.name.as_deref().unwrap_or("-"),
            rule.condition(),
            tiers
        );
    }
}
