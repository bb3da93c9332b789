//! Shell completions: clap's scripts, with job ids completed from
//! `copyctl list` for the subcommands that take one (status, watch, cancel,
//! pause, resume, set-rate), which a static script cannot know.

use clap_complete::Shell;

const BASH_IDS: &str = include_str!("completions/ids.bash");
const ZSH_IDS: &str = include_str!("completions/ids.zsh");
const FISH_IDS: &str = include_str!("completions/ids.fish");

/// The completion script for `shell`.
pub fn script(shell: Shell, command: &mut clap::Command) -> Vec<u8> {
    let mut generated = Vec::new();
    clap_complete::generate(shell, command, "copyctl", &mut generated);
    let generated = String::from_utf8(generated).expect("clap writes UTF-8 scripts");
    match shell {
        Shell::Bash => format!("{generated}{BASH_IDS}"),
        // The helper comes first: the file runs _copyctl as it ends.
        Shell::Zsh => {
            let (first, rest) = generated.split_once('\n').unwrap_or((&generated, ""));
            let rest = rest
                .replace("':id:_default'", "':id:_copyctl_job_ids'")
                .replace("'::id:_default'", "'::id:_copyctl_job_ids'");
            format!("{first}\n{ZSH_IDS}{rest}")
        }
        Shell::Fish => format!("{generated}{FISH_IDS}"),
        _ => generated,
    }
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn text(shell: Shell) -> String {
        String::from_utf8(script(shell, &mut crate::Cli::command())).unwrap()
    }

    #[test]
    fn job_ids_complete_in_bash_zsh_and_fish() {
        assert!(text(Shell::Bash).contains("complete -F _copyctl_with_ids"));
        let zsh = text(Shell::Zsh);
        assert!(
            zsh.starts_with("#compdef copyctl\n# copyctl: job ids"),
            "{zsh}"
        );
        assert!(zsh.contains("\n_copyctl_job_ids() {"));
        // status (optional id) and the six that need one.
        assert_eq!(zsh.matches(":id:_copyctl_job_ids'").count(), 7, "{zsh}");
        assert!(!zsh.contains(":id:_default'"));
        let fish = text(Shell::Fish);
        assert!(fish.contains("-a '(__copyctl_job_ids)'"));
    }

    /// fish offers the ids `copyctl list` gives (a stand-in copyctl on PATH
    /// answers the list), where fish is installed.
    #[test]
    fn fish_completes_job_ids_from_the_list() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("copyctl");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho '[{\"id\": \"7\"}, {\"id\": \"12\"}]'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("copyctl.fish");
        std::fs::write(&script, text(Shell::Fish)).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source {}; complete -C 'copyctl status '",
                script.display()
            ))
            .env("PATH", path)
            .output();
        match out {
            Ok(out) => {
                let offered = String::from_utf8_lossy(&out.stdout);
                let ids: Vec<&str> = offered.lines().filter(|l| !l.contains('-')).collect();
                assert!(ids.contains(&"7") && ids.contains(&"12"), "{offered}");
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("fish is not installed: not checked")
            }
            Err(err) => panic!("fish: {err}"),
        }
    }

    /// Each script is valid for its shell, where the shell is installed.
    #[test]
    fn the_scripts_parse() {
        for (shell, program, check) in [
            (Shell::Bash, "bash", "-n"),
            (Shell::Zsh, "zsh", "-n"),
            (Shell::Fish, "fish", "--no-execute"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("script");
            std::fs::write(&file, text(shell)).unwrap();
            match std::process::Command::new(program)
                .arg(check)
                .arg(&file)
                .output()
            {
                Ok(out) => assert!(out.status.success(), "{program}: {out:?}"),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("{program} is not installed: not checked")
                }
                Err(err) => panic!("{program}: {err}"),
            }
        }
    }
}
