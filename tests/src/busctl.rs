//! Talking to copyd the way a shell script would: busctl, gdbus and
//! dbus-send, run as commands against the test bus.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{run, CmdOutput};
use crate::{BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH};

/// busctl's form of an `ay`: the count, then every byte as a number.
pub fn ay_args(bytes: &[u8]) -> Vec<String> {
    let mut v = vec![bytes.len().to_string()];
    v.extend(bytes.iter().map(|b| b.to_string()));
    v
}

/// busctl's form of an `aay`.
pub fn aay_args(items: &[&[u8]]) -> Vec<String> {
    let mut v = vec![items.len().to_string()];
    for i in items {
        v.extend(ay_args(i));
    }
    v
}

/// The bytes of a path.
pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// GVariant text of an `ay` as an explicit byte array: `@ay [0x2f, ...]`.
/// (No trailing NUL; any byte, also non-UTF-8 and NUL, survives.)
pub fn gvariant_ay(bytes: &[u8]) -> String {
    let items: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("@ay [{}]", items.join(", "))
}

/// GVariant text of a bytestring `b'...'` (GLib adds a trailing NUL, which
/// copyd accepts and drops). Only for printable ASCII paths without quotes.
pub fn gvariant_bytestring(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 path");
    assert!(
        s.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !s.contains(['\'', '\\']),
        "gvariant_bytestring: use gvariant_ay for {s:?}"
    );
    format!("b'{s}'")
}

/// busctl bound to one bus address.
pub struct Busctl<'a> {
    address: &'a str,
}

impl<'a> Busctl<'a> {
    pub fn new(address: &'a str) -> Self {
        Busctl { address }
    }

    fn base(&self, json: bool) -> Command {
        let mut c = Command::new("busctl");
        c.arg(format!("--address={}", self.address));
        if json {
            c.arg("--json=short");
        }
        c
    }

    /// `busctl call org.example.Copyd1 PATH IFACE METHOD [SIG ARGS...]`.
    pub fn call(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        sig: &str,
        args: &[String],
    ) -> CmdOutput {
        let mut c = self.base(false);
        c.args(["call", BUS_NAME, path, iface, method]);
        if !sig.is_empty() {
            c.arg(sig).args(args);
        }
        run(&mut c)
    }

    /// Like [`Busctl::call`] but asks for JSON output and parses it:
    /// `{"type": SIG, "data": [values...]}`. Panics if the call fails.
    #[track_caller]
    pub fn call_json(
        &self,
        path: &str,
        iface: &str,
        method: &str,
        sig: &str,
        args: &[String],
    ) -> Value {
        let mut c = self.base(true);
        c.args(["call", BUS_NAME, path, iface, method]);
        if !sig.is_empty() {
            c.arg(sig).args(args);
        }
        let out = run(&mut c);
        out.assert_success();
        out.json()
    }

    /// Introspection XML of an object.
    #[track_caller]
    pub fn introspect(&self, path: &str) -> String {
        let v = self.call_json(
            path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            "",
            &[],
        );
        v["data"][0]
            .as_str()
            .expect("Introspect returns a string")
            .to_string()
    }

    /// A property's value, as busctl's JSON renders it (`data`).
    pub fn get_property(&self, path: &str, iface: &str, prop: &str) -> Result<Value, CmdOutput> {
        let mut c = self.base(true);
        c.args(["get-property", BUS_NAME, path, iface, prop]);
        let out = run(&mut c);
        if !out.success() {
            return Err(out);
        }
        Ok(out.json()["data"].clone())
    }

    #[track_caller]
    pub fn job_prop(&self, job: &str, prop: &str) -> Value {
        self.get_property(job, JOB_IFACE, prop)
            .unwrap_or_else(|out| panic!("cannot read {prop} of {job}:\n{out}"))
    }

    #[track_caller]
    pub fn job_state(&self, job: &str) -> String {
        self.job_prop(job, "State")
            .as_str()
            .expect("State is a string")
            .to_string()
    }

    #[track_caller]
    pub fn job_u64(&self, job: &str, prop: &str) -> u64 {
        self.job_prop(job, prop)
            .as_u64()
            .unwrap_or_else(|| panic!("{prop} is not a number"))
    }

