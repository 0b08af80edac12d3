//! Many threads of mixed operations, a copy racing a free, forks while allocating.

use super::{Control, Env, MIB, Rng};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vvram_cuda::*;

/// Bytes at the head of each allocation that hold its tag, checked on every free.
const HEAD: usize = 64;

fn head(tag: u64) -> Vec<u8> {
    (0..HEAD).map(|i| (tag.rotate_left(i as u32 * 5) as u8) ^ i as u8).collect()
}

struct Live {
    p: u64,
    size: u64,
    tag: u64,
}

#[derive(Default)]
struct Figures {
    ops: u64,
    allocations: u64,
    out_of_memory: u64,
    copied: u64,
}

const POLICIES: [&str; 2] = [
    "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[host_pool]\npin_ahead = \"16MiB\"\n",
    "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[host_pool]\npin_ahead = \"16MiB\"\n[[rule]]\nphase = \"load\"\ntiers = [\"host\", \"local\"]\n",
];

/// What a stress thread does next.
enum Op {
    Alloc,
    Free,
    FreeAsync,
    Copy,
    Query,
    Info,
    Phase,
    Policy,
}

/// One thread's share: `ops` operations chosen at random, every allocation's head
/// checked before it is freed.
fn worker(env: &Env, control: &Control, thread: u64, ops: u64, seed: u64) -> Result<Figures, String> {
    env.enter()?;
    let mut rng = Rng::new(seed ^ (thread << 32));
    let mut stream = std::ptr::null_mut();
    vvram_harness::cu!(env.cuda, cuStreamCreate(&mut stream, 1)).map_err(|e| e.to_string())?;
    let api = &env.cuda.api;
    let mut live: Vec<Live> = Vec::new();
    let mut figures = Figures::default();
    let buffer: Vec<u8> = (0..64 << 10).map(|i| i as u8).collect();
    let check = |what: &str, code: CUresult| if code == result::SUCCESS { Ok(()) } else { Err(format!("thread {thread}: {what} failed with {code}")) };
    let verify = |l: &Live| -> Result<(), String> {
        let got = env.read(l.p, HEAD).map_err(|c| format!("thread {thread}: reading {:#x} failed with {c}", l.p))?;
        if got != head(l.tag) { Err(format!("thread {thread}: allocation {:#x} ({} bytes) lost its contents", l.p, l.size)) } else { Ok(()) }
    };
    for _ in 0..ops {
        figures.ops += 1;
        let op = match rng.below(100) {
            0..=29 => Op::Alloc,
            30..=44 => Op::Free,
            45..=54 => Op::FreeAsync,
            55..=74 => Op::Copy,
            75..=89 => Op::Query,
            90..=94 => Op::Info,
            95..=98 => Op::Phase,
            _ => Op::Policy,
        };
        // At most 8 live allocations per thread; operations on one need one.
        let op = match op {
            Op::Alloc if live.len() >= 8 => Op::Free,
            Op::Free | Op::FreeAsync | Op::Copy | Op::Query if live.is_empty() => Op::Alloc,
            op => op,
        };
        match op {
            Op::Alloc => {
                let size = if rng.below(4) == 0 { MIB + rng.below(5 * MIB) } else { HEAD as u64 + 1 + rng.below(64 << 10) };
                let mut p = 0;
                let code = if rng.below(4) == 0 {
                    api.cuMemAllocAsync.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, size as usize, stream) })
                } else {
                    api.cuMemAlloc_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, size as usize) })
                };
                match code {
                    result::SUCCESS => {
                        let tag = rng.next();
                        check("writing a new allocation's head", env.write(p, &head(tag)))?;
                        live.push(Live { p, size, tag });
                        figures.allocations += 1;
                    }
                    result::OUT_OF_MEMORY => figures.out_of_memory += 1,
                    code => return Err(format!("thread {thread}: allocating {size} bytes failed with {code}")),
                }
            }
            Op::Free => {
                let l = live.swap_remove(rng.below(live.len() as u64) as usize);
                verify(&l)?;
                check("cuMemFree", env.free(l.p))?;
            }
            Op::FreeAsync => {
                let l = live.swap_remove(rng.below(live.len() as u64) as usize);
                verify(&l)?;
                check("cuMemFreeAsync", api.cuMemFreeAsync.map_or(result::NOT_FOUND, |f| unsafe { f(l.p, stream) }))?;
            }
            Op::Copy => {
                let l = &live[rng.below(live.len() as u64) as usize];
                let room = l.size - HEAD as u64;
                let len = rng.below(room.min(buffer.len() as u64)) + 1;
                let offset = HEAD as u64 + rng.below(room - len + 1);
                check("cuMemcpyHtoD", env.write(l.p + offset, &buffer[..len as usize]))?;
                figures.copied += len;
            }
            Op::Query => {
                let l = &live[rng.below(live.len() as u64) as usize];
                let mut size = 0usize;
                let inside = l.p + rng.below(l.size);
                check("cuPointerGetAttribute", api.cuPointerGetAttribute.map_or(result::NOT_FOUND, |f| unsafe {
                    f(&mut size as *mut usize as *mut c_void, CU_POINTER_ATTRIBUTE_RANGE_SIZE, inside)
                }))?;
                let (mut base, mut range) = (0u64, 0usize);
                check("cuMemGetAddressRange", api.cuMemGetAddressRange_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut base, &mut range, inside) }))?;
                if size as u64 != l.size || base != l.p || range as u64 != l.size {
                    return Err(format!("thread {thread}: pointer queries on {:#x} gave size {size}, range {base:#x}+{range}; expected {} bytes", l.p, l.size));
                }
            }
            Op::Info => {
                let (mut free, mut total) = (0usize, 0usize);
                check("cuMemGetInfo", api.cuMemGetInfo_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut free, &mut total) }))?;
                if free > total {
                    return Err(format!("thread {thread}: cuMemGetInfo free {free} > total {total}"));
                }
            }
            Op::Phase => {
                let phase = if rng.below(2) == 0 { Some("load") } else { None };
                if control.phase(phase) != 0 {
                    return Err(format!("thread {thread}: vvram_set_phase({phase:?}) failed"));
                }
            }
            Op::Policy => {
                if control.policy(POLICIES[rng.below(2) as usize]) != 0 {
                    return Err(format!("thread {thread}: vvram_set_policy_toml refused a valid policy"));
                }
            }
        }
    }
    for l in live.drain(..) {
        verify(&l)?;
        check("cuMemFree", env.free(l.p))?;
    }
    check("cuStreamSynchronize", api.cuStreamSynchronize.map_or(result::NOT_FOUND, |f| unsafe { f(stream) }))?;
    check("cuStreamDestroy", api.cuStreamDestroy_v2.map_or(result::NOT_FOUND, |f| unsafe { f(stream) }))?;
    Ok(figures)
}

