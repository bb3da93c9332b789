//! The installed package under a real systemd: the project's .deb is
//! `dpkg -i`'d into a booted systemd (systemd-nspawn on an overlay of this
//! machine, see copyd_tests::systemd_box), and copyd runs there as it would
//! on a distribution: started by D-Bus activation through SystemdService=,
//! under the hardened unit, logging to journald, stopped and restarted by
//! the maintainer scripts.
//!
//! Each test boots its own box (about 10 s); the .deb is built once per run
//! from the binaries under test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use copyd_tests::bins;
use copyd_tests::cmd::run_timeout;
use copyd_tests::repo_root;
use copyd_tests::systemd_box::SystemdBox;

const USER: &str = "boxuser";

/// The packages of this build: (copyd_<v>_<arch>.deb, the same package as
/// a newer version), built once for all the tests of this file.
fn debs() -> &'static (PathBuf, PathBuf) {
    static DEBS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DEBS.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd-box-debs");
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        let profile = bins::copyd()
            .parent()
            .and_then(Path::file_name)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let out = run_timeout(
            Command::new("sh")
                .arg(repo_root().join("packaging/build-deb.sh"))
                .env("PROFILE", profile)
                .env("OUT_DIR", &out_dir),
            Duration::from_secs(600),
        );
        out.assert_success();
        let deb = PathBuf::from(out.stdout_str().lines().next().unwrap().trim());
        // The newer version: the same package with a higher Version, as a
        // rebuild with a new changelog entry would be (its maintainer
        // scripts are the ones under test, unchanged).
        let unpacked = out_dir.join("newer");
        run_timeout(
            Command::new("dpkg-deb").arg("-R").arg(&deb).arg(&unpacked),
            Duration::from_secs(120),
        )
        .assert_success();
        let control = unpacked.join("DEBIAN/control");
        let text = std::fs::read_to_string(&control).unwrap();
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap()
            .to_string();
        std::fs::write(
            &control,
            text.replace(
                &format!("Version: {version}\n"),
                &format!("Version: {version}+1\n"),
            ),
        )
        .unwrap();
        let newer = out_dir.join("copyd_newer.deb");
        run_timeout(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zgzip", "-z1", "-b"])
                .arg(&unpacked)
                .arg(&newer),
            Duration::from_secs(120),
        )
        .assert_success();
        (deb, newer)
    })
}

/// Boots a box with the .deb installed and a normal user; None where no box
/// can be booted (not root, no systemd-nspawn; a failure in CI).
fn box_with_copyd() -> Option<SystemdBox> {
    let (deb, _) = debs();
    let b = SystemdBox::boot()?;
    b.put(deb, "/root/copyd.deb");
    b.sh("dpkg -i /root/copyd.deb").assert_success();
    b.add_user(USER);
    Some(b)
}

fn active_state(b: &SystemdBox) -> String {
    b.sh("systemctl show -P ActiveState copyd.service")
        .stdout_str()
        .trim()
        .to_string()
}

fn main_pid(b: &SystemdBox) -> String {
    b.sh("systemctl show -P MainPID copyd.service")
        .stdout_str()
        .trim()
        .to_string()
}

/// `copyctl --json ARGS` in the box as root (user None) or a user: the JSON.
fn copyctl_json(b: &SystemdBox, user: Option<&str>, args: &str) -> serde_json::Value {
    let script = format!("copyctl --json {args}");
    let out = match user {
        Some(u) => b.sh_as(u, &script),
        None => b.sh(&script),
    };
    out.assert_success();
    out.json()
}

/// Copies `src` to `dst` through copyd and with the caller's own cp (to
/// `dst.cp`), as root or `user`; asserts both worked and gave the same bytes.
fn copy_like_cp(b: &SystemdBox, user: Option<&str>, src: &str, dst: &str) {
    let j = copyctl_json(b, user, &format!("copy {src} {dst}"));
    assert_eq!(j["state"], "completed", "copy {src} {dst}: {j}");
    let cp = format!("cp {src} {dst}.cp");
    let out = match user {
        Some(u) => b.sh_as(u, &cp),
        None => b.sh(&cp),
    };
    out.assert_success();
    b.sh(&format!("cmp {src} {dst} && cmp {src} {dst}.cp"))
        .assert_success();
}

