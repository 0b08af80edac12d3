//! vvram's policy language.
//!
//! A policy says, for each compute device, how much of its VRAM vvram may use (the
//! local budget), which peer GPUs and how much pinned host RAM back it beyond that
//! (donors, in order), what the application is told the card holds, and placement
//! rules that pick the tier order per allocation. It is written in TOML or, for a
//! device's budget and donors, as a DisTorch2 allocation string. This crate parses,
//! validates (every error names file, line and column) and resolves a policy against a
//! [`Machine`] into a [`Plan`] in bytes. It is pure: no CUDA, and no I/O but
//! [`read_policy_file`], which reads a policy file with limits.

mod distorch;
mod error;
mod file;
mod model;
mod parse;
mod resolve;
pub mod size;

pub use distorch::{Allocation, parse_allocation};
pub use error::{Location, PolicyError};
pub use file::read_policy_file;
pub use model::{Amount, DevicePolicy, Donor, HostPool, Machine, Placement, Policy, Report, Rule, Streaming, Tier};
pub use parse::{MAX_DEVICES, MAX_POLICY_BYTES, MAX_RULES, parse_policy, valid_name};
pub use resolve::{DevicePlan, Fill, Plan, default_reserve, default_rules, needs_machine, resolve};

/// Builds a policy from a DisTorch2 allocation string alone (`VVRAM_ALLOC`, `--alloc`)
/// for compute device `compute`, with default rules and settings.
pub fn policy_from_allocation(origin: &str, text: &str, compute: u32) -> Result<Policy, PolicyError> {
    let start = Location { line: 1, column: 1 };
    let allocation = parse_allocation(text, compute, origin, start)?;
    let policy = Policy {
        origin: origin.to_string(),
        machine: None,
        devices: vec![DevicePolicy {
            index: compute,
            local_budget: allocation.local_budget,
            donors: allocation.donors,
            report: Report::Virtual,
            at: start,
            budget_at: allocation.budget_at,
        }],
        rules: Vec::new(),
        host_pool: HostPool { pin_ahead: None, at: start },
        streaming: Streaming::default(),
        placement: Placement::default(),
    };
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The string form and the TOML form of the same allocation give the same structure.
    fn same_devices(alloc: &str, toml_device: &str) {
        let from_string = policy_from_allocation("a", alloc, 0).unwrap();
        let from_toml = parse_policy("t", &format!("[[device]]\nindex = 0\n{toml_device}")).unwrap();
        let strip = |p: &Policy| -> Vec<(u32, Amount, Vec<(Tier, Amount)>, Report)> {
            p.devices
                .iter()
                .map(|d| (d.index, d.local_budget, d.donors.iter().map(|x| (x.tier, x.capacity)).collect(), d.report))
                .collect()
        };
        assert_eq!(strip(&from_string), strip(&from_toml), "{alloc}");
        let machine = Machine { devices: vec![24 << 30, 24 << 30], host: 64 << 30, ..Machine::default() };
        let plan = |p: &Policy| {
            let mut plan = resolve(p, &machine).unwrap();
            plan.devices.iter_mut().for_each(|d| d.rules.iter_mut().for_each(|r| r.at = Location::default()));
            plan
        };
        assert_eq!(plan(&from_string), plan(&from_toml), "{alloc}");
    }

    #[test]
    fn distorch_strings_equal_their_toml_forms() {
        same_devices(
            "cuda:0,2.5gb;cpu,*",
            "local_budget = \"2.5GiB\"\ndonors = [{ tier = \"host\", capacity = \"*\" }]\n",
        );
        same_devices(
            "cuda:0,8gb;cuda:1,10gb",
            "local_budget = \"8GiB\"\ndonors = [{ tier = \"peer:1\", capacity = \"10GiB\" }, { tier = \"host\", capacity = \"*\" }]\n",
        );
        same_devices(
            "cuda:0,8%;cuda:1,8%;cpu,4%",
            "local_budget = { share = 8 }\ndonors = [{ tier = \"peer:1\", capacity = { share = 8 } }, { tier = \"host\", capacity = { share = 4 } }]\n",
        );
        same_devices(
            "cuda:0,0.1;cpu,0.5",
            "local_budget = { fraction = 0.1 }\ndonors = [{ tier = \"host\", capacity = { fraction = 0.5 } }]\n",
        );
        same_devices(
            "cuda:0,0.1;cpu,0.5",
            "alloc = \"cuda:0,0.1;cpu,0.5\"\n",
        );
    }
}
