//! `vvram demo`: a workload well past a small local budget, run under libvvram.so on the
//! real driver when there is one, else on the bundled fake driver.

use crate::locate;
use clap::Args;
use std::collections::BTreeMap;
use std::ffi::{CString, c_uint, c_void};
use std::process::{Command, ExitCode};
use std::time::Instant;
use vvram_cuda::{CUfunction, Driver, kernels};
use vvram_policy::size::format_size;
use vvram_stats::{Snapshot, StatsJsonFn, control_api_json};

/// Run the demo: allocate about 4x a small local budget under libvvram.so, compute on it,
/// check every result, and show where each byte lived and how fast it moved.
#[derive(Args)]
#[command(after_help = "Examples:\n  vvram demo\n  vvram demo --fake\n\nUses the CUDA driver when one is installed, else the fake driver (libfakecuda.so: VVRAM_FAKECUDA,\nelse found as libvvram.so is, see `vvram run --help`). Exit codes: 0 all checks passed; 1 a check failed or\nsomething needed is missing.")]
pub struct DemoArgs {
    /// Use the fake driver even when a real one is installed.
    #[arg(long)]
    fake: bool,
}

/// The demo's policies: a budget small enough that most of the data lands on the host.
const REAL_POLICY: &str = "# vvram demo on a real GPU\n[[device]]\nindex = 0\nlocal_budget = \"1GiB\"\ndonors = [{ tier = \"host\", capacity = \"3GiB\" }]\n[host_pool]\npin_ahead = \"256MiB\"\n";
const FAKE_POLICY: &str = "# vvram demo on the fake driver\n[[device]]\nindex = 0\nlocal_budget = \"256MiB\"\ndonors = [{ tier = \"host\", capacity = \"768MiB\" }]\n[host_pool]\npin_ahead = \"64MiB\"\n";

/// Runs `vvram demo`: prepares the environment and runs the workload in a child process
/// under libvvram.so.
pub fn run(args: &DemoArgs) -> ExitCode {
    match prepare(args) {
        Ok(mut command) => match command.status() {
            Ok(status) => ExitCode::from(status.code().unwrap_or(1) as u8),
            Err(e) => {
                eprintln!("vvram demo: cannot start the workload: {e}");
                ExitCode::from(1)
            }
        },
        Err(message) => {
            eprintln!("vvram demo: {message}");
            ExitCode::from(1)
        }
    }
}

