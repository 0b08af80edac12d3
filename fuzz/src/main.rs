//! `vvram-fuzz TARGET INPUTS [SEED]`: feeds INPUTS generated inputs to one target and
//! reports panics (overflow checks are on in the test profile this runs in). Targets:
//! `policy` (TOML policies), `distorch` (allocation strings), `size` (size strings and
//! their formatting), `resolve` (policies against random machines, exabytes included),
//! `stats-region` (the reader of `/dev/shm/vvram.PID`, on forged files). `all` runs each.
//!
//! Inputs are mutations (bit flips, byte changes, dictionary tokens, deletions,
//! duplications, splices) of a seed corpus: the example policies and strings that reach
//! every branch the unit tests name. A panic prints the input (escaped) and the run ends
//! with exit 1; a clean run prints `TARGET: N inputs, 0 crashes`.

mod mutate;
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};

fn run(target: &str, inputs: u64, seed: u64) -> Result<(), String> {
    let mut fuzz = targets::target(target)?;
    let mut mutator = mutate::Mutator::new(seed, fuzz.corpus(), fuzz.dictionary());
    let started = std::time::Instant::now();
    let mut crashes = 0u64;
    for _ in 0..inputs {
        let input = mutator.next_input();
        if catch_unwind(AssertUnwindSafe(|| fuzz.run(&input))).is_err() {
            crashes += 1;
            eprintln!("{target}: crash on input {:?}", String::from_utf8_lossy(&input));
        }
    }
    println!("{target}: {inputs} inputs, {crashes} crashes, {:.1} s", started.elapsed().as_secs_f64());
    if crashes > 0 { Err(format!("{target}: {crashes} of {inputs} inputs crashed")) } else { Ok(()) }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(target), Some(inputs)) = (args.first(), args.get(1).and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: vvram-fuzz policy|distorch|size|resolve|stats-region|all INPUTS [SEED]");
        std::process::exit(2);
    };
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    // Panics are reported once per input by the loop, not by the default hook.
    std::panic::set_hook(Box::new(|_| {}));
    let names: Vec<&str> = if target == "all" { targets::NAMES.to_vec() } else { vec![target.as_str()] };
    let failures: Vec<String> = names.iter().filter_map(|name| run(name, inputs, seed).err()).collect();
    if !failures.is_empty() {
        eprintln!("vvram-fuzz: {}", failures.join("; "));
        std::process::exit(1);
    }
}
