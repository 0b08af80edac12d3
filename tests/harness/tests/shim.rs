//! libvvram.so preloaded into real processes on the fake driver: placement, the three
//! doors, virtual memory info, exhaustion, start-up checks, concurrency.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vvram_harness::fake::{build_dir, describe, fake_driver_dir, on_fake_driver, shim_library};

/// 64 MiB local, 128 MiB host on a 256 MiB fake GPU.
const POLICY: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n[host_pool]\npin_ahead = \"16MiB\"\n";

/// Writes `text` to `name` in the tests' directory. Tests run in parallel and rewrite the
/// same files while other tests' children read them: the text is written aside and
/// renamed into place, so a reader never sees a half-written file.
fn write_file(name: &str, text: &str) -> PathBuf {
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = build_dir().join("shim-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let aside = dir.join(format!(".{name}.{}", WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    path
}

fn under_shim(program: &Path, policy: Option<&Path>) -> Command {
    let mut command = on_fake_driver(program);
    command.env("LD_PRELOAD", shim_library()).env("FAKECUDA_DEVICES", "256MiB").env_remove("VVRAM_LOG");
    if let Some(policy) = policy {
        command.env("VVRAM_POLICY", policy);
    }
    command
}

fn exercise(args: &[&str], env: &[(&str, &str)]) -> Output {
    let policy = write_file("policy.toml", POLICY);
    let mut command = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), Some(&policy));
    command.args(args).envs(env.iter().copied());
    command.output().unwrap()
}

fn passes(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stats_line(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().find_map(|l| l.strip_prefix("stats: ")).expect("a stats line");
    serde_json::from_str(line).unwrap()
}

#[test]
fn three_times_the_budget_lands_where_the_policy_says_through_each_door() {
    for door in ["dlsym", "procaddress", "procaddress-ptds"] {
        let stdout = passes(&exercise(&["--door", door, "spread"], &[]));
        assert!(stdout.contains("ok: 3x the local budget placed: local 64 MiB, host 128 MiB"), "{door}: {stdout}");
        assert!(stdout.contains("ok: data across the local/host seam reads back exactly"), "{door}: {stdout}");
        assert!(stdout.contains("ok: every tier full: CUDA_ERROR_OUT_OF_MEMORY"), "{door}: {stdout}");
        assert!(stdout.contains("ok: all freed, nothing placed, 192 MiB free"), "{door}: {stdout}");
        let stats = stats_line(&stdout);
        assert_eq!(stats["out_of_memory"], 1, "{stats}");
        assert_eq!(stats["errors"], 0, "{stats}");
    }
}

#[test]
fn a_hooked_entry_point_cu_get_proc_address_answers_at_another_address_is_still_hooked() {
    let out = exercise(&["--door", "procaddress", "spread"], &[("FAKECUDA_PROC_INTERNAL", "1"), ("VVRAM_LOG", "warn")]);
    let stdout = passes(&out);
    assert!(stdout.contains("ok: 3x the local budget placed: local 64 MiB, host 128 MiB"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("substituting by name and version").count(), 1, "{stderr}");
    assert!(stderr.contains("symbol=cuMemAlloc"), "{stderr}");
}

#[test]
fn direct_binding_and_both_dlsym_versions_reach_the_hooks() {
    let program = build_dir().join("shim-tests/direct");
    std::fs::create_dir_all(program.parent().unwrap()).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/direct.c");
    let fake = fake_driver_dir();
    let compiled = Command::new("cc")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .arg(format!("-L{}", fake.display()))
        .arg("-l:libcuda.so.1")
        .arg("-ldl")
        .output()
        .expect("a C compiler (cc) to build the direct-binding test program");
    assert!(compiled.status.success(), "{}", describe(&compiled));
    let policy = write_file("direct.toml", POLICY);
    let stdout = passes(&under_shim(&program, Some(&policy)).output().unwrap());
    assert!(stdout.contains("direct: total 192 MiB"), "{stdout}");
    assert!(stdout.contains("dlsym: new hooked, old hooked"), "{stdout}");
    assert!(stdout.contains("dlsym(RTLD_NEXT, malloc): found"), "{stdout}");
    assert!(stdout.contains("dlsym(driver, cuInit): the driver's"), "{stdout}");
    let stats = stats_line(&stdout);
    assert_eq!(stats["devices"][0]["tiers"][0]["used"], 64 << 20, "{stats}");
    assert_eq!(stats["devices"][0]["tiers"][1]["used"], 128 << 20, "{stats}");
}

#[test]
fn concurrent_allocation_from_eight_threads() {
    assert!(passes(&exercise(&["threads"], &[])).contains("ok: 8 threads"));
}

#[test]
fn host_to_device_copies_go_through_the_cpu_in_stream_order() {
    assert!(passes(&exercise(&["h2d"], &[("FAKECUDA_KERNEL_US", "200000")])).contains("ok: host-to-device copies"));
}

#[test]
fn application_virtual_memory_is_placed_by_the_rules() {
    let stdout = passes(&exercise(&["app-vmm"], &[]));
    assert!(stdout.contains("ok: application cuMemCreate placed 48 MiB local, 128 MiB host"), "{stdout}");
    assert!(stdout.contains("ok: the application's host-placed device memory is device memory to queries and copies"), "{stdout}");
}

#[test]
fn cu_mem_free_waits_for_work_in_every_context() {
    let out = exercise(&["free-elsewhere"], &[("FAKECUDA_DEVICES", "256MiB,256MiB"), ("FAKECUDA_KERNEL_US", "300000")]);
    assert!(passes(&out).contains("ok: cuMemFree from another GPU's context waited"), "{}", describe(&out));
}

#[test]
fn allocations_never_wait_for_the_background_thread_s_pinning() {
    // Pinning one 2 MiB chunk takes about two seconds at this rate: an allocation that had
    // to wait for the pool filler would take that long.
    let stdout = passes(&exercise(&["alloc-latency"], &[("FAKECUDA_PIN_GBPS", "0.001")]));
    let ms: f64 = stdout.split("pinning: ").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap();
    assert!(ms < 1000.0, "an allocation waited {ms} ms while host memory was pinned: {stdout}");
}

#[test]
fn only_the_default_memory_pool_is_placed_other_pools_pass_through() {
    let stdout = passes(&exercise(&["pools"], &[("FAKECUDA_DEVICES", "256MiB,256MiB")]));
    assert!(stdout.contains("ok: the default pool is placed by vvram; another pool passes through"), "{stdout}");
}

#[test]
fn a_stream_capture_is_neither_broken_nor_bypassed() {
    let stdout = passes(&exercise(&["capture"], &[]));
    assert!(stdout.contains("ok: a capture under vvram records the copy, defers the frees and is not broken"), "{stdout}");
}

#[test]
fn control_api_policies_phases_and_stream_ordered_frees() {
    assert!(passes(&exercise(&["control"], &[("FAKECUDA_KERNEL_US", "300000")])).contains("ok: control API"));
}

#[test]
fn an_invalid_policy_stops_the_process_before_main() {
    let bad = write_file("bad.toml", "[[device]]\nindex = 0\nlocal_budgt = \"8GiB\"\n");
    let out = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), Some(&bad)).arg("devices").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:3:1:") && stderr.contains("did you mean `local_budget`"), "{stderr}");
}