#[test]
fn installed_copyd_is_activated_by_dbus_logs_to_the_journal_and_resumes_after_stop() {
    let Some(b) = box_with_copyd() else { return };

    // Installed, not started: the unit is disabled and D-Bus activated.
    assert_eq!(active_state(&b), "inactive");
    b.sh("systemctl is-enabled copyd.service || true")
        .stdout_str()
        .contains("disabled")
        .then_some(())
        .expect("the unit is not enabled by the package");

    // The first call activates it, through systemd.
    let list = b.sh("copyctl list");
    list.assert_success();
    assert_eq!(active_state(&b), "active");
    let bus_log = b
        .sh("journalctl -b --no-pager -u dbus.service")
        .stdout_str();
    assert!(
        bus_log.contains(
            "Activating via systemd: service name='org.example.Copyd1' unit='copyd.service'"
        ),
        "the bus did not start copyd through systemd:\n{bus_log}"
    );
    let exec = b
        .sh("systemctl show -P ExecStart copyd.service")
        .stdout_str();
    assert!(
        exec.contains("/usr/libexec/copyd/copyd ; argv[]=/usr/libexec/copyd/copyd --system"),
        "{exec}"
    );
    let status = b.sh("systemctl status --no-pager copyd.service");
    let text = status.stdout_str();
    assert!(
        text.contains("active (running)") && text.contains("(copyd)"),
        "{status}"
    );

    // Copies as root and as a normal user.
    b.sh("head -c 3000000 /dev/urandom > /root/a.bin")
        .assert_success();
    copy_like_cp(&b, None, "/root/a.bin", "/root/b.bin");
    b.sh_as(USER, "head -c 1000000 /dev/urandom > ~/u.bin")
        .assert_success();
    copy_like_cp(
        &b,
        Some(USER),
        &format!("/home/{USER}/u.bin"),
        &format!("/home/{USER}/v.bin"),
    );
    let owner = b.sh(&format!("stat -c %U /home/{USER}/v.bin"));
    assert_eq!(owner.stdout_str().trim(), USER, "{owner}");

    // The jobs are in the journal, as structured lines of copyd.service.
    let journal = b
        .sh("journalctl -b --no-pager -u copyd -o json")
        .stdout_str();
    let lines: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).expect("journalctl -o json line"))
        .collect();
    let job_lines = |message: &str| {
        lines
            .iter()
            .filter(|l| l["MESSAGE"] == message && l["JOB"].is_string())
            .count()
    };
    assert!(
        job_lines("job created") >= 2 && job_lines("job completed") >= 2,
        "{journal}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["JOB"].is_string())
            .all(|l| l["_SYSTEMD_UNIT"] == "copyd.service" && l["SYSLOG_IDENTIFIER"] == "copyd"),
        "{journal}"
    );

    // systemctl reload re-reads the configuration while copyd runs.
    let concurrency = || {
        b.sh("busctl --system get-property org.example.Copyd1 /org/example/Copyd1 org.example.Copyd1.Manager MaxConcurrentJobs")
            .stdout_str()
            .trim()
            .to_owned()
    };
    assert_ne!(concurrency(), "u 3");
    b.sh("sed -i '1i max_concurrent_jobs = 3' /etc/copyd/config.toml")
        .assert_success();
    b.sh("systemctl reload copyd.service").assert_success();
    b.wait_until(
        "journalctl -b --no-pager -u copyd -o cat | grep -q 'configuration reloaded'",
        Duration::from_secs(10),
    )
    .assert_success();
    assert_eq!(concurrency(), "u 3", "the reload did not take");
    assert_eq!(active_state(&b), "active", "a reload is not a restart");

    // systemctl stop interrupts a running job; the next activation resumes
    // it (auto_resume) and it completes with the right bytes.
    b.sh("head -c 48000000 /dev/urandom > /root/big.bin")
        .assert_success();
    let j = copyctl_json(
        &b,
        None,
        "copy --detach --rate-limit 8MB/s /root/big.bin /root/big.copy",
    );
    let id = j["id"].as_str().expect("job id").to_string();
    b.wait_until(
        &format!("copyctl --json status {id} | grep -q '\"state\": *\"running\"'"),
        Duration::from_secs(20),
    )
    .assert_success();
    std::thread::sleep(Duration::from_secs(2));
    b.sh("systemctl stop copyd.service").assert_success();
    assert_eq!(active_state(&b), "inactive");
    assert!(
        !b.host_path("/root/big.copy").exists(),
        "the copy was placed although it was interrupted"
    );
    // This call activates copyd again.
    let done = b.wait_until(
        &format!("copyctl --json status {id} | grep -q '\"state\": *\"completed\"'"),
        Duration::from_secs(60),
    );
    assert!(
        done.success(),
        "job {id} did not resume to completion: {}\n{}",
        b.sh(&format!("copyctl --json status {id}")),
        b.sh("journalctl -b --no-pager -u copyd | tail -n 40")
    );
    b.sh("cmp /root/big.bin /root/big.copy").assert_success();

    // The installed bash completion offers job ids from `copyctl list`.
    let completion = b.sh(
        "bash -c '. /usr/share/bash-completion/completions/copyctl; \
         COMP_WORDS=(copyctl status \"\"); COMP_CWORD=2; \
         _copyctl_with_ids copyctl \"\" status; printf \"%s\\n\" \"${COMPREPLY[@]}\"'",
    );
    completion.assert_success();
    assert!(
        completion.stdout_str().lines().any(|l| l == id),
        "copyctl status <TAB> does not offer job {id}: {completion}"
    );
    let resumed = b
        .sh("journalctl -b --no-pager -u copyd -o cat")
        .stdout_str();
    assert!(
        resumed.matches("probed engines").count() >= 2,
        "copyd was not started a second time:\n{resumed}"
    );

    // The live unit's exposure, as systemd computes it for the running unit.
    let security = b.sh("systemd-analyze security --no-pager copyd.service");
    let score: f64 = security
        .stdout_str()
        .lines()
        .find_map(|l| l.split("Overall exposure level for copyd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score: {security}"));
    eprintln!("live systemd-analyze security copyd.service: {score}");
    assert!(score <= 2.5, "{security}");

    // dpkg -r stops the running service and keeps config and state;
    // dpkg -P removes them.
    b.sh("copyctl list").assert_success();
    assert_eq!(active_state(&b), "active");
    b.sh("dpkg -r copyd").assert_success();
    assert_eq!(active_state(&b), "inactive");
    assert!(!b.host_path("/usr/libexec/copyd/copyd").exists());
    assert!(b.host_path("/etc/copyd/config.toml").exists());
    assert!(b.host_path("/var/lib/copyd").exists());
    b.sh("dpkg -P copyd").assert_success();
    assert!(
        !b.host_path("/etc/copyd").exists(),
        "dpkg -P left /etc/copyd"
    );
    assert!(
        !b.host_path("/var/lib/copyd").exists(),
        "dpkg -P left /var/lib/copyd"
    );
}

