//! The cp and mv fronts: `copyctl cp|mv ARGS`, or copyctl run under the
//! name `cp` or `mv` (a symlink first on PATH). GNU's command lines
//! (`args.rs`) are worked out here, in the client, into what goes where
//! and checked as GNU cp and mv check them (`cp.rs`, `mv.rs`); the copying
//! and moving itself goes to copyd as Copy and Move jobs (`submit.rs`).
//! Hard and symbolic links (`-l`, `-s`) and backups of targets are made
//! here, as the user, before a job is asked for (`local.rs`).
//!
//! Messages are cp's: `PROGRAM: cannot stat 'x': No such file or
//! directory`, PROGRAM being the name copyctl was run under; D-Bus error
//! names only with --debug, and in --json objects on stdout.

mod args;
mod attributes;
mod contents;
mod cp;
mod links;
mod local;
mod mv;
mod split;
mod submit;
mod verbose;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Cp,
    Mv,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Cp => "cp",
            Tool::Mv => "mv",
        }
    }
}

/// When copyctl was run as `cp`/`mv`, or as `copyctl cp|mv`, runs that
/// front and returns its exit status; None otherwise.
pub fn dispatch() -> Option<ExitCode> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let invoked = argv.first().map(|a| {
        Path::new(a)
            .file_name()
            .map_or_else(OsString::new, |n| n.to_os_string())
    })?;
    let (tool, program) = match invoked.as_bytes() {
        b"cp" => (Tool::Cp, "cp".to_owned()),
        b"mv" => (Tool::Mv, "mv".to_owned()),
        _ => {
            let tool = match argv.get(1).map(|a| a.as_bytes()) {
                Some(b"cp") => Tool::Cp,
                Some(b"mv") => Tool::Mv,
                _ => return None,
            };
            argv.remove(1);
            (tool, invoked.to_string_lossy().into_owned())
        }
    };
    argv.remove(0);
    Some(ExitCode::from(run(tool, program, argv)))
}

fn run(tool: Tool, program: String, argv: Vec<OsString>) -> u8 {
    let mut args = match args::parse(tool, argv) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{program}: {message}");
            eprintln!("Try '{program} --help' for more information.");
            return 1;
        }
    };
    let mut front = Front {
        program,
        json: args.json,
        debug: args.debug,
        failed: false,
        interrupted: false,
        pending: Vec::new(),
        made: Vec::new(),
    };
    if args.help {
        print!("{}", usage(tool, &front.program));
        return 0;
    }
    if args.version {
        println!(
            "{} (copyctl {}), a front of copyd with GNU {}'s command line",
            front.program,
            env!("CARGO_PKG_VERSION"),
            tool.name()
        );
        return 0;
    }
    // copyctl's own configuration: the address to use, and whether to draw
    // a progress bar (only on a terminal: cp's output stays cp's in scripts).
    match crate::settings::load(None) {
        Ok(settings) => {
            if args.address.is_none() {
                args.address = settings.address.clone();
            }
            if settings.show_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                args.progress = true;
            }
        }
        Err(message) => {
            front.error(message);
            return 1;
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match tool {
        Tool::Cp => runtime.block_on(cp::run(&mut front, &args)),
        Tool::Mv => runtime.block_on(mv::run(&mut front, &args)),
    }
    if front.interrupted {
        130
    } else {
        u8::from(front.failed)
    }
}

fn usage(tool: Tool, program: &str) -> String {
    let what = match tool {
        Tool::Cp => "Copy SOURCE to DEST, or multiple SOURCE(s) to DIRECTORY",
        Tool::Mv => "Rename SOURCE to DEST, or move SOURCE(s) to DIRECTORY",
    };
    format!(
        "Usage: {program} [OPTION]... [-T] SOURCE DEST\n  or:  {program} [OPTION]... SOURCE... DIRECTORY\n  \
         or:  {program} [OPTION]... -t DIRECTORY SOURCE...\n{what}, through copyd.\n\n\
         GNU {name}'s options (see {name}(1)), and copyd's: --sync (wait for the disk), --engine NAME,\n\
         --rate-limit RATE, --on-conflict POLICY, --progress, --json, --address ADDRESS, --debug.\n",
        name = tool.name()
    )
}

/// A front's run: who it speaks as, and whether anything failed.
pub struct Front {
    pub program: String,
    pub json: bool,
    pub debug: bool,
    pub failed: bool,
    /// Ctrl-C cancelled a job: exit 130.
    pub interrupted: bool,
    /// Items a check added besides the one it returned (the entries of a
    /// directory merged into one of another name).
    pub pending: Vec<(submit::Item, String)>,
    /// Directories copyctl made itself (cp -L or -x splitting a tree),
    /// given their metadata after the jobs.
    pub made: Vec<split::MadeDirectory>,
}

impl Front {
    /// Reports a failure in cp's form; the run goes on with the next file.
    pub fn error(&mut self, message: impl AsRef<str>) {
        self.failed = true;
        self.say(message.as_ref(), None);
    }

    /// A failure that came from copyd: its D-Bus error name is shown with
    /// --debug and in --json only.
    pub fn daemon_error(&mut self, message: &str, dbus_name: &str) {
        self.failed = true;
        self.say(message, Some(dbus_name));
    }

    fn say(&self, message: &str, dbus_name: Option<&str>) {
        if self.json {
            let object = serde_json::json!({
                "error": message,
                "dbus_error": dbus_name,
            });
            let _ = writeln!(std::io::stdout(), "{object}");
            return;
        }
        match (self.debug, dbus_name) {
            (true, Some(name)) if !name.is_empty() => {
                eprintln!("{}: {message} [{name}]", self.program)
            }
            _ => eprintln!("{}: {message}", self.program),
        }
    }
}

/// A name as cp quotes it in messages: 'name', or "name" when it holds a
/// single quote.
pub fn quote(path: impl AsRef<Path>) -> String {
    let text = path.as_ref().to_string_lossy();
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

/// An I/O error as cp words it: "No such file or directory", without
/// Rust's " (os error 2)".
pub fn why(err: &std::io::Error) -> String {
    strip_os_error(&err.to_string())
}

/// Drops the " (os error N)" Rust adds to system errors' text.
pub fn strip_os_error(text: &str) -> String {
    let mut out = text.to_owned();
    while let Some(start) = out.find(" (os error ") {
        match out[start..].find(')') {
            Some(end) => out.replace_range(start..start + end + 1, ""),
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_numbers_go() {
        assert_eq!(
            strip_os_error("cannot find /x: No such file or directory (os error 2)"),
            "cannot find /x: No such file or directory"
        );
        assert_eq!(quote("it's"), "\"it's\"");
        assert_eq!(quote("a b"), "'a b'");
    }
}
