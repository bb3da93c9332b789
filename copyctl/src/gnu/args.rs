//! GNU cp's and mv's command lines, parsed as GNU getopt does: short options
//! bundled (`-rfv`), an option's argument attached or not (`-S.bak`, `-t
//! DIR`), long options abbreviated to any unambiguous prefix (`--no-cl`),
//! `--opt=VALUE`, options mixed with operands, `--` ending the options.
//! Hand-written rather than clap: clap's messages, abbreviation rules and
//! optional-argument handling differ from getopt's, and scripts written for
//! cp rely on getopt's.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::Tool;

/// -H, -L, -P: which symbolic links a copy follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deref {
    /// None given: cp follows command-line links unless recursive (or -d).
    Default,
    /// -P, -d: never.
    Never,
    /// -H: those named on the command line.
    CommandLine,
    /// -L: all.
    Always,
}

/// --backup's CONTROL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    None,
    Simple,
    Numbered,
    /// Numbered where numbered backups exist already, else simple.
    Existing,
}

/// --reflink[=WHEN] and --sparse=WHEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Auto,
    Always,
    Never,
}

/// What --preserve and --no-preserve name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub mode: bool,
    pub ownership: bool,
    pub timestamps: bool,
    pub links: bool,
    pub xattr: bool,
}

/// --update[=WHEN].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    All,
    None,
    Older,
}

/// A parsed cp or mv command line.
#[derive(Debug, Clone)]
pub struct GnuArgs {
    pub tool: Tool,
    pub recursive: bool,
    pub deref: Deref,
    pub keep: Keep,
    /// The mode was asked for (-p, -a, --preserve), not only cp's default
    /// of the source's mode less the umask.
    pub mode_kept: bool,
    pub update: Update,
    pub force: bool,
    pub interactive: bool,
    pub verbose: bool,
    pub backup: Backup,
    pub suffix: OsString,
    pub target_directory: Option<OsString>,
    pub no_target_directory: bool,
    pub parents: bool,
    pub remove_destination: bool,
    pub reflink: When,
    pub sparse: When,
    pub hard_link: bool,
    pub symbolic_link: bool,
    pub one_file_system: bool,
    pub attributes_only: bool,
    /// --copy-contents: with -R, fifos and devices read as files.
    pub copy_contents: bool,
    pub strip_trailing_slashes: bool,
    pub debug: bool,
    pub no_copy: bool,
    // copyd's own options, which the fronts accept too.
    pub sync: bool,
    pub json: bool,
    pub progress: bool,
    pub address: Option<String>,
    pub engine: Option<String>,
    pub rate_limit: Option<u64>,
    pub on_conflict: Option<String>,
    pub operands: Vec<OsString>,
    pub help: bool,
    pub version: bool,
}

impl GnuArgs {
    fn new(tool: Tool) -> GnuArgs {
        GnuArgs {
            tool,
            recursive: false,
            deref: Deref::Default,
            keep: Keep {
                // cp without -p still gives a new file the source's
                // permission bits (less the umask).
                mode: true,
                ..Keep::default()
            },
            mode_kept: false,
            update: Update::All,
            force: false,
            interactive: false,
            verbose: false,
            backup: Backup::None,
            suffix: std::env::var_os("SIMPLE_BACKUP_SUFFIX").unwrap_or_else(|| "~".into()),
            target_directory: None,
            no_target_directory: false,
            parents: false,
            remove_destination: false,
            reflink: When::Auto,
            sparse: When::Auto,
            hard_link: false,
            symbolic_link: false,
            one_file_system: false,
            attributes_only: false,
            copy_contents: false,
            strip_trailing_slashes: false,
            debug: false,
            no_copy: false,
            sync: false,
            json: false,
            progress: false,
            address: std::env::var("COPYD_ADDRESS").ok(),
            engine: None,
            rate_limit: None,
            on_conflict: None,
            operands: Vec::new(),
            help: false,
            version: false,
        }
    }
}

/// Whether a long option takes an argument.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    No,
    Optional,
    Required,
}

