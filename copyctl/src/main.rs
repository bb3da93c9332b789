//! `copyctl`: the command-line client of copyd.

// unsafe code lives only in the engine's io_uring module.
#![forbid(unsafe_code)]

mod completions;
mod connect;
mod gnu;
mod manifest;
mod observe;
mod proxy;
mod settings;
mod units;
mod watch;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use zbus::{OwnedVariant, Variant};

use connect::Service;
use watch::JobSummary;

/// Copy and move files through the copyd service.
#[derive(Debug, Parser)]
#[command(name = "copyctl", version, about, after_help = ADDRESS_HELP)]
struct Cli {
    /// D-Bus address of the bus (or private copyd) to use.
    #[arg(long, global = true, env = "COPYD_ADDRESS")]
    address: Option<String>,
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    json: bool,
    /// copyctl's configuration file (default
    /// $XDG_CONFIG_HOME/copyctl/config.toml, if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Say more: with status JOB, the file systems and engines; with a dry
    /// run, every target and decision; notes on the configuration file.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

const ADDRESS_HELP: &str = "copyctl looks for copyd at --address (or $COPYD_ADDRESS), then on the \
system bus, then on the session bus; where none serves it, it starts a private copyd of its own.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy SOURCE... to DEST (like cp).
    Copy(CopyArgs),
    /// GNU cp's command line, defaults and messages, through copyd (see
    /// `copyctl cp --help`); the same when copyctl runs under the name cp.
    #[command(disable_help_flag = true)]
    Cp {
        /// cp's options and operands.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// GNU mv's command line, defaults and messages, through copyd (see
    /// `copyctl mv --help`); the same when copyctl runs under the name mv.
    #[command(disable_help_flag = true)]
    Mv {
        /// mv's options and operands.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Move SOURCE... to DEST (like mv): a rename on one file system, else
    /// copy, sync, then delete.
    Move(TransferArgs),
    /// Dry run: what a copy would do, touching nothing.
    Plan(TransferArgs),
    /// List the jobs copyd knows.
    List,
    /// Show one job; with no job, the service's health (version, uptime,
    /// engines, jobs, checkpoints, free space, error rate, alerts).
    /// With --verbose and a job: the file systems it reads and writes and
    /// the engines that moved its bytes, with why.
    Status { id: Option<String> },
    /// What copyd has done since it started: bytes, throughput and jobs
    /// per engine, queue wait times, the auto engine's choices, the
    /// slowest recent jobs.
    Perf,
    /// The alerts raised and not cleared.
    Alerts,
    /// Follow a job to its end with a progress bar.
    Watch { id: String },
    /// Copy (or move) again exactly the files a finished job could not,
    /// each to where its copy was to go, with the job's options: a new job.
    Retry {
        id: String,
        /// Draw a progress bar (bytes, rate, ETA).
        #[arg(short = 'p', long)]
        progress: bool,
    },
    /// Cancel a job.
    Cancel { id: String },
    /// Pause a job.
    Pause { id: String },
    /// Resume a paused or interrupted job.
    Resume { id: String },
    /// Change a running job's rate limit (e.g. 50MB/s; 0 for none).
    SetRate {
        id: String,
        #[arg(value_parser = units::parse_rate)]
        rate: u64,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print copyctl's manual page (roff); with --dir, write copyctl.1 and
    /// one copyctl-SUBCOMMAND.1 per subcommand (the pages copyctl.1 names)
    /// into DIR.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run as a private copyd on the socket given as standard input.
    #[command(name = "__private-copyd", hide = true)]
    PrivateCopyd,
}

/// What to do when a target exists (inside an existing directory, for
/// each file on its own).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnConflict {
    /// Refuse before anything is written.
    Fail,
    /// Keep what exists (cp -n); merge directories.
    Skip,
    /// Replace files atomically; merge directories, keeping files only the
    /// destination has (cp -r).
    Overwrite,
    /// Replace a file only when the source is newer (cp -u).
    Update,
    /// Keep both: the copy becomes `name (1).ext`.
    Rename,
    /// Move the existing file to `name~` first (cp --backup=simple).
    Backup,
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// Copy directories recursively.
    #[arg(short = 'r', short_alias = 'R', long)]
    recursive: bool,
    /// Archive: recursive, and keep mode, times, ownership, xattrs and hard links (like cp -a).
    #[arg(short = 'a', long)]
    archive: bool,
    /// Metadata to keep, comma-separated: mode,timestamps,ownership,xattr,links,all.
    #[arg(long, value_delimiter = ',')]
    preserve: Option<Vec<String>>,
    /// Draw a progress bar (bytes, rate, ETA).
    #[arg(short = 'p', long)]
    progress: bool,
    /// Print the job's id and return at once instead of waiting.
    #[arg(long)]
    detach: bool,
    /// What to do when a target exists.
    #[arg(long, value_enum, default_value_t = OnConflict::Fail)]
    on_conflict: OnConflict,
    /// Engine: auto, reflink, copy_file_range, io_uring, splice or standard.
    // Listed for clap so shell completions offer them.
    #[arg(long, value_parser = ["auto", "reflink", "copy_file_range", "io_uring", "splice", "standard"])]
    engine: Option<String>,
    /// Limit the job's rate, e.g. 50MB/s, 10MiB/s, 800K.
    #[arg(long, value_parser = units::parse_rate)]
    rate_limit: Option<u64>,
    /// Create the job paused (resume it with `copyctl resume ID`).
    #[arg(long)]
    start_paused: bool,
    /// Place in copyd's queue: higher starts first (default 0).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Copy holes of sparse files as data (by default they stay holes).
    #[arg(long)]
    no_sparse: bool,
    /// Rename each copied file: sed's s/REGEX/REPLACEMENT/FLAGS (flags g, i;
    /// captures $1, ${name}, \1), e.g. 's/\.txt$/.bak/'.
    #[arg(long, value_name = "EXPR")]
    rename: Option<String>,
    /// Apply --rename to directory names too.
    #[arg(long, requires = "rename")]
    rename_dirs: bool,
    /// Say what the command would do, touching nothing (as `copyctl plan`).
    #[arg(long)]
    dry_run: bool,
    /// Check each copy before it gets its final name: size, or a digest
    /// (crc32, md5, sha256) of the bytes read against the copy read back
    /// from the disk. Default: [client] default_verify_method, else none.
    #[arg(long, value_name = "ALG", value_parser = VERIFY_METHODS)]
    verify: Option<String>,
    /// With a digest --verify: write each copy's digest to FILE, as
    /// sha256sum and md5sum print them (`sha256sum -c FILE` checks them).
    ///
    /// One line per file, sorted by path: the digest in lower-case hex, two
    /// spaces, the copy's path. A path holding a backslash or a newline is
    /// written as sha256sum writes it: the line starts with a backslash,
    /// and in the path a backslash is `\\` and a newline `\n`. With
    /// --verify crc32 the digest is the CRC-32 of zlib and gzip (Python's
    /// zlib.crc32) as eight hex digits; no coreutils tool checks such a
    /// file, but each line reads as above.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// What a file that cannot be copied does: continue (list it, copy the
    /// rest; the default, as cp) or stop (end the job there).
    #[arg(long, value_name = "POLICY", value_parser = ["continue", "stop"])]
    on_error: Option<String>,
    /// Ask before each target that exists, as cp -i does (on-conflict ask).
    #[arg(short = 'i', long, conflicts_with_all = ["on_conflict", "detach"])]
    interactive: bool,
    /// SOURCE... DEST
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// The `verify` methods copyd knows.
pub const VERIFY_METHODS: [&str; 5] = ["none", "size", "crc32", "md5", "sha256"];

/// Copy's own options besides those it shares with move and plan.
#[derive(Debug, Args)]
struct CopyArgs {
    #[command(flatten)]
    transfer: TransferArgs,
    /// Do not wait for the copy to reach the disk: it is still placed
    /// atomically and survives copyd being killed, but a power loss or
    /// kernel crash soon after may leave a copy incomplete or empty (as with
    /// cp).
    #[arg(long)]
    no_sync: bool,
}

/// Why a command did not succeed.
enum Failure {
    /// Printed as one line.
    Message(String),
    /// Whoever read our output went away (`copyctl list | head`).
    StdoutClosed,
}

impl From<zbus::Error> for Failure {
    fn from(err: zbus::Error) -> Self {
        match err {
            zbus::Error::MethodError(name, message, _) => Failure::Message(format!(
                "{}: {}",
                name.as_str(),
                message.unwrap_or_default()
            )),
            other => Failure::Message(other.to_string()),
        }
    }
}

/// What a failed write to stdout means. A closed pipe (`copyctl list |
/// head`) is no failure to report: the reader has what it wanted.
fn stdout_failure(err: std::io::Error) -> Failure {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::StdoutClosed
    } else {
        Failure::Message(format!("cannot write to standard output: {err}"))
    }
}

/// Like println!, but a write that fails is a [`Failure`] instead of a
/// panic. Rust programs ignore SIGPIPE, so where ls and cp are killed by it
/// when their reader goes away, copyctl's write fails with EPIPE, on which
/// println! panics ("failed printing to stdout").
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*).map_err(stdout_failure)
    };
}

