//! The migration engine's decisions, with no CUDA in them.
//!
//! The shim's launch hooks scan kernel parameters for words inside donor-tier extents
//! ([`ExtentTable`], lock-free), and hand the references of each launch to an
//! [`Engine`]: it stages extents into a ring of slots in the local cache ([`ring`]),
//! predicts the next launches' extents ([`Predictor`]), says which references are
//! translated to a staged copy, and keeps the copies coherent with their extents
//! (write-back, drops, graph launches). Tensor-map descriptors are recorded by content
//! ([`TensorMaps`]) so that one pointing into a staged extent can be re-encoded. Everything the engine does on the device goes
//! through the [`Transfers`] trait, stream-ordered with events.

mod engine;
mod predictor;
pub mod ring;
mod scan;
mod table;
mod tensor_maps;

pub use engine::{CacheState, Counters, Engine, Settings, Source, Transfers, Translation};
pub use predictor::{Predictor, PredictorState, STEP_UNIT};
pub use scan::rewrite;
pub use table::{Entry, ExtentTable, Hit, STREAMS_PER_EXTENT, TableFull};
pub use tensor_maps::{DESCRIPTOR_BYTES, Encoding, Shape, TensorMaps};

#[cfg(test)]
mod tests;
