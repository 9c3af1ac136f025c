//! `unitlet man` and `unitlet completions`: generated from the command line
//! definition, checked against it. Pure: no systemd, runs the binary.

// Test and benchmark code: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "SEE ALSO"] {
        assert!(
            page.contains(&format!("\n.SH \"{section}\"\n"))
                || page.contains(&format!("\n.SH {section}\n")),
            "no {section} section"
        );
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

/// Runs deploy/install.sh --no-start (which touches no systemd) into a
/// private HOME, with `extra` environment.
fn install_into(home: &std::path::Path, extra: &[(&str, &std::path::Path)]) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("deploy/install.sh"))
        .arg("--no-start")
        .env("HOME", home)
        .env("UNITLET_BIN", UNITLET)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_CONFIG_HOME");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "install.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn install_sh_puts_man_page_completions_and_docs_in_the_xdg_places() {
    let home = tempfile::tempdir().unwrap();
    install_into(home.path(), &[]);
    let h = home.path();
    let man = std::fs::read_to_string(h.join(".local/share/man/man1/unitlet.1")).unwrap();
    assert_eq!(
        man,
        stdout_ok(&["man"]),
        "the installed page is `unitlet man`"
    );
    for (path, shell) in [
        (".local/share/bash-completion/completions/unitlet", "bash"),
        (".local/share/zsh/site-functions/_unitlet", "zsh"),
        (".config/fish/completions/unitlet.fish", "fish"),
    ] {
        let got = std::fs::read_to_string(h.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(got, stdout_ok(&["completions", shell]), "{path}");
    }
    for doc in ["README.md", "docs/commands.md", "docs/manifests.md"] {
        let p = h.join(".local/share/doc/unitlet").join(doc);
        assert!(p.is_file(), "{} is installed", p.display());
    }
    // The service names what was installed; %h is the same HOME.
    let unit = std::fs::read_to_string(h.join(".config/systemd/user/unitlet.service")).unwrap();
    assert!(unit.contains("Documentation=man:unitlet(1)\n"), "{unit}");
    for line in unit
        .lines()
        .filter(|l| l.starts_with("Documentation=file://"))
    {
        let path = line
            .strip_prefix("Documentation=file://%h/")
            .unwrap_or_else(|| panic!("{line} is not under %h"));
        assert!(h.join(path).is_file(), "{line} names no installed file");
    }
}

#[test]
fn install_sh_follows_xdg_data_home_and_xdg_config_home() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let config = home.path().join("conf");
    install_into(
        home.path(),
        &[("XDG_DATA_HOME", &data), ("XDG_CONFIG_HOME", &config)],
    );
    assert!(data.join("man/man1/unitlet.1").is_file());
    assert!(data.join("bash-completion/completions/unitlet").is_file());
    assert!(data.join("zsh/site-functions/_unitlet").is_file());
    assert!(config.join("fish/completions/unitlet.fish").is_file());
    let unit = std::fs::read_to_string(config.join("systemd/user/unitlet.service")).unwrap();
    let want = format!(
        "Documentation=file://{}/doc/unitlet/docs/commands.md\n",
        data.display()
    );
    assert!(unit.contains(&want), "{unit}");
    assert!(data.join("doc/unitlet/docs/commands.md").is_file());
}

/// Runs `shell` with `args`; the shell must be installed (scripts/test.sh
/// installs zsh and fish).
fn run_shell(shell: &str, args: &[&str]) -> String {
    let o = Command::new(shell)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{shell} is not installed (scripts/test.sh installs it): {e}"));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{shell} {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn zsh_loads_the_completion_from_fpath() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("_unitlet");
    std::fs::write(&file, stdout_ok(&["completions", "zsh"])).unwrap();
    run_shell("zsh", &["-n", file.to_str().unwrap()]);
    // What a user's .zshrc does: the directory on fpath, then compinit.
    let script = format!(
        "fpath=({} $fpath); autoload -Uz compinit; compinit -u -D; print -r -- ${{_comps[unitlet]}}",
        dir.path().display()
    );
    let got = run_shell("zsh", &["-f", "-c", &script]);
    assert_eq!(got.trim(), "_unitlet", "compinit registers _unitlet");
}

