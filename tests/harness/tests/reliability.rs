//! Reliability of libvvram.so under hostile configuration and workloads, on the fake
//! driver: refused inputs at start-up, races, fork, fault injection.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use vvram_harness::fake::{build_dir, describe, on_fake_driver, shim_library};

/// 64 MiB local, 128 MiB host on a 256 MiB fake GPU.
const POLICY: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[host_pool]\npin_ahead = \"16MiB\"\n";

fn write_file(name: &str, text: &str) -> PathBuf {
    let dir = build_dir().join("reliability-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// cuda-exercise under the shim on a 256 MiB fake GPU, with `policy` (a path).
fn exercise(policy: &std::ffi::OsStr) -> Command {
    let mut command = on_fake_driver(env!("CARGO_BIN_EXE_cuda-exercise").as_ref());
    command.env("LD_PRELOAD", shim_library()).env("FAKECUDA_DEVICES", "256MiB").env_remove("VVRAM_LOG").env("VVRAM_POLICY", policy);
    command
}

fn stops_with(out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    assert!(out.stdout.is_empty(), "{}", describe(out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(message), "{}", describe(out));
}

#[test]
fn a_policy_path_naming_a_device_or_fifo_stops_the_process_at_once() {
    let dir = build_dir().join("reliability-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("policy.fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for path in [std::ffi::OsStr::new("/dev/zero"), fifo.as_os_str()] {
        let started = Instant::now();
        let out = exercise(path).arg("devices").output().unwrap();
        stops_with(&out, "not a regular file");
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}

#[test]
fn an_invalid_phase_in_the_environment_stops_the_process() {
    let policy = write_file("phase.toml", POLICY);
    let out = exercise(policy.as_os_str()).env("VVRAM_PHASE", "load\x1b[2J").arg("devices").output().unwrap();
    stops_with(&out, "invalid VVRAM_PHASE");
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\x1b'), "{}", describe(&out));
    let out = exercise(policy.as_os_str()).env("VVRAM_PHASE", "load").arg("devices").output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn an_exabyte_policy_is_refused_not_a_crash() {
    let policy = write_file("exabyte.toml", "[machine]\ndevices = [\"16777215TiB\"]\nhost = \"16777215TiB\"\n[[device]]\nindex = 0\nlocal_budget = \"16777215TiB\"\ndonors = [{ tier = \"host\", capacity = \"16777215TiB\" }]\n");
    let out = exercise(policy.as_os_str()).arg("devices").output().unwrap();
    stops_with(&out, "more than 16 EiB");
}

/// vvram-torture under the shim on a fake GPU of `device`, with `policy` (TOML text).
fn torture(policy: &str, device: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = format!("torture-{}.toml", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let path = write_file(&name, policy);
    let mut command = on_fake_driver(env!("CARGO_BIN_EXE_vvram-torture").as_ref());
    command.env("LD_PRELOAD", shim_library()).env("FAKECUDA_DEVICES", device).env_remove("VVRAM_LOG").env("VVRAM_POLICY", path);
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

/// The figures line a torture scenario prints, checked to exist.
fn figures(out: &Output, prefix: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(out));
    stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line: {}", describe(out))).to_string()
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key} in {line}")).to_string()
}

#[test]
fn eight_threads_of_mixed_operations_leak_nothing() {
    let out = torture(POLICY, "256MiB", &["stress", "8", "3000", "7"], &[]);
    let line = figures(&out, "stress:");
    assert_eq!(field(&line, "ops"), "24000", "{line}");
    assert_eq!((field(&line, "leaked_bytes").as_str(), field(&line, "errors").as_str()), ("0", "0"), "{line}");
}

#[test]
fn a_copy_racing_a_free_never_writes_into_the_next_allocation() {
    let out = torture(POLICY, "256MiB", &["race", "12"], &[("FAKECUDA_KERNEL_US", "300000")]);
    let line = figures(&out, "race:");
    assert_eq!(field(&line, "corrupted"), "0", "{line}");
}

#[test]
fn a_child_forked_while_other_threads_allocate_does_not_hang() {
    let out = torture(POLICY, "256MiB", &["fork", "40"], &[]);
    assert_eq!(field(&figures(&out, "fork:"), "hung"), "0");
}

/// 16 MiB local, 64 MiB host: the fault workload reaches slabs, extents and host chunks.
const SMALL: &str = "[[device]]\nindex = 0\nlocal_budget = \"16MiB\"\ndonors = [{ tier = \"host\", capacity = \"64MiB\" }]\n[host_pool]\npin_ahead = \"4MiB\"\n";

/// Every driver call the shim makes (the hooked calls it passes through among them),
/// but the context retain of its background thread (the workload needs it to start).
const DRIVER_CALLS: [&str; 26] = [
    "cuCtxGetDevice", "cuCtxSynchronize", "cuDeviceGetCount", "cuDeviceTotalMem_v2", "cuEventCreate",
    "cuEventQuery", "cuEventRecord", "cuEventDestroy_v2", "cuMemAddressReserve", "cuMemAddressFree", "cuMemAllocAsync", "cuMemAlloc_v2",
    "cuMemCreate", "cuMemFreeAsync", "cuMemFree_v2", "cuMemGetAddressRange_v2", "cuMemGetInfo_v2", "cuMemMap", "cuMemRelease",
    "cuMemSetAccess", "cuMemUnmap", "cuMemcpy", "cuMemcpyHtoDAsync_v2", "cuMemcpyHtoD_v2", "cuPointerGetAttribute", "cuStreamSynchronize",
];

/// With these failing always, memory legitimately stays placed: still mapped (unmap),
/// still held by the driver (release), or never safe to free (no synchronisation, no
/// completed event). It stays counted, never lost.
const HOLDS_MEMORY_WHEN_ALWAYS_FAILING: [&str; 4] = ["cuMemUnmap", "cuMemRelease", "cuCtxSynchronize", "cuEventQuery"];

#[test]
fn every_driver_call_failing_first_every_third_or_always_is_survived() {
    let runs: Vec<(String, &str)> = DRIVER_CALLS
        .iter()
        .flat_map(|call| [(format!("{call}:1"), *call), (format!("{call}:every:3=700"), *call), (format!("{call}:every:1=700"), *call)])
        .collect();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let chunks: Vec<_> = runs.chunks(runs.len().div_ceil(4)).map(|chunk| {
            scope.spawn(move || {
                let mut failures = Vec::new();
                for (spec, call) in chunk {
                    let out = torture(SMALL, "128MiB", &["faults"], &[("FAKECUDA_FAIL", spec)]);
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let Some(line) = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("faults:")).map(str::to_string) else {
                        failures.push(format!("{spec}: no figures: {}", describe(&out)));
                        continue;
                    };
                    let always = spec.ends_with("every:1=700");
                    let codes = field(&line, "codes");
                    let problem = if !out.status.success() || stderr.contains("panic") {
                        Some("crashed or panicked".to_string())
                    } else if codes.split(',').any(|c| c == "999") {
                        Some("a hook answered CUDA_ERROR_UNKNOWN".into())
                    } else if field(&line, "given") != field(&line, "placed_by_vvram") {
                        Some("an allocation bypassed the policy".into())
                    } else if !(always && HOLDS_MEMORY_WHEN_ALWAYS_FAILING.contains(call)) && field(&line, "placed_after") != "0" {
                        Some("memory stayed placed after everything was freed".into())
                    } else if spec.ends_with(":1") && field(&line, "next_ok") != "4/4" {
                        Some("the next allocations did not work".into())
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        failures.push(format!("{spec}: {problem}: {line}\n{stderr}"));
                    }
                }
                failures
            })
        }).collect();
        chunks.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{} of {} fault runs broke an invariant:\n{}", failures.len(), runs.len(), failures.join("\n"));
}

#[test]
fn a_transient_device_query_failure_never_lets_an_allocation_bypass_the_policy() {
    let line = figures(&torture(SMALL, "128MiB", &["faults"], &[("FAKECUDA_FAIL", "cuCtxGetDevice:every:3")]), "faults:");
    assert_eq!(field(&line, "given"), field(&line, "placed_by_vvram"), "{line}");
}

#[test]
fn an_unreadable_machine_is_said_and_fails_allocations_instead_of_dropping_the_policy() {
    let out = torture(SMALL, "128MiB", &["faults"], &[("FAKECUDA_FAIL", "cuDeviceTotalMem_v2:every:1=700")]);
    let line = figures(&out, "faults:");
    assert_eq!((field(&line, "given").as_str(), field(&line, "placed_by_vvram").as_str()), ("0", "0"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("cannot describe the machine").count(), 1, "{stderr}");
}

#[test]
fn a_real_driver_path_that_is_not_a_driver_stops_the_process() {
    let out = torture(SMALL, "128MiB", &["faults"], &[("VVRAM_REAL_LIBCUDA", "libm.so.6")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("VVRAM_REAL_LIBCUDA=libm.so.6 is not a CUDA driver"), "{}", describe(&out));
    let out = torture(SMALL, "128MiB", &["faults"], &[("VVRAM_REAL_LIBCUDA", "/nonexistent/libcuda.so.1")]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn replays_of_other_interposers_crash_classes() {
    for name in ["prefix", "no-context", "pool-trim", "bad-copies", "callback-free", "procaddress-internal"] {
        let out = torture(POLICY, "256MiB", &["replay", name], &[("FAKECUDA_PROC_INTERNAL", "1")]);
        assert!(figures(&out, &format!("replay {name}:")).contains(": ok"), "{}", describe(&out));
    }
}

#[test]
fn the_fake_driver_refuses_bad_copies_instead_of_crashing_its_stream_worker() {
    let mut command = on_fake_driver(env!("CARGO_BIN_EXE_vvram-torture").as_ref());
    let out = command.env("FAKECUDA_DEVICES", "256MiB").args(["replay", "bad-copies"]).output().unwrap();
    // Without the shim there is no control API: the scenario needs none.
    assert!(figures(&out, "replay bad-copies:").contains(": ok"), "{}", describe(&out));
}

/// Builds `c/replay.c` as a library linked into a program and as a second library the
/// program loads `RTLD_LOCAL`.
fn replay_program() -> (PathBuf, PathBuf) {
    let dir = build_dir().join("reliability-tests/replay");
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("c/replay.c");
    let cc = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("cc").args(args).output().expect("a C compiler (cc) to build the replay programs");
        assert!(out.status.success(), "{}", describe(&out));
    };
    let (library, local, program) = (dir.join("libreplay.so"), dir.join("libreplay-local.so"), dir.join("replay"));
    for lib in [&library, &local] {
        cc(&["-shared".as_ref(), "-fPIC".as_ref(), "-o".as_ref(), lib.as_os_str(), source.as_os_str(), "-ldl".as_ref()]);
    }
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let link = format!("-L{}", dir.display());
    cc(&["-DREPLAY_MAIN".as_ref(), "-o".as_ref(), program.as_os_str(), source.as_os_str(), link.as_ref(), "-lreplay".as_ref(), rpath.as_ref(), "-ldl".as_ref()]);
    (program, local)
}

#[test]
fn cuda_from_a_constructor_and_rtld_next_from_a_local_library() {
    let (program, local) = replay_program();
    let policy = write_file("replay.toml", POLICY);
    let mut command = on_fake_driver(&program);
    command.env("LD_PRELOAD", shim_library()).env("FAKECUDA_DEVICES", "256MiB").env_remove("VVRAM_LOG").env("VVRAM_POLICY", &policy).arg(&local);
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("constructor before main: 0"), "{stdout}");
    assert_eq!(stdout.matches("RTLD_NEXT malloc from a RTLD_LOCAL library: libc").count(), 3, "{stdout}");
    assert!(stdout.contains("cudnnCreate from a RTLD_LOCAL library: not found"), "{stdout}");
}