#[test]
fn a_policy_larger_than_the_machine_stops_the_process_at_first_use() {
    let big = write_file("big.toml", "[[device]]\nindex = 0\nlocal_budget = \"1GiB\"\n");
    let out = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), Some(&big)).arg("oom").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("big.toml:3:16:") && stderr.contains("GPU 0 holds 256 MiB"), "{stderr}");
}

/// Runs `spread` under the standard policy with fake-driver settings; stderr and status.
fn spread_on(env: &[(&str, &str)]) -> Output {
    exercise(&["spread"], &[&[("VVRAM_LOG", "info")], env].concat())
}

/// Runs `oom` (whose first call is an allocation hook) with fake-driver settings.
fn first_allocation_on(env: &[(&str, &str)]) -> Output {
    exercise(&["oom"], env)
}

fn stops_at_start_up(out: &Output, reason: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the policy does not fit this machine, stopping") && stderr.contains(reason), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok: "), "nothing may run before the check: {}", describe(out));
}

#[test]
fn cpu_access_to_host_chunks_uses_the_documented_location_type_or_the_one_the_driver_takes() {
    let documented = spread_on(&[]);
    passes(&documented);
    assert!(String::from_utf8_lossy(&documented.stderr).contains("location=\"CU_MEM_LOCATION_TYPE_HOST_NUMA\""), "{}", describe(&documented));
    let fallback = spread_on(&[("FAKECUDA_HOST_ACCESS", "host")]);
    assert!(passes(&fallback).contains("ok: data across the local/host seam reads back exactly"));
    let stderr = String::from_utf8_lossy(&fallback.stderr);
    assert!(stderr.contains("using the one it accepts") && stderr.contains("location=\"CU_MEM_LOCATION_TYPE_HOST\""), "{stderr}");
    stops_at_start_up(&first_allocation_on(&[("FAKECUDA_HOST_ACCESS", "none")]), "the host tier cannot be used on this machine: cuMemSetAccess grants the CPU no access");
}