#[test]
fn fish_completes_commands_and_shell_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unitlet.fish");
    std::fs::write(&file, stdout_ok(&["completions", "fish"])).unwrap();
    let f = file.to_str().unwrap();
    run_shell("fish", &["-n", f]);
    let got = run_shell(
        "fish",
        &["-c", &format!("source {f}; complete -C 'unitlet res'")],
    );
    assert!(got.lines().any(|l| l.starts_with("restore\t")), "{got}");
    let got = run_shell(
        "fish",
        &[
            "-c",
            &format!("source {f}; complete -C 'unitlet completions '"),
        ],
    );
    let mut shells: Vec<&str> = got.lines().collect();
    shells.sort();
    assert_eq!(shells, ["bash", "fish", "zsh"], "{got}");
}

/// The hand-written ENVIRONMENT section of the page names only variables
/// the reference documents (docs/commands.md is the source of truth).
#[test]
fn man_page_environment_matches_docs() {
    let page = stdout_ok(&["man"]);
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/commands.md"),
    )
    .unwrap();
    let env = page
        .split("\n.SH ENVIRONMENT\n")
        .nth(1)
        .and_then(|s| s.split("\n.SH ").next())
        .expect("an ENVIRONMENT section");
    let mut names = 0;
    for part in env.split("\\fB").skip(1) {
        let name = part.split("\\fR").next().unwrap();
        if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            names += 1;
            assert!(
                docs.contains(&format!("`{name}`")),
                "{name} is not in docs/commands.md"
            );
        }
    }
    assert!(names >= 5, "the section names the variables");
}

/// Every command path (`["fleet", "push"]`, …), nested ones included.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_string());
            out.push(p.clone());
            walk(sub, &p, out);
        }
    }
    let mut out = vec![vec![]];
    walk(&unitlet::cli::Cli::command(), &[], &mut out);
    out
}

/// A reference meant for unitlet's developers: "issue 12", "Issue #21",
/// "new in 0.2".
fn internal_reference(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    for (i, _) in lower.match_indices("issue") {
        let rest = lower[i + "issue".len()..].trim_start_matches([' ', '#', '-']);
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(text[i..(i + 20).min(text.len())].to_string());
        }
    }
    lower
        .find("new in ")
        .map(|i| text[i..(i + 20).min(text.len())].to_string())
}

#[test]
fn no_help_text_or_man_page_mentions_internal_issue_numbers() {
    let mut outputs = vec![("unitlet man".to_string(), stdout_ok(&["man"]))];
    for path in command_paths() {
        for flag in ["--help", "-h"] {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push(flag);
            outputs.push((format!("unitlet {}", args.join(" ")), stdout_ok(&args)));
        }
    }
    assert!(outputs.len() > 30, "every command's help was read");
    for (what, text) in outputs {
        if let Some(r) = internal_reference(&text) {
            panic!("`{what}` shows a developer's reference {r:?}:\n{text}");
        }
    }
}

#[test]
fn the_finder_of_internal_references_finds_them() {
    assert!(internal_reference("undo (issue 12).").is_some());
    assert!(internal_reference("see Issue #21").is_some());
    assert!(internal_reference("New in 0.2: x").is_some());
    assert!(internal_reference("an issue with 2 hosts").is_none());
}

#[test]
fn version_is_the_crate_version() {
    let v = stdout_ok(&["--version"]);
    assert!(
        v.starts_with(&format!("unitlet {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.starts_with("unitlet 0.2.0"), "{v}");
    // Built from this git checkout: the commit too.
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output();
    if let Ok(h) = head
        && h.status.success()
    {
        let h = String::from_utf8_lossy(&h.stdout).trim().to_string();
        assert_eq!(v.trim(), format!("unitlet 0.2.0 (commit {h})"));
    }
}