/// Writes `bytes` (a completion script, the manual page) to stdout.
fn write_out(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).map_err(stdout_failure)?;
    stdout.flush().map_err(stdout_failure)
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Message(message)
    }
}

/// Makes `path` absolute for the daemon, which refuses relative paths and
/// `.`/`..` components (it does not share our working directory).
/// A path written `DIR/` or `DIR/.` keeps saying "a directory": the daemon
/// refuses it unless there is one, as cp does.
fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    let absolute = std::path::absolute(path)
        .map_err(|err| Failure::Message(format!("{}: {err}", path.display())))?;
    if !absolute
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Ok(absolute);
    }
    let resolved = match absolute.canonicalize() {
        Ok(real) => real,
        Err(_) => match (absolute.parent(), absolute.file_name()) {
            (Some(parent), Some(name)) => parent
                .canonicalize()
                .map(|real| real.join(name))
                .map_err(|err| Failure::Message(format!("{}: {err}", parent.display())))?,
            _ => {
                return Err(Failure::Message(format!(
                    "{}: cannot make it absolute",
                    path.display()
                )))
            }
        },
    };
    let written = path.as_os_str().as_bytes();
    let names_a_directory = written.ends_with(b"/") || written.ends_with(b"/.");
    if names_a_directory && !resolved.as_os_str().as_bytes().ends_with(b"/") {
        let mut with_slash = resolved.into_os_string();
        with_slash.push("/");
        return Ok(PathBuf::from(with_slash));
    }
    Ok(resolved)
}

