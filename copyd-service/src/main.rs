//! `copyd`: the copy service daemon.

// unsafe code lives only in the engine's io_uring module.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;
use copyd_service::{Config, Endpoint};

/// copyd: copies and moves files for its D-Bus clients.
#[derive(Debug, Parser)]
// The binary and its man page are `copyd`, not the package name `copyd-service`.
#[command(name = "copyd", version, about)]
struct Args {
    /// Serve on the system bus (the default).
    #[arg(long, conflicts_with_all = ["session", "address", "peer_stdin"])]
    system: bool,
    /// Serve on the session bus.
    #[arg(long, conflicts_with_all = ["address", "peer_stdin"])]
    session: bool,
    /// Serve on the bus at this D-Bus address.
    #[arg(long, conflicts_with = "peer_stdin")]
    address: Option<String>,
    /// Serve one client over the socket on standard input (peer-to-peer
    /// D-Bus), and exit when it goes away: how copyctl starts a private copyd.
    #[arg(long)]
    peer_stdin: bool,
    /// Configuration file (default /etc/copyd/config.toml, if present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (overrides state_dir in the configuration).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Read and check the configuration, print what is wrong (file:line:
    /// key) or "ok", and exit without starting.
    #[arg(long)]
    check_config: bool,
    /// Print the manual page (roff) and exit.
    #[arg(long, hide = true)]
    print_man: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.print_man {
        use clap::CommandFactory;
        let man = clap_mangen::Man::new(Args::command()).section("8");
        return match man.render(&mut std::io::stdout()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("copyd: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("copyd: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.check_config {
        println!(
            "{}: ok",
            args.config
                .as_deref()
                .unwrap_or(std::path::Path::new(copyd_service::config::SYSTEM_CONFIG))
                .display()
        );
        return std::process::ExitCode::SUCCESS;
    }
    copyd_service::init_logging(&config.monitoring.log_level);
    if args.state_dir.is_some() {
        config.state_dir = args.state_dir;
        config.state_dir_from_command_line = true;
    }
    let endpoint = if args.session {
        Endpoint::Session
    } else if let Some(address) = args.address {
        Endpoint::Address(address)
    } else if args.peer_stdin {
        match copyd_service::peer_socket_from_stdin() {
            Ok(stream) => Endpoint::Peer(stream),
            Err(err) => {
                eprintln!("copyd: --peer-stdin: {err}");
                return std::process::ExitCode::from(2);
            }
        }
    } else {
        Endpoint::System
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(copyd_service::serve(endpoint, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("copyd: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
