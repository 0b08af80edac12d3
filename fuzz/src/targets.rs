//! The fuzz targets: each takes any bytes and must never panic (or overflow).

use vvram_policy::size::{format_size, format_size_exact, parse_size};
use vvram_policy::{Location, Machine, parse_allocation, parse_policy, policy_from_allocation, resolve};

/// Every target's name, for `all`.
pub const NAMES: [&str; 5] = ["policy", "distorch", "size", "resolve", "stats-region"];

/// One fuzz target.
pub trait Target {
    /// Inputs mutations start from.
    fn corpus(&self) -> Vec<Vec<u8>>;
    /// Tokens worth inserting.
    fn dictionary(&self) -> Vec<Vec<u8>>;
    /// Runs one input; a panic is a crash.
    fn run(&mut self, input: &[u8]);
}

/// The target called `name`.
pub fn target(name: &str) -> Result<Box<dyn Target>, String> {
    Ok(match name {
        "policy" => Box::new(PolicyTarget),
        "distorch" => Box::new(DistorchTarget),
        "size" => Box::new(SizeTarget),
        "resolve" => Box::new(ResolveTarget),
        "stats-region" => Box::new(RegionTarget::new()?),
        other => return Err(format!("unknown target `{other}`: {}", NAMES.join(", "))),
    })
}

fn tokens(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|t| t.as_bytes().to_vec()).collect()
}

/// The example policies shipped in the repository.
fn example_policies() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect();
    files.push(b"[[device]]\nindex = 0\nlocal_budget = { fraction = 0.5 }\ndonors = [{ tier = \"peer:1\", capacity = { share = 4 } }, { tier = \"host\", capacity = \"*\" }]\nreport = \"48GiB\"\n[[rule]]\nmin_size = \"1MiB\"\nmax_size = \"8MiB\"\nphase = \"load\"\ntag = \"w\"\ntiers = [\"host\", \"local\"]\n[streaming]\nenabled = true\nlocal_cache = \"1GiB\"\nprefetch_depth = 4\n".to_vec());
    files.push(b"[machine]\ndevices = [\"24GiB\", \"24GiB\"]\nhost = \"64GiB\"\n[[device]]\nindex = 1\nalloc = \"cuda:1,20gb;cuda:0,*;cpu,5gb*\"\n[host_pool]\npin_ahead = \"2GiB\"\n".to_vec());
    files
}

const POLICY_TOKENS: &[&str] = &[
    "[[device]]\n", "[[rule]]\n", "[machine]\n", "[host_pool]\n", "[streaming]\n", "index = ", "local_budget = ", "donors = ", "alloc = ",
    "report = ", "tier = ", "capacity = ", "tiers = ", "min_size = ", "max_size = ", "phase = ", "tag = ", "device = ", "devices = ",
    "host = ", "pin_ahead = ", "enabled = true", "local_cache = ", "prefetch_depth = ", "\"peer:", "\"host\"", "\"local\"", "\"*\"",
    "{ fraction = ", "{ share = ", "1e-300", "1e308", "-1", "18446744073709551615", "9223372036854775807", "16777215TiB", "0.5GiB", "\"virtual\"",
    "version = 1\n", "é", "\u{1b}", "\"\"\"", "'", "#",
];

const ALLOCATION_TOKENS: &[&str] = &["cuda:", "cpu", ",", ";", "*", "%", "gb", "GiB", "mb", "tb", "0.", "1e-300", "18446744073709551615", "16777215TiB", "4294967295", "\n", " "];

struct PolicyTarget;

impl Target for PolicyTarget {
    fn corpus(&self) -> Vec<Vec<u8>> {
        example_policies()
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(POLICY_TOKENS)
    }
    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        match parse_policy("fuzz.toml", &text) {
            Ok(policy) => {
                let _ = resolve(&policy, &Machine { devices: vec![24 << 30, 24 << 30], host: 64 << 30, ..Machine::default() });
            }
            Err(error) => assert!(error.location.line >= 1 && !error.to_string().is_empty()),
        }
    }
}

struct DistorchTarget;

impl Target for DistorchTarget {
    fn corpus(&self) -> Vec<Vec<u8>> {
        tokens(&["cuda:0,2.5gb;cpu,*", "cuda:0,8%;cuda:1,8%;cpu,4%", "cuda:0,0.1;cpu,0.5", "cuda:0,500mb;cuda:1,3.0g;cpu,5gb*", "cuda:1,4gb;cuda:0,8gb"])
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(ALLOCATION_TOKENS)
    }
    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let _ = parse_allocation(&text, 0, "--alloc", Location { line: 1, column: 1 });
        if let Ok(policy) = policy_from_allocation("--alloc", &text, 1) {
            for machine in [Machine { devices: vec![24 << 30; 3], host: 64 << 30, ..Machine::default() }, Machine { devices: vec![u64::MAX; 3], host: u64::MAX, ..Machine::default() }] {
                let _ = resolve(&policy, &machine);
            }
        }
    }
}

struct SizeTarget;

impl Target for SizeTarget {
    fn corpus(&self) -> Vec<Vec<u8>> {
        tokens(&["8GiB", "2.5gb", "512MiB", "800M", "3k", "1T", "1048576", "0.001KiB", "16777215TiB", "1_000"])
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(&["GiB", "MiB", "KiB", "TiB", "B", ".", "_", "-", "e", "9999999999", "0.000000001"])
    }
    fn run(&mut self, input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        if let Ok(bytes) = parse_size(&text) {
            assert!(!format_size(bytes).is_empty());
            assert_eq!(parse_size(&format_size_exact(bytes)), Ok(bytes), "exact formatting of {bytes} must read back");
        }
        let (devices, host) = text.split_once('|').unwrap_or((&text, "64GiB"));
        let _ = Machine::from_args(devices, host);
    }
}

