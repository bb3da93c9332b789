//! A private system-type dbus-daemon for one test.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Which default policy the bus gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Everything allowed (plus copyd's policy file and an explicit rule
    /// that anyone may talk to copyd).
    Permissive,
    /// Default deny like Debian's system.conf: only copyd's own policy file
    /// (dbus/org.example.Copyd1.conf) lets clients call copyd.
    Strict,
}

/// Everyone may do everything: the default of the tests (and of
/// benches/bench.sh, which reads the same file).
const PERMISSIVE: &str = include_str!("../data/permissive-policy.xml");

const STRICT: &str = r#"  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus"
          send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>"#;

/// dbus/org.example.Copyd1.conf of this repository.
pub fn copyd_policy_file() -> PathBuf {
    crate::repo_root().join("dbus/org.example.Copyd1.conf")
}

fn current_user_name() -> Option<String> {
    let uid = rustix::process::getuid().as_raw();
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// Renders tests/data/system-bus.conf.in.
pub fn render_config(template: &str, socket: &Path, servicedir: &Path, policy: Policy) -> String {
    let copyd_conf = copyd_policy_file();
    let include = if copyd_conf.exists() {
        format!(
            "  <include ignore_missing=\"no\">{}</include>",
            xml_escape(&copyd_conf.to_string_lossy())
        )
    } else {
        "  <!-- dbus/org.example.Copyd1.conf does not exist yet -->".to_string()
    };
    let mut owners = vec!["root".to_string()];
    if let Some(me) = current_user_name() {
        if me != "root" {
            owners.push(me);
        }
    }
    let mut copyd_policy = String::new();
    for u in owners {
        copyd_policy.push_str(&format!(
            "  <policy user=\"{}\">\n    <allow own=\"org.example.Copyd1\"/>\n  </policy>\n",
            xml_escape(&u)
        ));
    }
    if policy == Policy::Permissive {
        copyd_policy.push_str(
            "  <policy context=\"default\">\n    <allow send_destination=\"org.example.Copyd1\"/>\n  </policy>\n",
        );
    }
    template
        .replace("@SOCKET@", &xml_escape(&socket.to_string_lossy()))
        .replace("@SERVICEDIR@", &xml_escape(&servicedir.to_string_lossy()))
        .replace(
            "@POLICY@",
            if policy == Policy::Strict {
                STRICT
            } else {
                PERMISSIVE
            },
        )
        .replace("@INCLUDE_COPYD_POLICY@", &include)
        .replace("@COPYD_POLICY@", &copyd_policy)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A running dbus-daemon; killed (and reaped) on drop.
pub struct TestBus {
    child: Option<Child>,
    address: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl TestBus {
    pub fn start(policy: Policy) -> TestBus {
        let dir = crate::scratch_dir("bus");
        let socket = dir.path().join("bus");
        let servicedir = dir.path().join("services");
        fs::create_dir(&servicedir).unwrap();
        let template_path = crate::repo_root().join("tests/data/system-bus.conf.in");
        let template = fs::read_to_string(&template_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", template_path.display()));
        let config = dir.path().join("system-bus.conf");
        fs::write(
            &config,
            render_config(&template, &socket, &servicedir, policy),
        )
        .unwrap();
        let log = dir.path().join("dbus-daemon.log");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--print-address")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start dbus-daemon (is package dbus-daemon/dbus installed?)");

        // Read the address on a thread, so a bus that never prints it
        // cannot hang the test.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut r = BufReader::new(stdout);
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep the pipe open (and drained) while the bus lives.
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut r, &mut sink);
        });
        let mut bus = TestBus {
            child: Some(child),
            address: String::new(),
            log,
            dir,
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if !line.trim().is_empty() => bus.address = line.trim().to_string(),
            _ => panic!(
                "dbus-daemon did not print its address; config {}:\n{}\nlog:\n{}",
                config.display(),
                fs::read_to_string(&config).unwrap_or_default(),
                bus.log_text()
            ),
        }
        bus
    }

    /// The bus address as dbus-daemon printed it (unix:path=...,guid=...).
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            if !log.trim().is_empty() {
                eprintln!("===== dbus-daemon log ({}) =====\n{log}", self.address);
            }
        }
    }
}