fn prepare(args: &DemoArgs) -> Result<Command, String> {
    let library = locate::find(&locate::SHIM)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let fake = args.fake || Driver::open().is_err();
    let dir = std::env::temp_dir().join(format!("vvram-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, if fake { FAKE_POLICY } else { REAL_POLICY }).map_err(|e| e.to_string())?;
    let mut command = Command::new(exe);
    command.arg("demo-workload").env("LD_PRELOAD", &library).env("VVRAM_POLICY", &policy).env_remove("VVRAM_ALLOC");
    if fake {
        let link = dir.join("libcuda.so.1");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(locate::find(&locate::FAKE_DRIVER)?, &link).map_err(|e| e.to_string())?;
        let path = match std::env::var("LD_LIBRARY_PATH") {
            Ok(old) if !old.is_empty() => format!("{}:{old}", dir.display()),
            _ => dir.display().to_string(),
        };
        command
            .env("LD_LIBRARY_PATH", path)
            .env("FAKECUDA_DEVICES", "2GiB")
            .env("FAKECUDA_NAME", "fakecuda (host memory, no GPU)")
            .env_remove("CUDA_VISIBLE_DEVICES");
        println!("vvram demo on the fake driver (no CUDA driver here): device memory is host memory.");
    } else {
        println!("vvram demo on the CUDA driver.");
    }
    println!("policy {}:\n{}", policy.display(), if fake { FAKE_POLICY } else { REAL_POLICY });
    Ok(command)
}

struct Workload {
    driver: Driver,
    functions: BTreeMap<&'static str, CUfunction>,
    stats: StatsJsonFn,
}

macro_rules! cu {
    ($w:expr, $name:ident ( $($arg:expr),* )) => {
        vvram_cuda::call!($w.driver.api, $name($($arg),*)).map_err(|e| e.to_string())
    };
}

impl Workload {
    fn open() -> Result<Workload, String> {
        let driver = Driver::open()?;
        // SAFETY: the control API is exported by the preloaded libvvram.so.
        let stats = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"vvram_stats_json".as_ptr()) };
        if stats.is_null() {
            return Err("libvvram.so is not preloaded (vvram_stats_json not found)".into());
        }
        let mut w = Workload { driver, functions: BTreeMap::new(), stats: unsafe { std::mem::transmute::<*mut c_void, _>(stats) } };
        cu!(w, cuInit(0))?;
        let mut context = std::ptr::null_mut();
        cu!(w, cuDevicePrimaryCtxRetain(&mut context, 0))?;
        cu!(w, cuCtxSetCurrent(context))?;
        let mut module = std::ptr::null_mut();
        cu!(w, cuModuleLoadData(&mut module, kernels::MODULE.as_ptr() as *const c_void))?;
        for name in ["fill_f32", "scale_f32", "sum_f32"] {
            let mut function = std::ptr::null_mut();
            let cname = CString::new(name).unwrap_or_default();
            cu!(w, cuModuleGetFunction(&mut function, module, cname.as_ptr()))?;
            w.functions.insert(name, function);
        }
        Ok(w)
    }

    fn snapshot(&self) -> Result<Snapshot, String> {
        // SAFETY: `stats` is the preloaded libvvram.so's vvram_stats_json.
        let json = unsafe { control_api_json(self.stats) };
        serde_json::from_slice(&json).map_err(|e| format!("vvram_stats_json: {e}"))
    }

    fn tier_bytes(&self) -> Result<BTreeMap<String, u64>, String> {
        let snapshot = self.snapshot()?;
        let device = snapshot.devices.first().ok_or("the policy manages no device 0")?;
        Ok(device.tiers.iter().map(|t| (t.tier.clone(), t.used)).collect())
    }

    fn launch(&self, name: &str, pointer: u64, value: [u8; 8], n: u64) -> Result<(), String> {
        let (mut p, mut v, mut count) = (pointer.to_ne_bytes(), value, n.to_ne_bytes());
        let mut params = [p.as_mut_ptr() as *mut c_void, v.as_mut_ptr() as *mut c_void, count.as_mut_ptr() as *mut c_void];
        let blocks = (n as usize).div_ceil(256).clamp(1, 4096) as c_uint;
        let function = self.functions.get(name).copied().unwrap_or(std::ptr::null_mut());
        cu!(self, cuLaunchKernel(function, blocks, 1, 1, 256, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()))
    }
}

struct Buffer {
    address: u64,
    lives_on: String,
    h2d_seconds: f64,
}

fn gbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds.max(1e-9) / 1e9
}

/// The workload, run under libvvram.so by `vvram demo`.
/// With `hold`, it prints `stats: JSON` before freeing and waits for standard input to
/// close, so a test can read the live process from outside.
pub fn workload(hold: bool) -> ExitCode {
    match run_workload(hold) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            println!("\nFAILED: {message}");
            ExitCode::from(1)
        }
    }
}

