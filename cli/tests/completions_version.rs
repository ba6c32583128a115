//! `ringvault completions SHELL` prints a script for that shell naming the commands, and
//! `--version` prints the workspace version.
use std::process::Command;

fn ringvault(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringvault"))
        .args(args)
        .output()
        .expect("running ringvault");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_commands() {
    for (shell, marker) in [
        ("bash", "complete -F _ringvault"),
        ("zsh", "#compdef ringvault"),
        ("fish", "complete -c ringvault"),
    ] {
        let (ok, script) = ringvault(&["completions", shell]);
        assert!(ok, "{shell}");
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for cmd in ["backup", "restore", "completions", "health"] {
            assert!(script.contains(cmd), "{shell} script lacks {cmd}");
        }
    }
    let (ok, _) = ringvault(&["completions", "tcsh"]);
    assert!(!ok, "an unknown shell is refused");
}

#[test]
fn version_is_the_workspace_version() {
    let (ok, out) = ringvault(&["--version"]);
    assert!(ok);
    assert_eq!(
        out.trim(),
        format!("ringvault {}", env!("CARGO_PKG_VERSION"))
    );
}
