//! Resolving a policy against a machine: every amount becomes bytes, donations are
//! checked against what each GPU and the host hold, and each device gets its rules.

use crate::error::{Location, PolicyError};
use crate::model::*;
use crate::size::{GIB, MIB, format_size};

/// A policy resolved against a machine: everything in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The machine it was resolved for.
    pub machine: Machine,
    /// One plan per compute device in the policy.
    pub devices: Vec<DevicePlan>,
    /// Host memory to pin ahead of need.
    pub host_pool: u64,
    /// Streaming settings.
    pub streaming: Streaming,
    /// Whether vvram places by use what no explicit rule places (`[placement] automatic`).
    pub automatic: bool,
}

impl Plan {
    /// The plan of compute device `index`, if the policy configures it.
    pub fn device(&self, index: u32) -> Option<&DevicePlan> {
        self.devices.iter().find(|d| d.index == index)
    }
}

/// One compute device's tiers and rules, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    /// CUDA device index.
    pub index: u32,
    /// Physical VRAM vvram may use on the device.
    pub local_budget: u64,
    /// Donors in order, with their capacity.
    pub donors: Vec<(Tier, u64)>,
    /// What `cuMemGetInfo` / `cuDeviceTotalMem` report as the total.
    pub reported_total: u64,
    /// Placement rules for this device, first match wins.
    pub rules: Vec<Rule>,
    /// Whether `rules` are vvram's defaults (the policy gave none).
    pub default_rules: bool,
    /// Local VRAM kept free while the model loads, for what a step uses many times.
    pub reserve: u64,
    /// Whether automatic placement is in force: `[placement] automatic` and streaming on
    /// (the migration engine's view of the launches is what tells weights from
    /// activations). The same for every device of a plan.
    pub automatic: bool,
}

/// Where bytes of a simulated load landed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fill {
    /// Bytes per tier, in the order tiers were first used.
    pub per_tier: Vec<(Tier, u64)>,
    /// Bytes that found no room: the application would see out-of-memory.
    pub unplaced: u64,
}

impl DevicePlan {
    /// Every tier of the device with its capacity: local first, then donors in order.
    pub fn tiers(&self) -> impl Iterator<Item = (Tier, u64)> + '_ {
        std::iter::once((Tier::Local, self.local_budget)).chain(self.donors.iter().copied())
    }

    /// Capacity of a tier (0 when the device does not have it).
    pub fn capacity(&self, tier: Tier) -> u64 {
        self.tiers().find(|(t, _)| *t == tier).map_or(0, |(_, c)| c)
    }

    /// The tier order for an allocation: the first matching rule's tiers, or every tier
    /// in order when no rule matches.
    pub fn placement(&self, size: u64, phase: Option<&str>, tag: Option<&str>) -> Vec<Tier> {
        self.rules
            .iter()
            .find(|r| r.matches(self.index, size, phase, tag))
            .map(|r| r.tiers.clone())
            .unwrap_or_else(|| self.tiers().map(|(t, _)| t).collect())
    }

    /// Whether vvram may place (and later move) this allocation by use: automatic
    /// placement is on and no explicit rule claims it. vvram's default rules claim
    /// nothing; an allocation an explicit rule matches is placed by that rule and never
    /// moved.
    pub fn is_automatic(&self, size: u64, phase: Option<&str>, tag: Option<&str>) -> bool {
        self.automatic && (self.default_rules || !self.rules.iter().any(|r| r.matches(self.index, size, phase, tag)))
    }

    /// Simulates loading `total` bytes as tensors of `tensor` bytes under `phase`:
    /// each tensor goes to the first tier of its rule with room left. A tensor left to
    /// automatic placement goes to the card only while the reserve stays free, and into
    /// the reserve only when every donor is full. Equal tensors are placed tier by tier
    /// in bulk, so the work does not grow with `total`.
    pub fn fill(&self, total: u64, tensor: u64, phase: Option<&str>, tag: Option<&str>) -> Fill {
        let mut fill = Fill::default();
        let mut used: Vec<(Tier, u64)> = self.tiers().map(|(t, _)| (t, 0)).collect();
        let tensor = tensor.max(1);
        for (size, count) in [(tensor, total / tensor), (total % tensor, 1)] {
            if size == 0 || count == 0 {
                continue;
            }
            let order = self.placement(size, phase, tag);
            let mut steps: Vec<(Tier, u64)> = order.iter().map(|&t| (t, self.capacity(t))).collect();
            if self.is_automatic(size, phase, tag) && order.contains(&Tier::Local) {
                steps.iter_mut().filter(|(t, _)| *t == Tier::Local).for_each(|(_, c)| *c = c.saturating_sub(self.reserve));
                steps.push((Tier::Local, self.local_budget));
            }
            let mut left = count;
            for (tier, capacity) in steps {
                let Some(slot) = used.iter_mut().find(|(t, _)| *t == tier) else { continue };
                let placed = (capacity.saturating_sub(slot.1) / size).min(left);
                if placed == 0 {
                    continue;
                }
                slot.1 += placed * size;
                left -= placed;
                match fill.per_tier.iter_mut().find(|(t, _)| *t == tier) {
                    Some(entry) => entry.1 += placed * size,
                    None => fill.per_tier.push((tier, placed * size)),
                }
            }
            fill.unplaced += left * size;
        }
        fill
    }
}

