//! Which engine is which, and what each can do: the transfer decides how a
//! file's bytes move from these capabilities, never from engine names.

/// One of the engines this build has. Its [`name`](EngineId::name) is what
/// users pass as the `engine` option and see on the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineId {
    Reflink,
    CopyFileRange,
    Splice,
    IoUring,
    Standard,
}

/// What an engine does with a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The copy shares the source's extents (a clone): no bytes move, only
    /// whole files, holes included.
    pub shares_extents: bool,
    /// The kernel (or, on NFS and SMB, the server) may copy without the
    /// bytes passing through this machine's page cache.
    pub offloads: bool,
    /// Every byte passes through a buffer of ours, in user space, where a
    /// [`ByteObserver`](super::ByteObserver) can see it.
    pub bytes_in_user_space: bool,
    /// Each call pays a setup (a pipe, a ring submission) that plain read
    /// and write do not: for a small file that setup is most of the cost.
    pub setup_per_call: bool,
    /// Can copy many small files of one directory in one batch.
    pub batches_small_files: bool,
}

impl EngineId {
    pub const ALL: [EngineId; 5] = [
        EngineId::Reflink,
        EngineId::CopyFileRange,
        EngineId::Splice,
        EngineId::IoUring,
        EngineId::Standard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EngineId::Reflink => "reflink",
            EngineId::CopyFileRange => "copy_file_range",
            EngineId::Splice => "splice",
            EngineId::IoUring => "io_uring",
            EngineId::Standard => "standard",
        }
    }

    /// The engine named `name` (not "auto", which is a choice, not an
    /// engine).
    pub fn from_name(name: &str) -> Option<EngineId> {
        Self::ALL.into_iter().find(|id| id.name() == name)
    }

    pub fn capabilities(self) -> Capabilities {
        let none = Capabilities {
            shares_extents: false,
            offloads: false,
            bytes_in_user_space: false,
            setup_per_call: false,
            batches_small_files: false,
        };
        match self {
            EngineId::Reflink => Capabilities {
                shares_extents: true,
                ..none
            },
            EngineId::CopyFileRange => Capabilities {
                offloads: true,
                ..none
            },
            EngineId::Splice => Capabilities {
                setup_per_call: true,
                ..none
            },
            EngineId::IoUring => Capabilities {
                bytes_in_user_space: true,
                setup_per_call: true,
                batches_small_files: true,
                ..none
            },
            EngineId::Standard => Capabilities {
                bytes_in_user_space: true,
                ..none
            },
        }
    }
}

impl std::fmt::Display for EngineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_reads_back_by_its_name_and_auto_is_no_engine() {
        for id in EngineId::ALL {
            assert_eq!(EngineId::from_name(id.name()), Some(id));
        }
        assert_eq!(EngineId::from_name("auto"), None);
        assert_eq!(EngineId::from_name("cp"), None);
    }

    #[test]
    fn only_read_write_engines_let_an_observer_see_the_bytes() {
        let seeing: Vec<EngineId> = EngineId::ALL
            .into_iter()
            .filter(|id| id.capabilities().bytes_in_user_space)
            .collect();
        assert_eq!(seeing, [EngineId::IoUring, EngineId::Standard]);
    }
}
