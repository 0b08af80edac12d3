//! Automatic placement under libvvram.so on the fake driver: an application that loads
//! its weights first and then samples (what ComfyUI does, no phase set) gets the card
//! for what a step uses many times, and weights on the host streamed through the cache.
//! The scenarios are in cuda-exercise's `working_set.rs`.

use std::process::Output;
use vvram_harness::fake::{run_under_shim, succeeded_with_stats};

/// A 64 MiB card with an 8 MiB staging cache and host RAM: the default reserve is
/// (64 − 8) / 4 = 14 MiB, so loading keeps 42 MiB for the 56 MiB of weights.
const POLICY: &str = "[[device]]\nindex = 0\nlocal_budget = \"64MiB\"\ndonors = [{ tier = \"host\", capacity = \"256MiB\" }]\n\
[streaming]\nenabled = true\nlocal_cache = \"8MiB\"\n";
const MIB: u64 = 1 << 20;

fn exercise(name: &str, mode: &str, policy: &str, env: &[(&str, &str)]) -> Output {
    run_under_shim(env!("CARGO_BIN_EXE_cuda-exercise").as_ref(), "working-set-tests", name, policy, &["working-set", mode], env)
}

fn tier(stats: &serde_json::Value, name: &str, field: &str) -> u64 {
    let tiers = stats["devices"][0]["tiers"].as_array().unwrap();
    tiers.iter().find(|t| t["tier"] == name).unwrap()[field].as_u64().unwrap()
}

