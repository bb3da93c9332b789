//! File paths on the bus are `ay`: Linux names are bytes, not UTF-8.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Decodes a path argument. One trailing NUL (GLib bytestrings carry one) is
/// dropped; any other NUL, an empty path or a relative one is refused.
pub fn decode(bytes: &[u8], what: &str) -> Result<PathBuf, Error> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Err(Error::InvalidArgument(format!("the {what} path is empty")));
    }
    if bytes.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "the {what} path contains a NUL byte"
        )));
    }
    if bytes[0] != b'/' {
        return Err(Error::InvalidArgument(format!(
            "the {what} path {} is not absolute",
            String::from_utf8_lossy(bytes)
        )));
    }
    Ok(PathBuf::from(OsString::from_vec(bytes.to_vec())))
}

/// Encodes a path for the bus, without a trailing NUL.
pub fn encode(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glib_bytestrings_and_raw_bytes_both_decode() {
        assert_eq!(decode(b"/a/b\0", "source").unwrap(), Path::new("/a/b"));
        let latin1 = decode(b"/caf\xe9", "source").unwrap();
        assert_eq!(encode(&latin1), b"/caf\xe9");
    }

    #[test]
    fn bad_paths_are_invalid_arguments() {
        for bad in [&b""[..], b"\0", b"rel/x", b"/a\0b", b"/a\0\0"] {
            assert!(
                matches!(decode(bad, "source"), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
