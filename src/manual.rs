//! The manual page and shell completions, generated from the clap
//! definition of the command line (`unitlet man`, `unitlet completions`),
//! so they can never drift from the flags the binary accepts.

use std::io::{self, Write};

use clap::{CommandFactory, ValueEnum};

use crate::cli::Cli;

/// The shells `unitlet completions` writes a script for.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "unitlet", out);
}

/// Writes unitlet(1): the page of the whole command line, then one section
/// per command (`UNITLET RUN`, …) with its synopsis, description and
/// options, so `man unitlet` shows every command without separate pages.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let cmd = Cli::command();
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
    man.render_version_section(out)?;
    writeln!(out, ".SH \"SEE ALSO\"")?;
    writeln!(
        out,
        "The reference (commands, manifests, safety) is in docs/ of the \
         source and, after deploy/install.sh, in ~/.local/share/doc/unitlet/."
    )?;
    Ok(())
}

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
