//! `vvram devices`: what the driver sees, peer access, `CUDA_VISIBLE_DEVICES`, and
//! measured bandwidths.

use clap::Args;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;
use vvram_cuda::Driver;
use vvram_policy::size::{MIB, format_size};

/// List the GPUs the CUDA driver sees, which can reach which, and what
/// CUDA_VISIBLE_DEVICES hides; with --bandwidth, measure copy bandwidths.
#[derive(Args)]
#[command(after_help = "Examples:\n  vvram devices\n  vvram devices --bandwidth\n\nExit codes: 0; 1 when no CUDA driver is found or a driver call fails.")]
pub struct DevicesArgs {
    /// Measure host-to-device, device-to-host and peer bandwidth.
    #[arg(long)]
    bandwidth: bool,
    /// Print only the number of devices (used to see past CUDA_VISIBLE_DEVICES).
    #[arg(long, hide = true)]
    count: bool,
}

struct Gpu<'a> {
    driver: &'a Driver,
}

macro_rules! call {
    ($driver:expr, $name:ident ( $($arg:expr),* )) => {
        vvram_cuda::call!($driver.api, $name($($arg),*)).map_err(|e| e.to_string())
    };
}

fn c_text(buffer: &[c_char]) -> String {
    // SAFETY: the driver wrote a NUL-terminated string into the buffer.
    unsafe { CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().into_owned()
}

impl Gpu<'_> {
    fn count(&self) -> Result<c_int, String> {
        let mut count = 0;
        call!(self.driver, cuDeviceGetCount(&mut count))?;
        Ok(count)
    }

    fn describe(&self, device: c_int) -> Result<(String, u64, String, (c_int, c_int)), String> {
        let mut name = [0 as c_char; 256];
        call!(self.driver, cuDeviceGetName(name.as_mut_ptr(), 256, device))?;
        let mut bytes = 0usize;
        call!(self.driver, cuDeviceTotalMem_v2(&mut bytes, device))?;
        let mut bus = [0 as c_char; 64];
        call!(self.driver, cuDeviceGetPCIBusId(bus.as_mut_ptr(), 64, device))?;
        let (mut major, mut minor) = (0, 0);
        call!(self.driver, cuDeviceGetAttribute(&mut major, vvram_cuda::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device))?;
        call!(self.driver, cuDeviceGetAttribute(&mut minor, vvram_cuda::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))?;
        Ok((c_text(&name), bytes as u64, c_text(&bus), (major, minor)))
    }

    fn can_access(&self, device: c_int, peer: c_int) -> Result<bool, String> {
        let mut can = 0;
        call!(self.driver, cuDeviceCanAccessPeer(&mut can, device, peer))?;
        Ok(can != 0)
    }

    fn make_current(&self, device: c_int) -> Result<*mut c_void, String> {
        let mut context = std::ptr::null_mut();
        call!(self.driver, cuDevicePrimaryCtxRetain(&mut context, device))?;
        call!(self.driver, cuCtxSetCurrent(context))?;
        Ok(context)
    }
}

/// Runs `vvram devices`.
pub fn run(args: &DevicesArgs) -> ExitCode {
    let driver = match Driver::open() {
        Ok(driver) => driver,
        Err(message) => {
            eprintln!("vvram devices: {message}");
            return ExitCode::from(1);
        }
    };
    match report(&Gpu { driver: &driver }, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vvram devices: {message}");
            ExitCode::from(1)
        }
    }
}

fn report(gpu: &Gpu, args: &DevicesArgs) -> Result<(), String> {
    call!(gpu.driver, cuInit(0))?;
    let count = gpu.count()?;
    if args.count {
        println!("{count}");
        return Ok(());
    }
    let mut version = 0;
    call!(gpu.driver, cuDriverGetVersion(&mut version))?;
    println!("CUDA driver {}.{}, {count} device(s)", version / 1000, version % 1000 / 10);
    println!("{:<3} {:<28} {:>12}  {:<18} compute", "#", "name", "memory", "PCI bus");
    for device in 0..count {
        let (name, bytes, bus, (major, minor)) = gpu.describe(device)?;
        println!("{device:<3} {name:<28} {:>12}  {bus:<18} {major}.{minor}", format_size(bytes));
    }
    if count > 1 {
        println!("\nPeer access (row reads column):");
        print!("    ");
        for peer in 0..count {
            print!("{peer:>5}");
        }
        println!();
        for device in 0..count {
            print!("{device:>4}");
            for peer in 0..count {
                let cell = if peer == device { "-" } else if gpu.can_access(device, peer)? { "yes" } else { "no" };
                print!("{cell:>5}");
            }
            println!();
        }
    }
    println!();
    match std::env::var("CUDA_VISIBLE_DEVICES") {
        Err(_) => println!("CUDA_VISIBLE_DEVICES is not set: every device is visible."),
        Ok(value) => {
            let all = all_device_count();
            match all {
                Some(all) if all > count => println!(
                    "CUDA_VISIBLE_DEVICES={value}: {count} of {all} devices visible; {} hidden from this process and its children (ComfyUI-MultiGPU's \"only cuda:0 visible\").",
                    all - count
                ),
                Some(_) => println!("CUDA_VISIBLE_DEVICES={value}: hides nothing ({count} devices visible)."),
                None => println!("CUDA_VISIBLE_DEVICES={value}: {count} visible (could not count the devices it hides)."),
            }
        }
    }
    if args.bandwidth {
        println!();
        bandwidth(gpu, count)?;
    }
    Ok(())
}

