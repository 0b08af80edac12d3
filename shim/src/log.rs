//! `tracing` to stderr or `VVRAM_LOG_FILE`, filtered by `VVRAM_LOG` (`warn` when unset;
//! `target=level` lists as in `vvram=debug`). Never stdout.

use std::sync::Once;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// Installs the subscriber once; called lazily from hooks, never from `dlsym`.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter_text = std::env::var("VVRAM_LOG").unwrap_or_else(|_| "warn".to_string());
        let filter: Targets = filter_text.parse().unwrap_or_else(|e| {
            eprintln!("vvram: VVRAM_LOG `{filter_text}` is not a filter ({e}); using `warn`");
            Targets::new().with_default(tracing::Level::WARN)
        });
        let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_target(false);
        let result = match std::env::var("VVRAM_LOG_FILE") {
            Ok(path) => match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => tracing_subscriber::registry()
                    .with(layer.with_writer(std::sync::Mutex::new(file)).with_filter(filter))
                    .try_init(),
                Err(e) => {
                    eprintln!("vvram: cannot open VVRAM_LOG_FILE {path}: {e}; logging to stderr");
                    tracing_subscriber::registry().with(layer.with_writer(std::io::stderr).with_filter(filter)).try_init()
                }
            },
            Err(_) => tracing_subscriber::registry().with(layer.with_writer(std::io::stderr).with_filter(filter)).try_init(),
        };
        if let Err(e) = result {
            eprintln!("vvram: cannot install the logger: {e}");
        }
    });
}
