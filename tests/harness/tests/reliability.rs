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
