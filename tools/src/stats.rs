//! `vvram stats PID`: the live statistics of a process running under libvvram.so.

use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use vvram_policy::size::format_size;
use vvram_stats::{ReadError, Snapshot, read, remove_stale_regions};

/// Show where a running process's memory lives, read from its shared-memory region
/// without stopping it.
#[derive(Args)]
#[command(after_help = "Examples:\n  vvram stats 12345\n  vvram stats 12345 --watch\n  vvram stats 12345 --json\n\nExit codes: 0; 1 when the process is not running, not running vvram, or belongs to another user.")]
pub struct StatsArgs {
    /// The process ID.
    pid: u32,
    /// Refresh every second until the process ends (Ctrl-C to stop).
    #[arg(long)]
    watch: bool,
    /// Print the snapshot as JSON (the same fields as vvram_stats_json).
    #[arg(long, conflicts_with = "watch")]
    json: bool,
}

fn bar(used: u64, capacity: u64) -> String {
    let filled = if capacity == 0 { 0 } else { ((used as f64 / capacity as f64) * 20.0).round().min(20.0) as usize };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled))
}

/// Text from the region as it may be printed: control characters (terminal escape
/// sequences among them) are shown escaped, never sent to the terminal.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// The snapshot as a table. Every string from the region is shown escaped.
pub fn render(s: &Snapshot) -> String {
    let mut out = format!(
        "vvram {} in process {} — policy {}, phase {}{}\n",
        printable(&s.version),
        s.pid,
        printable(s.policy.as_deref().unwrap_or("none")),
        printable(s.phase.as_deref().unwrap_or("none")),
        match (&s.policy_error, s.active) {
            (Some(error), _) => format!(" (not active: the policy does not fit this machine: {})", printable(error)),
            (None, true) => String::new(),
            (None, false) => " (not active yet)".to_string(),
        }
    );
    for device in &s.devices {
        out += &format!("\ndevice {} — the application is told it holds {}\n", device.device, format_size(device.reported_total));
        out += &format!("  {:<8} {:>12} {:>12} {:>7} {:>12} {:>12} {:>12}\n", "tier", "used", "budget", "", "hot", "weights", "unknown");
        for tier in &device.tiers {
            out += &format!(
                "  {:<8} {:>12} {:>12} {:>6.1}% {} {:>12} {:>12} {:>12}\n",
                printable(&tier.tier),
                format_size(tier.used),
                format_size(tier.capacity),
                if tier.capacity == 0 { 0.0 } else { tier.used as f64 * 100.0 / tier.capacity as f64 },
                bar(tier.used, tier.capacity),
                format_size(tier.hot),
                format_size(tier.weights),
                format_size(tier.unknown)
            );
        }
        out += &format!("  live allocations: {}\n", device.allocations);
    }
    out += &format!(
        "\nallocations served {}, freed {}, refused (out of memory) {}\nhost pool {} pinned ahead; CPU copies into host tier {}; errors {}\n",
        s.allocations,
        s.frees,
        s.out_of_memory,
        format_size(s.host_pool_bytes),
        format_size(s.fast_h2d_bytes),
        s.errors
    );
    let e = &s.engine;
    if e.engines > 0 {
        let rate = |part: u64, whole: u64| if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 };
        out += &format!(
            "\nmigration engine: launches seen {}, with donor memory {}, translated {}, read in place {}, unscanned {}, captured {}, graph {}\n",
            e.launches_seen, e.donor_launches, e.translated_launches, e.missed_launches, e.unscanned_launches, e.captured_launches, e.graph_launches
        );
        out += &format!(
            "  staged from host {}, from peers {}, written back {}; copies ahead {}, on demand {}, dropped {}; kernels issued before their copy finished {} (stalled {:.1} ms over {} timed)\n",
            format_size(e.staged_host_bytes),
            format_size(e.staged_peer_bytes),
            format_size(e.written_back_bytes),
            e.prefetch_copies,
            e.demand_copies,
            e.dropped_copies,
            e.waited_references,
            e.stall_ns as f64 / 1e6,
            e.stall_probes
        );
        out += &format!(
            "  predictor: period {} launches{}, {:.1}% of {} predicted right; cache {} of {} ({} copies) {}\n",
            e.period,
            if e.locked { " (locked)" } else { "" },
            rate(e.predicted_right, e.predicted),
            e.predicted,
            format_size(e.cache_occupied),
            format_size(e.cache_bytes),
            e.cache_copies,
            bar(e.cache_occupied, e.cache_bytes)
        );
    }
    let w = &s.working_set;
    if w.devices > 0 {
        out += &format!(
            "\nworking set: {} of {} device(s) settled after {} steps{}; used many times per step {} ({} on donors), weights {} ({} on the card)\n",
            w.settled,
            w.devices,
            w.steps,
            if w.reserve > 0 { format!(", {} kept free while loading", format_size(w.reserve)) } else { String::new() },
            format_size(w.hot_bytes),
            format_size(w.donor_hot_bytes),
            format_size(w.weights_bytes),
            format_size(w.local_weights_bytes)
        );
        out += &format!(
            "  moves: {} demoted ({}), {} promoted ({}) in {} batches taking {:.1} ms; {} by context synchronisation, {} given up\n",
            w.demotions,
            format_size(w.demoted_bytes),
            w.promotions,
            format_size(w.promoted_bytes),
            w.batches,
            w.move_ns as f64 / 1e6,
            w.context_syncs,
            w.failed_moves
        );
    }
    out
}