impl TransferArgs {
    fn options(&self) -> HashMap<&'static str, Variant<'static>> {
        let mut options = HashMap::new();
        if self.recursive || self.archive {
            options.insert("recursive", Variant::Bool(true));
        }
        let preserve = match (&self.preserve, self.archive) {
            (Some(list), _) => Some(list.clone()),
            (None, true) => Some(vec!["all".to_owned()]),
            (None, false) => None,
        };
        if let Some(preserve) = preserve {
            options.insert("preserve", Variant::from(preserve));
        }
        let on_conflict = match self.on_conflict {
            OnConflict::Fail => None,
            OnConflict::Skip => Some("skip"),
            OnConflict::Overwrite => Some("overwrite"),
            OnConflict::Update => Some("update"),
            OnConflict::Rename => Some("rename"),
            OnConflict::Backup => Some("backup"),
        };
        if let Some(on_conflict) = on_conflict {
            options.insert("on-conflict", Variant::from(on_conflict));
        }
        if self.interactive {
            options.insert("on-conflict", Variant::from("ask"));
        }
        if let Some(engine) = &self.engine {
            options.insert("engine", Variant::from(engine.clone()));
        }
        if let Some(rate) = self.rate_limit {
            options.insert("rate-limit", Variant::U64(rate));
        }
        if self.start_paused {
            options.insert("start-paused", Variant::Bool(true));
        }
        if let Some(priority) = self.priority {
            options.insert("priority", Variant::I32(priority));
        }
        if self.no_sparse {
            options.insert("sparse", Variant::Bool(false));
        }
        if let Some(rename) = &self.rename {
            options.insert("rename", Variant::from(rename.clone()));
        }
        if self.rename_dirs {
            options.insert("rename-dirs", Variant::Bool(true));
        }
        if let Some(method) = self.verify_method() {
            options.insert("verify", Variant::from(method));
        }
        if let Some(policy) = &self.on_error {
            options.insert("on-error", Variant::from(policy.clone()));
        }
        options
    }