#[test]
fn host_chunks_live_on_the_gpu_s_numa_node_and_a_host_tier_without_host_vmm_is_refused() {
    assert!(passes(&spread_on(&[("FAKECUDA_HOST_NUMA", "1")])).contains("ok: 3x the local budget placed: local 64 MiB, host 128 MiB"));
    stops_at_start_up(&first_allocation_on(&[("FAKECUDA_HOST_VMM", "0")]), "the host tier cannot be used on this machine: the driver does not support host-located virtual memory");
}

#[test]
fn a_peer_donor_the_gpu_cannot_reach_is_refused() {
    let policy = write_file("peer.toml", "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"peer:1\", capacity = \"64MiB\" }]\n");
    let run = |peers: &str| {
        under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), Some(&policy))
            .args(["devices"])
            .env("FAKECUDA_DEVICES", "256MiB,256MiB")
            .env("FAKECUDA_PEERS", peers)
            .output()
            .unwrap()
    };
    passes(&run("all"));
    let out = run("none");
    stops_at_start_up(&out, "peer.toml:4");
    assert!(String::from_utf8_lossy(&out.stderr).contains("peer:1 cannot donate to GPU 0"), "{}", describe(&out));
}

#[test]
fn a_granularity_that_does_not_divide_the_chunk_is_refused_at_start_up() {
    stops_at_start_up(&first_allocation_on(&[("FAKECUDA_GRANULARITY", "4MiB")]), "GPU 0 has an allocation granularity of 4194304 bytes");
    stops_at_start_up(&first_allocation_on(&[("FAKECUDA_HOST_GRANULARITY", "4MiB")]), "host NUMA node 0 has an allocation granularity of 4194304 bytes");
}

#[test]
fn without_a_policy_everything_passes_through_and_says_so_once() {
    let out = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), None).args(["--door", "procaddress", "all"]).output().unwrap();
    let stdout = passes(&out);
    assert!(stdout.contains("out of memory after 256 MiB of 256 MiB"), "{stdout}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("vvram: no policy").count(), 1, "{}", describe(&out));
}

#[test]
fn a_distorch_allocation_string_is_a_policy() {
    let out = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), None)
        .env("VVRAM_ALLOC", "cuda:0,64mb;cpu,128mb")
        .arg("spread")
        .output()
        .unwrap();
    assert!(passes(&out).contains("ok: 3x the local budget placed"));
}

#[test]
fn nothing_is_printed_on_stdout_and_logs_go_to_the_log_file() {
    let log = build_dir().join("shim-tests/vvram.log");
    let _ = std::fs::remove_file(&log);
    let policy = write_file("quiet.toml", POLICY);
    let out = under_shim(Path::new("/bin/sh"), Some(&policy)).args(["-c", "echo only-this"]).env("VVRAM_LOG", "debug").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "only-this\n");
    let out = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), Some(&policy))
        .arg("spread")
        .env("VVRAM_LOG", "debug")
        .env("VVRAM_LOG_FILE", &log)
        .output()
        .unwrap();
    passes(&out);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("policy resolved against the machine"), "{logged}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("policy resolved"));
}

#[test]
fn comfy_aimdo_in_the_process_is_detected_and_the_fix_named() {
    let dir = build_dir().join("shim-tests");
    let source = write_file("aimdo.c", "void aimdo_setup_hooks(void) {}\n");
    let library = dir.join("libcomfy_aimdo.so");
    let compiled = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&library).arg(&source).output().unwrap();
    assert!(compiled.status.success(), "{}", describe(&compiled));
    let policy = write_file("aimdo.toml", POLICY);
    let out = under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), Some(&policy))
        .env("LD_PRELOAD", format!("{} {}", shim_library().display(), library.display()))
        .arg("spread")
        .output()
        .unwrap();
    passes(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("comfy-aimdo").count(), 1, "{stderr}");
    assert!(stderr.contains("--disable-dynamic-vram"), "{stderr}");
}
