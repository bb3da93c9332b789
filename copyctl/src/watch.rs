//! Following a job to its end: a progress bar drawn from the job's Progress
//! signals, and the job's final state read from its properties.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use zbus::{Connection, MatchRule, MessageStream};

use crate::connect::BUS_NAME;
use crate::proxy::{
    Completed, ConflictRaised, ConflictRaisedArgs, FilesPlaced, JobProxy, Progress,
};

const JOB_INTERFACE: &str = "org.example.Copyd1.Job";
/// Where copyd puts its jobs (`.../jobs/<id>`).
const JOBS_PATH: &str = "/org/example/Copyd1/jobs";
/// How often a waiting client looks at its job, signals or not.
const LOOK_INTERVAL: Duration = Duration::from_secs(1);

/// A job as `--json` and `status` show it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobSummary {
    pub id: String,
    pub path: String,
    pub state: String,
    pub operation: String,
    pub sources: Vec<String>,
    pub destination: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    pub rate: u64,
    pub engine: String,
    pub engine_bytes: HashMap<String, u64>,
    pub started_by_uid: u32,
    pub error_name: String,
    pub error_message: String,
    /// Source files that could not be copied while the rest went on, with
    /// why (the job's FailedFiles).
    pub failed_files: Vec<(String, String)>,
    /// How the job checked its copies (none, size, crc32, md5, sha256).
    pub verify: String,
    /// Each copy checked by digest (the job's Checksums).
    pub checksums: Vec<FileChecksum>,
    /// Transient errors tried again.
    pub retries: u64,
    /// How the bytes went between file systems (the job's Routes).
    pub routes: Vec<Route>,
}

/// One entry of a job's Routes, as the bus sends it.
type RouteEntry = (String, String, u64, HashMap<String, u64>, Vec<String>);

/// The bytes between one pair of file systems: which engines moved them,
/// and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Route {
    pub source: String,
    pub destination: String,
    pub files: u64,
    pub engine_bytes: HashMap<String, u64>,
    pub why: Vec<String>,
}

/// One copy's digest, as the job's Checksums says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileChecksum {
    pub path: String,
    /// The raw bytes of the path, for a manifest of names that are not
    /// UTF-8.
    #[serde(skip)]
    pub path_bytes: Vec<u8>,
    pub digest: String,
    /// The copy shares the source's extents: one read of the source gave
    /// the digest of both.
    pub shared: bool,
}

impl JobSummary {
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "completed" | "failed" | "cancelled")
    }

    pub fn succeeded(&self) -> bool {
        self.state == "completed"
    }
}

