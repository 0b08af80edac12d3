//! The fake machine, from the environment.
//!
//! * `FAKECUDA_DEVICES="24GiB,24GiB"`: one entry per GPU, its memory (default one 24 GiB GPU).
//! * `FAKECUDA_PEERS="all"` (default), `"none"` or pairs `"0-1,2-3"`: which GPUs reach each other.
//! * `FAKECUDA_HOST="64GiB"`: host memory available to host-located `cuMemCreate`.
//! * `FAKECUDA_KERNEL_US=500`: extra time each kernel launch takes, to model compute.
//! * `FAKECUDA_FAIL="cuMemCreate:3,cuMemMap:every:7=2"`: fault injection (see `fault`).
//! * `FAKECUDA_NAME="Fake H100"`: the devices' name.
//! * `FAKECUDA_GRANULARITY="2MiB"`, `FAKECUDA_HOST_GRANULARITY="2MiB"`: the allocation
//!   granularity of device and host locations (`cuMemGetAllocationGranularity`).
//! * `FAKECUDA_HOST_NUMA="0"`: the host NUMA node closest to each device (one value for
//!   all, or one per device; `-1` where the system has no NUMA), as
//!   `CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID` reports it.
//! * `FAKECUDA_HOST_VMM=1`: whether host-located `cuMemCreate` works
//!   (`CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED`; 0 as on WSL).
//! * `FAKECUDA_HOST_ACCESS="host-numa,host"`: the location types `cuMemSetAccess` accepts
//!   to grant the CPU access (driver 580 accepts both; `none` for neither).
//! * `FAKECUDA_CTX_MS=0`: what creating a primary context costs (its first retain), in
//!   milliseconds; the driver takes a few hundred.
//! * `FAKECUDA_PROC_INTERNAL=1`: `cuGetProcAddress` answers `cuMemAlloc` with an
//!   internal entry point, not the exported symbol's address (some drivers do so).
//! * `FAKECUDA_PIN_GBPS=5`: the rate at which host-located `cuMemCreate` pins memory, in
//!   GB/s (0: instant), so lock contention around pinning shows in tests.
//! * `CUDA_VISIBLE_DEVICES`: honoured as the driver does.

use crate::fault::FaultRule;
use std::sync::OnceLock;
use vvram_cuda::{CU_MEM_LOCATION_TYPE_HOST, CU_MEM_LOCATION_TYPE_HOST_NUMA};
use vvram_policy::size::{GIB, parse_size};

/// The configured fake machine.
pub struct Config {
    /// Memory of each device.
    pub devices: Vec<u64>,
    /// `peers[a][b]`: device a can access device b.
    pub peers: Vec<Vec<bool>>,
    /// Host memory for host-located allocations.
    pub host: u64,
    /// Extra microseconds per kernel launch.
    pub kernel_us: u64,
    /// Fault injection rules.
    pub faults: Vec<FaultRule>,
    /// The devices' name.
    pub name: String,
    /// Allocation granularity of device memory.
    pub granularity: u64,
    /// Allocation granularity of host memory.
    pub host_granularity: u64,
    /// The host NUMA node closest to each device (-1: no NUMA).
    pub host_numa: Vec<i32>,
    /// Whether host-located VMM allocations work.
    pub host_vmm: bool,
    /// Location types accepted to grant the CPU access.
    pub host_access: Vec<u32>,
    /// Pinning rate of host-located `cuMemCreate`, bytes per second (0: instant).
    pub pin_bytes_per_second: u64,
    /// Whether `cuGetProcAddress` answers with internal entry points.
    pub proc_internal: bool,
    /// Milliseconds a primary context takes to create.
    pub context_ms: u64,
}

impl Config {
    /// Whether `node` names a host NUMA node of this machine (0 where there is no NUMA).
    pub fn is_numa_node(&self, node: i32) -> bool {
        if self.host_numa.iter().all(|n| *n < 0) { node == 0 } else { self.host_numa.contains(&node) }
    }
}

/// The machine's devices the process sees, by `CUDA_VISIBLE_DEVICES` as the driver
/// reads it: indices in the order given, stopping at the first invalid entry.
fn visible_devices(setting: Option<&str>, count: usize) -> Vec<usize> {
    match setting {
        None => (0..count).collect(),
        Some(list) => {
            let mut visible = Vec::new();
            for entry in list.split(',') {
                match entry.trim().parse::<usize>() {
                    Ok(d) if d < count && !visible.contains(&d) => visible.push(d),
                    _ => break,
                }
            }
            visible
        }
    }
}

/// The configuration, read once. A malformed variable is reported on stderr and the
/// process exits: a fake machine that silently differs from what a test asked for would
/// make the test meaningless.
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| match read() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("fakecuda: {message}");
            std::process::exit(86);
        }
    })
}