/// The default rules when a policy gives none. Without streaming, everything goes to
/// the compute device first and spills to donors in order (reading weights across the
/// link is 50–100× slower for big GEMMs). With streaming, what is allocated while the
/// phase is `load` (weights) goes to donors first and is staged in before use.
pub fn default_rules(device: &DevicePlan, streaming: &Streaming) -> Vec<Rule> {
    let donors: Vec<Tier> = device.donors.iter().map(|(t, _)| *t).collect();
    let local_first: Vec<Tier> = std::iter::once(Tier::Local).chain(donors.iter().copied()).collect();
    let rule = |name: &str, phase: Option<&str>, tiers: Vec<Tier>| Rule {
        name: Some(name.to_string()),
        device: None,
        min_size: 0,
        max_size: None,
        phase: phase.map(str::to_string),
        tag: None,
        tiers,
        at: Location::default(),
    };
    if streaming.enabled && !donors.is_empty() {
        let donors_first = donors.iter().copied().chain(std::iter::once(Tier::Local)).collect();
        vec![
            rule("weights to donors, streamed in", Some("load"), donors_first),
            rule("everything else local first", None, local_first),
        ]
    } else {
        vec![rule("local first, then donors", None, local_first)]
    }
}

/// Granularity of the default reserve.
const RESERVE_ALIGNMENT: u64 = 2 * MIB;

/// The reserve when the policy gives none: a quarter of the local budget left after the
/// streaming cache (when streaming is on), rounded down to a multiple of 2 MiB.
pub fn default_reserve(local_budget: u64, streaming: &Streaming) -> u64 {
    let room = if streaming.enabled { local_budget.saturating_sub(streaming.local_cache) } else { local_budget };
    room / 4 / RESERVE_ALIGNMENT * RESERVE_ALIGNMENT
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pool {
    Gpu(u32),
    Host,
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pool::Gpu(n) => write!(f, "GPU {n}"),
            Pool::Host => write!(f, "the host"),
        }
    }
}

struct Claim {
    pool: Pool,
    is_local: bool,
    amount: Amount,
    at: Location,
    what: String,
    bytes: u64,
}

