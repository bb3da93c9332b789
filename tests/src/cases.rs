//! Bad requests to Manager.Copy, shared by the busctl and gdbus tests.
//! Each must fail with its error and change nothing on disk.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An option value, rendered for busctl and gdbus.
#[derive(Clone, Debug)]
pub enum Opt {
    Bool(&'static str, bool),
    Str(&'static str, &'static str),
    Int32(&'static str, i32),
}

/// One bad request.
#[derive(Clone, Debug)]
pub struct BadCase {
    pub what: &'static str,
    pub sources: Vec<Vec<u8>>,
    pub destination: Vec<u8>,
    pub options: Vec<Opt>,
    /// Acceptable error names (short, without the prefix).
    pub errors: &'static [&'static str],
}

/// The bad requests, for a scratch directory `work` that holds a tree
/// `work/src` (made by the caller) and nothing else.
pub fn bad_cases(work: &Path) -> Vec<BadCase> {
    let w = work.as_os_str().as_bytes().to_vec();
    let cat = |tail: &[u8]| -> Vec<u8> { [w.as_slice(), tail].concat() };
    let src = cat(b"/src");
    let dst = cat(b"/dst");
    let rec = || vec![Opt::Bool("recursive", true)];
    vec![
        BadCase {
            what: "relative source",
            sources: vec![b"src".to_vec()],
            destination: dst.clone(),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "relative destination",
            sources: vec![src.clone()],
            destination: b"dst".to_vec(),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "empty source path",
            sources: vec![Vec::new()],
            destination: dst.clone(),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "NUL inside source",
            sources: vec![cat(b"/src\0/x")],
            destination: dst.clone(),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "NUL inside destination",
            sources: vec![src.clone()],
            destination: cat(b"/d\0st"),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "empty source list",
            sources: vec![],
            destination: dst.clone(),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "unknown option",
            sources: vec![src.clone()],
            destination: dst.clone(),
            options: vec![Opt::Bool("recursive", true), Opt::Int32("bogus", 1)],
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "option of the wrong type",
            sources: vec![src.clone()],
            destination: dst.clone(),
            options: vec![Opt::Str("recursive", "yes")],
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "bad on-conflict value",
            sources: vec![src.clone()],
            destination: dst.clone(),
            options: vec![
                Opt::Bool("recursive", true),
                Opt::Str("on-conflict", "explode"),
            ],
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "unknown engine",
            sources: vec![src.clone()],
            destination: dst.clone(),
            options: vec![
                Opt::Bool("recursive", true),
                Opt::Str("engine", "warp-drive"),
            ],
            errors: &["InvalidArgument", "NotSupported"],
        },
        BadCase {
            what: "destination inside source",
            sources: vec![src.clone()],
            destination: cat(b"/src/a/inner"),
            options: rec(),
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "destination is the source",
            sources: vec![src.clone()],
            destination: src.clone(),
            options: rec(),
            errors: &["InvalidArgument", "AlreadyExists"],
        },
        BadCase {
            what: "nonexistent source",
            sources: vec![cat(b"/no-such-source")],
            destination: dst.clone(),
            options: rec(),
            errors: &["NotFound"],
        },
        BadCase {
            what: "directory without recursive",
            sources: vec![src.clone()],
            destination: dst.clone(),
            options: vec![],
            errors: &["InvalidArgument"],
        },
        BadCase {
            what: "several sources into a missing directory",
            sources: vec![cat(b"/src/a"), cat(b"/src/e")],
            destination: dst.clone(),
            options: rec(),
            errors: &["NotFound", "InvalidArgument"],
        },
    ]
}

impl Opt {
    /// busctl `a{sv}` entry tokens.
    pub fn busctl(&self) -> Vec<String> {
        match self {
            Opt::Bool(k, v) => vec![k.to_string(), "b".into(), v.to_string()],
            Opt::Str(k, v) => vec![k.to_string(), "s".into(), v.to_string()],
            Opt::Int32(k, v) => vec![k.to_string(), "i".into(), v.to_string()],
        }
    }
    /// GVariant text of a dict entry.
    pub fn gvariant(&self) -> String {
        match self {
            Opt::Bool(k, v) => format!("'{k}': <{v}>"),
            Opt::Str(k, v) => format!("'{k}': <'{v}'>"),
            Opt::Int32(k, v) => format!("'{k}': <int32 {v}>"),
        }
    }
}

/// busctl arguments for `aayaya{sv}`.
pub fn busctl_args(c: &BadCase) -> Vec<String> {
    let srcs: Vec<&[u8]> = c.sources.iter().map(|s| s.as_slice()).collect();
    let mut a = crate::busctl::aay_args(&srcs);
    a.extend(crate::busctl::ay_args(&c.destination));
    a.push(c.options.len().to_string());
    for o in &c.options {
        a.extend(o.busctl());
    }
    a
}

/// gdbus arguments (GVariant text) for Copy.
pub fn gdbus_args(c: &BadCase) -> Vec<String> {
    let srcs: Vec<String> = c
        .sources
        .iter()
        .map(|s| crate::busctl::gvariant_ay(s))
        .collect();
    let sources = if srcs.is_empty() {
        "@aay []".to_string()
    } else {
        format!("[{}]", srcs.join(", "))
    };
    let opts: Vec<String> = c.options.iter().map(|o| o.gvariant()).collect();
    let options = if opts.is_empty() {
        "@a{sv} {}".to_string()
    } else {
        format!("{{{}}}", opts.join(", "))
    };
    vec![sources, crate::busctl::gvariant_ay(&c.destination), options]
}