    /// --verify, else the client configuration's default_verify_method.
    fn verify_method(&self) -> Option<String> {
        self.verify.clone().or_else(|| settings::get().verify)
    }

    /// (sources, destination) as absolute byte paths.
    fn paths(&self) -> Result<(Vec<Vec<u8>>, Vec<u8>), Failure> {
        let mut all = self
            .paths
            .iter()
            .map(|p| absolute(p).map(|p| p.as_os_str().as_bytes().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let destination = all.pop().expect("clap requires two paths");
        Ok((all, destination))
    }
}

fn print_summary(summary: &JobSummary, json: bool) -> Result<(), Failure> {
    if json {
        out!(
            "{}",
            serde_json::to_string(summary).expect("a summary serializes")
        )?;
        return Ok(());
    }
    out!("job {} ({})", summary.id, summary.path)?;
    out!("  operation:   {}", summary.operation)?;
    out!("  state:       {}", summary.state)?;
    out!("  sources:     {}", summary.sources.join(" "))?;
    out!("  destination: {}", summary.destination)?;
    out!(
        "  progress:    {}/{} bytes, {}/{} files",
        summary.bytes_done,
        summary.bytes_total,
        summary.files_done,
        summary.files_total
    )?;
    if !summary.engine.is_empty() {
        out!("  engine:      {}", summary.engine)?;
    }
    out!("  started by:  uid {}", summary.started_by_uid)?;
    if !summary.error_name.is_empty() {
        out!(
            "  error:       {}: {}",
            summary.error_name,
            summary.error_message
        )?;
    }
    Ok(())
}

fn print_plan(
    report: &HashMap<String, OwnedVariant>,
    json: bool,
    verbose: bool,
) -> Result<(), Failure> {
    let value = |v: &OwnedVariant| -> serde_json::Value {
        match &**v {
            Variant::U64(n) => serde_json::json!(n),
            Variant::Bool(b) => serde_json::json!(b),
            Variant::Str(s) => serde_json::json!(s.as_str()),
            other => {
                let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
                let copy = || other.try_clone().expect("no fds");
                if let Ok(paths) = Vec::<Vec<u8>>::try_from(copy()) {
                    serde_json::json!(paths.iter().map(|p| lossy(p)).collect::<Vec<_>>())
                } else if let Ok(counts) = HashMap::<String, u64>::try_from(copy()) {
                    serde_json::json!(counts)
                } else if let Ok(space) = Vec::<(Vec<u8>, u64, u64)>::try_from(copy()) {
                    serde_json::json!(space
                        .iter()
                        .map(|(dir, free, needed)| serde_json::json!({
                            "directory": lossy(dir), "free": free, "needed": needed
                        }))
                        .collect::<Vec<_>>())
                } else if let Ok(decided) = Vec::<(Vec<u8>, String)>::try_from(copy()) {
                    serde_json::json!(decided
                        .iter()
                        .map(|(target, decision)| serde_json::json!([lossy(target), decision]))
                        .collect::<Vec<_>>())
                } else if let Ok(pairs) = Vec::<(Vec<u8>, Vec<u8>)>::try_from(copy()) {
                    // Renamed: source → copy.
                    serde_json::json!(pairs
                        .iter()
                        .map(|(from, to)| serde_json::json!([lossy(from), lossy(to)]))
                        .collect::<Vec<_>>())
                } else {
                    serde_json::json!(format!("{other:?}"))
                }
            }
        }
    };
    let object: serde_json::Map<String, serde_json::Value> = report
        .iter()
        .map(|(key, v)| (key.clone(), value(v)))
        .collect();
    if json {
        out!("{}", serde_json::Value::Object(object))?;
        return Ok(());
    }
    let mut keys: Vec<_> = object.keys().cloned().collect();
    keys.sort();
    for key in keys {
        // Lists of every file, only when asked for.
        if !verbose && matches!(key.as_str(), "decided" | "renamed" | "targets") {
            if let Some(list) = object[&key].as_array() {
                out!("{key:>24}: {} (--verbose lists them)", list.len())?;
                continue;
            }
        }
        out!("{key:>24}: {}", object[&key])?;
    }
    Ok(())
}

async fn job_path(service: &Service, id: &str) -> Result<String, Failure> {
    if id.starts_with('/') {
        return Ok(id.to_owned());
    }
    Ok(service.manager().await?.get_job(id).await?.to_string())
}

async fn job_proxy<'a>(service: &'a Service, id: &str) -> Result<proxy::JobProxy<'a>, Failure> {
    let path = job_path(service, id).await?;
    Ok(proxy::JobProxy::builder(&service.connection)
        .path(path)
        .build()
        .await?)
}