/// Resolves `policy` against `machine`.
pub fn resolve(policy: &Policy, machine: &Machine) -> Result<Plan, PolicyError> {
    let error = |at: Location, message: String| PolicyError::new(&policy.origin, at, message);
    if machine.devices.len() > crate::MAX_DEVICES {
        return Err(error(
            Location { line: 1, column: 1 },
            format!("the machine lists {} GPUs; at most {} are supported", machine.devices.len(), crate::MAX_DEVICES),
        ));
    }
    let gpu_count = machine.devices.len() as u32;
    let pool_total = |pool: Pool| match pool {
        Pool::Gpu(n) => machine.devices[n as usize],
        Pool::Host => machine.host,
    };
    let mut claims: Vec<Claim> = Vec::new();
    for device in &policy.devices {
        if device.index >= gpu_count {
            return Err(error(
                device.at,
                format!(
                    "device {} does not exist: this machine has {gpu_count} GPU(s), numbered 0 to {}",
                    device.index,
                    gpu_count - 1
                ),
            ));
        }
        claims.push(Claim {
            pool: Pool::Gpu(device.index),
            is_local: true,
            amount: device.local_budget,
            at: device.budget_at,
            what: format!("device {} local budget", device.index),
            bytes: 0,
        });
        for donor in &device.donors {
            let pool = match donor.tier {
                Tier::Peer(n) if n >= gpu_count => {
                    return Err(error(
                        donor.at,
                        format!(
                            "peer:{n} is out of range: this machine has {gpu_count} GPU(s), numbered 0 to {}",
                            gpu_count - 1
                        ),
                    ));
                }
                Tier::Peer(n) if !machine.reaches(device.index, n) => {
                    return Err(error(
                        donor.at,
                        format!(
                            "peer:{n} cannot donate to GPU {}: the driver says GPU {} cannot access GPU {n}'s memory \
                             (cuDeviceCanAccessPeer, no peer link); remove this donor or use a GPU it reaches",
                            device.index, device.index
                        ),
                    ));
                }
                Tier::Peer(n) => Pool::Gpu(n),
                _ => {
                    if let Some(why) = &machine.host_unusable {
                        return Err(error(donor.at, format!("the host tier cannot be used on this machine: {why}")));
                    }
                    Pool::Host
                }
            };
            if matches!(donor.capacity, Amount::Share(_)) && !matches!(device.local_budget, Amount::Share(_)) {
                return Err(error(
                    donor.at,
                    "a share (ratio mode) is relative to the local budget's share: give `local_budget` as a share too".into(),
                ));
            }
            claims.push(Claim {
                pool,
                is_local: false,
                amount: donor.capacity,
                at: donor.at,
                what: format!("device {} donor {}", device.index, donor.tier),
                bytes: 0,
            });
        }
    }

    // Fixed amounts first, then `*` (and local shares, which take the rest of their card)
    // split evenly among the claims on the same pool, then donor shares.
    let takes_rest = |c: &Claim| c.amount == Amount::Rest || (c.is_local && matches!(c.amount, Amount::Share(_)));
    for claim in claims.iter_mut() {
        claim.bytes = match claim.amount {
            Amount::Bytes(b) => b,
            Amount::Fraction(f) => (pool_total(claim.pool) as f64 * f) as u64,
            _ => 0,
        };
    }
    let pools: Vec<Pool> = (0..gpu_count).map(Pool::Gpu).chain([Pool::Host]).collect();
    for pool in &pools {
        let fixed: u64 = claims.iter().filter(|c| c.pool == *pool && !takes_rest(c)).fold(0u64, |sum, c| sum.saturating_add(c.bytes));
        let rest_count = claims.iter().filter(|c| c.pool == *pool && takes_rest(c)).count() as u64;
        if rest_count == 0 {
            continue;
        }
        let left = pool_total(*pool).saturating_sub(fixed);
        for claim in claims.iter_mut().filter(|c| c.pool == *pool && takes_rest(c)) {
            if left / rest_count == 0 {
                return Err(error(
                    claim.at,
                    format!("{}: nothing is left of {} for `*` ({} of {} already given elsewhere)", claim.what, pool, format_size(fixed), format_size(pool_total(*pool))),
                ));
            }
            claim.bytes = left / rest_count;
        }
    }
    let mut local_share = (0.0, 0u64);
    for claim in claims.iter_mut() {
        match claim.amount {
            Amount::Share(s) if claim.is_local => local_share = (s, claim.bytes),
            Amount::Share(s) => claim.bytes = (local_share.1 as f64 * s / local_share.0) as u64,
            _ => {}
        }
    }

    for pool in &pools {
        let total = pool_total(*pool);
        let mut sum = 0u64;
        let mut parts = Vec::new();
        for claim in claims.iter().filter(|c| c.pool == *pool) {
            if claim.bytes == 0 {
                return Err(error(
                    claim.at,
                    format!("{}: `{}` comes to 0 bytes of {} ({}); give an amount that leaves something", claim.what, claim.amount, pool, format_size(total)),
                ));
            }
            let before = sum;
            let added = sum.checked_add(claim.bytes);
            sum = added.unwrap_or(u64::MAX);
            parts.push(format!("{} {}", claim.what, format_size(claim.bytes)));
            if added.is_none_or(|sum| sum > total) {
                return Err(error(
                    claim.at,
                    format!(
                        "more than the machine has: {pool} holds {}, but the policy gives out {} ({}); lower this amount to at most {}",
                        format_size(total),
                        added.map_or_else(|| "more than 16 EiB".to_string(), format_size),
                        parts.join(", "),
                        format_size(total - before)
                    ),
                ));
            }
        }
    }

    let mut claim_bytes = claims.iter().map(|c| c.bytes);
    let mut devices = Vec::new();
    for device in &policy.devices {
        let local_budget = claim_bytes.next().unwrap_or(0);
        let donors: Vec<(Tier, u64)> =
            device.donors.iter().map(|d| (d.tier, claim_bytes.next().unwrap_or(0))).collect();
        let reported_total = match device.report {
            Report::Virtual => donors.iter().try_fold(local_budget, |sum, (_, b)| sum.checked_add(*b)).ok_or_else(|| {
                error(device.budget_at, format!("device {}: its budget and donations add up to more than 16 EiB", device.index))
            })?,
            Report::Fixed(b) => b,
        };
        if policy.streaming.enabled && policy.streaming.local_cache >= local_budget {
            return Err(error(
                device.budget_at,
                format!(
                    "device {}'s local budget ({}) cannot hold the streaming local_cache ({}) and leave room to compute",
                    device.index,
                    format_size(local_budget),
                    format_size(policy.streaming.local_cache)
                ),
            ));
        }
        let cache = if policy.streaming.enabled { policy.streaming.local_cache } else { 0 };
        let room = local_budget - cache;
        let reserve = match policy.placement.reserve {
            None => default_reserve(local_budget, &policy.streaming),
            Some(reserve) if reserve > room => {
                let what = if policy.streaming.enabled {
                    format!(
                        "can keep free: its local budget ({}) less the streaming local_cache ({}) leaves {}",
                        format_size(local_budget),
                        format_size(cache),
                        format_size(room)
                    )
                } else {
                    format!("has: its local budget is {}", format_size(local_budget))
                };
                return Err(error(
                    policy.placement.at,
                    format!(
                        "`reserve` ({}) is more than device {} {what}; expected at most {}",
                        format_size(reserve),
                        device.index,
                        format_size(room)
                    ),
                ));
            }
            Some(reserve) => reserve,
        };
        let mut plan = DevicePlan {
            index: device.index,
            local_budget,
            donors,
            reported_total,
            rules: Vec::new(),
            default_rules: policy.rules.is_empty(),
            reserve,
            automatic: policy.placement.automatic && policy.streaming.enabled,
        };
        plan.rules = if policy.rules.is_empty() {
            default_rules(&plan, &policy.streaming)
        } else {
            policy.rules.iter().filter(|r| r.device.is_none_or(|d| d == device.index)).cloned().collect()
        };
        devices.push(plan);
    }

    let host_donated = devices.iter().flat_map(|d| &d.donors).filter(|(t, _)| *t == Tier::Host).fold(0u64, |sum, (_, b)| sum.saturating_add(*b));
    let host_pool = match policy.host_pool.pin_ahead {
        None => host_donated.min(2 * GIB),
        Some(pin) if pin > host_donated => {
            return Err(error(
                policy.host_pool.at,
                format!("`pin_ahead` ({}) is more than the host donates ({})", format_size(pin), format_size(host_donated)),
            ));
        }
        Some(pin) => pin,
    };
    Ok(Plan { machine: machine.clone(), devices, host_pool, streaming: policy.streaming, automatic: policy.placement.automatic })
}