/// `threads` threads × `ops` operations; at the end nothing may stay placed.
pub fn stress(threads: u64, ops: u64, seed: u64) -> Result<(), String> {
    let env = Env::open()?;
    let control = Control::find()?;
    let started = std::time::Instant::now();
    let results: Vec<Result<Figures, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads).map(|t| {
            let (env, control) = (&env, &control);
            scope.spawn(move || worker(env, control, t, ops, seed))
        }).collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into()))).collect()
    });
    let mut total = Figures::default();
    for result in results {
        let f = result?;
        total.ops += f.ops;
        total.allocations += f.allocations;
        total.out_of_memory += f.out_of_memory;
        total.copied += f.copied;
    }
    env.enter()?;
    vvram_harness::cu!(env.cuda, cuCtxSynchronize()).map_err(|e| e.to_string())?;
    // One more allocation completes the stream-ordered frees whose streams have passed.
    let last = env.alloc(MIB).map_err(|c| format!("the final allocation failed with {c}"))?;
    if env.free(last) != result::SUCCESS {
        return Err("freeing the final allocation failed".into());
    }
    let stats = control.stats()?;
    let leaked = control.placed()?;
    println!(
        "stress: threads={threads} ops={} allocations={} out_of_memory={} copied_bytes={} leaked_bytes={leaked} live={} errors={} seconds={:.1}",
        total.ops,
        total.allocations,
        total.out_of_memory,
        total.copied,
        stats["devices"][0]["allocations"],
        stats["errors"],
        started.elapsed().as_secs_f64()
    );
    if leaked != 0 || stats["devices"][0]["allocations"] != 0 || stats["errors"] != 0 {
        return Err(format!("after the stress run: {leaked} bytes still placed; {stats}"));
    }
    Ok(())
}

/// How long one fake kernel runs (`FAKECUDA_KERNEL_US`; 60 ms when unset).
fn kernel_time() -> std::time::Duration {
    let micros = std::env::var("FAKECUDA_KERNEL_US").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000);
    std::time::Duration::from_micros(micros)
}

/// Queues a kernel on the legacy stream (slow with `FAKECUDA_KERNEL_US`): copies and
/// frees that synchronise wait for it, which holds the race window open.
fn queue_kernel(env: &Env, function: CUfunction, p: u64) -> Result<(), String> {
    let (mut a, mut value, mut n) = (p.to_ne_bytes(), 1f32.to_ne_bytes(), 16u64.to_ne_bytes());
    let mut params = [a.as_mut_ptr() as *mut c_void, value.as_mut_ptr() as *mut c_void, n.as_mut_ptr() as *mut c_void];
    vvram_harness::cu!(env.cuda, cuLaunchKernel(function, 1, 1, 1, 16, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()))
        .map_err(|e| e.to_string())
}

