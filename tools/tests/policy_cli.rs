//! `vvram check` and `vvram explain` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn vvram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vvram")).args(args).current_dir(repo()).output().unwrap()
}

fn example_policies() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("examples/policies"))
        .unwrap()
        .map(|e| format!("examples/policies/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_policy_checks() {
    let files = example_policies();
    assert!(files.len() >= 5, "{files:?}");
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let out = vvram(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn every_example_policy_explains_on_its_target_machine() {
    for file in example_policies() {
        let out = vvram(&["explain", &file, "--model-size", "30GiB", "--devices", "0:24GiB,1:24GiB", "--host", "64GiB"]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Every example policy and ComfyUI preset leaves model-sized allocations to automatic
/// placement: a catch-all rule would place them by rule and turn it off for them.
#[test]
fn examples_and_presets_rely_on_automatic_placement() {
    let presets = std::fs::read_dir(repo().join("tools/comfyui/presets"))
        .unwrap()
        .map(|e| format!("tools/comfyui/presets/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".toml"));
    let files: Vec<String> = example_policies().into_iter().chain(presets).collect();
    assert!(files.len() >= 30, "{files:?}");
    let machine = vvram_policy::Machine::from_args("0:24GiB,1:24GiB", "64GiB").unwrap();
    for file in files {
        let text = std::fs::read_to_string(repo().join(&file)).unwrap();
        let policy = vvram_policy::parse_policy(&file, &text).unwrap();
        let plan = vvram_policy::resolve(&policy, &machine).unwrap();
        assert!(plan.automatic, "{file}");
        for device in &plan.devices {
            for phase in [None, Some("load"), Some("sampling")] {
                assert!(device.is_automatic(64 << 20, phase, None), "{file}: a 64 MiB allocation in phase {phase:?} is placed by a rule");
            }
        }
    }
}

#[test]
fn explain_shows_an_explicit_reserve_and_automatic_placement_turned_off() {
    let out = vvram(&["explain", "examples/policies/wan-14b-12gb.toml", "--model-size", "28GiB", "--devices", "0:12GiB", "--host", "64GiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("  Automatic placement: on — what no explicit rule places, vvram places by use"), "{stdout}");
    assert!(stdout.contains("  Reserve: 4 GiB of the card kept free while the model loads (set by `reserve` at line 18)"), "{stdout}");
    assert!(stdout.contains("by use (tiers: the order tried at load)"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("vvram-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("manual.toml");
    let policy = "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\ndonors = [{ tier = \"host\", capacity = \"32GiB\" }]\n\
                  [[rule]]\nname = \"small stays local\"\nmax_size = \"1MiB\"\ntiers = [\"local\"]\n[placement]\nautomatic = false\n";
    std::fs::write(&file, policy).unwrap();
    let out = vvram(&["explain", file.to_str().unwrap(), "--model-size", "12GiB"]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("  Automatic placement: off ([placement] automatic = false) — the rules alone place every allocation; nothing is moved"), "{stdout}");
    assert!(!stdout.contains("Reserve:"), "{stdout}");
    assert!(stdout.contains("an allocation no rule matches uses every tier in order:"), "{stdout}");
    assert!(stdout.contains("size < 1 MiB  local  fixed by this rule\n"), "{stdout}");
    // The card fills first: no reserve is kept at load.
    assert!(stdout.contains("lands:\n    local             8 GiB   66.7%\n    host              4 GiB   33.3%\n"), "{stdout}");
}

#[test]
fn misspelled_key_exits_2_naming_line_column_and_key() {
    let dir = std::env::temp_dir().join(format!("vvram-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typo.toml");
    std::fs::write(&file, "[[device]]\nindex = 0\nlocal_budgt = \"8GiB\"\n").unwrap();
    let out = vvram(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("typo.toml:3:1:"), "{stderr}");
    assert!(stderr.contains("did you mean `local_budget`"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = vvram(&["check", "--json", file.to_str().unwrap(), "examples/policies/flux-dev-24gb.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["valid"], false);
    assert_eq!(report[0]["error"]["line"], 3);
    assert_eq!(report[0]["error"]["column"], 1);
    assert_eq!(report[1]["valid"], true);
}

#[test]
fn check_against_a_machine_and_allocation_strings() {
    let out = vvram(&["check", "examples/policies/flux-dev-24gb.toml", "--devices", "0:12GiB", "--host", "64GiB"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPU 0 holds 12 GiB"));
    let out = vvram(&["check", "--alloc", "cuda:0,2.5gb;cpu,*"]);
    assert_eq!(out.status.code(), Some(0));
    let out = vvram(&["check", "--alloc", "cuda:0,2.5qb;cpu,*"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("--alloc:1:8:"));
    let out = vvram(&["check", "does-not-exist.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn a_reserve_the_budget_cannot_keep_free_is_refused_without_a_machine() {
    let dir = std::env::temp_dir().join(format!("vvram-check-reserve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reserve.toml");
    let text = "[[device]]\nindex = 0\nlocal_budget = \"8GiB\"\n[streaming]\nenabled = true\n[placement]\nreserve = \"7GiB\"\n";
    std::fs::write(&file, text).unwrap();
    let out = vvram(&["check", file.to_str().unwrap()]);
    let fits = vvram(&["check", "--alloc", "cuda:0,8gb;cpu,8gb"]);
    std::fs::write(&file, text.replace("7GiB", "6GiB")).unwrap();
    let six = vvram(&["check", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reserve.toml:7:11: `reserve` (7 GiB) is more than device 0 can keep free") && stderr.contains("expected at most 6 GiB"), "{stderr}");
    assert_eq!(fits.status.code(), Some(0), "{}", String::from_utf8_lossy(&fits.stderr));
    assert_eq!(six.status.code(), Some(0), "{}", String::from_utf8_lossy(&six.stderr));
}

#[test]
fn explain_needs_a_machine_for_relative_amounts() {
    let out = vvram(&["explain", "--alloc", "cuda:0,0.5;cpu,0.5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--devices"));
}

/// Compares with the snapshot in tests/snapshots; `VVRAM_UPDATE_SNAPSHOTS=1` rewrites it.
fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("VVRAM_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "snapshot {name} differs (VVRAM_UPDATE_SNAPSHOTS=1 to accept)");
}

#[test]
fn explain_snapshot_two_gpus() {
    let out = vvram(&[
        "explain",
        "examples/policies/two-gpu-nvlink.toml",
        "--model-size",
        "50GiB",
        "--devices",
        "0:24GiB,1:24GiB",
        "--host",
        "64GiB",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_snapshot("explain_two_gpu_nvlink.txt", &String::from_utf8(out.stdout).unwrap());
}

#[test]
fn explain_snapshot_ratio_string_with_default_rules() {
    let out = vvram(&["explain", "--alloc", "cuda:0,8%;cpu,4%", "--model-size", "38GiB", "--devices", "0:12GiB", "--host", "32GiB"]);
    assert_eq!(out.status.code(), Some(0));
    assert_snapshot("explain_alloc_ratio.txt", &String::from_utf8(out.stdout).unwrap());
}

#[test]
fn enormous_sizes_are_answered_at_once_and_never_crash() {
    let started = std::time::Instant::now();
    let out = vvram(&["explain", "examples/policies/flux-dev-24gb.toml", "--model-size", "16777215TiB", "--devices", "0:24GiB,1:24GiB", "--host", "64GiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no room    16777214.96 TiB"), "{}", String::from_utf8_lossy(&out.stdout));
    let out = vvram(&["check", "--alloc", "cuda:0,16777215TiB;cuda:1,16777215TiB;cpu,16777215TiB", "--devices", "0:16777215TiB,1:16777215TiB", "--host", "16777215TiB"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 16 EiB"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn explain_snapshot_streaming_with_the_default_reserve() {
    let out = vvram(&["explain", "examples/policies/qwen-image-bf16-24gb.toml", "--model-size", "38GiB"]);
    assert_eq!(out.status.code(), Some(0));
    assert_snapshot("explain_qwen_streaming.txt", &String::from_utf8(out.stdout).unwrap());
}
