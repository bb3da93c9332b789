//! `--manifest FILE`: the digests of a verified job in the format
//! sha256sum and md5sum print and check (`sha256sum -c FILE`): the digest
//! in lower-case hex, two spaces, the path. A path with a backslash or a
//! newline is written as those tools write it: the line starts with a
//! backslash, and in the path `\` is `\\` and a newline `\n`. A CRC32
//! manifest is the same with the CRC-32 (as zlib.crc32 and `cksum -a
//! crc32b` compute it) as eight hex digits.

use std::os::unix::ffi::OsStrExt;

use crate::watch::FileChecksum;

/// One line, newline included.
pub fn line(checksum: &FileChecksum) -> Vec<u8> {
    let path = &checksum.path_bytes;
    let escaped = path.iter().any(|&b| b == b'\\' || b == b'\n');
    let mut line = Vec::with_capacity(path.len() + checksum.digest.len() + 4);
    if escaped {
        line.push(b'\\');
    }
    line.extend_from_slice(checksum.digest.as_bytes());
    line.extend_from_slice(b"  ");
    for &byte in path {
        match byte {
            b'\\' if escaped => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            other => line.push(other),
        }
    }
    line.push(b'\n');
    line
}

/// Every line, sorted by path, so a manifest of the same tree reads the
/// same however the copy's workers ordered it.
pub fn lines(checksums: &[FileChecksum]) -> Vec<u8> {
    let mut sorted: Vec<&FileChecksum> = checksums.iter().collect();
    sorted.sort_by(|a, b| {
        std::ffi::OsStr::from_bytes(&a.path_bytes).cmp(std::ffi::OsStr::from_bytes(&b.path_bytes))
    });
    sorted.into_iter().flat_map(line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(path: &[u8], digest: &str) -> FileChecksum {
        FileChecksum {
            path: String::from_utf8_lossy(path).into_owned(),
            path_bytes: path.to_vec(),
            digest: digest.into(),
            shared: false,
        }
    }

    #[test]
    fn lines_are_as_sha256sum_writes_them() {
        assert_eq!(line(&checksum(b"/d/a b", "00ff")), b"00ff  /d/a b\n");
        assert_eq!(
            line(&checksum(b"/d/x\\y\nz", "00ff")),
            b"\\00ff  /d/x\\\\y\\nz\n"
        );
        let all = lines(&[checksum(b"/d/b", "02"), checksum(b"/d/a", "01")]);
        assert_eq!(all, b"01  /d/a\n02  /d/b\n");
    }
}