/// Runs `vvram stats`. Regions left behind by processes that are gone (ended by
/// SIGKILL, say) are removed first.
pub fn run(args: &StatsArgs) -> ExitCode {
    remove_stale_regions();
    let fail = |e: ReadError| {
        eprintln!("vvram stats: {e}");
        ExitCode::from(1)
    };
    if !args.watch {
        return match read(args.pid) {
            Ok(s) if args.json => {
                println!("{}", s.to_json());
                ExitCode::SUCCESS
            }
            Ok(s) => {
                print!("{}", render(&s));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let mut seen = false;
    loop {
        match read(args.pid) {
            Ok(s) => {
                seen = true;
                print!("\x1b[2J\x1b[H{}\n(refreshing every second; Ctrl-C to stop)\n", render(&s));
            }
            Err(ReadError::NoProcess(pid) | ReadError::NotVvram(pid)) if seen => {
                println!("process {pid} has ended");
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(e),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vvram_stats::{DeviceSnapshot, TierSnapshot};

    #[test]
    fn escape_sequences_from_the_region_never_reach_the_terminal() {
        let evil = "\x1b]0;owned\x07\x1b[2J\r\n";
        let snapshot = Snapshot {
            version: evil.into(),
            pid: 1,
            policy: Some(evil.into()),
            active: true,
            policy_error: Some(evil.into()),
            phase: Some(evil.into()),
            tag: Some(evil.into()),
            devices: vec![DeviceSnapshot { device: 0, reported_total: 1, allocations: 0, tiers: vec![TierSnapshot { tier: evil.into(), used: 0, capacity: 1, hot: 0, weights: 0, unknown: 0 }] }],
            host_pool_bytes: 0,
            allocations: 0,
            frees: 0,
            out_of_memory: 0,
            fast_h2d_bytes: 0,
            errors: 0,
            engine: Default::default(),
            working_set: Default::default(),
        };
        let table = render(&snapshot);
        assert!(!table.chars().any(|c| c.is_control() && c != '\n'), "{table:?}");
        assert!(table.contains("\\u{1b}[2J"), "{table}");
        assert_eq!(table.matches('\n').count(), render(&Snapshot { version: "v".into(), policy: Some("p".into()), phase: Some("x".into()), devices: vec![DeviceSnapshot { device: 0, reported_total: 1, allocations: 0, tiers: vec![TierSnapshot { tier: "local".into(), used: 0, capacity: 1, hot: 0, weights: 0, unknown: 0 }] }], ..snapshot.clone() }).matches('\n').count());
    }
}