async fn transfer(
    service: &Service,
    args: &TransferArgs,
    verb: &str,
    no_sync: bool,
    json: bool,
    verbose: bool,
) -> Result<bool, Failure> {
    let manager = service.manager().await?;
    let (sources, destination) = args.paths()?;
    let sources: Vec<&[u8]> = sources.iter().map(Vec::as_slice).collect();
    let mut options = args.options();
    if no_sync {
        options.insert("sync", Variant::Bool(false));
    }
    let digests = matches!(
        args.verify_method().as_deref(),
        Some("crc32" | "md5" | "sha256")
    );
    if args.manifest.is_some() && !digests {
        return Err(Failure::Message(
            "--manifest needs --verify crc32, md5 or sha256".into(),
        ));
    }
    if verb == "plan" || args.dry_run {
        let report = manager.plan(&sources, &destination, options).await?;
        print_plan(&report, json, verbose)?;
        return Ok(true);
    }
    // Subscribed before the job exists, so none of its signals is missed.
    let signals = if args.detach {
        None
    } else {
        Some(watch::JobSignals::subscribe(&service.connection).await?)
    };
    let path = match verb {
        "copy" => manager.copy(&sources, &destination, options).await?,
        _ => manager.move_(&sources, &destination, options).await?,
    };
    let Some(signals) = signals else {
        if service.private.is_some() {
            return Err(Failure::Message(
                "--detach needs a copyd service: a private copyd ends with copyctl".into(),
            ));
        }
        let summary = watch::summary(&service.connection, path.as_str()).await?;
        if json {
            print_summary(&summary, true)?;
        } else {
            out!("{}", summary.id)?;
        }
        return Ok(true);
    };
    let summary = watch::wait(
        &service.connection,
        signals,
        watch::Subscribed::BeforeTheJobWasMade,
        path.as_str(),
        args.progress && !json,
        args.interactive,
        match no_sync {
            true => watch::LastPhase::Placing,
            false => watch::LastPhase::Syncing,
        },
    )
    .await?;
    report_end(&summary, json, digests, args.manifest.as_deref())
}

/// What copy, move and retry say once their job has ended: the summary
/// (--json), the digests, each file that failed; Ok(true) only on success.
fn report_end(
    summary: &JobSummary,
    json: bool,
    digests: bool,
    manifest: Option<&Path>,
) -> Result<bool, Failure> {
    if json {
        print_summary(summary, true)?;
    }
    if digests {
        report_checksums(summary, manifest, json)?;
    }
    if !summary.failed_files.is_empty() {
        // As cp does: one line per file that could not be copied, then how
        // many were; the rest of the job is in place. (The daemon keeps
        // FailedFiles only for a job that ended on them alone.)
        for (path, why) in &summary.failed_files {
            eprintln!("copyctl: cannot copy '{path}': {why}");
        }
        let failed = summary.failed_files.len() as u64;
        return Err(Failure::Message(format!(
            "{} of {} files copied; {failed} failed",
            summary.files_total.saturating_sub(failed),
            summary.files_total
        )));
    }
    if !summary.succeeded() {
        return Err(Failure::Message(format!(
            "{}: {}",
            summary.error_name, summary.error_message
        )));
    }
    Ok(true)
}

