//! `copyctl`: the command-line client of copyd.

// unsafe code lives only in the engine's io_uring module.
#![forbid(unsafe_code)]

mod connect;
mod proxy;
mod units;
mod watch;

use std::collections::HashMap;
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
    #[command(subcommand)]
    command: Command,
}

const ADDRESS_HELP: &str = "copyctl looks for copyd at --address (or $COPYD_ADDRESS), then on the \
system bus, then on the session bus; where none serves it, it starts a private copyd of its own.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Copy SOURCE... to DEST (like cp).
    Copy(CopyArgs),
    /// Move SOURCE... to DEST (like mv): a rename on one file system, else
    /// copy, sync, then delete.
    Move(TransferArgs),
    /// Dry run: what a copy would do, touching nothing.
    Plan(TransferArgs),
    /// List the jobs copyd knows.
    List,
    /// Show one job.
    Status { id: String },
    /// Follow a job to its end with a progress bar.
    Watch { id: String },
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnConflict {
    Fail,
    Skip,
    Overwrite,
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
    /// SOURCE... DEST
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<PathBuf>,
}

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

/// A failure, printed as one line.
struct Failure(String);

impl From<zbus::Error> for Failure {
    fn from(err: zbus::Error) -> Self {
        match err {
            zbus::Error::MethodError(name, message, _) => Failure(format!(
                "{}: {}",
                name.as_str(),
                message.unwrap_or_default()
            )),
            other => Failure(other.to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure(message)
    }
}

/// Makes `path` absolute for the daemon, which refuses relative paths and
/// `.`/`..` components (it does not share our working directory).
/// A path written `DIR/` or `DIR/.` keeps saying "a directory": the daemon
/// refuses it unless there is one, as cp does.
fn absolute(path: &Path) -> Result<PathBuf, Failure> {
    let absolute =
        std::path::absolute(path).map_err(|err| Failure(format!("{}: {err}", path.display())))?;
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
                .map_err(|err| Failure(format!("{}: {err}", parent.display())))?,
            _ => {
                return Err(Failure(format!(
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
        };
        if let Some(on_conflict) = on_conflict {
            options.insert("on-conflict", Variant::from(on_conflict));
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
        options
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

fn print_summary(summary: &JobSummary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("a summary serializes")
        );
        return;
    }
    println!("job {} ({})", summary.id, summary.path);
    println!("  operation:   {}", summary.operation);
    println!("  state:       {}", summary.state);
    println!("  sources:     {}", summary.sources.join(" "));
    println!("  destination: {}", summary.destination);
    println!(
        "  progress:    {}/{} bytes, {}/{} files",
        summary.bytes_done, summary.bytes_total, summary.files_done, summary.files_total
    );
    if !summary.engine.is_empty() {
        println!("  engine:      {}", summary.engine);
    }
    println!("  started by:  uid {}", summary.started_by_uid);
    if !summary.error_name.is_empty() {
        println!(
            "  error:       {}: {}",
            summary.error_name, summary.error_message
        );
    }
}

fn print_plan(report: &HashMap<String, OwnedVariant>, json: bool) {
    let value = |v: &OwnedVariant| -> serde_json::Value {
        match &**v {
            Variant::U64(n) => serde_json::json!(n),
            Variant::Bool(b) => serde_json::json!(b),
            Variant::Str(s) => serde_json::json!(s.as_str()),
            other => match Vec::<Vec<u8>>::try_from(other.try_clone().expect("no fds")) {
                Ok(paths) => serde_json::json!(paths
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()),
                Err(_) => serde_json::json!(format!("{other:?}")),
            },
        }
    };
    let object: serde_json::Map<String, serde_json::Value> = report
        .iter()
        .map(|(key, v)| (key.clone(), value(v)))
        .collect();
    if json {
        println!("{}", serde_json::Value::Object(object));
        return;
    }
    let mut keys: Vec<_> = object.keys().cloned().collect();
    keys.sort();
    for key in keys {
        println!("{key:>24}: {}", object[&key]);
    }
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
) -> Result<bool, Failure> {
    let manager = service.manager().await?;
    let (sources, destination) = args.paths()?;
    let sources: Vec<&[u8]> = sources.iter().map(Vec::as_slice).collect();
    let mut options = args.options();
    if no_sync {
        options.insert("sync", Variant::Bool(false));
    }
    if verb == "plan" {
        let report = manager.plan(&sources, &destination, options).await?;
        print_plan(&report, json);
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
            return Err(Failure(
                "--detach needs a copyd service: a private copyd ends with copyctl".into(),
            ));
        }
        let summary = watch::summary(&service.connection, path.as_str()).await?;
        if json {
            print_summary(&summary, true);
        } else {
            println!("{}", summary.id);
        }
        return Ok(true);
    };
    let summary = watch::wait(
        &service.connection,
        signals,
        watch::Subscribed::BeforeTheJobWasMade,
        path.as_str(),
        args.progress && !json,
    )
    .await?;
    if json {
        print_summary(&summary, true);
    }
    if !summary.failed_files.is_empty() {
        // As cp does: one line per file that could not be copied, then how
        // many were; the rest of the job is in place. (The daemon keeps
        // FailedFiles only for a job that ended on them alone.)
        for (path, why) in &summary.failed_files {
            eprintln!("copyctl: cannot copy '{path}': {why}");
        }
        let failed = summary.failed_files.len() as u64;
        return Err(Failure(format!(
            "{} of {} files copied; {failed} failed",
            summary.files_total.saturating_sub(failed),
            summary.files_total
        )));
    }
    if !summary.succeeded() {
        return Err(Failure(format!(
            "{}: {}",
            summary.error_name, summary.error_message
        )));
    }
    Ok(true)
}

async fn run(cli: Cli) -> Result<bool, Failure> {
    let service = connect::find(cli.address.as_deref()).await?;
    match &cli.command {
        Command::Copy(args) => {
            transfer(&service, &args.transfer, "copy", args.no_sync, cli.json).await
        }
        Command::Move(args) => transfer(&service, args, "move", false, cli.json).await,
        Command::Plan(args) => transfer(&service, args, "plan", false, cli.json).await,
        Command::List => {
            let paths = service.manager().await?.list_jobs().await?;
            let mut summaries = Vec::new();
            for path in paths {
                summaries.push(watch::summary(&service.connection, path.as_str()).await?);
            }
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string(&summaries).expect("summaries serialize")
                );
            } else {
                println!(
                    "{:>6} {:<10} {:<5} {:>12} {:>12}  SOURCES -> DESTINATION",
                    "ID", "STATE", "OP", "DONE", "TOTAL"
                );
                for s in &summaries {
                    println!(
                        "{:>6} {:<10} {:<5} {:>12} {:>12}  {} -> {}",
                        s.id,
                        s.state,
                        s.operation,
                        s.bytes_done,
                        s.bytes_total,
                        s.sources.join(" "),
                        s.destination
                    );
                }
            }
            Ok(true)
        }
        Command::Status { id } => {
            let path = job_path(&service, id).await?;
            print_summary(&watch::summary(&service.connection, &path).await?, cli.json);
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
            )
            .await?;
            if cli.json {
                print_summary(&summary, true);
            }
            Ok(summary.succeeded())
        }
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
    let cli = Cli::parse();
    match &cli.command {
        Command::PrivateCopyd => return connect::run_private_daemon(),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "copyctl",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            let written = match dir {
                Some(dir) => clap_mangen::generate_to(Cli::command(), dir),
                // Without the help subcommand, as generate_to does: the page
                // names no copyctl-help(1), which is not written.
                None => clap_mangen::Man::new(Cli::command().disable_help_subcommand(true))
                    .render(&mut std::io::stdout()),
            };
            return match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("copyctl: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Failure(message)) => {
            eprintln!("copyctl: {message}");
            ExitCode::FAILURE
        }
    }
}