/// Whether every amount of the policy is a fixed size, so it resolves without knowing
/// the machine's memory.
pub fn needs_machine(policy: &Policy) -> bool {
    policy.devices.iter().any(|d| {
        !matches!(d.local_budget, Amount::Bytes(_))
            || d.donors.iter().any(|x| !matches!(x.capacity, Amount::Bytes(_)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_policy;
    use crate::size::MIB;

    #[test]
    fn peers_must_reach_and_the_host_tier_must_work() {
        let policy = parse_policy("p.toml", "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"peer:1\", capacity = \"8GiB\" }, { tier = \"host\", capacity = \"8GiB\" }]\n").unwrap();
        let mut isolated = machine();
        isolated.peers = vec![vec![false, false], vec![false, false]];
        let error = resolve(&policy, &isolated).unwrap_err().to_string();
        assert!(error.contains("p.toml:4") && error.contains("peer:1 cannot donate to GPU 0") && error.contains("cuDeviceCanAccessPeer"), "{error}");
        isolated.peers = vec![vec![false, true], vec![true, false]];
        isolated.host_unusable = Some("the driver has no host VMM support".into());
        let error = resolve(&policy, &isolated).unwrap_err().to_string();
        assert!(error.contains("the host tier cannot be used on this machine: the driver has no host VMM support"), "{error}");
        isolated.host_unusable = None;
        assert!(resolve(&policy, &isolated).is_ok());
    }

    fn machine() -> Machine {
        Machine { devices: vec![24 * GIB, 24 * GIB], host: 64 * GIB, ..Machine::default() }
    }

    fn plan(text: &str) -> Result<Plan, PolicyError> {
        resolve(&parse_policy("p.toml", text).unwrap(), &machine())
    }

    #[test]
    fn rest_takes_what_is_left() {
        let p = plan("[[device]]\nindex = 0\nalloc = \"cuda:0,20gb;cuda:1,*;cpu,16gb\"\n").unwrap();
        let d = p.device(0).unwrap();
        assert_eq!(d.local_budget, 20 * GIB);
        assert_eq!(d.donors, vec![(Tier::Peer(1), 24 * GIB), (Tier::Host, 16 * GIB)]);
        assert_eq!(d.reported_total, 60 * GIB);
        assert_eq!(p.host_pool, 2 * GIB);
    }

    #[test]
    fn ratio_mode_keeps_the_proportions() {
        let p = plan("[[device]]\nindex = 0\nalloc = \"cuda:0,8%;cuda:1,8%;cpu,4%\"\n").unwrap();
        let d = p.device(0).unwrap();
        assert_eq!(d.local_budget, 24 * GIB);
        assert_eq!(d.donors, vec![(Tier::Peer(1), 24 * GIB), (Tier::Host, 12 * GIB)]);
    }

    #[test]
    fn fraction_mode_is_of_each_devices_memory() {
        let p = plan("[[device]]\nindex = 0\nalloc = \"cuda:0,0.5;cpu,0.25\"\n").unwrap();
        let d = p.device(0).unwrap();
        assert_eq!((d.local_budget, d.donors[0].1), (12 * GIB, 16 * GIB));
    }

    #[test]
    fn donations_beyond_the_machine_are_refused() {
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"20GiB\"\ndonors = [{ tier = \"host\", capacity = \"80GiB\" }]\n").unwrap_err();
        assert_eq!(e.location, Location { line: 4, column: 20 });
        assert!(e.message.contains("the host holds 64 GiB") && e.message.contains("at most 64 GiB"), "{e}");
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"30GiB\"\n").unwrap_err();
        assert!(e.message.contains("GPU 0 holds 24 GiB"), "{e}");
        // Two compute devices each lending to the other cannot oversubscribe either card.
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"20GiB\"\n[[device]]\nindex = 1\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"peer:0\", capacity = \"8GiB\" }]\n").unwrap_err();
        assert_eq!(e.location, Location { line: 7, column: 20 });
        assert!(e.message.contains("lower this amount to at most 4 GiB"), "{e}");
    }

    #[test]
    fn exabyte_machines_and_budgets_do_not_overflow() {
        let huge = Machine { devices: vec![u64::MAX, u64::MAX], host: u64::MAX, ..Machine::default() };
        let policy = parse_policy("p.toml", "[[device]]\nindex = 0\nlocal_budget = \"*\"\ndonors = [{ tier = \"peer:1\", capacity = \"*\" }, { tier = \"host\", capacity = \"*\" }]\n").unwrap();
        let e = resolve(&policy, &huge).unwrap_err();
        assert!(e.message.contains("more than 16 EiB"), "{e}");
        let policy = crate::policy_from_allocation("--alloc", "cuda:0,15728640TiB;cuda:1,15728640TiB;cpu,15728640TiB", 0).unwrap();
        assert!(resolve(&policy, &huge).unwrap_err().message.contains("more than 16 EiB"));
        let policy = parse_policy("p.toml", "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"15728640TiB\" }]\n[[device]]\nindex = 1\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"15728640TiB\" }]\n").unwrap();
        let e = resolve(&policy, &huge).unwrap_err();
        assert!(e.message.contains("more than the machine has"), "{e}");
        let fixed = parse_policy("p.toml", "[[device]]\nindex = 0\nlocal_budget = \"15728640TiB\"\ndonors = [{ tier = \"host\", capacity = \"15728640TiB\" }]\nreport = \"1GiB\"\n").unwrap();
        assert_eq!(resolve(&fixed, &huge).unwrap().device(0).unwrap().reported_total, GIB);
    }

    #[test]
    fn amounts_that_come_to_zero_bytes_are_refused() {
        let e = plan("[[device]]\nindex = 0\nlocal_budget = { fraction = 1e-300 }\n").unwrap_err();
        assert!(e.message.contains("comes to 0 bytes"), "{e}");
        assert_eq!(e.location, Location { line: 3, column: 16 });
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = { fraction = 1e-20 } }]\n").unwrap_err();
        assert!(e.message.contains("comes to 0 bytes"), "{e}");
    }

    #[test]
    fn filling_an_enormous_model_takes_no_time() {
        let p = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"32GiB\" }]\n").unwrap();
        let d = p.device(0).unwrap();
        let fill = d.fill(u64::MAX, 64 * MIB, Some("load"), None);
        assert_eq!(fill.per_tier, vec![(Tier::Local, 8 * GIB), (Tier::Host, 32 * GIB)]);
        assert_eq!(fill.unplaced, u64::MAX - 40 * GIB);
        // A last, smaller tensor still finds the room a full one could not.
        let fill = d.fill(8 * GIB - MIB + 32 * GIB + MIB, 64 * MIB, None, None);
        assert_eq!((fill.per_tier.clone(), fill.unplaced), (vec![(Tier::Local, 8 * GIB), (Tier::Host, 32 * GIB)], 0), "{fill:?}");
    }

    #[test]
    fn machines_with_absurd_gpu_counts_are_refused() {
        let machine = Machine { devices: vec![GIB; 100_000], host: GIB, ..Machine::default() };
        let policy = parse_policy("p.toml", "[[device]]\nindex = 0\nlocal_budget = \"*\"\n").unwrap();
        assert!(resolve(&policy, &machine).unwrap_err().message.contains("at most 256"));
    }

    #[test]
    fn indices_beyond_the_machine_are_refused() {
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"peer:2\", capacity = \"8GiB\" }]\n").unwrap_err();
        assert_eq!(e.location, Location { line: 4, column: 20 });
        assert!(e.message.contains("out of range"), "{e}");
        let e = plan("[[device]]\nindex = 5\nlocal_budget = \"8GiB\"\n").unwrap_err();
        assert_eq!(e.location, Location { line: 2, column: 9 });
    }

    #[test]
    fn machine_in_the_file_is_checked_at_parse_time() {
        let e = parse_policy("p.toml", "[machine]\ndevices = [\"12GiB\"]\nhost = \"32GiB\"\n[[device]]\nindex = 0\nlocal_budget = \"16GiB\"\n").unwrap_err();
        assert_eq!(e.location, Location { line: 6, column: 16 });
    }

    #[test]
    fn pin_ahead_and_local_cache_must_fit() {
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"4GiB\" }]\n[host_pool]\npin_ahead = \"6GiB\"\n").unwrap_err();
        assert_eq!(e.location, Location { line: 6, column: 13 });
        let e = plan("[[device]]\nindex = 0\nlocal_budget = \"2GiB\"\n[streaming]\nenabled = true\n").unwrap_err();
        assert!(e.message.contains("local_cache"), "{e}");
    }

    #[test]
    fn default_rules_and_fill() {
        let text = "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"32GiB\" }]\n";
        // Without streaming there is no automatic placement: the card fills first.
        let p = plan(text).unwrap();
        let d = p.device(0).unwrap();
        assert!(d.default_rules && !d.automatic);
        assert_eq!(d.placement(MIB, Some("load"), None), vec![Tier::Local, Tier::Host]);
        let fill = d.fill(24 * GIB, 64 * MIB, Some("load"), None);
        assert_eq!(fill.per_tier, vec![(Tier::Local, 8 * GIB), (Tier::Host, 16 * GIB)]);

        // With streaming, automatic placement keeps the 1.5 GiB reserve free while donors
        // have room.
        let streamed = format!("{text}[streaming]\nenabled = true\n");
        let p = plan(&streamed).unwrap();
        let d = p.device(0).unwrap();
        assert_eq!(d.placement(MIB, Some("load"), None), vec![Tier::Host, Tier::Local]);
        assert_eq!(d.placement(MIB, None, None), vec![Tier::Local, Tier::Host]);
        let fill = d.fill(24 * GIB, 64 * MIB, None, None);
        assert_eq!(fill.per_tier, vec![(Tier::Local, 6656 * MIB), (Tier::Host, 17 * GIB + 512 * MIB)]);
        assert_eq!(fill.unplaced, 0);
        let fill = d.fill(39 * GIB, 64 * MIB, None, None);
        assert_eq!(fill.per_tier, vec![(Tier::Local, 7 * GIB), (Tier::Host, 32 * GIB)]);
        assert_eq!(d.fill(48 * GIB, 64 * MIB, None, None).unplaced, 8 * GIB);
        // Turned off, the card fills first.
        let off = plan(&format!("{streamed}[placement]\nautomatic = false\n")).unwrap();
        let fill = off.device(0).unwrap().fill(24 * GIB, 64 * MIB, None, None);
        assert_eq!(fill.per_tier, vec![(Tier::Local, 8 * GIB), (Tier::Host, 16 * GIB)]);
        // An explicit rule places exactly: its tensors may fill the reserve.
        let pinned = plan(&format!("{streamed}[[rule]]\nmin_size = \"1MiB\"\ntiers = [\"local\", \"host\"]\n")).unwrap();
        let fill = pinned.device(0).unwrap().fill(24 * GIB, 64 * MIB, None, None);
        assert_eq!(fill.per_tier, vec![(Tier::Local, 8 * GIB), (Tier::Host, 16 * GIB)]);
    }

    #[test]
    fn explicit_rules_pick_tiers() {
        let p = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"32GiB\" }]\n[[rule]]\nmax_size = \"1MiB\"\ntiers = [\"local\"]\n[[rule]]\ntag = \"weights\"\ntiers = [\"host\", \"local\"]\n").unwrap();
        let d = p.device(0).unwrap();
        assert_eq!(d.placement(4096, None, Some("weights")), vec![Tier::Local]);
        assert_eq!(d.placement(8 * MIB, None, Some("weights")), vec![Tier::Host, Tier::Local]);
        assert_eq!(d.placement(8 * MIB, None, None), vec![Tier::Local, Tier::Host]);
    }

    const HOST_8G: &str = "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"32GiB\" }]\n";
    /// `HOST_8G` with the migration engine, which automatic placement needs.
    const STREAMED_8G: &str = "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"32GiB\" }]\n[streaming]\nenabled = true\n";

    #[test]
    fn default_reserve_is_a_quarter_of_the_room_left_after_the_cache() {
        let p = plan(HOST_8G).unwrap();
        assert!(p.automatic);
        let d = p.device(0).unwrap();
        assert_eq!((d.reserve, d.automatic), (2 * GIB, false), "without streaming the reserve is not kept");
        let streamed = plan(&format!("{HOST_8G}[streaming]\nenabled = true\nlocal_cache = \"2GiB\"\n")).unwrap();
        assert_eq!((streamed.device(0).unwrap().reserve, streamed.device(0).unwrap().automatic), (1536 * MIB, true));
        // Rounded down to 2 MiB: a quarter of 1013 MiB is 253.25 MiB.
        let odd = plan("[[device]]\nindex = 0\nlocal_budget = \"1013MiB\"\n").unwrap();
        assert_eq!(odd.device(0).unwrap().reserve, 252 * MIB);
        assert_eq!(default_reserve(3 * MIB, &Streaming::default()), 0);
        // Each device's default follows its own budget.
        let two = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\n[[device]]\nindex = 1\nlocal_budget = \"16GiB\"\n").unwrap();
        assert_eq!(two.devices.iter().map(|d| d.reserve).collect::<Vec<_>>(), vec![2 * GIB, 4 * GIB]);
    }

    #[test]
    fn an_explicit_reserve_is_kept_and_must_fit_beside_the_cache() {
        let p = plan(&format!("{HOST_8G}[placement]\nreserve = \"5GiB\"\n")).unwrap();
        assert_eq!(p.device(0).unwrap().reserve, 5 * GIB);
        let p = plan(&format!("{HOST_8G}[placement]\nreserve = \"8GiB\"\n")).unwrap();
        assert_eq!(p.device(0).unwrap().reserve, 8 * GIB);
        let p = plan(&format!("{HOST_8G}[placement]\nreserve = 0\n")).unwrap();
        assert_eq!(p.device(0).unwrap().reserve, 0);
        let e = plan(&format!("{HOST_8G}[placement]\nreserve = \"9GiB\"\n")).unwrap_err();
        assert_eq!(e.location, Location { line: 6, column: 11 });
        assert_eq!(e.message, "`reserve` (9 GiB) is more than device 0 has: its local budget is 8 GiB; expected at most 8 GiB");
        let e = plan(&format!("{HOST_8G}[streaming]\nenabled = true\nlocal_cache = \"3GiB\"\n[placement]\nreserve = \"6GiB\"\n")).unwrap_err();
        assert_eq!(e.location, Location { line: 9, column: 11 });
        assert_eq!(
            e.message,
            "`reserve` (6 GiB) is more than device 0 can keep free: its local budget (8 GiB) less the streaming local_cache (3 GiB) leaves 5 GiB; expected at most 5 GiB"
        );
        // A machine in the file makes the same check at parse time.
        let e = parse_policy("p.toml", &format!("[machine]\ndevices = [\"24GiB\"]\nhost = \"64GiB\"\n{HOST_8G}[placement]\nreserve = \"9GiB\"\n")).unwrap_err();
        assert_eq!(e.location.line, 9);
    }

    #[test]
    fn default_rules_leave_every_allocation_to_automatic_placement() {
        let p = plan(STREAMED_8G).unwrap();
        let d = p.device(0).unwrap();
        for (size, phase, tag) in [(4096, None, None), (GIB, Some("load"), None), (GIB, Some("sample"), Some("weights"))] {
            assert!(d.is_automatic(size, phase, tag), "{size} {phase:?} {tag:?}");
        }
        let p = plan(HOST_8G).unwrap();
        assert!(!p.device(0).unwrap().is_automatic(GIB, None, None), "automatic placement needs streaming");
    }

    #[test]
    fn explicit_rules_win_over_automatic_placement() {
        let p = plan(&format!("{STREAMED_8G}[[rule]]\nmax_size = \"1MiB\"\ntiers = [\"local\"]\n[[rule]]\ntag = \"weights\"\ntiers = [\"host\", \"local\"]\n")).unwrap();
        let d = p.device(0).unwrap();
        assert!(!d.default_rules);
        assert!(!d.is_automatic(4096, None, None));
        assert!(!d.is_automatic(8 * MIB, Some("load"), Some("weights")));
        assert!(d.is_automatic(8 * MIB, Some("load"), None));
        assert!(d.is_automatic(8 * MIB, None, Some("latents")));
        // A catch-all explicit rule claims everything: nothing is left to vvram.
        let p = plan(&format!("{STREAMED_8G}[[rule]]\nname = \"card first\"\ntiers = [\"local\", \"host\"]\n")).unwrap();
        let d = p.device(0).unwrap();
        assert!([4096, 8 * MIB, 4 * GIB].iter().all(|&size| !d.is_automatic(size, Some("load"), None)));
        // A rule for another device leaves this one's allocations to vvram.
        let p = plan("[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\n[[device]]\nindex = 1\nlocal_budget = \"8GiB\"\n[[rule]]\ndevice = 1\ntiers = [\"local\"]\n[streaming]\nenabled = true\nlocal_cache = \"1GiB\"\n").unwrap();
        assert!(p.device(0).unwrap().is_automatic(GIB, None, None));
        assert!(!p.device(1).unwrap().is_automatic(GIB, None, None));
    }

    #[test]
    fn turning_automatic_placement_off_keeps_the_rule_order() {
        let on = plan(STREAMED_8G).unwrap();
        let off = plan(&format!("{STREAMED_8G}[placement]\nautomatic = false\n")).unwrap();
        assert!(!off.automatic);
        let (a, b) = (on.device(0).unwrap(), off.device(0).unwrap());
        assert!(!b.automatic);
        assert_eq!(b.reserve, a.reserve);
        for (size, phase) in [(4096, None), (GIB, Some("load")), (GIB, None)] {
            assert!(!b.is_automatic(size, phase, None));
            assert_eq!(a.placement(size, phase, None), b.placement(size, phase, None));
        }
        let explicit = plan(&format!("{HOST_8G}[placement]\nautomatic = false\n[[rule]]\nmax_size = \"1MiB\"\ntiers = [\"local\"]\n")).unwrap();
        assert!(!explicit.device(0).unwrap().is_automatic(8 * MIB, None, None));
    }
}
