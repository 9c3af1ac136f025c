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

/// `-o json` (pretty) or `-o yaml` of `value` on `out`. The table formats
/// are each command's own.
pub(crate) fn write_structured<T: serde::Serialize + ?Sized>(
    out: &mut impl std::io::Write,
    value: &T,
    output: Output,
) {
    let text = match output {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
            s.push('\n');
            s
        }
        Output::Yaml => serde_saphyr::to_string(&value).unwrap_or_default(),
        Output::Table | Output::Wide => return,
    };
    let _ = out.write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::{Output, write_structured};

    #[test]
    fn json_and_yaml_are_written_and_tables_left_to_the_command() {
        let value = serde_json::json!({"host": "h1", "labels": {"gpu": "h100"}});
        let mut json = Vec::new();
        write_structured(&mut json, &value, Output::Json);
        assert!(json.ends_with(b"}\n"), "{}", String::from_utf8_lossy(&json));
        let back: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, value);
        let mut yaml = Vec::new();
        write_structured(&mut yaml, &value, Output::Yaml);
        let text = String::from_utf8(yaml).unwrap();
        assert!(
            text.contains("host: h1") && text.contains("gpu: h100"),
            "{text}"
        );
        for table in [Output::Table, Output::Wide] {
            let mut out = Vec::new();
            write_structured(&mut out, &value, table);
            assert!(out.is_empty());
        }
    }
}