/// A host-to-device copy into host-tier memory racing a free of the same allocation
/// and a new allocation of the same size: the new allocation must keep its contents.
/// The copy has looked its destination up and waits for a queued kernel when the free
/// comes (run with `FAKECUDA_KERNEL_US` of some milliseconds).
pub fn copy_racing_free(rounds: u64) -> Result<(), String> {
    let env = Env::open()?;
    let control = Control::find()?;
    let mut module = std::ptr::null_mut();
    vvram_harness::cu!(env.cuda, cuModuleLoadData(&mut module, vvram_cuda::kernels::MODULE.as_ptr() as *const c_void)).map_err(|e| e.to_string())?;
    let mut function = std::ptr::null_mut();
    vvram_harness::cu!(env.cuda, cuModuleGetFunction(&mut function, module, c"fill_f32".as_ptr())).map_err(|e| e.to_string())?;
    let local = control.stats()?["devices"][0]["tiers"][0]["capacity"].as_u64().ok_or("no local tier")?;
    // Fill the local tier: everything after lands on host chunks the CPU writes.
    let filler = env.alloc(local).map_err(|c| format!("filling the local tier failed with {c}"))?;
    let size = 8 * MIB;
    let source = vec![0xAAu8; size as usize];
    let target = AtomicU64::new(0);
    let started = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut corrupted = 0;
    std::thread::scope(|scope| -> Result<(), String> {
        let copier = scope.spawn(|| -> Result<(), String> {
            env.enter()?;
            for round in 1..=rounds {
                while target.load(Ordering::Acquire) == 0 || started.load(Ordering::Acquire) == round {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    std::hint::spin_loop();
                }
                let p = target.swap(0, Ordering::AcqRel);
                started.store(round, Ordering::Release);
                // The free may come first (the copy then fails) or during the copy.
                let _ = env.write(p, &source);
                finished.store(round, Ordering::Release);
            }
            Ok(())
        });
        let outcome = (|| -> Result<(), String> {
        for round in 1..=rounds {
            let x = env.alloc(size).map_err(|c| format!("allocation failed with {c}"))?;
            queue_kernel(&env, function, filler)?;
            target.store(x, Ordering::Release);
            while started.load(Ordering::Acquire) != round {
                std::hint::spin_loop();
            }
            // Let the copy look its destination up and start waiting for the kernel (a
            // third of the kernel's time, so that a loaded machine still orders it first).
            std::thread::sleep(kernel_time() / 3);
            if env.free(x) != result::SUCCESS {
                return Err("freeing during the copy failed".into());
            }
            let y = env.alloc(size).map_err(|c| format!("allocation failed with {c}"))?;
            if env.write(y, &vec![0x55u8; size as usize]) != result::SUCCESS {
                return Err("writing the new allocation failed".into());
            }
            while finished.load(Ordering::Acquire) != round {
                std::hint::spin_loop();
            }
            let back = env.read(y, size as usize).map_err(|c| format!("reading back failed with {c}"))?;
            if back.iter().any(|b| *b != 0x55) {
                corrupted += 1;
            }
            if env.free(y) != result::SUCCESS {
                return Err("freeing the new allocation failed".into());
            }
        }
        Ok(())
        })();
        stop.store(true, Ordering::Release);
        outcome.and(copier.join().unwrap_or_else(|_| Err("the copier panicked".into())))
    })?;
    if env.free(filler) != result::SUCCESS {
        return Err("freeing the filler failed".into());
    }
    let leaked = control.placed()?;
    println!("race: rounds={rounds} corrupted={corrupted} leaked_bytes={leaked}");
    if corrupted != 0 || leaked != 0 {
        return Err(format!("{corrupted} of {rounds} new allocations were overwritten by a copy into freed memory; {leaked} bytes left placed"));
    }
    Ok(())
}

/// Forks `rounds` times while other threads allocate and free; each child calls into
/// the shim and exits. A child that does not end within 10 s is counted as hung.
pub fn fork_while_allocating(rounds: u64) -> Result<(), String> {
    let env = Env::open()?;
    let control = Control::find()?;
    let stop = AtomicBool::new(false);
    let mut hung = 0;
    std::thread::scope(|scope| -> Result<(), String> {
        for t in 0..2u64 {
            let (env, stop) = (&env, &stop);
            scope.spawn(move || {
                let _ = env.enter();
                let mut rng = Rng::new(t + 1);
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(p) = env.alloc(MIB + rng.below(4 * MIB)) {
                        env.free(p);
                    }
                }
            });
        }
        for _ in 0..rounds {
            // SAFETY: the child only calls the shim's control API and exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                let ok = control.phase(Some("child")) == 0 && control.stats().is_ok();
                // SAFETY: exit runs the atexit handlers (the shim's region removal among them).
                unsafe { libc::exit(if ok { 0 } else { 3 }) };
            }
            if child < 0 {
                stop.store(true, Ordering::Relaxed);
                return Err("fork failed".into());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
                if done == child {
                    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("a forked child failed (status {status:#x})"));
                    }
                    break;
                }
                if std::time::Instant::now() > deadline {
                    hung += 1;
                    // SAFETY: killing and reaping our own hung child.
                    unsafe {
                        libc::kill(child, libc::SIGKILL);
                        libc::waitpid(child, &mut status, 0);
                    }
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    println!("fork: forks={rounds} hung={hung}");
    if hung != 0 {
        return Err(format!("{hung} of {rounds} forked children hung"));
    }
    Ok(())
}
