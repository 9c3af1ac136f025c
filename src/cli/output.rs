//! `-o`/`--output`: how a listing command prints, shared by the commands
//! in `cli` and those beside it (`fleet get`, `fleet hosts`), which import it
//! from here rather than from `cli` itself.

use clap::ValueEnum;

/// The output formats of `get`, `backups`, `fleet get` and `fleet hosts`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
// The variants carry no doc comments on purpose: clap would show them as
// help beside each possible value, changing `--help`.
pub(crate) enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}
