//! The validated policy: what a TOML file or an allocation string says, before it is
//! resolved against a machine.

use crate::error::Location;
use std::fmt;
use std::str::FromStr;

/// Where a chunk of memory can live, as seen from one compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The compute device's own VRAM.
    Local,
    /// Another GPU's VRAM, by CUDA device index.
    Peer(u32),
    /// Pinned host RAM.
    Host,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tier::Local => write!(f, "local"),
            Tier::Peer(n) => write!(f, "peer:{n}"),
            Tier::Host => write!(f, "host"),
        }
    }
}

impl FromStr for Tier {
    type Err = String;

    fn from_str(text: &str) -> Result<Tier, String> {
        match text {
            "local" => Ok(Tier::Local),
            "host" => Ok(Tier::Host),
            _ => text
                .strip_prefix("peer:")
                .and_then(|n| n.parse().ok())
                .map(Tier::Peer)
                .ok_or_else(|| format!("unknown tier `{text}`: expected `local`, `host` or `peer:N`")),
        }
    }
}

/// An amount of memory as the policy gives it; resolved to bytes against a [`Machine`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// A fixed number of bytes.
    Bytes(u64),
    /// `*`: whatever of that tier's memory no other budget on the machine claims.
    Rest,
    /// A fraction (0, 1] of the tier's total physical memory (DisTorch2 fraction mode).
    Fraction(f64),
    /// A weight relative to the local budget's share (DisTorch2 ratio mode): a donor
    /// with share 4 beside a local share of 8 gets half the local budget.
    Share(f64),
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Bytes(b) => write!(f, "{}", crate::size::format_size(*b)),
            Amount::Rest => write!(f, "*"),
            Amount::Fraction(x) => write!(f, "{x} of the tier"),
            Amount::Share(x) => write!(f, "share {x}"),
        }
    }
}

/// A donor of memory to a compute device, in the order it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct Donor {
    /// The peer GPU or the host.
    pub tier: Tier,
    /// How much it gives.
    pub capacity: Amount,
    /// Where the donor was written.
    pub at: Location,
}

/// What `cuMemGetInfo` and `cuDeviceTotalMem` tell the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Local budget plus every donation.
    Virtual,
    /// A fixed total.
    Fixed(u64),
}

/// The policy for one compute device, numbered as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePolicy {
    /// CUDA device index (after `CUDA_VISIBLE_DEVICES`).
    pub index: u32,
    /// Physical VRAM vvram may use on this device.
    pub local_budget: Amount,
    /// Donors in order of use.
    pub donors: Vec<Donor>,
    /// What the application is told the card holds.
    pub report: Report,
    /// Where the device's table starts.
    pub at: Location,
    /// Where the local budget was written.
    pub budget_at: Location,
}

/// A placement rule: the first rule that matches an allocation gives its tier order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A name shown by `vvram explain`.
    pub name: Option<String>,
    /// Only this compute device, or all when `None`.
    pub device: Option<u32>,
    /// Smallest matching size in bytes (inclusive).
    pub min_size: u64,
    /// Size limit in bytes (exclusive), or no limit.
    pub max_size: Option<u64>,
    /// Only while this phase is set.
    pub phase: Option<String>,
    /// Only allocations carrying this tag.
    pub tag: Option<String>,
    /// Tiers to try, in order.
    pub tiers: Vec<Tier>,
    /// Where the rule was written.
    pub at: Location,
}

impl Rule {
    /// Whether an allocation with these properties matches.
    pub fn matches(&self, device: u32, size: u64, phase: Option<&str>, tag: Option<&str>) -> bool {
        self.device.is_none_or(|d| d == device)
            && size >= self.min_size
            && self.max_size.is_none_or(|max| size < max)
            && self.phase.as_deref().is_none_or(|p| phase == Some(p))
            && self.tag.as_deref().is_none_or(|t| tag == Some(t))
    }

    /// Whether every allocation `other` matches is also matched by `self`.
    pub fn covers(&self, other: &Rule) -> bool {
        fn field_covers<T: PartialEq>(general: &Option<T>, specific: &Option<T>) -> bool {
            general.is_none() || general == specific
        }
        field_covers(&self.device, &other.device)
            && field_covers(&self.phase, &other.phase)
            && field_covers(&self.tag, &other.tag)
            && self.min_size <= other.min_size
            && match (self.max_size, other.max_size) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => b <= a,
            }
    }

    /// A one-line description of what the rule matches.
    pub fn condition(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.device {
            parts.push(format!("device {d}"));
        }
        match (self.min_size, self.max_size) {
            (0, None) => {}
            (min, None) => parts.push(format!("size >= {}", crate::size::format_size(min))),
            (0, Some(max)) => parts.push(format!("size < {}", crate::size::format_size(max))),
            (min, Some(max)) => parts.push(format!(
                "{} <= size < {}",
                crate::size::format_size(min),
                crate::size::format_size(max)
            )),
        }
        if let Some(p) = &self.phase {
            parts.push(format!("phase = {p}"));
        }
        if let Some(t) = &self.tag {
            parts.push(format!("tag = {t}"));
        }
        if parts.is_empty() { "any allocation".to_string() } else { parts.join(", ") }
    }
}