/// The Job properties a summary shows, read straight off GetAll's reply.
/// Read as a map of variants instead, every byte of every path became a
/// value of its own, and a job of many sources was slow to take apart (see
/// docs/PERFORMANCE.md, "Session 5 (2026-12-02)", "copyctl reads a job's
/// properties into a typed struct").
#[derive(Debug, Default, serde::Deserialize, zbus::Type)]
#[zbus(signature = "a{sv}")]
#[serde(default, rename_all = "PascalCase")]
struct JobProperties {
    #[serde(with = "zbus::as_variant")]
    id: String,
    #[serde(with = "zbus::as_variant")]
    state: String,
    #[serde(with = "zbus::as_variant")]
    operation: String,
    #[serde(with = "zbus::as_variant")]
    sources: Vec<Vec<u8>>,
    #[serde(with = "zbus::as_variant")]
    destination: Vec<u8>,
    #[serde(with = "zbus::as_variant")]
    bytes_done: u64,
    #[serde(with = "zbus::as_variant")]
    bytes_total: u64,
    #[serde(with = "zbus::as_variant")]
    files_done: u64,
    #[serde(with = "zbus::as_variant")]
    files_total: u64,
    #[serde(with = "zbus::as_variant")]
    rate: u64,
    #[serde(with = "zbus::as_variant")]
    engine: String,
    #[serde(with = "zbus::as_variant")]
    engine_bytes: HashMap<String, u64>,
    #[serde(rename = "StartedByUID", with = "zbus::as_variant")]
    started_by_uid: u32,
    #[serde(with = "zbus::as_variant")]
    error_name: String,
    #[serde(with = "zbus::as_variant")]
    error_message: String,
    #[serde(with = "zbus::as_variant")]
    failed_files: Vec<(Vec<u8>, String)>,
    #[serde(with = "zbus::as_variant")]
    verify: String,
    #[serde(with = "zbus::as_variant")]
    checksums: Vec<(Vec<u8>, String, bool)>,
    #[serde(with = "zbus::as_variant")]
    retries: u64,
    #[serde(with = "zbus::as_variant")]
    routes: Vec<RouteEntry>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads all of a job's properties in one call.
pub async fn summary(connection: &Connection, path: &str) -> zbus::Result<JobSummary> {
    let reply = connection
        .call_method(
            Some(BUS_NAME),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(JOB_INTERFACE,),
        )
        .await?;
    let all: JobProperties = reply.body().deserialize()?;
    Ok(JobSummary {
        id: all.id,
        path: path.to_owned(),
        state: all.state,
        operation: all.operation,
        sources: all.sources.iter().map(|bytes| lossy(bytes)).collect(),
        destination: lossy(&all.destination),
        bytes_done: all.bytes_done,
        bytes_total: all.bytes_total,
        files_done: all.files_done,
        files_total: all.files_total,
        rate: all.rate,
        engine: all.engine,
        engine_bytes: all.engine_bytes,
        started_by_uid: all.started_by_uid,
        error_name: all.error_name,
        error_message: all.error_message,
        failed_files: (all.failed_files.iter())
            .map(|(path, why)| (lossy(path), why.clone()))
            .collect(),
        verify: all.verify,
        checksums: (all.checksums.into_iter())
            .map(|(path, digest, shared)| FileChecksum {
                path: lossy(&path),
                path_bytes: path,
                digest,
                shared,
            })
            .collect(),
        retries: all.retries,
        routes: (all.routes.into_iter())
            .map(|(source, destination, files, engine_bytes, why)| Route {
                source,
                destination,
                files,
                engine_bytes,
                why,
            })
            .collect(),
    })
}

/// Asks on the terminal what to do with a conflict, as `cp -i` does:
/// `y` overwrites, anything else (or end of input) keeps what exists; `r`
/// keeps both, `b` backs the existing file up, `u` replaces it if older.
/// A capital letter answers every later conflict alike.
async fn ask_on_the_terminal(conflict: &ConflictRaisedArgs<'_>) -> (&'static str, bool) {
    let side = |side: &HashMap<String, zbus::zvariant::OwnedVariant>| {
        let number = |key: &str| side.get(key).and_then(|v| u64::try_from(v).ok());
        let size = number("size").map_or("?".into(), |n| HumanBytes(n).to_string());
        let age = number("mtime").map_or("?".into(), |us| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            format!(
                "{} ago",
                HumanDuration(Duration::from_micros(now.saturating_sub(us)))
            )
        });
        format!("{size}, modified {age}")
    };
    eprint!(
        "copyctl: overwrite '{}' ({}) with the copy ({})? [y/N, r rename, b backup, u update; capital: all] ",
        String::from_utf8_lossy(conflict.target()),
        side(conflict.existing()),
        side(conflict.incoming()),
    );
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    let answer = line.trim();
    let all = answer.chars().next().is_some_and(char::is_uppercase);
    let action = match answer.to_lowercase().as_str() {
        "y" | "yes" => "overwrite",
        "r" => "rename",
        "b" => "backup",
        "u" => "update",
        _ => "skip",
    };
    (action, all)
}

/// Asks as GNU cp -i and mv -i do: `cp: overwrite 'x'? `; a line that
/// starts with y or Y overwrites, anything else keeps what exists.
async fn ask_as_gnu(program: &str, conflict: &ConflictRaisedArgs<'_>) -> (&'static str, bool) {
    eprint!(
        "{program}: overwrite '{}'? ",
        String::from_utf8_lossy(conflict.target())
    );
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    match line.trim_start().starts_with(['y', 'Y']) {
        true => ("overwrite", false),
        false => ("skip", false),
    }
}

