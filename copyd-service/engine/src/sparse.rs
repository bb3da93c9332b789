//! Finding a file's data with SEEK_DATA / SEEK_HOLE, so a sparse file is
//! copied extent by extent and its holes stay holes in the copy.

use std::fs::File;
use std::ops::Range;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

/// The byte ranges of `file` below `len` that hold data, in order. Holes
/// between them (and after the last) need no copying. Where the file system
/// cannot tell (SEEK_DATA unsupported), the rest of the file counts as data.
///
/// Moves the file's offset; the engines use positional I/O, so that is fine.
pub fn data_extents(file: &File, len: u64) -> Vec<Range<u64>> {
    let mut extents = Vec::new();
    let mut position = 0;
    while position < len {
        let start = match rustix::fs::seek(file, SeekFrom::Data(position)) {
            Ok(start) => start,
            // No data at or after `position`: the rest is one hole.
            Err(Errno::NXIO) => break,
            Err(_) => {
                extents.push(position..len);
                break;
            }
        };
        if start >= len {
            break;
        }
        // Every file ends in a (virtual) hole at EOF, so this finds one.
        let end = rustix::fs::seek(file, SeekFrom::Hole(start)).map_or(len, |end| end.min(len));
        extents.push(start..end);
        position = end;
    }
    extents
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn finds_data_between_holes() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        let mib = 1 << 20;
        file.write_all_at(b"a", 4 * mib).unwrap();
        file.write_all_at(b"b", 9 * mib).unwrap();
        file.set_len(16 * mib).unwrap();
        file.sync_all().unwrap();
        let file = File::open(&path).unwrap();
        let extents = data_extents(&file, 16 * mib);
        assert_eq!(extents.len(), 2, "{extents:?}");
        assert!(extents[0].contains(&(4 * mib)) && extents[1].contains(&(9 * mib)));
        let data: u64 = extents.iter().map(|r| r.end - r.start).sum();
        assert!(data < mib, "holes counted as data: {extents:?}");

        let empty = File::create(dir.path().join("holes")).unwrap();
        empty.set_len(16 * mib).unwrap();
        assert!(data_extents(&empty, 16 * mib).is_empty());
    }
}
