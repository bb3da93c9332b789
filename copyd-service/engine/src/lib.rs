//! copyd's copy engine.
//!
//! It resolves a request (sources, destination, options) into work items,
//! walks the sources and copies or moves them with plain threads and system
//! calls. It knows nothing of D-Bus or async runtimes: this crate does not
//! depend on zbus or tokio, so the compiler keeps that boundary. Callers see
//! progress through [`Progress`] (atomic counters they may sample at any rate)
//! and steer a running transfer through [`Control`] (pause, resume, cancel,
//! rate limit).
//!
//! Durability contract: a file or tree only ever appears under its final name
//! complete and synced. Until then it lives under a hidden temporary name
//! (`.copyd-<tag>-<n>.tmp`) in the target's directory, which a failed or
//! cancelled transfer removes.

#![deny(unsafe_code)]

mod anchored;
pub mod conflict;
pub mod engines;
pub mod error;
pub mod fsutil;
pub mod identity;
pub mod journal;
pub mod links;
pub mod metadata;
pub mod names;
pub mod parallel;
pub mod placed;
pub mod progress;
pub mod provenance;
pub mod read_ahead;
pub mod request;
pub mod residency;
pub mod retry;
pub mod sparse;
pub mod transfer;
pub mod verify;
pub mod walk;
pub mod xattr;

pub use conflict::{ConflictAnswer, ConflictDecision, ConflictQuestion};
pub use engines::{ByteObserver, CopyContext, CopyError, EngineId, EngineSet, FileCopier};
pub use error::{EngineError, ErrorKind};
pub use journal::{CopyIdentity, FileIdentity, Journal, NoJournal, ResumeState};
pub use placed::{Action, PlacedFile};
pub use progress::{Control, Progress, ProgressSnapshot, RateLimiter, RouteReport, RunState};
pub use request::{
    plan, resolve, Conflict, Item, OnError, Operation, Options, PlanReport, Preserve,
    RealLocations, Request, Resolved,
};
pub use transfer::{run, run_resumable, Failure, Outcome};
pub use verify::{Checksum, Verify};
pub use walk::EntryKind;