    /// Polls State until it is completed, failed or cancelled.
    #[track_caller]
    pub fn wait_job_end(&self, job: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.job_state(job);
            if matches!(s.as_str(), "completed" | "failed" | "cancelled") {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "job {job} still {s:?} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls State until `pred` holds; returns it.
    #[track_caller]
    pub fn wait_job_state(
        &self,
        job: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let start = Instant::now();
        loop {
            let s = self.job_state(job);
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "job {job} still {s:?} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Manager.Copy/Move with the given options (busctl `a{sv}` arguments:
    /// count, then key, type, value...). Returns the raw output.
    pub fn start(&self, method: &str, sources: &[&[u8]], dest: &[u8], opts: &[&str]) -> CmdOutput {
        let mut args = aay_args(sources);
        args.extend(ay_args(dest));
        args.extend(dict_args(opts));
        self.call(MANAGER_PATH, MANAGER_IFACE, method, "aayaya{sv}", &args)
    }

    /// Manager.Copy that must succeed; returns the job path.
    #[track_caller]
    pub fn copy(&self, sources: &[&Path], dest: &Path, opts: &[&str]) -> String {
        let srcs: Vec<&[u8]> = sources.iter().map(|p| path_bytes(p)).collect();
        let out = self.start("Copy", &srcs, path_bytes(dest), opts);
        out.assert_success();
        parse_busctl_object_path(&out.stdout_str())
    }

    /// Job.Cancel with no options.
    pub fn cancel(&self, job: &str) -> CmdOutput {
        self.call(job, JOB_IFACE, "Cancel", "a{sv}", &["0".to_string()])
    }

    pub fn resume(&self, job: &str) -> CmdOutput {
        self.call(job, JOB_IFACE, "Resume", "a{sv}", &["0".to_string()])
    }

    pub fn pause(&self, job: &str) -> CmdOutput {
        self.call(job, JOB_IFACE, "Pause", "a{sv}", &["0".to_string()])
    }
}

/// busctl `a{sv}` arguments from a flat list: ["recursive", "b", "true", ...]
/// (key, type, value triples; a value of type `as` takes its own count).
pub fn dict_args(flat: &[&str]) -> Vec<String> {
    // Count entries: each starts with key, type; the value is one token,
    // except for arrays, which take the count and that many tokens.
    let mut entries = 0;
    let mut i = 0;
    while i < flat.len() {
        let ty = flat[i + 1];
        if ty.starts_with('a') {
            let n: usize = flat[i + 2].parse().expect("array count");
            i += 3 + n;
        } else {
            i += 3;
        }
        entries += 1;
    }
    let mut v = vec![entries.to_string()];
    v.extend(flat.iter().map(|s| s.to_string()));
    v
}

/// busctl prints `o "/org/example/Copyd1/jobs/ID"`.
#[track_caller]
pub fn parse_busctl_object_path(stdout: &str) -> String {
    let s = stdout.trim();
    let p = s
        .strip_prefix("o ")
        .map(|r| r.trim_matches('"'))
        .unwrap_or_else(|| panic!("not an object path reply: {s:?}"));
    assert!(
        p.starts_with(crate::JOBS_PATH_PREFIX),
        "job path {p:?} is not under {}",
        crate::JOBS_PATH_PREFIX
    );
    p.to_string()
}

/// `gdbus call --address ADDR --dest org.example.Copyd1 --object-path PATH
/// --method IFACE.METHOD ARGS...` (GVariant text arguments).
pub fn gdbus_call(address: &str, path: &str, method: &str, args: &[String]) -> CmdOutput {
    let mut c = Command::new("gdbus");
    c.args([
        "call",
        "--address",
        address,
        "--dest",
        BUS_NAME,
        "--object-path",
        path,
        "--method",
        method,
    ]);
    c.args(args);
    run(&mut c)
}

/// The D-Bus error name in gdbus's error output
/// (`Error: GDBus.Error:org.example.Copyd1.Error.X: message`).
pub fn gdbus_error_name(out: &CmdOutput) -> Option<String> {
    let err = out.stderr_str();
    let i = err.find("GDBus.Error:")?;
    let rest = &err[i + "GDBus.Error:".len()..];
    let end = rest.find(':').unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// gdbus prints `(objectpath '/org/example/Copyd1/jobs/ID',)`.
#[track_caller]
pub fn parse_gdbus_object_path(stdout: &str) -> String {
    let s = stdout.trim();
    let i = s
        .find('\'')
        .unwrap_or_else(|| panic!("not an object path reply: {s:?}"));
    let j = s[i + 1..].find('\'').unwrap() + i + 1;
    let p = &s[i + 1..j];
    assert!(
        p.starts_with(crate::JOBS_PATH_PREFIX),
        "job path {p:?} is not under {}",
        crate::JOBS_PATH_PREFIX
    );
    p.to_string()
}
