//! A workload that meets injected driver faults (`FAKECUDA_FAIL`): every call's code is
//! tolerated, everything that was allocated is freed, and then the figures are printed
//! for the test to check its invariants.

use super::{Control, Env, MIB};
use std::ffi::c_void;
use vvram_cuda::*;

/// Runs the workload; prints `faults: placed_after=… next_ok=…/… codes=…`.
pub fn workload() -> Result<(), String> {
    let env = Env::open()?;
    let control = Control::find()?;
    let api = &env.cuda.api;
    let mut codes = std::collections::BTreeSet::new();
    let mut note = |code: CUresult| {
        codes.insert(code);
        code
    };
    let mut stream = std::ptr::null_mut();
    note(api.cuStreamCreate.map_or(result::NOT_FOUND, |f| unsafe { f(&mut stream, 1) }));
    let mut live = Vec::new();
    // Allocations the application was given: every one must have been placed by vvram.
    let mut given = 0u64;
    let data = vec![7u8; 3 * MIB as usize];
    // Sizes that reach slabs, extents and (past the 16 MiB local budget) the host tier.
    for size in [4096, 100_000, 3 * MIB, 9 * MIB, 12 * MIB, 5 * MIB] {
        if let Ok(p) = env.alloc(size).map_err(&mut note) {
            given += 1;
            let len = size.min(data.len() as u64) as usize;
            note(env.write(p, &data[..len]));
            note(api.cuMemcpyHtoDAsync_v2.map_or(result::NOT_FOUND, |f| unsafe { f(p, data.as_ptr() as *const c_void, len, stream) }));
            note(api.cuMemcpy.map_or(result::NOT_FOUND, |f| unsafe { f(p, data.as_ptr() as u64, len) }));
            let mut size_out = 0usize;
            note(api.cuPointerGetAttribute.map_or(result::NOT_FOUND, |f| unsafe {
                f(&mut size_out as *mut usize as *mut c_void, CU_POINTER_ATTRIBUTE_RANGE_SIZE, p)
            }));
            let (mut base, mut range) = (0u64, 0usize);
            note(api.cuMemGetAddressRange_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut base, &mut range, p) }));
            live.push(p);
        }
    }
    let (mut free, mut total) = (0usize, 0usize);
    note(api.cuMemGetInfo_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut free, &mut total) }));
    note(api.cuDeviceTotalMem_v2.map_or(result::NOT_FOUND, |f| unsafe { f(&mut total, 0) }));
    for size in [2 * MIB, 6 * MIB] {
        let mut p = 0;
        if note(api.cuMemAllocAsync.map_or(result::NOT_FOUND, |f| unsafe { f(&mut p, size as usize, stream) })) == result::SUCCESS {
            given += 1;
            if note(api.cuMemFreeAsync.map_or(result::NOT_FOUND, |f| unsafe { f(p, stream) })) != result::SUCCESS {
                // Still the application's: freed below like the others.
                live.push(p);
            }
        }
    }
    let mut handle = 0;
    let prop = CUmemAllocationProp::pinned(CUmemLocation { type_: CU_MEM_LOCATION_TYPE_DEVICE, id: 0 });
    if note(api.cuMemCreate.map_or(result::NOT_FOUND, |f| unsafe { f(&mut handle, 2 * MIB as usize, &prop, 0) })) == result::SUCCESS {
        given += 1;
        // A failed release is retried, as an application would.
        for _ in 0..3 {
            if note(api.cuMemRelease.map_or(result::NOT_FOUND, |f| unsafe { f(handle) })) == result::SUCCESS {
                break;
            }
        }
    }
    note(api.cuStreamSynchronize.map_or(result::NOT_FOUND, |f| unsafe { f(stream) }));
    for p in live {
        // cuMemFree fails when its synchronisation does: an application retries.
        for _ in 0..3 {
            if note(env.free(p)) == result::SUCCESS {
                break;
            }
        }
    }
    note(api.cuCtxSynchronize.map_or(result::NOT_FOUND, |f| unsafe { f() }));
    // The next allocations: each tried up to four times (an every-Nth fault may hit one).
    let mut next_ok = 0;
    let sizes = [4096, 2 * MIB, 7 * MIB, 20 * MIB];
    for size in sizes {
        for _ in 0..4 {
            if let Ok(p) = env.alloc(size).map_err(&mut note) {
                given += 1;
                next_ok += 1;
                for _ in 0..3 {
                    if note(env.free(p)) == result::SUCCESS {
                        break;
                    }
                }
                break;
            }
        }
    }
    note(api.cuCtxSynchronize.map_or(result::NOT_FOUND, |f| unsafe { f() }));
    // Each further allocation (failing or not) retries unmaps, releases and stream-ordered
    // frees that failed before.
    // A request too large for any tier does only that: it takes nothing new.
    for _ in 0..8 {
        if let Ok(p) = env.alloc(1 << 62) {
            given += 1;
            env.free(p);
        }
    }
    let stats = control.stats()?;
    let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    println!(
        "faults: placed_after={} live_after={} given={given} placed_by_vvram={} next_ok={next_ok}/{} codes={}",
        control.placed()?,
        stats["devices"][0]["allocations"],
        stats["allocations"],
        sizes.len(),
        codes.join(",")
    );
    Ok(())
}
