//! libvvram.so's statistics, read through `vvram_stats_json` when the process runs
//! under it.

use std::ffi::c_void;

/// The preloaded library's statistics entry point.
pub struct Stats {
    json: vvram_stats::StatsJsonFn,
}

impl Stats {
    /// `vvram_stats_json`, when libvvram.so is loaded.
    pub fn find() -> Option<Stats> {
        // SAFETY: a lookup in the global scope; the symbol has this signature (vvram.h).
        let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"vvram_stats_json".as_ptr()) };
        (!address.is_null()).then(|| Stats { json: unsafe { std::mem::transmute::<*mut c_void, vvram_stats::StatsJsonFn>(address) } })
    }

    fn read(&self) -> Result<serde_json::Value, String> {
        // SAFETY: the preloaded libvvram.so's vvram_stats_json.
        let text = unsafe { vvram_stats::control_api_json(self.json) };
        serde_json::from_slice(&text).map_err(|e| format!("vvram_stats_json: {e}"))
    }

    /// Bytes of the allocations vvram placed off the device, wholly or in part.
    pub fn donor_bytes(&self) -> Result<u64, String> {
        let stats = self.read()?;
        stats["engine"]["donor_bytes"].as_u64().ok_or_else(|| format!("no engine.donor_bytes in {stats}"))
    }

    /// The working set as it stands: `donor_hot_bytes N` (bytes of extents used more than
    /// once per step that live on a donor tier, `?` when this libvvram.so does not report
    /// it), then, where vvram placed automatically, a line of the working set's counters.
    pub fn working_set(&self) -> Result<String, String> {
        let w = &self.read()?["working_set"];
        let mib = |key: &str| w[key].as_u64().unwrap_or(0) >> 20;
        let mut text = match w["donor_hot_bytes"].as_u64() {
            Some(bytes) => format!("donor_hot_bytes {bytes}"),
            None => "donor_hot_bytes ?".to_string(),
        };
        if w["devices"].as_u64().unwrap_or(0) > 0 {
            text += &format!(
                "\nworking set: settled {}, steps {}, hot {} MiB ({} MiB on donors), weights {} MiB ({} MiB local), demoted {} ({} MiB), promoted {} ({} MiB), {} batches in {:.1} ms, {} failed",
                w["settled"], w["steps"], mib("hot_bytes"), mib("donor_hot_bytes"), mib("weights_bytes"), mib("local_weights_bytes"),
                w["demotions"], mib("demoted_bytes"), w["promotions"], mib("promoted_bytes"), w["batches"],
                w["move_ns"].as_u64().unwrap_or(0) as f64 / 1e6, w["failed_moves"]
            );
        }
        Ok(text)
    }

    /// Prints the engine's counters, when an engine ran.
    pub fn print_engine(&self) -> Result<(), String> {
        let e = &self.read()?["engine"];
        if e["engines"].as_u64().unwrap_or(0) > 0 {
            println!(
                "engine translated {}/{} launches, missed {}, staged {} MiB, written back {} MiB, period {}, predicted right {}/{}, stalled {:.1} ms over {} timed waits",
                e["translated_launches"], e["donor_launches"], e["missed_launches"],
                e["staged_host_bytes"].as_u64().unwrap_or(0) >> 20, e["written_back_bytes"].as_u64().unwrap_or(0) >> 20,
                e["period"], e["predicted_right"], e["predicted"],
                e["stall_ns"].as_u64().unwrap_or(0) as f64 / 1e6, e["stall_probes"]
            );
        }
        Ok(())
    }
}
