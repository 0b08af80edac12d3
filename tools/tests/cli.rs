//! `vvram run`, `devices`, `stats` and `demo` as a user runs them, on the fake driver.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use vvram_harness::fake::{build_dir, describe, fake_driver_dir, shim_library};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `vvram` with the shim and the fake driver found through the environment.
fn vvram(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vvram"));
    command
        .args(args)
        .current_dir(repo())
        .env("VVRAM_LIB", shim_library())
        .env("VVRAM_FAKECUDA", fake_driver_dir().join("libcuda.so.1"))
        .env("LD_LIBRARY_PATH", fake_driver_dir())
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("LD_PRELOAD")
        .env_remove("FAKECUDA_DEVICES")
        .env_remove("FAKECUDA_PEERS");
    command
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_passes_the_exit_code_through_under_the_shim() {
    let out = vvram(&["run", "--policy", "examples/policies/flux-dev-24gb.toml", "--", "sh", "-c", "echo $LD_PRELOAD; echo $VVRAM_POLICY; exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let stdout = stdout_of(&out);
    assert!(stdout.contains("libvvram.so"), "{stdout}");
    assert!(stdout.contains("/examples/policies/flux-dev-24gb.toml"), "{stdout}");
    let out = vvram(&["run", "--alloc", "cuda:0,2gb;cpu,*", "--", "sh", "-c", "echo $VVRAM_ALLOC"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout_of(&out), "cuda:0,2gb;cpu,*\n");
}

#[test]
fn run_refuses_a_bad_policy_and_a_missing_command() {
    let bad = build_dir().join("cli-bad.toml");
    std::fs::write(&bad, "[[device]]\nindex = 0\nlocal_budget = \"-8GiB\"\n").unwrap();
    let out = vvram(&["run", "--policy", bad.to_str().unwrap(), "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cli-bad.toml:3:16: `-8GiB`: a size cannot be negative"), "{}", describe(&out));
    let out = vvram(&["run", "--alloc", "cuda:0,2gb", "--", "/nonexistent/program"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", describe(&out));
    let out = vvram(&["run", "--alloc", "cuda:0,2gb", "--", "true"]).env("VVRAM_LIB", "/nonexistent/libvvram.so").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn devices_lists_the_configured_devices_peers_and_what_is_hidden() {
    let out = vvram(&["devices"]).env("FAKECUDA_DEVICES", "1GiB,2GiB,3GiB").env("FAKECUDA_PEERS", "0-1").output().unwrap();
    let stdout = stdout_of(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("3 device(s)"), "{stdout}");
    for line in ["0   fakecuda GPU", "1   fakecuda GPU", "2   fakecuda GPU", "00000000:1A:00.0", "3 GiB", "9.0"] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(stdout.contains("   0    -  yes   no") && stdout.contains("   2   no   no    -"), "{stdout}");
    let out = vvram(&["devices"]).env("FAKECUDA_DEVICES", "1GiB,2GiB,3GiB").env("CUDA_VISIBLE_DEVICES", "2").output().unwrap();
    let stdout = stdout_of(&out);
    assert!(stdout.contains("1 device(s)") && stdout.contains("CUDA_VISIBLE_DEVICES=2: 1 of 3 devices visible; 2 hidden"), "{stdout}");
}

#[test]
fn devices_measures_bandwidth() {
    let out = vvram(&["devices", "--bandwidth"]).env("FAKECUDA_DEVICES", "256MiB,256MiB").output().unwrap();
    let stdout = stdout_of(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("H2D pageable") && stdout.contains("0 -> 1") && stdout.contains("GB/s"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[##############################] 8/8"), "{}", describe(&out));
}

#[test]
fn devices_without_a_driver_says_so_in_one_line() {
    if vvram_cuda::Driver::open().is_ok() {
        return;
    }
    let empty = build_dir().join("no-driver");
    std::fs::create_dir_all(&empty).unwrap();
    let out = vvram(&["devices"]).env("LD_LIBRARY_PATH", &empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("vvram devices: no CUDA driver"), "{stderr}");
}

#[test]
fn demo_passes_on_the_fake_driver() {
    let out = vvram(&["demo", "--fake"]).output().unwrap();
    let stdout = stdout_of(&out);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("on the fake driver") && stdout.contains("All 16 checks passed"), "{stdout}");
    assert!(stdout.contains("host         ") && stdout.contains("Full read-back of the last buffer (host 64 MiB): exact"), "{stdout}");
}

fn without_pool(mut snapshot: serde_json::Value) -> serde_json::Value {
    snapshot.as_object_mut().unwrap().remove("host_pool_bytes");
    snapshot
}

#[test]
fn stats_reads_a_live_process_and_agrees_with_vvram_stats_json() {
    let policy = build_dir().join("cli-stats.toml");
    std::fs::write(&policy, "[[device]]\nindex = 0\nlocal_budget = \"256MiB\"\ndonors = [{ tier = \"host\", capacity = \"768MiB\" }]\n").unwrap();
    let mut child = vvram(&["demo-workload", "--hold"])
        .env("LD_PRELOAD", shim_library())
        .env("VVRAM_POLICY", &policy)
        .env("FAKECUDA_DEVICES", "2GiB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let inside: serde_json::Value = loop {
        let line = lines.next().expect("the workload prints its stats").unwrap();
        if let Some(json) = line.strip_prefix("stats: ") {
            break serde_json::from_str(json).unwrap();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let outside = loop {
        let out = vvram(&["stats", &pid, "--json"]).output().unwrap();
        if out.status.success() {
            let outside: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if without_pool(outside.clone()) == without_pool(inside.clone()) || Instant::now() > deadline {
                break outside;
            }
        } else {
            assert!(Instant::now() < deadline, "{}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(without_pool(outside), without_pool(inside.clone()));
    let table = vvram(&["stats", &pid]).output().unwrap();
    let text = stdout_of(&table);
    assert!(text.contains(&format!("in process {pid}")) && text.contains("256 MiB      256 MiB  100.0%"), "{text}");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let gone = vvram(&["stats", &pid]).output().unwrap();
    assert_eq!(gone.status.code(), Some(1));
}

/// Starts the demo workload under the shim, holding its memory until stdin closes, and
/// waits until its statistics region exists.
fn held_workload() -> (std::process::Child, String) {
    let policy = build_dir().join("cli-stats-held.toml");
    std::fs::write(&policy, "[[device]]\nindex = 0\nlocal_budget = \"16MiB\"\ndonors = [{ tier = \"host\", capacity = \"48MiB\" }]\n[host_pool]\npin_ahead = \"4MiB\"\n").unwrap();
    let mut child = vvram(&["demo-workload", "--hold"])
        .env("LD_PRELOAD", shim_library())
        .env("VVRAM_POLICY", &policy)
        .env("FAKECUDA_DEVICES", "128MiB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let region = format!("/dev/shm/vvram.{}", child.id());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines.next().unwrap_or_else(|| panic!("the workload ended before printing its stats:\n{}", seen.join("\n"))).unwrap();
        if line.starts_with("stats: ") {
            break;
        }
        seen.push(line);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&region).exists() {
        assert!(Instant::now() < deadline, "no region {region}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, region)
}

#[test]
fn the_stats_region_is_removed_when_sigterm_sigint_or_sighup_ends_the_process() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let (mut child, region) = held_workload();
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(signal));
        assert!(!std::path::Path::new(&region).exists(), "signal {signal} left {region}");
    }
}

#[test]
fn stats_cleans_up_after_a_killed_process() {
    let (mut child, region) = held_workload();
    let pid = child.id().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::path::Path::new(&region).exists(), "SIGKILL cannot be caught: the region stays");
    let out = vvram(&["stats", &pid]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!std::path::Path::new(&region).exists(), "vvram stats removes a dead process's region");
}

#[test]
fn stats_refuses_a_short_region_without_crashing() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let region = format!("/dev/shm/vvram.{}", sleeper.id());
    std::fs::write(&region, b"VVRAMST2").unwrap();
    std::fs::set_permissions(&region, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = vvram(&["stats", &sleeper.id().to_string()]).output().unwrap();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let _ = std::fs::remove_file(&region);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreadable"), "{}", describe(&out));
}

#[test]
fn stats_names_processes_it_cannot_read() {
    let out = vvram(&["stats", &std::process::id().to_string()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running vvram"), "{}", describe(&out));
    let out = vvram(&["stats", "4000000000"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process 4000000000 is running"), "{}", describe(&out));
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in ["check", "explain", "run", "devices", "stats", "demo"] {
        let out = vvram(&[command, "--help"]).output().unwrap();
        assert!(out.status.success());
        assert!(stdout_of(&out).contains("Examples:"), "{command}");
    }
}