fn progress_bar() -> ProgressBar {
    // [display] of copyctl's config: how often it redraws, and colour.
    let settings = crate::settings::get();
    let hz = (1.0 / settings.progress_update_interval.as_secs_f64().max(0.001))
        .clamp(1.0, 60.0)
        .round() as u8;
    let bar =
        ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr_with_hz(hz));
    let template = if settings.use_color {
        "{bar:30.cyan/blue} {percent:>3}% {bytes:>10}/{total_bytes:<10} {msg}"
    } else {
        "{bar:30} {percent:>3}% {bytes:>10}/{total_bytes:<10} {msg}"
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}

/// The last name of the file being copied now, for the bar ("" when the
/// job says none or copyd cannot be asked).
async fn current_name(job: &JobProxy<'_>) -> String {
    let path = job.current_path().await.unwrap_or_default();
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(&path);
    String::from_utf8_lossy(name).into_owned()
}

fn eta_text(expected_end_time_us: u64) -> String {
    if expected_end_time_us == 0 {
        return "ETA --".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let left = Duration::from_micros(expected_end_time_us.saturating_sub(now));
    format!("ETA {}", HumanDuration(left))
}

/// The signals of copyd's jobs, subscribed to with one match rule. Made
/// before a Copy or Move call, it holds every signal of the job the call
/// makes, however soon that job ends: so no first look at the job is needed.
pub struct JobSignals(MessageStream);

impl JobSignals {
    pub async fn subscribe(connection: &Connection) -> zbus::Result<JobSignals> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(JOB_INTERFACE)
            .path_namespace(JOBS_PATH)
            .build()?;
        // Signals queue here until read; a full queue holds the connection
        // back rather than dropping any.
        Ok(JobSignals(
            MessageStream::for_match_rule(rule, connection, None).await?,
        ))
    }
}

/// Whether the job at `path` may already have ended when its signals were
/// subscribed to (so a look is needed), or was made after (so it is not).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    AfterTheJobWasMade,
    BeforeTheJobWasMade,
}

/// Waits for the job at `path` to end, drawing a progress bar when asked.
/// Ctrl-C cancels the job (once) and keeps waiting for it to clean up.
///
/// Its end is seen by its Completed signal, and by a look at its state once
/// a second in case a signal was lost. Signals are only a hint to look: the
/// summary returned is always read from the job itself (a signal's sender
/// is not checked, a property read goes to copyd).
pub async fn wait(
    connection: &Connection,
    signals: JobSignals,
    subscribed: Subscribed,
    path: &str,
    show_progress: bool,
    interactive: bool,
    last_phase: LastPhase,
) -> zbus::Result<JobSummary> {
    let ask = match interactive {
        true => Ask::Copyctl,
        false => Ask::No,
    };
    let style = WaitStyle {
        show_progress,
        ask,
        note_interrupt: true,
        last_phase,
        on_files: None,
    };
    Ok(wait_with(connection, signals, subscribed, path, &style)
        .await?
        .0)
}

/// Who answers a job's conflicts (on-conflict ask).
pub enum Ask {
    /// Nobody: the job is not asking.
    No,
    /// copyctl's own question, with its choices.
    Copyctl,
    /// GNU cp's and mv's: `PROGRAM: overwrite 'x'? `, yes or no.
    Gnu(String),
}

/// One file a job placed, from its FilesPlaced signal: action, whether a
/// directory, source, target.
pub type PlacedFile = (String, bool, Vec<u8>, Vec<u8>);

/// How many looks [`wait_with`] makes at a job that has ended before it
/// gives up waiting for its Completed (after which no FilesPlaced comes).
const LOOKS_FOR_COMPLETED: u32 = 3;

/// How [`wait_with`] follows a job.
pub struct WaitStyle<'a> {
    pub show_progress: bool,
    pub ask: Ask,
    /// Say on stderr that Ctrl-C cancels the job (cp and mv say nothing).
    pub note_interrupt: bool,
    /// What the bar says once every byte is copied and the job has not
    /// ended yet.
    pub last_phase: LastPhase,
    /// Called with each FilesPlaced's files (a job made with
    /// report-files); the wait then ends only after the job's Completed,
    /// which copyd sends after its last FilesPlaced.
    pub on_files: Option<&'a dyn Fn(Vec<PlacedFile>)>,
}

/// What a job does between its last byte copied and its end.
#[derive(Debug, Clone, Copy)]
pub enum LastPhase {
    /// A durable job: it waits for the disk.
    Syncing,
    /// sync off: the copies are put in place.
    Placing,
    /// Not known here (a job copyctl did not make).
    Finishing,
}

