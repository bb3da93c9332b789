//! Handing the fronts' work to copyd: as few Copy or Move jobs as the
//! command line allows (every source bound for the same directory under
//! its own name goes in one job: `cp f1 … f500 dir/` is one request), each
//! followed to its end, its failures told in cp's words.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use zbus::Variant;

use super::{verbose, Front};
use crate::connect::{self, Service};
use crate::watch::{self, Ask, WaitStyle};

/// One source bound for one target, with the names the user wrote.
#[derive(Debug, Clone)]
pub struct Item {
    /// Absolute, as copyd gets it (a followed symlink: what it points to).
    pub source: PathBuf,
    /// Absolute final path.
    pub target: PathBuf,
    /// As the user wrote them, for messages and -v.
    pub shown_source: PathBuf,
    pub shown_target: PathBuf,
    /// The target's directory exists and the target is named as the
    /// source is: the item can share a job with its neighbours.
    pub joins_directory: bool,
    /// What -v adds after the line (" (backup: 'x~')").
    pub note: String,
    /// What a new target's modes need after the job: copyd does not know
    /// our umask.
    pub modes: Modes,
}

/// Modes a new target gets after its job, as cp gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modes {
    /// As copyd set them (kept: -p, -a, --preserve=mode; or mv).
    AsCopied,
    /// cp's plain copy: the source's modes less the umask.
    LessUmask,
    /// --no-preserve=mode: 0666, directories 0777, less the umask.
    Default,
}

/// One Copy or Move request.
struct Batch {
    sources: Vec<PathBuf>,
    /// A directory the sources go into, or the one target.
    destination: PathBuf,
    on_conflict: String,
    items: Vec<Item>,
}

/// What every job of a run asks for besides its paths.
pub struct Request {
    pub operation: &'static str,
    pub options: HashMap<&'static str, Variant<'static>>,
    pub address: Option<String>,
    pub show_progress: bool,
    /// -v: print each file as copyd places it, as cp (`'src' -> 'dst'`)
    /// or mv does.
    pub verbose: Option<verbose::Style>,
}

/// Items in the order given, grouped where they can share a job. Each
/// item comes with its own conflict policy (a -i answer, -n, -u).
fn batches(items: Vec<(Item, String)>) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    for (item, on_conflict) in items {
        if item.joins_directory {
            let dir = item.target.parent().map(PathBuf::from).unwrap_or_default();
            // Only the latest batch: keeps the order the user gave.
            if let Some(last) = batches.last_mut() {
                if last.destination == dir
                    && last.on_conflict == on_conflict
                    && last.items.iter().all(|i| i.joins_directory)
                {
                    last.sources.push(item.source.clone());
                    last.items.push(item);
                    continue;
                }
            }
            batches.push(Batch {
                sources: vec![item.source.clone()],
                destination: dir,
                on_conflict,
                items: vec![item],
            });
        } else {
            batches.push(Batch {
                sources: vec![item.source.clone()],
                destination: item.target.clone(),
                on_conflict,
                items: vec![item],
            });
        }
    }
    batches
}

/// Puts a message from copyd in the user's terms: the absolute paths copyd
/// was given become the names the user wrote, Rust's "(os error N)" goes.
fn in_users_terms(message: &str, items: &[Item]) -> String {
    let mut text = super::strip_os_error(message);
    for item in items {
        for (absolute, shown) in [
            (&item.source, &item.shown_source),
            (&item.target, &item.shown_target),
        ] {
            let (absolute, shown) = (absolute.to_string_lossy(), shown.to_string_lossy());
            if absolute != shown && !absolute.is_empty() {
                text = text.replace(absolute.as_ref(), shown.as_ref());
            }
        }
    }
    text
}

/// Runs `items` as jobs of `request`, one after another; stops at Ctrl-C.
pub async fn run(front: &mut Front, request: &Request, items: Vec<(Item, String)>) {
    if items.is_empty() {
        return;
    }
    let service = match connect::find_saying(request.address.as_deref(), false).await {
        Ok(service) => service,
        Err(message) => return front.error(message),
    };
    // Ctrl-C at any time of the run, also between jobs or while one is
    // being asked for (when no wait is listening): no job starts after it,
    // and a job made after it is cancelled at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    let listener = {
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
            }
        })
    };
    // Lets the listener register before the first job is asked for.
    tokio::task::yield_now().await;
    for batch in batches(items) {
        if interrupted.load(Ordering::SeqCst) {
            front.interrupted = true;
            break;
        }
        run_batch(front, &service, request, &batch, &interrupted).await;
        if front.interrupted {
            break;
        }
    }
    listener.abort();
}