#[test]
fn installing_a_newer_version_restarts_a_running_copyd_and_starts_no_stopped_one() {
    let Some(b) = box_with_copyd() else { return };
    let (_, newer) = debs();
    b.put(newer, "/root/copyd-newer.deb");

    // Running: the upgrade restarts it (a new main process).
    b.sh("copyctl list").assert_success();
    let before = main_pid(&b);
    assert_ne!(before, "0");
    b.sh("dpkg -i /root/copyd-newer.deb").assert_success();
    assert_eq!(active_state(&b), "active");
    let after = main_pid(&b);
    assert!(
        after != "0" && after != before,
        "not restarted: {before} -> {after}"
    );

    // Not running: reinstalling starts nothing (D-Bus starts it when used).
    b.sh("systemctl stop copyd.service").assert_success();
    b.sh("dpkg -i /root/copyd-newer.deb").assert_success();
    assert_eq!(active_state(&b), "inactive");
}

#[test]
fn the_hardened_unit_lets_callers_copy_where_their_own_cp_could() {
    let Some(b) = box_with_copyd() else { return };
    b.sh("head -c 200000 /dev/urandom > /root/r.bin && cp /root/r.bin /tmp/r.bin && chmod 644 /tmp/r.bin")
        .assert_success();
    // copyd runs before the mounts below are made.
    b.sh("copyctl list").assert_success();
    assert_eq!(active_state(&b), "active");

    // Root, into the OS tree and the places admins keep things.
    b.sh("mkdir -p /opt/box /srv/box /var/box").assert_success();
    for dst in [
        "/usr/local/bin/r.bin",
        "/opt/box/r.bin",
        "/etc/r.bin",
        "/srv/box/r.bin",
        "/var/box/r.bin",
    ] {
        copy_like_cp(&b, None, "/root/r.bin", dst);
    }
    // Onto a file system mounted after copyd started.
    b.sh("mkdir -p /mnt/late && mount -t tmpfs -o size=16m tmpfs /mnt/late")
        .assert_success();
    copy_like_cp(&b, None, "/root/r.bin", "/mnt/late/r.bin");

    // A user, in their home, in /tmp, and onto a removable-media style
    // mount under /media/USER (owned by the user, mounted after start).
    let home = format!("/home/{USER}");
    b.sh_as(USER, "head -c 100000 /dev/urandom > ~/h.bin")
        .assert_success();
    copy_like_cp(
        &b,
        Some(USER),
        &format!("{home}/h.bin"),
        &format!("{home}/h2.bin"),
    );
    copy_like_cp(&b, Some(USER), &format!("{home}/h.bin"), "/tmp/h.bin");
    copy_like_cp(&b, Some(USER), "/tmp/r.bin", &format!("{home}/r.bin"));
    let uid = b
        .sh(&format!("id -u {USER}"))
        .stdout_str()
        .trim()
        .to_string();
    b.sh(&format!(
        "mkdir -p /media/{USER}/STICK && mount -t tmpfs -o size=16m,uid={uid},gid={uid},mode=0700 tmpfs /media/{USER}/STICK"
    ))
    .assert_success();
    copy_like_cp(
        &b,
        Some(USER),
        &format!("{home}/h.bin"),
        &format!("/media/{USER}/STICK/h.bin"),
    );

    // What the user's cp cannot do, copyd does not either, and says why.
    let out = b.sh_as(USER, "copyctl copy ~/h.bin /usr/local/bin/h.bin");
    out.assert_failure();
    assert!(out.stderr_str().contains("PermissionDenied"), "{out}");

    // A read-only file system is named as such.
    b.sh("mkdir -p /mnt/ro && mount -t tmpfs -o ro,size=1m tmpfs /mnt/ro")
        .assert_success();
    let out = b.sh("copyctl copy /root/r.bin /mnt/ro/r.bin");
    out.assert_failure();
    assert!(
        out.stderr_str().contains("ReadOnly") && !out.stderr_str().contains("PermissionDenied"),
        "{out}"
    );
}