/// The long options of cp (`cp` true) and of mv (`mv` true).
const LONG: &[(&str, Takes, bool, bool)] = &[
    ("archive", Takes::No, true, false),
    ("attributes-only", Takes::No, true, false),
    ("backup", Takes::Optional, true, true),
    ("copy-contents", Takes::No, true, false),
    ("context", Takes::Optional, true, true),
    ("debug", Takes::No, true, true),
    ("dereference", Takes::No, true, false),
    ("force", Takes::No, true, true),
    ("interactive", Takes::No, true, true),
    ("link", Takes::No, true, false),
    ("no-clobber", Takes::No, true, true),
    ("no-copy", Takes::No, false, true),
    ("no-dereference", Takes::No, true, false),
    ("no-preserve", Takes::Required, true, false),
    ("no-target-directory", Takes::No, true, true),
    ("one-file-system", Takes::No, true, false),
    ("parents", Takes::No, true, false),
    ("preserve", Takes::Optional, true, false),
    ("recursive", Takes::No, true, false),
    ("reflink", Takes::Optional, true, false),
    ("remove-destination", Takes::No, true, false),
    ("sparse", Takes::Required, true, false),
    ("strip-trailing-slashes", Takes::No, true, true),
    ("suffix", Takes::Required, true, true),
    ("symbolic-link", Takes::No, true, false),
    ("target-directory", Takes::Required, true, true),
    ("update", Takes::Optional, true, true),
    ("verbose", Takes::No, true, true),
    ("keep-directory-symlink", Takes::No, true, false),
    ("help", Takes::No, true, true),
    ("version", Takes::No, true, true),
    // copyd's own.
    ("sync", Takes::No, true, true),
    ("no-sync", Takes::No, true, true),
    ("json", Takes::No, true, true),
    ("progress", Takes::No, true, true),
    ("address", Takes::Required, true, true),
    ("engine", Takes::Required, true, true),
    ("rate-limit", Takes::Required, true, true),
    ("on-conflict", Takes::Required, true, true),
];

/// Short options that take an argument.
fn short_takes_argument(c: u8) -> bool {
    matches!(c, b'S' | b't')
}

fn lossy(s: &OsString) -> String {
    s.to_string_lossy().into_owned()
}

/// Finds `name` (exactly, or as the one option it abbreviates).
fn long_option(tool: Tool, name: &str) -> Result<(&'static str, Takes), String> {
    let ours = |&&(_, _, cp, mv): &&(&str, Takes, bool, bool)| match tool {
        Tool::Cp => cp,
        Tool::Mv => mv,
    };
    if let Some((full, takes, _, _)) = LONG.iter().filter(ours).find(|(n, ..)| *n == name) {
        return Ok((full, *takes));
    }
    let matches: Vec<_> = LONG
        .iter()
        .filter(ours)
        .filter(|(n, ..)| n.starts_with(name))
        .collect();
    match matches.as_slice() {
        [(full, takes, _, _)] => Ok((full, *takes)),
        [] => Err(format!("unrecognized option '--{name}'")),
        _ => Err(format!("option '--{name}' is ambiguous")),
    }
}

/// Parses `args` (without the program name) as `tool`'s command line.
/// Errors are getopt's messages, without the program name.
pub fn parse(tool: Tool, args: Vec<OsString>) -> Result<GnuArgs, String> {
    let mut parsed = GnuArgs::new(tool);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            parsed.operands.extend(args.by_ref());
            break;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let long = String::from_utf8_lossy(long).into_owned();
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(OsString::from(value))),
                None => (long, None),
            };
            let (full, takes) = long_option(tool, &name)?;
            let value = match (takes, value) {
                (Takes::No, Some(_)) => {
                    return Err(format!("option '--{full}' doesn't allow an argument"))
                }
                (Takes::Required, None) => Some(
                    args.next()
                        .ok_or_else(|| format!("option '--{full}' requires an argument"))?,
                ),
                (_, value) => value,
            };
            apply_long(&mut parsed, full, value)?;
            continue;
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            let mut i = 1;
            while i < bytes.len() {
                let c = bytes[i];
                i += 1;
                if short_takes_argument(c) {
                    let value = if i < bytes.len() {
                        OsString::from_vec(bytes[i..].to_vec())
                    } else {
                        args.next().ok_or_else(|| {
                            format!("option requires an argument -- '{}'", c as char)
                        })?
                    };
                    apply_short(&mut parsed, c, Some(value))?;
                    break;
                }
                apply_short(&mut parsed, c, None)?;
            }
            continue;
        }
        parsed.operands.push(arg);
    }
    if parsed.backup != Backup::None && parsed.update == Update::None {
        return Err("options --backup and --no-clobber are mutually exclusive".into());
    }
    Ok(parsed)
}

fn keep_all() -> Keep {
    Keep {
        mode: true,
        ownership: true,
        timestamps: true,
        links: true,
        xattr: true,
    }
}

