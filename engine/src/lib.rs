//! The migration engine's decisions, with no CUDA in them.
//!
//! The shim's launch hooks scan kernel parameters for words inside donor-tier extents
//! ([`ExtentTable`], lock-free), and hand the references of each launch to an
//! [`Engine`]: it stages extents into a ring of slots in the local cache ([`ring`]),
//! predicts the next launches' extents ([`Predictor`]), says which references are
//! translated to a staged copy, and keeps the copies coherent with their extents
//! (write-back, drops, graph launches). Everything the engine does on the device goes
//! through the [`Transfers`] trait, stream-ordered with events.

mod engine;
mod predictor;
pub mod ring;
mod scan;
mod table;

pub use engine::{CacheState, Counters, Engine, Settings, Source, Transfers, Translation};
pub use predictor::{Predictor, PredictorState};
pub use scan::rewrite;
pub use table::{ExtentTable, TableFull};

#[cfg(test)]
mod tests;
