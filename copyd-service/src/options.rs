//! Parsing the `a{sv}` options of Copy, Move and Plan. Unknown keys and
//! values of the wrong type are refused, so a typo never silently means the
//! default.

use std::collections::HashMap;

use copyd_engine::{Conflict, EngineSet, OnError, Options, Preserve, Verify};
use zbus::{OwnedVariant, Variant};

use crate::error::Error;

/// What the service needs besides the engine's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOptions {
    pub engine: Options,
    pub start_paused: bool,
    /// Place in the queue: higher runs first (default 0).
    pub priority: i32,
    /// Run as root rather than as the caller: needs the polkit action
    /// org.example.copyd1.copy-privileged.
    pub privileged: bool,
    /// Tell the job's owner of each file placed (FilesPlaced): what cp -v
    /// and mv -v print. Off, the job gathers nothing.
    pub report_files: bool,
}

/// The keys Copy, Move and Plan accept, with their D-Bus types.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("recursive", "b"),
    ("on-conflict", "s"),
    ("engine", "s"),
    ("preserve", "as"),
    ("rate-limit", "t"),
    ("start-paused", "b"),
    ("priority", "i"),
    ("sparse", "b"),
    ("sync", "b"),
    ("privileged", "b"),
    ("rename", "s"),
    ("rename-dirs", "b"),
    ("verify", "s"),
    ("on-error", "s"),
    ("report-files", "b"),
    ("keep-replaced-attributes", "b"),
];

fn wrong_type(key: &str) -> Error {
    let expected = KNOWN_OPTIONS
        .iter()
        .find(|(name, _)| *name == key)
        .map_or("?", |(_, sig)| sig);
    Error::InvalidArgument(format!("option {key:?} must have type {expected}"))
}

fn boolean(key: &str, value: &Variant<'_>) -> Result<bool, Error> {
    match value {
        Variant::Bool(b) => Ok(*b),
        _ => Err(wrong_type(key)),
    }
}

fn string<'v>(key: &str, value: &'v Variant<'_>) -> Result<&'v str, Error> {
    match value {
        Variant::Str(s) => Ok(s.as_str()),
        _ => Err(wrong_type(key)),
    }
}

pub fn parse(options: &HashMap<String, OwnedVariant>) -> Result<JobOptions, Error> {
    let mut parsed = JobOptions::default();
    // `rename` and `rename-dirs` make one rule, whatever order they come in.
    let (mut rename, mut rename_dirs) = (None, false);
    for (key, value) in options {
        let value: &Variant<'_> = value;
        match key.as_str() {
            "recursive" => parsed.engine.recursive = boolean(key, value)?,
            "start-paused" => parsed.start_paused = boolean(key, value)?,
            "priority" => match value {
                Variant::I32(priority) => parsed.priority = *priority,
                _ => return Err(wrong_type(key)),
            },
            "sparse" => parsed.engine.sparse = boolean(key, value)?,
            "sync" => parsed.engine.sync = boolean(key, value)?,
            "privileged" => parsed.privileged = boolean(key, value)?,
            "report-files" => parsed.report_files = boolean(key, value)?,
            "keep-replaced-attributes" => {
                parsed.engine.keep_replaced_attributes = boolean(key, value)?
            }
            "rename" => rename = Some(string(key, value)?.to_owned()),
            "rename-dirs" => rename_dirs = boolean(key, value)?,
            "verify" => {
                let name = string(key, value)?;
                parsed.engine.verify = Verify::from_name(name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "verify {name:?} is not one of {}",
                        names(Verify::NAMES.iter().map(|(_, name)| *name))
                    ))
                })?;
            }
            "on-error" => {
                let name = string(key, value)?;
                parsed.engine.on_error = OnError::from_name(name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "on-error {name:?} is not one of {}",
                        names(OnError::NAMES.iter().map(|(_, name)| *name))
                    ))
                })?;
            }
            "on-conflict" => {
                let name = string(key, value)?;
                parsed.engine.on_conflict = Conflict::parse(name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "on-conflict {name:?} is not one of {}",
                        Conflict::known()
                    ))
                })?;
            }
            "engine" => {
                let name = string(key, value)?;
                if !EngineSet::is_known(name) {
                    return Err(Error::InvalidArgument(format!(
                        "engine {name:?} is not one of auto, reflink, copy_file_range, io_uring, splice, standard"
                    )));
                }
                parsed.engine.engine = name.to_owned();
            }
            "preserve" => {
                let names: Vec<String> = match value {
                    Variant::Array(array) if array.element_signature() == "s" => {
                        Vec::<String>::try_from(value.try_clone()?).map_err(|_| wrong_type(key))?
                    }
                    _ => return Err(wrong_type(key)),
                };
                parsed.engine.preserve = Preserve::from_names(names.iter().map(String::as_str))?;
            }
            "rate-limit" => match value {
                Variant::U64(rate) => parsed.engine.rate_limit = *rate,
                _ => return Err(wrong_type(key)),
            },
            unknown => {
                let known: Vec<_> = KNOWN_OPTIONS.iter().map(|(name, _)| *name).collect();
                return Err(Error::InvalidArgument(format!(
                    "unknown option {unknown:?} (known: {})",
                    known.join(", ")
                )));
            }
        }
    }
    match rename {
        Some(expression) => {
            parsed.engine.rename = Some(copyd_engine::names::Rename::parse(
                &expression,
                rename_dirs,
            )?)
        }
        None if rename_dirs => {
            return Err(Error::InvalidArgument(
                "option rename-dirs needs the option rename".into(),
            ))
        }
        None => {}
    }
    parsed.engine.check_verify()?;
    Ok(parsed)
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: Vec<(&str, Variant<'static>)>) -> HashMap<String, OwnedVariant> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), OwnedVariant::try_from(v).unwrap()))
            .collect()
    }

    #[test]
    fn known_options_parse() {
        let parsed = parse(&options(vec![
            ("recursive", Variant::Bool(true)),
            ("on-conflict", Variant::from("skip")),
            ("preserve", Variant::from(vec!["mode", "xattr"])),
            ("rate-limit", Variant::U64(5)),
            ("privileged", Variant::Bool(true)),
            ("sync", Variant::Bool(false)),
        ]))
        .unwrap();
        assert!(!parsed.engine.sync);
        assert!(parsed.engine.recursive);
        assert_eq!(parsed.engine.on_conflict, Conflict::Skip);
        assert!(parsed.engine.preserve.xattr && !parsed.engine.preserve.timestamps);
        assert_eq!(parsed.engine.rate_limit, 5);
        assert!(parsed.privileged);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_invalid() {
        for bad in [
            options(vec![("bogus", Variant::Bool(true))]),
            options(vec![("recursive", Variant::from("yes"))]),
            options(vec![("privileged", Variant::U32(1))]),
            options(vec![("sync", Variant::from("no"))]),
            options(vec![("preserve", Variant::from(vec![1u32]))]),
            options(vec![("engine", Variant::from("warp"))]),
            options(vec![("on-conflict", Variant::from("merge"))]),
        ] {
            assert!(
                matches!(parse(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