/// What `--verify` found: a single file's digest as sha256sum prints it,
/// or a line for a tree; and with `--manifest`, every digest to that file.
fn report_checksums(
    summary: &JobSummary,
    manifest: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    if let Some(file) = manifest {
        std::fs::write(file, manifest::lines(&summary.checksums))
            .map_err(|err| Failure::Message(format!("cannot write {}: {err}", file.display())))?;
    }
    if json || (summary.checksums.is_empty() && !summary.succeeded()) {
        return Ok(());
    }
    match summary.checksums.as_slice() {
        [one] if summary.files_total == 1 => out!("{}  {}", one.digest, one.path)?,
        all => {
            let shared = all.iter().filter(|c| c.shared).count();
            let mut line = format!(
                "verified {} files by {}: each copy, read back from its storage, matches its source",
                all.len(),
                summary.verify
            );
            if shared > 0 {
                line += &format!(
                    " ({shared} share the source's extents: the source was read once and its digest stands for both)"
                );
            }
            out!("{line}")?;
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<bool, Failure> {
    let service = connect::find(cli.address.as_deref()).await?;
    match &cli.command {
        Command::Copy(args) => {
            transfer(
                &service,
                &args.transfer,
                "copy",
                args.no_sync,
                cli.json,
                cli.verbose,
            )
            .await
        }
        Command::Move(args) => transfer(&service, args, "move", false, cli.json, cli.verbose).await,
        Command::Plan(args) => transfer(&service, args, "plan", false, cli.json, cli.verbose).await,
        Command::List => {
            let paths = service.manager().await?.list_jobs().await?;
            let mut summaries = Vec::new();
            for path in paths {
                summaries.push(watch::summary(&service.connection, path.as_str()).await?);
            }
            if cli.json {
                out!(
                    "{}",
                    serde_json::to_string(&summaries).expect("summaries serialize")
                )?;
            } else {
                out!(
                    "{:>6} {:<10} {:<5} {:>12} {:>12}  SOURCES -> DESTINATION",
                    "ID",
                    "STATE",
                    "OP",
                    "DONE",
                    "TOTAL"
                )?;
                for s in &summaries {
                    out!(
                        "{:>6} {:<10} {:<5} {:>12} {:>12}  {} -> {}",
                        s.id,
                        s.state,
                        s.operation,
                        s.bytes_done,
                        s.bytes_total,
                        s.sources.join(" "),
                        s.destination
                    )?;
                }
            }
            Ok(true)
        }
        Command::Status { id: None, .. } => {
            for line in observe::status(&service, cli.json).await? {
                out!("{line}")?;
            }
            Ok(true)
        }
        Command::Status { id: Some(id) } => {
            let verbose = &cli.verbose;
            let path = job_path(&service, id).await?;
            let summary = watch::summary(&service.connection, &path).await?;
            if *verbose {
                let engines = service.manager().await?.engines().await?;
                let choices = observe::engine_choices(&summary, &engines, cli.json);
                if cli.json {
                    let mut value = serde_json::to_value(&summary).expect("summaries serialize");
                    value["engine_choices"] =
                        serde_json::from_str(&choices[0]).expect("our own JSON");
                    out!("{value}")?;
                } else {
                    print_summary(&summary, false)?;
                    for line in choices {
                        out!("{line}")?;
                    }
                }
            } else {
                print_summary(&summary, cli.json)?;
            }
            Ok(true)
        }
        Command::Perf => {
            for line in observe::perf(&service, cli.json).await? {
                out!("{line}")?;
            }
            Ok(true)
        }
        Command::Alerts => {
            for line in observe::alerts(&service, cli.json).await? {
                out!("{line}")?;
            }
            Ok(true)
        }
        Command::Watch { id } => {
            let signals = watch::JobSignals::subscribe(&service.connection).await?;
            let path = job_path(&service, id).await?;
            let summary = watch::wait(
                &service.connection,
                signals,
                watch::Subscribed::AfterTheJobWasMade,
                &path,
                !cli.json,
                false,
                watch::LastPhase::Finishing,
            )
            .await?;
            if cli.json {
                print_summary(&summary, true)?;
            }
            Ok(summary.succeeded())
        }
        Command::Retry { id, progress } => {
            let manager = service.manager().await?;
            let signals = watch::JobSignals::subscribe(&service.connection).await?;
            let path = manager.retry_job(id, HashMap::new()).await?;
            let summary = watch::wait(
                &service.connection,
                signals,
                watch::Subscribed::BeforeTheJobWasMade,
                path.as_str(),
                *progress && !cli.json,
                false,
                watch::LastPhase::Finishing,
            )
            .await?;
            let digests = matches!(summary.verify.as_str(), "crc32" | "md5" | "sha256");
            report_end(&summary, cli.json, digests, None)
        }
        Command::Cp { .. } | Command::Mv { .. } => unreachable!("refused in main"),
        Command::Cancel { id } => {
            job_proxy(&service, id)
                .await?
                .cancel(HashMap::new())
                .await?;
            Ok(true)
        }
        Command::Pause { id } => {
            job_proxy(&service, id).await?.pause(HashMap::new()).await?;
            Ok(true)
        }
        Command::Resume { id } => {
            job_proxy(&service, id)
                .await?
                .resume(HashMap::new())
                .await?;
            Ok(true)
        }
        Command::SetRate { id, rate } => {
            job_proxy(&service, id).await?.set_rate_limit(*rate).await?;
            Ok(true)
        }
        Command::PrivateCopyd | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

fn main() -> ExitCode {
    // `copyctl cp|mv …`, or copyctl run as `cp` or `mv`: GNU's command lines.
    if let Some(status) = gnu::dispatch() {
        return status;
    }
    let mut cli = Cli::parse();
    if !matches!(cli.command, Command::PrivateCopyd) {
        let settings = match settings::load(cli.config.as_deref()) {
            Ok(settings) => settings,
            Err(message) => {
                eprintln!("copyctl: {message}");
                return ExitCode::from(2);
            }
        };
        if cli.verbose {
            for note in &settings.notes {
                eprintln!("copyctl: {note}");
            }
        }
        // The file's settings, where no option or variable said otherwise.
        if cli.address.is_none() {
            cli.address = settings.address.clone();
        }
        if settings.show_progress {
            match &mut cli.command {
                Command::Copy(args) => args.transfer.progress = true,
                Command::Move(args) => args.progress = true,
                _ => {}
            }
        }
    }
    if matches!(cli.command, Command::Cp { .. } | Command::Mv { .. }) {
        // Only reached with copyctl's own options before the name (gnu::
        // dispatch takes `copyctl cp ...`): cp and mv have their own.
        eprintln!("copyctl: cp and mv take their options after their name: write `copyctl cp ...` or `copyctl mv ...`");
        return ExitCode::from(2);
    }
    match &cli.command {
        Command::PrivateCopyd => return connect::run_private_daemon(),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: generate() panics on a failed write.
            let script = completions::script(*shell, &mut Cli::command());
            return exit_code(write_out(&script).map(|()| true));
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            match dir {
                Some(dir) => {
                    return match clap_mangen::generate_to(Cli::command(), dir) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(err) => {
                            eprintln!("copyctl: {err}");
                            ExitCode::FAILURE
                        }
                    }
                }
                None => {
                    // Without the help subcommand, as generate_to does: the
                    // page names no copyctl-help(1), which is not written.
                    // Into memory first, then out as every output goes (a
                    // closed pipe ends copyctl quietly).
                    let mut page = Vec::new();
                    clap_mangen::Man::new(Cli::command().disable_help_subcommand(true))
                        .render(&mut page)
                        .expect("rendering into memory cannot fail");
                    return exit_code(write_out(&page).map(|()| true));
                }
            }
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    exit_code(runtime.block_on(run(cli)))
}

fn exit_code(result: Result<bool, Failure>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Failure::Message(message)) => {
            eprintln!("copyctl: {message}");
            ExitCode::FAILURE
        }
        // Silent, with the status a shell shows for a program killed by
        // SIGPIPE (128 + 13), as ls's would be.
        Err(Failure::StdoutClosed) => ExitCode::from(141),
    }
}