fn apply_short(parsed: &mut GnuArgs, c: u8, value: Option<OsString>) -> Result<(), String> {
    let cp = parsed.tool == Tool::Cp;
    match c {
        b'a' if cp => {
            parsed.recursive = true;
            parsed.deref = Deref::Never;
            parsed.keep = keep_all();
            parsed.mode_kept = true;
        }
        b'b' => {
            if parsed.backup == Backup::None {
                parsed.backup = backup_control(None)?;
            }
        }
        b'd' if cp => {
            parsed.deref = Deref::Never;
            parsed.keep.links = true;
        }
        // -f, -i and -n: for mv the last one wins; cp's -f only says to
        // replace a target it cannot write, and leaves -i and -n be.
        b'f' => {
            parsed.force = true;
            if !cp {
                parsed.interactive = false;
                if parsed.update == Update::None {
                    parsed.update = Update::All;
                }
            }
        }
        b'i' => {
            parsed.interactive = true;
            if parsed.update == Update::None {
                parsed.update = Update::All;
            }
        }
        b'n' => {
            parsed.update = Update::None;
            parsed.interactive = false;
        }
        b'u' => {
            if parsed.update == Update::All {
                parsed.update = Update::Older;
            }
        }
        b'v' => parsed.verbose = true,
        b'r' | b'R' if cp => parsed.recursive = true,
        b'p' if cp => {
            parsed.mode_kept = true;
            parsed.keep.mode = true;
            parsed.keep.ownership = true;
            parsed.keep.timestamps = true;
        }
        b'l' if cp => parsed.hard_link = true,
        b's' if cp => parsed.symbolic_link = true,
        b'L' if cp => parsed.deref = Deref::Always,
        b'P' if cp => parsed.deref = Deref::Never,
        b'H' if cp => parsed.deref = Deref::CommandLine,
        b'x' if cp => parsed.one_file_system = true,
        b'T' => parsed.no_target_directory = true,
        b'Z' => {}
        b'S' => {
            parsed.suffix = value.expect("-S has its argument");
            if parsed.backup == Backup::None {
                parsed.backup = backup_control(None)?;
            }
        }
        b't' => parsed.target_directory = value,
        other => return Err(format!("invalid option -- '{}'", other as char)),
    }
    Ok(())
}

/// CONTROL of --backup, or $VERSION_CONTROL when none is given.
fn backup_control(value: Option<&str>) -> Result<Backup, String> {
    let from_env = std::env::var("VERSION_CONTROL").ok();
    let (word, what) = match value {
        Some(word) => (Some(word.to_owned()), "backup type"),
        None => (from_env, "version control type"),
    };
    let Some(word) = word.filter(|w| !w.is_empty()) else {
        return Ok(Backup::Existing);
    };
    // As getopt's argmatch: a word or any unambiguous prefix of one.
    const NAMES: &[(&str, Backup)] = &[
        ("none", Backup::None),
        ("off", Backup::None),
        ("simple", Backup::Simple),
        ("never", Backup::Simple),
        ("existing", Backup::Existing),
        ("nil", Backup::Existing),
        ("numbered", Backup::Numbered),
        ("t", Backup::Numbered),
    ];
    if let Some((_, backup)) = NAMES.iter().find(|(n, _)| *n == word) {
        return Ok(*backup);
    }
    let found: Vec<_> = NAMES.iter().filter(|(n, _)| n.starts_with(&word)).collect();
    match found.as_slice() {
        [(_, backup)] => Ok(*backup),
        [first, rest @ ..] if rest.iter().all(|(_, b)| *b == first.1) => Ok(first.1),
        [] => Err(format!("invalid argument '{word}' for '{what}'")),
        _ => Err(format!("ambiguous argument '{word}' for '{what}'")),
    }
}

fn when(value: &str, option: &str) -> Result<When, String> {
    match value {
        "auto" => Ok(When::Auto),
        "always" => Ok(When::Always),
        "never" => Ok(When::Never),
        other => Err(format!("invalid argument '{other}' for '--{option}'")),
    }
}