fn run_workload(hold: bool) -> Result<(), String> {
    let w = Workload::open()?;
    let snapshot = w.snapshot()?;
    let device = snapshot.devices.first().ok_or("the policy manages no device 0")?;
    let capacity = |tier: &str| device.tiers.iter().find(|t| t.tier == tier).map_or(0, |t| t.capacity);
    let (local, host) = (capacity("local"), capacity("host"));
    let size = local / 4;
    let count = (local + host) * 9 / 10 / size;
    let n = size / 4;
    println!(
        "Allocating {count} buffers of {} = {} on a card budget of {} (the application is told the card holds {}).\n",
        format_size(size),
        format_size(count * size),
        format_size(local),
        format_size(device.reported_total)
    );
    let mut buffers = Vec::new();
    for i in 0..count {
        let before = w.tier_bytes()?;
        let mut address = 0u64;
        cu!(w, cuMemAlloc_v2(&mut address, size as usize))?;
        let after = w.tier_bytes()?;
        let lives_on: Vec<String> = after
            .iter()
            .filter(|(tier, used)| **used > before.get(*tier).copied().unwrap_or(0))
            .map(|(tier, used)| format!("{tier} {}", format_size(used - before.get(tier).copied().unwrap_or(0))))
            .collect();
        let data: Vec<f32> = (0..n).map(|j| ((j + i) % 1000) as f32).collect();
        let start = Instant::now();
        cu!(w, cuMemcpyHtoD_v2(address, data.as_ptr() as *const c_void, size as usize))?;
        buffers.push(Buffer { address, lives_on: lives_on.join(" + "), h2d_seconds: start.elapsed().as_secs_f64() });
    }
    let mut out = 0u64;
    cu!(w, cuMemAlloc_v2(&mut out, (count * 4) as usize))?;
    cu!(w, cuMemsetD32_v2(out, 0, count as usize))?;
    let start = Instant::now();
    for (i, buffer) in buffers.iter().enumerate() {
        w.launch("scale_f32", buffer.address, u64::from(2f32.to_bits()).to_ne_bytes(), n)?;
        w.launch("sum_f32", buffer.address, (out + 4 * i as u64).to_ne_bytes(), n)?;
    }
    cu!(w, cuCtxSynchronize())?;
    let compute = start.elapsed().as_secs_f64();
    let mut sums = vec![0f32; count as usize];
    cu!(w, cuMemcpyDtoH_v2(sums.as_mut_ptr() as *mut c_void, out, (count * 4) as usize))?;

    println!("{:<7} {:<24} {:>12} {:>14}  check", "buffer", "lives on", "copy in", "sum x2");
    let mut failures = 0;
    let mut per_tier: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (i, buffer) in buffers.iter().enumerate() {
        let expected: f64 = (0..n).map(|j| (2 * ((j + i as u64) % 1000)) as f64).sum();
        let ok = ((sums[i] as f64 - expected) / expected).abs() < 1e-3;
        failures += usize::from(!ok);
        let entry = per_tier.entry(buffer.lives_on.split(' ').next().unwrap_or("").to_string()).or_default();
        entry.0 += size;
        entry.1 += buffer.h2d_seconds;
        println!(
            "{i:<7} {:<24} {:>7.1} GB/s {:>14.0}  {}",
            buffer.lives_on,
            gbps(size, buffer.h2d_seconds),
            sums[i],
            if ok { "ok" } else { "WRONG" }
        );
    }
    let last = buffers.last().ok_or("no buffers")?;
    let mut back = vec![0f32; n as usize];
    cu!(w, cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, last.address, size as usize))?;
    let exact = back.iter().enumerate().all(|(j, v)| *v == (2 * ((j as u64 + count - 1) % 1000)) as f32);
    failures += usize::from(!exact);

    let snapshot = w.snapshot()?;
    println!("\nWhere the bytes lived (vvram_stats_json):");
    for tier in &snapshot.devices[0].tiers {
        println!("  {:<8} {:>12} of {:>12}", tier.tier, format_size(tier.used), format_size(tier.capacity));
    }
    println!("Copies in by tier (host tier: the CPU writes pinned memory directly):");
    for (tier, (bytes, seconds)) in &per_tier {
        println!("  {:<8} {:>12} at {:.1} GB/s", tier, format_size(*bytes), gbps(*bytes, *seconds));
    }
    println!(
        "Kernels: {} read and written twice in {:.1} ms ({:.1} GB/s); CPU-copied into host tier: {}",
        format_size(count * size),
        compute * 1e3,
        gbps(2 * count * size, compute),
        format_size(snapshot.fast_h2d_bytes)
    );
    println!("Full read-back of the last buffer ({}): {}", last.lives_on, if exact { "exact" } else { "WRONG" });
    if hold {
        println!("stats: {}", w.snapshot()?.to_json());
        std::io::Write::flush(&mut std::io::stdout()).map_err(|e| e.to_string())?;
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).map_err(|e| e.to_string())?;
    }
    for buffer in &buffers {
        cu!(w, cuMemFree_v2(buffer.address))?;
    }
    cu!(w, cuMemFree_v2(out))?;
    let left: u64 = w.tier_bytes()?.values().sum();
    if left != 0 {
        failures += 1;
        println!("{} still placed after freeing everything", format_size(left));
    }
    if failures > 0 {
        return Err(format!("{failures} check(s) failed"));
    }
    println!("\nAll {} checks passed: {} on a {} budget, every result exact or within float rounding.", count + 2, format_size(count * size), format_size(local));
    Ok(())
}
