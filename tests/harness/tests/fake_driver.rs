//! The fake driver, loaded through `dlopen("libcuda.so.1")` with `LD_LIBRARY_PATH`, as
//! a real process loads the real one.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use vvram_harness::fake::{describe, on_fake_driver};

fn exercise(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = on_fake_driver(env!("CARGO_BIN_EXE_cuda-exercise").as_ref());
    command.args(args).env("FAKECUDA_DEVICES", "256MiB,256MiB");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn passes(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = exercise(args, env);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn stitched_device_and_host_chunks_read_back() {
    assert!(passes(&["stitched"], &[]).contains("ok: stitched"));
}

#[test]
fn two_mappings_of_one_allocation_alias() {
    assert!(passes(&["alias"], &[]).contains("ok: two mappings"));
}

#[test]
fn touching_an_unmapped_range_kills_the_process() {
    let out = exercise(&["unmapped"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{}", describe(&out));
}

#[test]
fn stream_and_event_order_hold_under_kernel_delay() {
    assert!(passes(&["order"], &[("FAKECUDA_KERNEL_US", "3000")]).contains("ok: 20 rounds"));
}

#[test]
fn out_of_memory_at_the_configured_size() {
    let stdout = passes(&["oom"], &[("FAKECUDA_DEVICES", "320MiB")]);
    assert!(stdout.contains("out of memory after 320 MiB of 320 MiB"), "{stdout}");
}

#[test]
fn injected_faults_return_the_configured_error() {
    let stdout = passes(&["create-calls", "5"], &[("FAKECUDA_FAIL", "cuMemCreate:2=999,cuMemCreate:every:4")]);
    assert!(stdout.contains("cuMemCreate results: 0 999 0 2 0"), "{stdout}");
}

#[test]
fn launches_and_parameter_layouts_behave_as_driver_580() {
    assert!(passes(&["params"], &[]).contains("ok: kernelParams"));
}

#[test]
fn every_door_reaches_the_same_driver() {
    for door in ["dlsym", "procaddress", "procaddress-ptds"] {
        let stdout = passes(&["--door", door, "all"], &[]);
        assert!(stdout.matches("ok: ").count() == 6, "{door}: {stdout}");
    }
}

#[test]
fn contexts_synchronise_separately_and_cuda_13_variants_take_a_context() {
    for door in ["dlsym", "procaddress"] {
        let stdout = passes(&["--door", door, "contexts"], &[("FAKECUDA_KERNEL_US", "300000")]);
        assert!(stdout.contains("ok: cuCtxSynchronize waits for its own context only"), "{door}: {stdout}");
    }
}

#[test]
fn a_kernel_faults_on_memory_its_device_was_not_given() {
    let out = exercise(&["kernel-without-access"], &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("only device 0 may access"), "{}", describe(&out));
}

#[test]
fn the_driver_s_refusals_are_the_fake_s() {
    assert!(passes(&["refusals"], &[]).contains("ok: cuMemCreate and cuMemSetAccess refuse"));
    let stdout = passes(&["refusals"], &[("FAKECUDA_PEERS", "none")]);
    assert!(stdout.contains("ok: cuMemCreate and cuMemSetAccess refuse"), "{stdout}");
}

#[test]
fn the_cpu_faults_on_memory_a_gpu_keeps_from_it() {
    for what in ["device", "vmm-device", "vmm-host"] {
        let out = exercise(&["cpu-touch", what], &[]);
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{what}: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("touching {what} memory")), "{}", describe(&out));
    }
}

#[test]
fn host_access_takes_the_location_types_the_driver_takes() {
    let out = exercise(&["stitched"], &[("FAKECUDA_HOST_ACCESS", "host-numa")]);
    assert!(!out.status.success(), "HOST refused for CPU access must fail the stitched scenario: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuMemSetAccess failed: 1"), "{}", describe(&out));
}

#[test]
fn stream_capture_follows_the_driver_s_rules() {
    for door in ["dlsym", "procaddress"] {
        let stdout = passes(&["--door", door, "capture-rules"], &[]);
        assert!(stdout.contains("ok: stream capture follows the driver's rules"), "{door}: {stdout}");
    }
}

#[test]
fn pinning_host_memory_costs_time() {
    let stdout = passes(&["pin-cost"], &[("FAKECUDA_PIN_GBPS", "0.5")]);
    let ms: f64 = stdout.split("in ").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap();
    assert!(ms >= 64.0 * 1.048576 / 0.5 * 0.99, "64 MiB pinned at 0.5 GB/s in {ms} ms: {stdout}");
}

#[test]
fn creating_a_context_costs_time() {
    let started = std::time::Instant::now();
    passes(&["devices"], &[("FAKECUDA_CTX_MS", "400")]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "a primary context was created in {:?}", started.elapsed());
}

#[test]
fn granularities_come_from_the_configuration() {
    let out = exercise(&["stitched"], &[("FAKECUDA_HOST_GRANULARITY", "4MiB")]);
    assert!(!out.status.success(), "a 2 MiB host chunk where the host granularity is 4 MiB must be refused: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuMemCreate failed: 1"), "{}", describe(&out));
}

#[test]
fn configured_devices_and_peers_are_listed() {
    let stdout = passes(&["devices"], &[("FAKECUDA_DEVICES", "1GiB,2GiB,3GiB"), ("FAKECUDA_PEERS", "0-1")]);
    assert!(stdout.contains("device 0: fakecuda GPU, 1024 MiB, peers [0 1 0]"), "{stdout}");
    assert!(stdout.contains("device 2: fakecuda GPU, 3072 MiB, peers [0 0 0]"), "{stdout}");
}

#[test]
fn a_malformed_configuration_stops_the_process() {
    let out = exercise(&["devices"], &[("FAKECUDA_DEVICES", "24XB")]);
    assert_eq!(out.status.code(), Some(86), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAKECUDA_DEVICES `24XB`"));
}