impl LastPhase {
    fn text(self) -> &'static str {
        match self {
            LastPhase::Syncing => "syncing to disk",
            LastPhase::Placing => "placing the copies",
            LastPhase::Finishing => "finishing",
        }
    }
}

/// [`wait`], in `style`; also says whether Ctrl-C cancelled the job.
pub async fn wait_with(
    connection: &Connection,
    signals: JobSignals,
    subscribed: Subscribed,
    path: &str,
    style: &WaitStyle<'_>,
) -> zbus::Result<(JobSummary, bool)> {
    let show_progress = style.show_progress;
    let job = JobProxy::builder(connection)
        .path(path.to_owned())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let JobSignals(mut signals) = signals;
    let bar = show_progress.then(progress_bar);
    let first_look = match subscribed {
        Subscribed::AfterTheJobWasMade => tokio::time::Instant::now(),
        Subscribed::BeforeTheJobWasMade => tokio::time::Instant::now() + LOOK_INTERVAL,
    };
    let mut look = tokio::time::interval_at(first_look, LOOK_INTERVAL);
    let mut interrupted = false;
    // With on_files: whether Completed came, and how many looks found the
    // job ended without it (signals before it may still be on their way).
    let mut completed = false;
    let mut looks_since_end = 0;
    loop {
        let ended = tokio::select! {
            Some(Ok(message)) = signals.next() => {
                if message.header().path().map(|p| p.as_str()) != Some(path) {
                    continue;
                }
                if let (Some(on_files), Some(placed)) =
                    (style.on_files, FilesPlaced::from_message(message.clone()))
                {
                    if let Ok(args) = placed.args() {
                        on_files(args.files);
                    }
                    continue;
                }
                if let Some(conflict) = ConflictRaised::from_message(message.clone()) {
                    if let Ok(args) = conflict.args() {
                        let answer = match &style.ask {
                            Ask::No => None,
                            Ask::Copyctl => Some(ask_on_the_terminal(&args).await),
                            Ask::Gnu(program) => Some(ask_as_gnu(program, &args).await),
                        };
                        if let Some((action, all)) = answer {
                            job.resolve_conflict(action, all).await?;
                        }
                    }
                    continue;
                }
                if let (Some(bar), Some(signal)) = (&bar, Progress::from_message(message.clone())) {
                    if let Ok(args) = signal.args() {
                        bar.set_length(args.bytes_total);
                        bar.set_position(args.bytes_done);
                        let all_copied = args.bytes_done >= args.bytes_total
                            && args.files_done >= args.files_total;
                        // Everything copied but the job not ended: a
                        // durable job waits for the disk now.
                        let now = match all_copied {
                            true => style.last_phase.text().to_owned(),
                            false => current_name(&job).await,
                        };
                        bar.set_message(format!(
                            "{}/s {} files {}/{} {now}",
                            HumanBytes(args.rate),
                            eta_text(args.expected_end_time),
                            args.files_done,
                            args.files_total
                        ));
                        if all_copied {
                            // Drawn now, not at the next redraw the rate
                            // allows: a short wait would never be seen.
                            bar.force_draw();
                        }
                    }
                }
                completed |= Completed::from_message(message).is_some();
                completed
            }
            _ = look.tick() => true,
            _ = tokio::signal::ctrl_c(), if !interrupted => {
                interrupted = true;
                if style.note_interrupt {
                    eprintln!("copyctl: interrupted: cancelling the job");
                }
                job.cancel(HashMap::new()).await?;
                false
            }
        };
        if !ended {
            continue;
        }
        let summary = summary(connection, path).await?;
        if !summary.is_finished() {
            continue;
        }
        if style.on_files.is_some() && !completed && looks_since_end < LOOKS_FOR_COMPLETED {
            looks_since_end += 1;
            continue;
        }
        if let Some(bar) = bar {
            bar.set_length(summary.bytes_total);
            bar.set_position(summary.bytes_done);
            bar.set_message(format!("{} files {}", summary.files_done, summary.state));
            // A bar that ended short shows where it stopped.
            match summary.succeeded() {
                true => bar.finish(),
                false => bar.abandon(),
            }
        }
        return Ok((summary, interrupted));
    }
}
