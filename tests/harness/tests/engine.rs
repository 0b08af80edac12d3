//! The migration engine under libvvram.so on the fake driver: weights allocated in phase
//! `load` go to the host tier, kernels that read them are translated to staged copies.

use std::process::Output;
use vvram_harness::fake::{run_under_shim, succeeded_with_stats};

/// 64 MiB local with a 4 KiB cache (six 1 KiB weights cycle through it), host donor.
const POLICY: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"128MiB\" }]\n\
[[rule]]\nphase = \"load\"\ntiers = [\"host\"]\n\
[streaming]\nenabled = true\nlocal_cache = \"4KiB\"\nweights_read_only = false\n";

fn exercise(scenario: &[&str], policy: &str, env: &[(&str, &str)]) -> Output {
    run_under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), "engine-tests", scenario[0], policy, scenario, env)
}

#[test]
fn ten_thousand_steps_of_async_kernels_are_exact_with_every_launch_translated() {
    let (stdout, stats) = succeeded_with_stats(&exercise(&["engine-steps", "10000"], POLICY, &[("FAKECUDA_KERNEL_US", "1")]));
    assert!(stdout.contains("ok: 10000 steps of 6 launches on streamed weights give exact sums"), "{stdout}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert!(stats["engine"]["prefetch_copies"].as_u64().unwrap() > 50_000, "{stats}");
    assert!(stats["engine"]["written_back_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["engine"]["stall_probes"].as_u64().unwrap() > 0, "kernels issued before their copy finished are timed: {stats}");
}

#[test]
fn weights_patched_between_sampling_runs_give_the_patched_results() {
    let (stdout, stats) = succeeded_with_stats(&exercise(&["engine-patch"], POLICY, &[]));
    assert!(stdout.contains("ok: weights patched in place"), "{stdout}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert!(stats["engine"]["dropped_copies"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn a_graph_launch_is_correct_and_counted() {
    let (stdout, stats) = succeeded_with_stats(&exercise(&["engine-graph"], &POLICY.replace("4KiB", "1MiB"), &[]));
    assert!(stdout.contains("ok: a graph launch reads what translated kernels wrote"), "{stdout}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert_eq!(stats["engine"]["captured_launches"], 2, "{stats}");
    assert!(stats["engine"]["dropped_copies"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn a_forced_miss_stays_correct_and_is_counted() {
    let (stdout, _) = succeeded_with_stats(&exercise(&["engine-miss"], POLICY, &[]));
    assert!(stdout.contains("ok: a weight larger than the cache is read in place"), "{stdout}");
}

#[test]
fn struct_parameters_extra_buffers_cooperative_and_library_kernels_and_second_threads_are_translated() {
    let policy = POLICY.replace("4KiB", "1MiB");
    for scenario in ["engine-struct", "engine-extra", "engine-cooperative", "engine-kernel", "engine-thread"] {
        let (stdout, stats) = succeeded_with_stats(&exercise(&[scenario], &policy, &[]));
        assert!(stdout.contains("translated to the staged copy"), "{scenario}: {stdout}");
        assert_eq!(stats["errors"], 0, "{scenario}: {stats}");
    }
}

#[test]
fn a_tensor_map_pointing_into_a_staged_weight_is_re_encoded_for_the_copy() {
    let (stdout, stats) = succeeded_with_stats(&exercise(&["engine-tmap"], &POLICY.replace("4KiB", "1MiB"), &[]));
    assert!(stdout.contains("ok: cuTensorMapEncodeTiled refuses bad arguments"), "{stdout}");
    assert!(stdout.contains("ok: tensor-map descriptor: translated to the staged copy"), "{stdout}");
    assert_eq!(stats["errors"], 0, "{stats}");
}