async fn run_batch(
    front: &mut Front,
    service: &Service,
    request: &Request,
    batch: &Batch,
    interrupted: &AtomicBool,
) {
    let fail = |front: &mut Front, err: zbus::Error| match err {
        zbus::Error::MethodError(name, message, _) => front.daemon_error(
            &in_users_terms(&message.unwrap_or_default(), &batch.items),
            name.as_str(),
        ),
        other => front.error(other.to_string()),
    };
    let manager = match service.manager().await {
        Ok(manager) => manager,
        Err(message) => return front.error(message),
    };
    let sources: Vec<&[u8]> = batch
        .sources
        .iter()
        .map(|s| s.as_os_str().as_bytes())
        .collect();
    let destination = batch.destination.as_os_str().as_bytes();
    let mut options = request.options.clone();
    options.insert("on-conflict", Variant::from(batch.on_conflict.clone()));
    // -v's lines come from copyd as it places each file (to us alone).
    let verbose = request.verbose.filter(|_| !front.json);
    if verbose.is_some() {
        options.insert("report-files", Variant::from(true));
    }
    let signals = match watch::JobSignals::subscribe(&service.connection).await {
        Ok(signals) => signals,
        Err(err) => return fail(front, err),
    };
    let called = match request.operation {
        "move" => manager.move_(&sources, destination, options).await,
        _ => manager.copy(&sources, destination, options).await,
    };
    let path = match called {
        Ok(path) => path,
        Err(err) => return fail(front, err),
    };
    if interrupted.load(Ordering::SeqCst) {
        let cancelled = async {
            crate::proxy::JobProxy::builder(&service.connection)
                .path(path.clone())
                .build()
                .await?
                .cancel(HashMap::new())
                .await
        };
        if let Err(err) = cancelled.await {
            fail(front, err);
        }
        front.interrupted = true;
        return;
    }
    let print_files = |files| {
        if let Some(style) = verbose {
            verbose::print(style, &batch.items, files)
        }
    };
    let style = WaitStyle {
        show_progress: request.show_progress && !front.json,
        ask: match batch.on_conflict.as_str() {
            "ask" => Ask::Gnu(front.program.clone()),
            _ => Ask::No,
        },
        note_interrupt: false,
        // Moves always sync; a cp front's copy only with --sync.
        last_phase: match request.options.get("sync") {
            Some(Variant::Bool(false)) => watch::LastPhase::Placing,
            _ => watch::LastPhase::Syncing,
        },
        on_files: match verbose {
            Some(_) => Some(&print_files),
            None => None,
        },
    };
    let waited = watch::wait_with(
        &service.connection,
        signals,
        watch::Subscribed::BeforeTheJobWasMade,
        path.as_str(),
        &style,
    )
    .await;
    let (summary, interrupted) = match waited {
        Ok(waited) => waited,
        Err(err) => return fail(front, err),
    };
    if interrupted && summary.state == "cancelled" {
        front.interrupted = true;
        return;
    }
    if front.json {
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            format!("{}\n", serde_json::to_string(&summary).expect("serializes")).as_bytes(),
        );
    }
    if !summary.failed_files.is_empty() {
        for (path, why) in &summary.failed_files {
            let why = in_users_terms(why, &batch.items);
            match why.starts_with("cannot ") {
                true => front.error(why),
                false => front.error(format!(
                    "cannot copy {}: {why}",
                    super::quote(in_users_terms(path, &batch.items))
                )),
            }
        }
    } else if !summary.succeeded() {
        return front.daemon_error(
            &in_users_terms(&summary.error_message, &batch.items),
            &summary.error_name,
        );
    }
    let umask = super::local::umask();
    for item in &batch.items {
        match item.modes {
            Modes::AsCopied => {}
            Modes::LessUmask if umask == 0 => {}
            modes => super::local::apply_modes(&item.target, modes == Modes::Default, umask),
        }
    }
}
