//! Whether a file's bytes are in the page cache, asked cheaply: a large
//! file that must come from the device is copied by several streams at
//! once (see `transfer::copy_data`), one that is cached by one.
//!
//! Why it matters: a single sequential reader leaves a virtio or NVMe
//! device mostly idle (one readahead window in flight), so two streams on
//! a cold file's halves finish far sooner (see docs/PERFORMANCE.md,
//! "Streams for uncached large files"). Warm, two streams only contend for
//! the copy's inode lock (every buffered write takes it), so cached files
//! keep one.

use std::fs::File;
use std::io::IoSliceMut;
use std::ops::Range;

use rustix::io::{Errno, ReadWriteFlags};

/// How many places of a file are looked at.
const SAMPLES: usize = 8;

/// Whether most of the data of `file` in `pieces` (byte ranges holding
/// data, in order) looks absent from the page cache: a 4 KiB read at the
/// start of each of a few evenly spread pieces, with RWF_NOWAIT, which
/// fails with EAGAIN instead of waiting for the device. Only data is
/// sampled: a hole reads as zeros without the device, so samples that fell
/// into holes would call a cold sparse file cached. A file system that
/// cannot do RWF_NOWAIT reads (EOPNOTSUPP) counts as cached, so its files
/// keep the single stream.
pub fn mostly_uncached(file: &File, pieces: &[Range<u64>]) -> bool {
    if pieces.is_empty() {
        return false;
    }
    let samples = SAMPLES.min(pieces.len());
    let mut buffer = [0u8; 4096];
    let mut absent = 0;
    // Last first: a read that misses starts readahead forward from its
    // offset, which must not make a later sample (at a lower offset) hit.
    for sample in (0..samples).rev() {
        let offset = pieces[sample * pieces.len() / samples].start;
        let mut slices = [IoSliceMut::new(&mut buffer)];
        match rustix::io::preadv2(file, &mut slices, offset, ReadWriteFlags::NOWAIT) {
            Err(Errno::AGAIN) => absent += 1,
            Err(_) => return false,
            Ok(_) => {}
        }
    }
    absent * 2 > samples
}

/// Whether most of `files` (paths of small files, at most a few) look
/// absent from the page cache: each opened and its first 4 KiB read with
/// RWF_NOWAIT. A file that cannot be opened or read so (gone, or a file
/// system without RWF_NOWAIT) counts as cached; empty files do not count.
pub fn most_files_uncached<'p>(files: impl Iterator<Item = &'p std::path::Path>) -> bool {
    let (mut asked, mut absent) = (0, 0);
    let mut buffer = [0u8; 4096];
    for path in files {
        let Ok(file) = crate::fsutil::open_nofollow(path) else {
            asked += 1;
            continue;
        };
        let mut slices = [IoSliceMut::new(&mut buffer)];
        match rustix::io::preadv2(&file, &mut slices, 0, ReadWriteFlags::NOWAIT) {
            Ok(0) => {}
            Err(Errno::AGAIN) => {
                asked += 1;
                absent += 1;
            }
            Ok(_) | Err(_) => asked += 1,
        }
    }
    absent * 2 > asked
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn small_files_just_written_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<_> = (0..4).map(|n| dir.path().join(format!("f{n}"))).collect();
        for path in &paths {
            std::fs::write(path, [1u8; 3000]).unwrap();
        }
        assert!(!most_files_uncached(paths.iter().map(|p| p.as_path())));
    }

    #[test]
    fn a_file_just_read_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(&vec![7u8; 1 << 20]).unwrap();
        drop(file);
        let mut file = File::open(&path).unwrap();
        let mut sink = Vec::new();
        file.read_to_end(&mut sink).unwrap();
        assert!(!mostly_uncached(&file, std::slice::from_ref(&(0..1 << 20))));
    }
}
