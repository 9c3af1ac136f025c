//! `unitlet man` and `unitlet completions`: generated from the command line
//! definition, checked against it. Pure: no systemd, runs the binary.

use std::process::{Command, Output};

use clap::CommandFactory;

const UNITLET: &str = env!("CARGO_BIN_EXE_unitlet");

fn unitlet(args: &[&str]) -> Output {
    Command::new(UNITLET).args(args).output().unwrap()
}

fn stdout_ok(args: &[&str]) -> String {
    let o = unitlet(args);
    assert!(
        o.status.success(),
        "unitlet {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

/// Every command of the binary, from its clap definition.
fn commands() -> Vec<String> {
    let cmd = unitlet::cli::Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(names.len() > 10, "the definition lists the commands");
    names
}

#[test]
fn man_page_has_a_section_for_every_command() {
    let page = stdout_ok(&["man"]);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "roff");
    assert!(page.contains(".TH unitlet 1"), "a section 1 page: {page}");
    for name in commands() {
        let heading = format!(".SH \"UNITLET {}\"", name.to_uppercase());
        assert!(page.contains(&heading), "no {heading} in the page");
        assert!(
            page.contains(&format!("\\fBunitlet {name}\\fR")),
            "`unitlet {name}` is not in the COMMANDS list"
        );
    }
    // Flags of commands and the global environment variables are there.
    for s in [
        "\\-\\-dry\\-run",
        "\\-\\-gc\\-grace",
        "UNITLET_MANIFESTS",
        "UNITLET_GC_GRACE",
    ] {
        assert!(page.contains(s), "{s} missing from the page");
    }
    // No separate unitlet-run(1) pages are installed, so none is named.
    assert!(!page.contains("unitlet\\-run(1)"), "names a missing page");
}

/// What man(1) shows, when groff is there (it is wherever man-db is).
#[test]
fn man_page_formats_without_warnings_and_lists_every_command() {
    let page = stdout_ok(&["man"]);
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &page).unwrap();
    let o = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-c"])
        .arg(path.path())
        .output()
        .expect("groff is installed (package groff-base)");
    assert!(o.status.success());
    let warnings = String::from_utf8_lossy(&o.stderr);
    assert!(warnings.is_empty(), "groff warns: {warnings}");
    // groff marks bold by overstriking; -P-c keeps that, so strip it.
    let text = String::from_utf8_lossy(&o.stdout);
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    for name in commands() {
        assert!(
            plain.contains(&format!("unitlet {name}")),
            "`unitlet {name}` is not on the formatted page"
        );
    }
}

#[test]
fn bash_completion_registers_unitlet_and_completes_commands() {
    let script = stdout_ok(&["completions", "bash"]);
    assert!(script.contains("complete -F _unitlet"), "{script}");
    // Loaded into a real bash, it registers and completes.
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "set -e; source <(\"$0\" completions bash); complete -p unitlet; \
             COMP_WORDS=(unitlet res); COMP_CWORD=1; COMP_LINE='unitlet res'; COMP_POINT=11; \
             _unitlet unitlet res unitlet; printf '%s\\n' \"${COMPREPLY[@]}\"",
        )
        .arg(UNITLET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bash: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("-F _unitlet unitlet"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "restore"),
        "`unitlet res<TAB>` offers restore: {stdout}"
    );
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let zsh = stdout_ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef unitlet"), "{zsh}");
    let fish = stdout_ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c unitlet"), "{fish}");
    for name in commands() {
        assert!(zsh.contains(&format!("'{name}:")), "zsh lacks {name}");
        assert!(
            fish.contains(&format!("-a \"{name}\"")),
            "fish lacks {name}"
        );
    }
}

#[test]
fn completions_for_an_unknown_shell_exit_2_naming_the_choices() {
    let o = unitlet(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bash, zsh, fish"), "{err}");
    assert!(o.stdout.is_empty());
}
