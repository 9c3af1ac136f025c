//! The manual page and shell completions, generated from the clap
//! definition of the command line (`unitlet man`, `unitlet completions`),
//! so they can never drift from the flags the binary accepts.

use std::io::{self, Write};

use clap::ValueEnum;

/// The shells `unitlet completions` writes a script for.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Writes the completion script for `shell` of `cmd`, the command line's
/// clap definition (`cli::Cli::command()`, passed in so this module stays
/// below `cli`).
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "unitlet", out);
    if shell == Shell::Fish {
        fish_positional_values(&cmd, out);
    }
}

/// clap_complete's fish script completes options but not positional
/// arguments; offer the values of those that have a fixed set
/// (`unitlet completions <TAB>`: bash, zsh, fish).
fn fish_positional_values(cmd: &clap::Command, out: &mut dyn Write) {
    for sub in cmd.get_subcommands() {
        for arg in sub.get_positionals() {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                let _ = writeln!(
                    out,
                    "complete -c unitlet -n \"__fish_unitlet_using_subcommand {}\" -f -a \"{}\"",
                    sub.get_name(),
                    values.join(" ")
                );
            }
        }
    }
}

/// Writes unitlet(1): the page of the whole command line, then one section
/// per command (`UNITLET RUN`, …) with its synopsis, description and
/// options, so `man unitlet` shows every command without separate pages.
/// `cmd` is the command line's clap definition (`cli::Cli::command()`).
pub fn man_page(cmd: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    writeln!(out, ".SH COMMANDS")?;
    writeln!(out, "Each command has its own section below.")?;
    for sub in &subs {
        writeln!(out, ".TP")?;
        writeln!(out, "\\fBunitlet {}\\fR", sub.get_name())?;
        if let Some(about) = sub.get_about() {
            writeln!(out, "{}", escape(&about.to_string()))?;
        }
    }
    for sub in subs {
        let full = format!("unitlet {}", sub.get_name());
        // The subcommand as declared: the global options are described once
        // above, not repeated under every command.
        let man = clap_mangen::Man::new(sub.clone().bin_name(&full));
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        writeln!(out, ".SH \"{}\"", full.to_uppercase())?;
        out.write_all(&demote(&String::from_utf8_lossy(&part)).into_bytes())?;
    }
    out.write_all(TRAILER.as_bytes())?;
    man.render_version_section(out)?;
    Ok(())
}

/// What clap does not know: exit codes, environment, files. The full
/// reference is docs/commands.md, whose Exit codes and Global options
/// sections this summarises.
const TRAILER: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
Done, and everything is as asked.
.TP
\fB1\fR
The command worked but the answer is no: an object not Ready, changes pending, an invalid manifest, an unknown NAME, a failed backup or restore.
.TP
\fB2\fR
Operational error: no D\-Bus or user manager, an unusable directory, or a command line that cannot be parsed.
.SH ENVIRONMENT
.TP
\fBUNITLET_LOG\fR
Log filter in tracing syntax (\fBdebug\fR, \fBunitlet=debug,zbus=warn\fR); default \fBinfo\fR for \fBrun\fR, \fBwarn\fR otherwise. Logs go to standard error.
.TP
\fBXDG_CONFIG_HOME\fR, \fBXDG_STATE_HOME\fR, \fBXDG_DATA_HOME\fR
The defaults of \fB\-\-manifests\fR, \fB\-\-state\-dir\fR and \fB\-\-unit\-dir\fR.
.TP
\fBDBUS_SESSION_BUS_ADDRESS\fR, \fBXDG_RUNTIME_DIR\fR
The default of \fB\-\-bus\fR.
.SH FILES
.TP
\fI~/.config/unitlet/manifests/\fR
The manifests (\fB\-\-manifests\fR).
.TP
\fI~/.local/state/unitlet/\fR
Status (\fBstatus.json\fR), restore holds and backup records (\fB\-\-state\-dir\fR).
.TP
\fI~/.local/share/systemd/user/\fR
The unit files unitlet writes (\fB\-\-unit\-dir\fR).
.TP
\fI~/.config/unitlet/secrets/\fR
Private files that manifests name for passwords and tokens (mode 600).
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBsystemd.unit\fR(5), \fBsystemd.resource-control\fR(5).
The reference (commands, manifests, safety) is docs/ of the source; deploy/install.sh copies it to \fI~/.local/share/doc/unitlet/\fR.
"#;

/// Text as a roff text line: backslashes escaped, and a leading `.` or
/// `'` (which would make it a request) guarded.
fn escape(text: &str) -> String {
    let t = text.replace('\\', "\\e");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// A rendered page part as subsections: `.SH X` becomes `.SS X`, and the
/// apostrophe preamble roff repeats before every part is dropped.
fn demote(roff: &str) -> String {
    roff.lines()
        .filter(|l| !l.starts_with(".ie \\n(.g .ds Aq") && !l.starts_with(".el .ds Aq"))
        .map(|l| match l.strip_prefix(".SH ") {
            Some(rest) => format!(".SS {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect()
}
