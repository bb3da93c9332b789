//! Verification: a digest of each source, taken from the bytes the copy
//! itself read (a [`ByteObserver`] on the copy path), compared with a digest
//! of the copy read back from the storage before the copy gets its final
//! name.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use md5::Digest as _;

use crate::engines::ByteObserver;

/// How copies are checked: the `verify` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Verify {
    #[default]
    None,
    /// The copy's size is the source's.
    Size,
    Crc32,
    Md5,
    Sha256,
}

impl Verify {
    pub const NAMES: [(Verify, &'static str); 5] = [
        (Verify::None, "none"),
        (Verify::Size, "size"),
        (Verify::Crc32, "crc32"),
        (Verify::Md5, "md5"),
        (Verify::Sha256, "sha256"),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(verify, _)| *verify == self)
            .map(|(_, name)| *name)
            .expect("every method has a name")
    }

    pub fn from_name(name: &str) -> Option<Verify> {
        Self::NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(verify, _)| *verify)
    }

    /// Whether this method compares digests (and so needs the bytes).
    pub fn digests(self) -> bool {
        matches!(self, Verify::Crc32 | Verify::Md5 | Verify::Sha256)
    }
}

/// A running digest of one of the digest methods.
enum Hasher {
    Crc32(crc32fast::Hasher),
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(method: Verify) -> Option<Hasher> {
        Some(match method {
            Verify::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Verify::Md5 => Hasher::Md5(md5::Md5::new()),
            Verify::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Verify::None | Verify::Size => return None,
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc32(h) => h.update(bytes),
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    /// Feeds `n` zero bytes: a hole reads as zeros.
    fn update_zeros(&mut self, mut n: u64) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while n > 0 {
            let take = n.min(ZEROS.len() as u64) as usize;
            self.update(&ZEROS[..take]);
            n -= take as u64;
        }
    }

    /// The digest in lower-case hex, as sha256sum and md5sum print it (for
    /// CRC32, zlib's, eight digits).
    fn finish(self) -> String {
        match self {
            Hasher::Crc32(h) => format!("{:08x}", h.finalize()),
            Hasher::Md5(h) => hex(&h.finalize()),
            Hasher::Sha256(h) => hex(&h.finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a source, fed by the engines as they copy. They show it
/// each byte in file order; a gap between two offsets is a hole (zeros),
/// and bytes shown twice (an engine that fell through to the next one
/// after reading) count once.
pub struct SourceDigest {
    state: Mutex<(Hasher, u64)>,
}

impl SourceDigest {
    /// None for a method that takes no digest.
    pub fn new(method: Verify) -> Option<SourceDigest> {
        Hasher::new(method).map(|hasher| SourceDigest {
            state: Mutex::new((hasher, 0)),
        })
    }

    /// The offset up to which it has seen the file.
    pub fn seen(&self) -> u64 {
        self.state.lock().unwrap().1
    }

    /// The digest of a file of `len` bytes (anything not seen up to `len`
    /// was a trailing hole).
    pub fn finish(self, len: u64) -> String {
        let (mut hasher, seen) = self.state.into_inner().unwrap();
        hasher.update_zeros(len.saturating_sub(seen));
        hasher.finish()
    }
}

impl ByteObserver for SourceDigest {
    fn observe(&self, offset: u64, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        let (hasher, seen) = &mut *state;
        if offset > *seen {
            hasher.update_zeros(offset - *seen);
            *seen = offset;
        }
        let end = offset + bytes.len() as u64;
        if end > *seen {
            let new = &bytes[(*seen - offset) as usize..];
            hasher.update(new);
            *seen = end;
        }
    }
}

/// Bytes read at once when reading a file through for its digest.
const READ_CHUNK: usize = 1 << 20;

/// Feeds `digest` the bytes `from..to` of `file`, read through the page
/// cache: a resumed copy's durable prefix, or a source its clone shares.
pub fn read_into(digest: &SourceDigest, file: &File, from: u64, to: u64) -> io::Result<()> {
    read_through(file, from, to, |at, bytes| digest.observe(at, bytes))
}

/// Writes the copy's dirty pages out (fdatasync) and drops every cached
/// page of it (POSIX_FADV_DONTNEED), so that a read of it goes to the
/// device (or, on FUSE and network file systems, to the server).
pub fn drop_from_cache(copy: &File) -> io::Result<()> {
    copy.sync_data()?;
    rustix::fs::fadvise(copy, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// The digest by `method` of the copy `copy` of `len` bytes, read back
/// after [`drop_from_cache`]: from the storage, not the page cache.
pub fn read_back(copy: &File, len: u64, method: Verify) -> io::Result<String> {
    let digest = SourceDigest::new(method).expect("read back only for a digest method");
    // The copy was opened to write only: the same inode opened again, to
    // read, through the descriptor (not its name, which others can reach).
    let reading = File::open(format!("/proc/self/fd/{}", copy.as_raw_fd()))?;
    // Read ahead further (as for a large copy's source), so the device
    // works on the next bytes while the digest takes in these.
    let _ = rustix::fs::fadvise(&reading, 0, None, rustix::fs::Advice::Sequential);
    read_into(&digest, &reading, 0, len)?;
    Ok(digest.finish(len))
}

fn read_through(
    file: &File,
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> io::Result<()> {
    let mut buffer = vec![0u8; READ_CHUNK.min(to.saturating_sub(from) as usize).max(1)];
    let mut at = from;
    while at < to {
        let want = ((to - at) as usize).min(buffer.len());
        match file.read_at(&mut buffer[..want], at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("it ended at {at} of {to} bytes"),
                ))
            }
            Ok(n) => {
                each(at, &buffer[..n]);
                at += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// What verification found of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The copy's final path.
    pub target: std::path::PathBuf,
    /// The digest (of the source, equal to the copy's read back).
    pub digest: String,
    /// The copy shares the source's extents (a reflink): the source was
    /// read once and that digest stands for both.
    pub shared_extents: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(method: Verify, pieces: &[(u64, &[u8])], len: u64) -> String {
        let digest = SourceDigest::new(method).unwrap();
        for (offset, bytes) in pieces {
            digest.observe(*offset, bytes);
        }
        digest.finish(len)
    }

    #[test]
    fn known_digests_of_known_bytes() {
        let abc: &[(u64, &[u8])] = &[(0, b"abc")];
        assert_eq!(digest_of(Verify::Crc32, abc, 3), "352441c2");
        assert_eq!(
            digest_of(Verify::Md5, abc, 3),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            digest_of(Verify::Sha256, abc, 3),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_of(Verify::Sha256, &[], 0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn gaps_are_zeros_and_bytes_seen_twice_count_once() {
        let whole = digest_of(Verify::Sha256, &[(0, b"ab\0\0cd\0")], 7);
        // A hole between two extents, a trailing hole, and an engine that
        // showed "ab" again before falling through to the next.
        let pieces: &[(u64, &[u8])] = &[(0, b"ab"), (0, b"ab"), (4, b"cd")];
        assert_eq!(digest_of(Verify::Sha256, pieces, 7), whole);
        let overlapping: &[(u64, &[u8])] = &[(0, b"ab\0"), (1, b"b\0\0cd")];
        assert_eq!(digest_of(Verify::Sha256, overlapping, 7), whole);
    }

    #[test]
    fn every_method_reads_back_by_its_name() {
        for (method, name) in Verify::NAMES {
            assert_eq!(Verify::from_name(name), Some(method));
            assert_eq!(method.name(), name);
        }
        assert_eq!(Verify::from_name("sha1"), None);
    }
}
