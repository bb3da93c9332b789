//! The engines this kernel and build offer, and the choice among them that
//! the `engine` option makes.

use super::{
    CopyFileRangeCopier, EngineId, FileCopier, IoUringConfig, IoUringCopier, ReflinkCopier,
    SpliceCopier, StandardCopier,
};
use crate::error::{EngineError, ErrorKind, Result};

/// The engines usable here, in the order `auto` tries them.
pub struct EngineSet {
    engines: Vec<Box<dyn FileCopier>>,
}

impl Default for EngineSet {
    fn default() -> Self {
        Self::probe()
    }
}

impl EngineSet {
    /// The engines this kernel and build offer, io_uring set up as default.
    pub fn probe() -> Self {
        Self::probe_with(IoUringConfig::default())
    }

    /// The engines this kernel and build offer, in the order `auto` tries
    /// them: reflink and copy_file_range first, since they move no data
    /// through user space when they work at all; then the byte movers in
    /// the order measured fastest (see `BYTE_MOVER_ORDER`).
    pub fn probe_with(io_uring: IoUringConfig) -> Self {
        let mut engines: Vec<Box<dyn FileCopier>> = vec![Box::new(ReflinkCopier)];
        if CopyFileRangeCopier::available() {
            engines.push(Box::new(CopyFileRangeCopier));
        }
        let mut io_uring = IoUringCopier::probe(io_uring);
        for id in BYTE_MOVER_ORDER {
            match id {
                EngineId::IoUring => {
                    if let Some(engine) = io_uring.take() {
                        engines.push(Box::new(engine));
                    }
                }
                EngineId::Splice => engines.push(Box::new(SpliceCopier)),
                EngineId::Standard => engines.push(Box::new(StandardCopier)),
                EngineId::Reflink | EngineId::CopyFileRange => {
                    unreachable!("{id} shares or offloads, it moves no bytes itself")
                }
            }
        }
        EngineSet { engines }
    }

    /// A set of exactly these engines, in this order (tests, benchmarks).
    pub fn from_engines(engines: Vec<Box<dyn FileCopier>>) -> Self {
        assert!(!engines.is_empty(), "an engine set is never empty");
        EngineSet { engines }
    }

    /// The same set without the engine `id` (configuration can turn an
    /// engine off: `[performance] enable_io_uring = false`).
    pub fn without(mut self, id: EngineId) -> Self {
        self.engines.retain(|engine| engine.id() != id);
        self
    }

    /// Whether the set has engine `id`.
    pub fn has(&self, id: EngineId) -> bool {
        self.engines.iter().any(|engine| engine.id() == id)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.engines.iter().map(|e| e.name()).collect()
    }

    /// The engines to try for `choice`: all of them for "auto", else the
    /// one named. An unknown or unusable name is an error.
    pub fn select(&self, choice: &str) -> Result<Vec<&dyn FileCopier>> {
        if choice == "auto" {
            return Ok(self.engines.iter().map(|e| e.as_ref()).collect());
        }
        match self.engines.iter().find(|e| e.name() == choice) {
            Some(engine) => Ok(vec![engine.as_ref()]),
            None => Err(EngineError::new(
                ErrorKind::NotSupported,
                format!(
                    "engine {choice:?} is not usable here (usable: auto, {})",
                    self.names().join(", ")
                ),
            )),
        }
    }

    /// Whether `choice` names an engine this build knows at all.
    pub fn is_known(choice: &str) -> bool {
        choice == "auto" || EngineId::from_name(choice).is_some()
    }
}

/// The byte-moving engines in the order `auto` tries them, fastest first as
/// measured with the `engine_bench` example (see docs/PERFORMANCE.md,
/// "Engine order for auto"). (copy_file_range, tried before these, is EXDEV
/// across file systems.) splice wins because the source pages go to
/// the pipe by reference: one memory copy instead of read+write's two.
/// io_uring does the same two copies as read/write with buffered files; its
/// deep queue pays off with cold caches and fast devices, not here.
pub const BYTE_MOVER_ORDER: [EngineId; 3] =
    [EngineId::Splice, EngineId::IoUring, EngineId::Standard];