/// polkit with a real logind session. The box has seat0 but no VTs, so a
/// console login cannot make a seated session; pam_systemd does make one
/// for a service with PAMName=login and XDG_SEAT=seat0 (XDG_VTNR unset: a
/// seat without VTs refuses a VT number). That session is local and active
/// (loginctl: Seat=seat0 Active=yes); a `runuser -l` session has no seat.
#[test]
fn polkit_sees_the_callers_active_local_session_through_copyd() {
    let Some(b) = box_with_copyd() else { return };
    // The script a session runs: its session, polkit's own verdict on the
    // privileged action for this process, then the same action through
    // copyd (a privileged copy of a root-only file).
    std::fs::write(
        b.host_path("/usr/local/bin/pk-probe"),
        "#!/bin/sh\n\
         loginctl show-session \"${XDG_SESSION_ID:-none}\" -p Seat -p Active 2>&1 | tr '\\n' ' '; echo\n\
         pkcheck --action-id org.example.copyd1.copy-privileged --process $$ 2>&1; echo \"pkcheck=$?\"\n\
         gdbus call --system --dest org.example.Copyd1 --object-path /org/example/Copyd1 \
           --method org.example.Copyd1.Manager.Copy \"[b'/etc/shadow']\" \"b'/tmp/shadow-$1'\" \
           \"{'privileged': <true>}\" 2>&1\n",
    )
    .unwrap();
    b.sh("chmod 755 /usr/local/bin/pk-probe").assert_success();
    let seated = || {
        b.sh(&format!(
            "systemd-run -q --uid={USER} -p PAMName=login -E XDG_SEAT=seat0 --wait --pipe /usr/local/bin/pk-probe seated"
        ))
    };
    let unseated = || b.sh_as(USER, "/usr/local/bin/pk-probe unseated");

    // The shipped defaults: allow_active is auth_admin_keep, the others
    // auth_admin. polkit tells them apart by the session (the _keep shows
    // as retains_authorization_after_challenge); without an agent both are
    // "authentication needed", which copyd reports as NotAuthorizedCanObtain.
    let out = seated();
    let text = out.stdout_str();
    assert!(text.contains("Seat=seat0 Active=yes"), "{out}");
    assert!(
        text.contains("retains_authorization_after_challenge=1"),
        "{out}"
    );
    assert!(
        text.contains("org.example.Copyd1.Error.NotAuthorizedCanObtain"),
        "{out}"
    );
    let out = unseated();
    let text = out.stdout_str();
    assert!(!text.contains("Seat=seat0"), "{out}");
    assert!(
        !text.contains("retains_authorization_after_challenge"),
        "{out}"
    );
    assert!(
        text.contains("org.example.Copyd1.Error.NotAuthorizedCanObtain"),
        "{out}"
    );

    // A site rule that lets active local sessions copy privileged: copyd's
    // query (subject: the caller's bus name) reaches polkit with the
    // caller's session, so only the seated caller's copy runs.
    std::fs::write(
        b.host_path("/etc/polkit-1/rules.d/40-copyd-box.rules"),
        "polkit.addRule(function(action, subject) {\n\
         if (action.id == \"org.example.copyd1.copy-privileged\" && subject.local && subject.active)\n\
         return polkit.Result.YES;\n});\n",
    )
    .unwrap();
    // polkitd rereads rules.d by itself (inotify); wait until it has.
    let out = b.wait_until(
        &format!(
            "systemd-run -q --uid={USER} -p PAMName=login -E XDG_SEAT=seat0 --wait --pipe /usr/local/bin/pk-probe seated | grep -q '/org/example/Copyd1/jobs/'"
        ),
        Duration::from_secs(30),
    );
    assert!(
        out.success(),
        "the seated caller's privileged copy did not start: {}",
        seated()
    );
    b.wait_until(
        "cmp /etc/shadow /tmp/shadow-seated",
        Duration::from_secs(20),
    )
    .assert_success();
    let out = unseated();
    assert!(
        out.stdout_str()
            .contains("org.example.Copyd1.Error.NotAuthorizedCanObtain"),
        "a caller outside an active local session got the privileged copy: {out}"
    );
    // (The box's /tmp is its own tmpfs: look from inside.)
    b.sh("test ! -e /tmp/shadow-unseated").assert_success();
}
