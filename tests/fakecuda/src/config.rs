//! The fake machine, from the environment.
//!
//! * `FAKECUDA_DEVICES="24GiB,24GiB"`: one entry per GPU, its memory (default one 24 GiB GPU).
//! * `FAKECUDA_PEERS="all"` (default), `"none"` or pairs `"0-1,2-3"`: which GPUs reach each other.
//! * `FAKECUDA_HOST="64GiB"`: host memory available to host-located `cuMemCreate`.
//! * `FAKECUDA_KERNEL_US=500`: extra time each kernel launch takes, to model compute.
//! * `FAKECUDA_FAIL="cuMemCreate:3,cuMemMap:every:7=2"`: fault injection (see `fault`).
//! * `FAKECUDA_NAME="Fake H100"`: the devices' name.
//! * `CUDA_VISIBLE_DEVICES`: honoured as the driver does.

use crate::fault::FaultRule;
use std::sync::OnceLock;
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
    Ok(Config { devices, peers, host, kernel_us, faults, name })
}