/// The number of devices without `CUDA_VISIBLE_DEVICES`, from a child process.
fn all_device_count() -> Option<c_int> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe).args(["devices", "--count"]).env_remove("CUDA_VISIBLE_DEVICES").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

struct Progress {
    done: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let filled = self.done * 30 / self.total.max(1);
        eprint!("\r[{}{}] {}/{} {what:<32}", "#".repeat(filled), " ".repeat(30 - filled), self.done, self.total);
        let _ = std::io::stderr().flush();
        if self.done == self.total {
            eprintln!();
        }
    }
}

fn gbps(bytes: usize, seconds: f64) -> String {
    format!("{:.1} GB/s", bytes as f64 / seconds / 1e9)
}

/// Times `repeat` runs of `copy`, best of them.
fn best(repeat: usize, mut copy: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut best = f64::MAX;
    for _ in 0..repeat {
        let start = Instant::now();
        copy()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn bandwidth(gpu: &Gpu, count: c_int) -> Result<(), String> {
    let peers: Vec<(c_int, c_int)> = (0..count).flat_map(|a| (0..count).map(move |b| (a, b))).filter(|(a, b)| a != b).collect();
    let mut progress = Progress { done: 0, total: count as usize * 3 + peers.len() };
    let mut rows = Vec::new();
    let mut buffers = Vec::new();
    for device in 0..count {
        let context = gpu.make_current(device)?;
        let (mut free, mut total) = (0usize, 0usize);
        call!(gpu.driver, cuMemGetInfo_v2(&mut free, &mut total))?;
        let size = (256 * MIB as usize).min(free / 4).max(MIB as usize);
        let mut dev = 0u64;
        call!(gpu.driver, cuMemAlloc_v2(&mut dev, size))?;
        let mut pageable = vec![1u8; size];
        progress.step(&format!("device {device}: host to device"));
        let h2d = best(3, || call!(gpu.driver, cuMemcpyHtoD_v2(dev, pageable.as_ptr() as *const c_void, size)))?;
        progress.step(&format!("device {device}: device to host"));
        let d2h = best(3, || call!(gpu.driver, cuMemcpyDtoH_v2(pageable.as_mut_ptr() as *mut c_void, dev, size)))?;
        progress.step(&format!("device {device}: pinned host to device"));
        let mut pinned = std::ptr::null_mut();
        let pinned_h2d = match call!(gpu.driver, cuMemAllocHost_v2(&mut pinned, size)) {
            Ok(()) => {
                let seconds = best(3, || call!(gpu.driver, cuMemcpyHtoD_v2(dev, pinned as *const c_void, size)))?;
                call!(gpu.driver, cuMemFreeHost(pinned))?;
                gbps(size, seconds)
            }
            Err(_) => "n/a".to_string(),
        };
        rows.push((device, gbps(size, h2d), pinned_h2d, gbps(size, d2h)));
        buffers.push((context, dev, size));
    }
    let mut peer_rows = Vec::new();
    for (a, b) in peers {
        progress.step(&format!("peer {a} to {b}"));
        let (context_a, src, size_a) = buffers[a as usize];
        let (context_b, dst, size_b) = buffers[b as usize];
        let size = size_a.min(size_b);
        let cell = if gpu.can_access(b, a)? {
            gbps(size, best(3, || call!(gpu.driver, cuMemcpyPeer(dst, context_b, src, context_a, size)))?)
        } else {
            "no access".to_string()
        };
        peer_rows.push((a, b, cell));
    }
    println!("{:<8} {:>16} {:>16} {:>16}", "device", "H2D pageable", "H2D pinned", "D2H pageable");
    for (device, h2d, pinned, d2h) in rows {
        println!("{device:<8} {h2d:>16} {pinned:>16} {d2h:>16}");
    }
    if !peer_rows.is_empty() {
        println!("\n{:<10} {:>16}", "peer copy", "bandwidth");
        for (a, b, cell) in peer_rows {
            println!("{:<10} {cell:>16}", format!("{a} -> {b}"));
        }
    }
    for (context, dev, _) in buffers {
        call!(gpu.driver, cuCtxSetCurrent(context))?;
        call!(gpu.driver, cuMemFree_v2(dev))?;
    }
    Ok(())
}