fn steps_taken(stdout: &str) -> u64 {
    let line = stdout.lines().find(|l| l.starts_with("ok: after ")).unwrap();
    line["ok: after ".len()..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn loading_keeps_the_reserve_so_activations_allocated_while_sampling_land_on_the_card() {
    let (stdout, stats) = succeeded_with_stats(&exercise("steady", "steady", POLICY, &[]));
    assert!(stdout.contains("every weight intact byte for byte"), "{stdout}");
    let w = &stats["working_set"];
    assert_eq!(w["donor_hot_bytes"], 0, "{stats}");
    assert!(w["hot_bytes"].as_u64().unwrap() >= 10 * MIB, "the activations and the latent are hot: {stats}");
    assert_eq!((w["demotions"].as_u64(), w["promotions"].as_u64()), (Some(0), Some(0)), "the reserve made moves unnecessary: {stats}");
    assert!(stdout.contains("ok: from step 2 on, everything used many times per step was on the card"), "{stdout}");
    assert_eq!(tier(&stats, "host", "used"), 16 * MIB, "the four weights past the reserve went to the host: {stats}");
    assert_eq!(tier(&stats, "local", "hot"), 10 * MIB, "{stats}");
    assert_eq!(tier(&stats, "host", "weights"), 16 * MIB, "{stats}");
    assert_eq!(w["reserve"], 0, "the reserve is released once settled: {stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert!(stats["engine"]["translated_launches"].as_u64().unwrap() > 0, "{stats}");
}

#[test]
fn activations_that_landed_on_the_host_are_promoted_and_weights_demoted_to_make_room() {
    // A 2 MiB reserve: the weights fill the card, the activations go to the host.
    let policy = format!("{POLICY}[placement]\nreserve = \"2MiB\"\n");
    let (stdout, stats) = succeeded_with_stats(&exercise("promote", "steady", &policy, &[]));
    assert!(stdout.contains("every weight intact byte for byte"), "{stdout}");
    let w = &stats["working_set"];
    assert_eq!(w["donor_hot_bytes"], 0, "{stats}");
    assert!(w["promotions"].as_u64().unwrap() >= 2, "both activations moved to the card: {stats}");
    assert!(w["demotions"].as_u64().unwrap() >= 1, "weights made room for them: {stats}");
    assert!(w["batches"].as_u64().unwrap() <= 3, "moves come in a few batches, not every step: {stats}");
    assert!(steps_taken(&stdout) <= 20, "classified and moved within a few steps: {stdout}");
    assert_eq!(tier(&stats, "local", "hot"), 10 * MIB, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

#[test]
fn weights_kept_off_the_card_while_loading_come_back_into_the_room_left() {
    // A 24 MiB reserve: 8 weights on the card, 6 on the host; the activations take
    // 10 MiB of the reserve, and two weights (8 MiB) fit beside them with 4 MiB left free.
    let policy = format!("{POLICY}[placement]\nreserve = \"24MiB\"\n");
    let (stdout, stats) = succeeded_with_stats(&exercise("refill", "refill", &policy, &[]));
    assert!(stdout.contains("every weight intact byte for byte"), "{stdout}");
    let w = &stats["working_set"];
    assert_eq!((w["promotions"].as_u64(), w["demotions"].as_u64()), (Some(2), Some(0)), "{stats}");
    assert_eq!(tier(&stats, "host", "used"), 16 * MIB, "{stats}");
    assert_eq!(tier(&stats, "local", "hot"), 10 * MIB, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

#[test]
fn demotion_under_pressure_from_another_thread_keeps_every_weight_byte_for_byte() {
    let (stdout, stats) = succeeded_with_stats(&exercise("pressure", "pressure", POLICY, &[]));
    assert!(stdout.contains("fit on the card after"), "{stdout}");
    assert!(stdout.contains("every weight intact byte for byte"), "{stdout}");
    assert_eq!(stats["working_set"]["donor_hot_bytes"], 0, "{stats}");
    assert_eq!(tier(&stats, "local", "used"), tier(&stats, "local", "capacity"), "{stats}");
    assert_eq!(stats["working_set"]["context_syncs"], 0, "moves ordered by events on the streams that used the weights: {stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

#[test]
fn nothing_moves_while_a_stream_captures() {
    let (stdout, stats) = succeeded_with_stats(&exercise("capture", "capture", POLICY, &[]));
    assert!(stdout.contains("ok: nothing moved while a stream captured"), "{stdout}");
    assert!(stdout.contains("every weight intact byte for byte"), "{stdout}");
    assert!(tier(&stats, "host", "used") > 16 * MIB, "the buffer went to the host: {stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

#[test]
fn a_move_of_memory_used_on_a_stream_since_destroyed_waits_for_every_context() {
    let (stdout, stats) = succeeded_with_stats(&exercise("new-stream", "pressure-new-stream", POLICY, &[]));
    assert!(stdout.contains("every weight intact byte for byte"), "{stdout}");
    let w = &stats["working_set"];
    assert!(w["demotions"].as_u64().unwrap() >= 2, "{stats}");
    assert!(w["context_syncs"].as_u64().unwrap() >= 1, "the destroyed stream cannot be waited on: {stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
}

/// Placement of the same run with `extra` appended to the policy, as (local, host) bytes.
fn fixed_placement(name: &str, extra: &str) -> ((u64, u64), serde_json::Value) {
    let (_, stats) = succeeded_with_stats(&exercise(name, "fixed", &format!("{POLICY}{extra}"), &[("WS_STEPS", "8")]));
    ((tier(&stats, "local", "used"), tier(&stats, "host", "used")), stats)
}

#[test]
fn an_explicit_rule_is_never_overridden_and_automatic_off_places_as_before() {
    // Before automatic placement, the default rule was "local first, then donors".
    let (by_rule, rule_stats) = fixed_placement("rule", "[[rule]]\nname = \"card first\"\ntiers = [\"local\", \"host\"]\n");
    let (off, off_stats) = fixed_placement("off", "[placement]\nautomatic = false\n");
    // Cache and weights fill the card; the latent, the activations and a slab spill.
    assert_eq!(by_rule, (64 * MIB, 12 * MIB), "weights fill the card, activations spill: {rule_stats}");
    assert_eq!(off, by_rule, "automatic = false places exactly as the rules did: {off_stats}");
    for stats in [&rule_stats, &off_stats] {
        let w = &stats["working_set"];
        assert_eq!((w["demotions"].as_u64(), w["promotions"].as_u64()), (Some(0), Some(0)), "{stats}");
        assert_eq!(stats["errors"], 0, "{stats}");
    }
    assert_eq!(off_stats["working_set"]["devices"], 0, "{off_stats}");
}
