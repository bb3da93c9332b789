//! Converting between live jobs and their on-disk records.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use copyd_engine::{Conflict, EntryKind, Item, Operation, Options, Preserve, Request, Resolved};

use super::store::{ItemRecord, OptionsRecord};

pub fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_bytes().to_vec()
}

pub fn path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

pub fn operation(name: &str) -> Result<Operation, String> {
    match name {
        "copy" => Ok(Operation::Copy),
        "move" => Ok(Operation::Move),
        other => Err(format!("unknown operation {other:?}")),
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Directory => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Special => "special",
    }
}

fn kind(name: &str) -> Result<EntryKind, String> {
    match name {
        "file" => Ok(EntryKind::File),
        "directory" => Ok(EntryKind::Directory),
        "symlink" => Ok(EntryKind::Symlink),
        "special" => Ok(EntryKind::Special),
        other => Err(format!("unknown item kind {other:?}")),
    }
}

fn preserve_names(preserve: &Preserve) -> Vec<String> {
    [
        (preserve.mode, "mode"),
        (preserve.timestamps, "timestamps"),
        (preserve.ownership, "ownership"),
        (preserve.xattr, "xattr"),
        (preserve.links, "links"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| name.to_owned())
    .collect()
}

pub fn options_record(options: &Options) -> OptionsRecord {
    OptionsRecord {
        recursive: options.recursive,
        on_conflict: options.on_conflict.name().to_owned(),
        engine: options.engine.clone(),
        preserve: preserve_names(&options.preserve),
        rate_limit: options.rate_limit,
        sync: options.sync,
        sparse: options.sparse,
        rename: (options.rename.as_ref()).map(|rule| (rule.expression.clone(), rule.directories)),
        verify: options.verify.name().to_owned(),
        on_error: options.on_error.name().to_owned(),
        keep_replaced_attributes: options.keep_replaced_attributes,
    }
}

pub fn items_record(items: &[Item]) -> Vec<ItemRecord> {
    items
        .iter()
        .map(|item| ItemRecord {
            source: bytes(&item.source),
            target: bytes(&item.target),
            kind: kind_name(item.kind).to_owned(),
            skip: item.skip,
            replace: item.replace,
            merge: item.merge,
        })
        .collect()
}

/// Rebuilds a resolved request from its record, as it was checked when the
/// job was created (not checked again: its own finished items now exist).
pub fn resolved(
    operation_name: &str,
    sources: &[Vec<u8>],
    destination: &[u8],
    options: &OptionsRecord,
    items: &[ItemRecord],
) -> Result<Resolved, String> {
    let preserve = Preserve::from_names(options.preserve.iter().map(String::as_str))
        .map_err(|err| err.message)?;
    let on_conflict = Conflict::parse(&options.on_conflict)
        .ok_or_else(|| format!("unknown on-conflict {:?}", options.on_conflict))?;
    let verify = copyd_engine::Verify::from_name(&options.verify)
        .ok_or_else(|| format!("unknown verify {:?}", options.verify))?;
    let on_error = copyd_engine::OnError::from_name(&options.on_error)
        .ok_or_else(|| format!("unknown on-error {:?}", options.on_error))?;
    // The same rule, so a resumed job names every file as the first run did.
    let rename = match &options.rename {
        Some((expression, directories)) => Some(
            copyd_engine::names::Rename::parse(expression, *directories)
                .map_err(|err| err.message)?,
        ),
        None => None,
    };
    let items = items
        .iter()
        .map(|item| {
            Ok(Item {
                source: path(&item.source),
                target: path(&item.target),
                kind: kind(&item.kind)?,
                skip: item.skip,
                replace: item.replace,
                merge: item.merge,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Resolved {
        request: Request {
            operation: operation(operation_name)?,
            sources: sources.iter().map(|s| path(s)).collect(),
            destination: path(destination),
            options: Options {
                recursive: options.recursive,
                on_conflict,
                engine: options.engine.clone(),
                preserve,
                rate_limit: options.rate_limit,
                sync: options.sync,
                sparse: options.sparse,
                rename,
                verify,
                on_error,
                keep_replaced_attributes: options.keep_replaced_attributes,
                ..Options::default()
            },
        },
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_job_keeps_its_sync_and_sparse_options() {
        for on in [true, false] {
            let options = Options {
                sync: on,
                sparse: on,
                ..Options::default()
            };
            let resolved = resolved("copy", &[], b"/dst", &options_record(&options), &[]).unwrap();
            assert_eq!(resolved.request.options, options);
        }
    }
}
