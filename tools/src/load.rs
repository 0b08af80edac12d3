//! Loading policies and machines from files and command-line arguments.

use vvram_policy::{Machine, Policy, PolicyError, Tier, parse_policy, policy_from_allocation, read_policy_file};

/// Where a policy comes from.
pub enum PolicySource<'a> {
    /// A TOML file.
    File(&'a str),
    /// A DisTorch2 allocation string for compute device 0 (`--alloc`).
    Allocation(&'a str),
}

/// Why a policy could not be loaded.
pub enum LoadError {
    /// The file could not be read.
    Io(String),
    /// The policy is invalid.
    Invalid(PolicyError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(message) => write!(f, "{message}"),
            LoadError::Invalid(error) => write!(f, "{error}"),
        }
    }
}

/// Reads and validates a policy.
pub fn load_policy(source: &PolicySource) -> Result<Policy, LoadError> {
    match source {
        PolicySource::File(path) => {
            let text = read_policy_file(path).map_err(LoadError::Io)?;
            parse_policy(path, &text).map_err(LoadError::Invalid)
        }
        PolicySource::Allocation(text) => {
            policy_from_allocation("--alloc", text, 0).map_err(LoadError::Invalid)
        }
    }
}

/// The machine from `--devices`/`--host`, when given (both or neither).
pub fn machine_from_args(devices: Option<&str>, host: Option<&str>) -> Result<Option<Machine>, String> {
    match (devices, host) {
        (None, None) => Ok(None),
        (Some(devices), Some(host)) => Machine::from_args(devices, host).map(Some),
        _ => Err("--devices and --host go together: give both, e.g. --devices \"0:24GiB\" --host 64GiB".into()),
    }
}

/// A machine large enough for any fixed-size policy, used when none is known: resolving
/// against it checks everything but what the policy gives out of the real machine.
pub fn unbounded_machine(policy: &Policy) -> Machine {
    let highest = policy
        .devices
        .iter()
        .flat_map(|d| {
            std::iter::once(d.index).chain(d.donors.iter().filter_map(|x| match x.tier {
                Tier::Peer(n) => Some(n),
                _ => None,
            }))
        })
        .max()
        .unwrap_or(0);
    Machine { devices: vec![u64::MAX / 64; highest as usize + 1], host: u64::MAX / 64, ..Machine::default() }
}