fn read() -> Result<Config, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let machine = match var("FAKECUDA_DEVICES") {
        None => vec![24 * GIB],
        Some(list) => list
            .split(',')
            .map(|s| parse_size(s).map_err(|e| format!("FAKECUDA_DEVICES `{s}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let visible = visible_devices(var("CUDA_VISIBLE_DEVICES").as_deref(), machine.len());
    let devices: Vec<u64> = visible.iter().map(|&d| machine[d]).collect();
    let n = machine.len();
    let all_peers = match var("FAKECUDA_PEERS").as_deref() {
        None | Some("all") => (0..n).map(|a| (0..n).map(|b| a != b).collect()).collect(),
        Some("none") => vec![vec![false; n]; n],
        Some(pairs) => {
            let mut peers = vec![vec![false; n]; n];
            for pair in pairs.split(',') {
                let (a, b) = pair
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)))
                    .filter(|(a, b)| a < &n && b < &n && a != b)
                    .ok_or_else(|| format!("FAKECUDA_PEERS `{pair}`: expected A-B with two distinct device indices below {n}"))?;
                peers[a][b] = true;
                peers[b][a] = true;
            }
            peers
        }
    };
    let peers = visible.iter().map(|&a| visible.iter().map(|&b| all_peers[a][b]).collect()).collect();
    let host = match var("FAKECUDA_HOST") {
        None => 64 * GIB,
        Some(s) => parse_size(&s).map_err(|e| format!("FAKECUDA_HOST `{s}`: {e}"))?,
    };
    let kernel_us = match var("FAKECUDA_KERNEL_US") {
        None => 0,
        Some(s) => s.trim().parse().map_err(|_| format!("FAKECUDA_KERNEL_US `{s}`: expected microseconds"))?,
    };
    let faults = match var("FAKECUDA_FAIL") {
        None => Vec::new(),
        Some(s) => crate::fault::parse_rules(&s)?,
    };
    let name = var("FAKECUDA_NAME").unwrap_or_else(|| "fakecuda GPU".to_string());
    let size_of = |name: &str| -> Result<u64, String> {
        match var(name) {
            None => Ok(2 << 20),
            Some(s) => parse_size(&s)
                .ok()
                .filter(|g| g.is_power_of_two() && *g >= 4096)
                .ok_or_else(|| format!("{name} `{s}`: expected a power of two of at least 4KiB")),
        }
    };
    let (granularity, host_granularity) = (size_of("FAKECUDA_GRANULARITY")?, size_of("FAKECUDA_HOST_GRANULARITY")?);
    let host_numa = match var("FAKECUDA_HOST_NUMA") {
        None => vec![0; devices.len()],
        Some(s) => {
            let nodes = s
                .split(',')
                .map(|n| n.trim().parse::<i32>().ok().filter(|n| *n >= -1))
                .collect::<Option<Vec<_>>>()
                .filter(|n| n.len() == 1 || n.len() == devices.len())
                .ok_or_else(|| format!("FAKECUDA_HOST_NUMA `{s}`: expected one node (or -1) for all devices or one per device"))?;
            if nodes.len() == 1 { vec![nodes[0]; devices.len()] } else { nodes }
        }
    };
    let host_vmm = match var("FAKECUDA_HOST_VMM").as_deref() {
        None | Some("1") => true,
        Some("0") => false,
        Some(s) => return Err(format!("FAKECUDA_HOST_VMM `{s}`: expected 0 or 1")),
    };
    let host_access = match var("FAKECUDA_HOST_ACCESS").as_deref() {
        None => vec![CU_MEM_LOCATION_TYPE_HOST_NUMA, CU_MEM_LOCATION_TYPE_HOST],
        Some("none") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|t| match t.trim() {
                "host-numa" => Ok(CU_MEM_LOCATION_TYPE_HOST_NUMA),
                "host" => Ok(CU_MEM_LOCATION_TYPE_HOST),
                other => Err(format!("FAKECUDA_HOST_ACCESS `{other}`: expected host-numa, host or none")),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let pin_bytes_per_second = match var("FAKECUDA_PIN_GBPS") {
        None => 5_000_000_000,
        Some(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|g| *g >= 0.0)
            .map(|g| (g * 1e9) as u64)
            .ok_or_else(|| format!("FAKECUDA_PIN_GBPS `{s}`: expected GB/s (0 for instant)"))?,
    };
    let proc_internal = match var("FAKECUDA_PROC_INTERNAL").as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(s) => return Err(format!("FAKECUDA_PROC_INTERNAL `{s}`: expected 0 or 1")),
    };
    let context_ms = match var("FAKECUDA_CTX_MS") {
        None => 0,
        Some(s) => s.trim().parse().map_err(|_| format!("FAKECUDA_CTX_MS `{s}`: expected milliseconds"))?,
    };
    Ok(Config {
        context_ms,
        proc_internal,
        devices,
        peers,
        host,
        kernel_us,
        faults,
        name,
        granularity,
        host_granularity,
        host_numa,
        host_vmm,
        host_access,
        pin_bytes_per_second,
    })
}