struct ResolveTarget;

impl Target for ResolveTarget {
    fn corpus(&self) -> Vec<Vec<u8>> {
        example_policies().into_iter().map(|p| [vec![0x21, 0xff, 0x10, 0x00, 0x7f, 0x03, 0xaa, 0x55], p].concat()).collect()
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(POLICY_TOKENS)
    }
    fn run(&mut self, input: &[u8]) {
        // The first 8 bytes make the machine (sizes from tiny to 2^64 - 1), the rest is the policy.
        let (head, text) = input.split_at(input.len().min(8));
        let word = |i: usize| head.get(i).copied().unwrap_or(0) as u32;
        let size = |b: u32| match b % 4 {
            0 => (b as u64 + 1) << 20,
            1 => (b as u64 + 1) << 30,
            2 => u64::MAX - b as u64,
            _ => (b as u64) << 56,
        };
        let count = 1 + word(0) as usize % 4;
        // Byte 6 says which GPU pairs reach each other (all when its top bit is set) and
        // whether the host tier is usable.
        let reach = word(6);
        let peers = if reach & 0x80 != 0 { Vec::new() } else { (0..count).map(|a| (0..count).map(|b| a == b || reach >> ((a * count + b) % 6) & 1 == 1).collect()).collect() };
        let host_unusable = (reach & 0x40 != 0).then(|| "no host VMM support".to_string());
        let machine = Machine { devices: (0..count).map(|i| size(word(1 + i))).collect(), host: size(word(7)), peers, host_unusable };
        let Ok(policy) = parse_policy("fuzz.toml", &String::from_utf8_lossy(text)) else { return };
        let Ok(plan) = resolve(&policy, &machine) else { return };
        for device in &plan.devices {
            let total = device.tiers().fold(0u64, |sum, (_, c)| sum.saturating_add(c));
            assert!(device.reported_total > 0 && total > 0, "a plan with an empty device: {device:?}");
            for (model, tensor) in [(u64::MAX, 1 << 26), (total, 4096), (size(word(3)), size(word(4)))] {
                let fill = device.fill(model, tensor, Some("load"), None);
                let placed = fill.per_tier.iter().fold(0u64, |sum, (_, b)| sum + b);
                assert_eq!(placed.checked_add(fill.unplaced), Some(model), "fill lost bytes");
            }
            let _ = device.placement(size(word(5)), Some("load"), Some("w"));
        }
    }
}

/// Forged statistics regions for a live process of ours (a `sleep` child), read with
/// the reader `vvram stats` uses.
struct RegionTarget {
    child: std::process::Child,
    path: String,
    file: std::fs::File,
    valid: Vec<u8>,
}

impl RegionTarget {
    fn new() -> Result<RegionTarget, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let child = std::process::Command::new("sleep").arg("3600").spawn().map_err(|e| format!("cannot start a process to forge regions for: {e}"))?;
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
        let start: u64 = stat[stat.rfind(')').unwrap_or(0) + 1..].split_whitespace().nth(19).and_then(|s| s.parse().ok()).unwrap_or(0);
        let json = format!(
            "{{\"version\":\"0\",\"pid\":{pid},\"policy\":\"p.toml\",\"active\":true,\"phase\":\"load\",\"tag\":null,\"devices\":[{{\"device\":0,\"reported_total\":1,\"allocations\":1,\"tiers\":[{{\"tier\":\"local\",\"used\":1,\"capacity\":2}}]}}],\"host_pool_bytes\":0,\"allocations\":1,\"frees\":0,\"out_of_memory\":0,\"fast_h2d_bytes\":0,\"errors\":0}}"
        );
        let mut valid = Vec::new();
        for word in [u64::from_le_bytes(*b"VVRAMST2"), pid as u64, start, 0, json.len() as u64] {
            valid.extend_from_slice(&word.to_le_bytes());
        }
        valid.extend_from_slice(json.as_bytes());
        let path = format!("/dev/shm{}", vvram_stats::region_name(pid));
        let _ = std::fs::remove_file(&path);
        let file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).map_err(|e| format!("{path}: {e}"))?;
        Ok(RegionTarget { child, path, file, valid })
    }
}

impl Target for RegionTarget {
    fn corpus(&self) -> Vec<Vec<u8>> {
        vec![self.valid.clone()]
    }
    fn dictionary(&self) -> Vec<Vec<u8>> {
        tokens(&["\u{1b}[2J", "\"tier\":", "\"devices\":[", "null", "18446744073709551615", "\\u0000", "{", "}", "VVRAMST2"])
    }
    fn run(&mut self, input: &[u8]) {
        use std::io::{Seek, Write};
        // Most inputs are padded to the region's size, so the reader gets past its checks.
        let padded = input.first().is_some_and(|b| b % 4 != 0);
        let written = self.file.set_len(0).and_then(|_| self.file.rewind()).and_then(|_| self.file.write_all(input));
        if written.is_err() || (padded && self.file.set_len(vvram_stats::REGION_SIZE.max(input.len()) as u64).is_err()) {
            return;
        }
        if let Ok(snapshot) = vvram_stats::read(self.child.id()) {
            assert!(!snapshot.to_json().is_empty());
        }
    }
}

impl Drop for RegionTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}