/// The pinned host pool, filled ahead of need by a background thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPool {
    /// Bytes to pin ahead; `None` means the smaller of 2 GiB and the host donations.
    pub pin_ahead: Option<u64>,
    /// Where `pin_ahead` was written.
    pub at: Location,
}

/// Settings of the migration engine (streaming weights onto the compute device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streaming {
    /// Whether weights on donors are staged onto the compute device before use.
    pub enabled: bool,
    /// Local VRAM set aside for staged copies.
    pub local_cache: u64,
    /// How many operations ahead to stage.
    pub prefetch_depth: u32,
    /// Treat weights as read-only: staged copies are never written back (a kernel's
    /// write through a translated pointer is then lost).
    pub weights_read_only: bool,
}

impl Default for Streaming {
    fn default() -> Streaming {
        Streaming {
            enabled: false,
            local_cache: 2 * crate::size::GIB,
            prefetch_depth: 2,
            weights_read_only: false,
        }
    }
}

/// Automatic placement: what no explicit rule places, vvram places by use — a reserve of
/// the card stays free while the model loads, and once a step repeats, what a step uses
/// many times is kept on the card and weights used once per step go to donors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Whether vvram places what the rules leave to it; `false` restores plain rule order.
    pub automatic: bool,
    /// Local VRAM kept free while the model loads; `None` means the default (a quarter of
    /// the budget left after the streaming cache).
    pub reserve: Option<u64>,
    /// Where `reserve` was written (line 0 when the policy gives none).
    pub at: Location,
}

impl Default for Placement {
    fn default() -> Placement {
        Placement { automatic: true, reserve: None, at: Location::default() }
    }
}

/// The physical machine: what each GPU and the host hold, which GPUs reach each other,
/// and whether the host tier can work at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// Total memory of each CUDA device, by index.
    pub devices: Vec<u64>,
    /// Total host RAM.
    pub host: u64,
    /// `peers[a][b]`: GPU `a` can access GPU `b`'s memory (`cuDeviceCanAccessPeer`).
    /// Empty when unknown (a machine described on the command line): every pair is
    /// taken to reach.
    pub peers: Vec<Vec<bool>>,
    /// Why host-located memory cannot serve as a tier here (no host VMM support, no way
    /// to grant the CPU access), if it cannot.
    pub host_unusable: Option<String>,
}

impl Machine {
    /// Whether GPU `device` can access GPU `peer`'s memory.
    pub fn reaches(&self, device: u32, peer: u32) -> bool {
        self.peers.is_empty() || self.peers.get(device as usize).and_then(|row| row.get(peer as usize)).copied().unwrap_or(false)
    }

    /// Parses `--devices "0:24GiB,1:24GiB"` (indices must run 0, 1, …; `24GiB,24GiB` also works)
    /// and `--host 64GiB`.
    pub fn from_args(devices: &str, host: &str) -> Result<Machine, String> {
        let mut sizes = Vec::new();
        for (position, entry) in devices.split(',').map(str::trim).enumerate() {
            let size = match entry.split_once(':') {
                Some((index, size)) => {
                    let index: usize = index
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{entry}`: expected INDEX:SIZE, e.g. 0:24GiB"))?;
                    if index != position {
                        return Err(format!(
                            "`{entry}`: device indices must run 0, 1, 2, … in order (expected {position})"
                        ));
                    }
                    size
                }
                None => entry,
            };
            let bytes = crate::size::parse_size(size).map_err(|e| format!("`{entry}`: {e}"))?;
            if bytes == 0 {
                return Err(format!("`{entry}`: a device cannot have zero memory"));
            }
            sizes.push(bytes);
        }
        let host = crate::size::parse_size(host).map_err(|e| format!("--host `{host}`: {e}"))?;
        Ok(Machine { devices: sizes, host, ..Machine::default() })
    }
}

/// A parsed and validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// File name or other origin, used in error messages.
    pub origin: String,
    /// The machine the policy was written for, when it says so.
    pub machine: Option<Machine>,
    /// Compute devices.
    pub devices: Vec<DevicePolicy>,
    /// Placement rules; empty means the default rules.
    pub rules: Vec<Rule>,
    /// The pinned host pool.
    pub host_pool: HostPool,
    /// The migration engine's settings.
    pub streaming: Streaming,
    /// Automatic placement of what the rules leave to vvram.
    pub placement: Placement,
}

impl Policy {
    /// The policy of compute device `index`, if it has one.
    pub fn device(&self, index: u32) -> Option<&DevicePolicy> {
        self.devices.iter().find(|d| d.index == index)
    }
}