fn apply_long(parsed: &mut GnuArgs, name: &str, value: Option<OsString>) -> Result<(), String> {
    let text = value.as_ref().map(lossy);
    match name {
        "archive" => apply_short(parsed, b'a', None)?,
        "attributes-only" => parsed.attributes_only = true,
        "backup" => parsed.backup = backup_control(Some(text.as_deref().unwrap_or("")))?,
        "copy-contents" => parsed.copy_contents = true,
        "context" | "keep-directory-symlink" => {}
        "debug" => parsed.debug = true,
        "dereference" => parsed.deref = Deref::Always,
        "force" => apply_short(parsed, b'f', None)?,
        "interactive" => apply_short(parsed, b'i', None)?,
        "link" => parsed.hard_link = true,
        "no-clobber" => apply_short(parsed, b'n', None)?,
        "no-copy" => parsed.no_copy = true,
        "no-dereference" => parsed.deref = Deref::Never,
        // In order: `--no-preserve=mode --preserve=all` keeps the mode.
        "no-preserve" => {
            for item in text.unwrap_or_default().split(',') {
                let keep = &mut parsed.keep;
                match item {
                    "mode" => keep.mode = false,
                    "ownership" => keep.ownership = false,
                    "timestamps" => keep.timestamps = false,
                    "links" => keep.links = false,
                    "xattr" => keep.xattr = false,
                    "context" => {}
                    "all" => *keep = Keep::default(),
                    other => return Err(format!("invalid argument '{other}' for '--no-preserve'")),
                }
            }
        }
        "no-target-directory" => parsed.no_target_directory = true,
        "one-file-system" => parsed.one_file_system = true,
        "parents" => parsed.parents = true,
        "preserve" => match text.as_deref() {
            None => {
                parsed.mode_kept = true;
                parsed.keep.mode = true;
                parsed.keep.ownership = true;
                parsed.keep.timestamps = true;
            }
            Some(list) => {
                for item in list.split(',') {
                    let keep = &mut parsed.keep;
                    match item {
                        "mode" => {
                            keep.mode = true;
                            parsed.mode_kept = true;
                        }
                        "ownership" => keep.ownership = true,
                        "timestamps" => keep.timestamps = true,
                        "links" => keep.links = true,
                        "xattr" => keep.xattr = true,
                        "context" => {}
                        "all" => {
                            *keep = keep_all();
                            parsed.mode_kept = true;
                        }
                        other => {
                            return Err(format!("invalid argument '{other}' for '--preserve'"))
                        }
                    }
                }
            }
        },
        "recursive" => parsed.recursive = true,
        "reflink" => parsed.reflink = when(text.as_deref().unwrap_or("always"), "reflink")?,
        "remove-destination" => parsed.remove_destination = true,
        "sparse" => parsed.sparse = when(text.as_deref().unwrap_or(""), "sparse")?,
        "strip-trailing-slashes" => parsed.strip_trailing_slashes = true,
        "suffix" => apply_short(parsed, b'S', value)?,
        "symbolic-link" => parsed.symbolic_link = true,
        "target-directory" => parsed.target_directory = value,
        "update" => {
            parsed.update = match text.as_deref() {
                None | Some("older") => match parsed.update {
                    Update::None => Update::None,
                    _ => Update::Older,
                },
                Some("all") => Update::All,
                Some("none") => Update::None,
                Some(other) => return Err(format!("invalid argument '{other}' for '--update'")),
            }
        }
        "verbose" => parsed.verbose = true,
        "help" => parsed.help = true,
        "version" => parsed.version = true,
        "sync" => parsed.sync = true,
        "no-sync" => parsed.sync = false,
        "json" => parsed.json = true,
        "progress" => parsed.progress = true,
        "address" => parsed.address = text,
        "engine" => parsed.engine = text,
        "rate-limit" => {
            parsed.rate_limit = Some(crate::units::parse_rate(text.as_deref().unwrap_or(""))?)
        }
        "on-conflict" => parsed.on_conflict = text,
        other => unreachable!("--{other} is in the table"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(args: &[&str]) -> Result<GnuArgs, String> {
        parse(Tool::Cp, args.iter().map(OsString::from).collect())
    }

    #[test]
    fn bundles_attached_values_abbreviations_and_operands_anywhere() {
        let args = cp(&["-rfv", "a", "-S.bak", "--no-t", "b", "--", "-c"]).unwrap();
        assert!(args.recursive && args.force && args.verbose);
        assert_eq!(args.suffix, ".bak");
        assert_eq!(args.backup, Backup::Existing);
        assert!(args.no_target_directory);
        assert_eq!(args.operands, ["a", "b", "-c"]);
        assert_eq!(
            cp(&["-b", "-n", "a", "b"]).unwrap_err(),
            "options --backup and --no-clobber are mutually exclusive"
        );
        let args = cp(&["-t", "dir", "x", "--backup=numbered", "--reflink"]).unwrap();
        assert_eq!(args.target_directory.as_deref(), Some("dir".as_ref()));
        assert_eq!(args.backup, Backup::Numbered);
        assert_eq!(args.reflink, When::Always);
    }

    #[test]
    fn getopt_errors() {
        assert_eq!(cp(&["-q"]).unwrap_err(), "invalid option -- 'q'");
        assert_eq!(cp(&["--no"]).unwrap_err(), "option '--no' is ambiguous");
        assert_eq!(
            cp(&["--parents=x"]).unwrap_err(),
            "option '--parents' doesn't allow an argument"
        );
        assert!(parse(Tool::Mv, vec!["-r".into()]).is_err());
    }

    #[test]
    fn archive_and_no_preserve() {
        let args = cp(&["-a", "--no-preserve=mode,ownership", "a", "b"]).unwrap();
        assert!(args.recursive && args.deref == Deref::Never);
        assert!(!args.keep.mode && !args.keep.ownership && args.keep.timestamps);
    }
}
