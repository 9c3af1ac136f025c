//! `unitlet validate` as a CI and editor tool, and `unitlet schema` checked
//! by a real JSON Schema validator (Debian's python3-jsonschema).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::{UNITLET, UserManager, stderr, stdout};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `unitlet ARGS` in `cwd` as on a clean CI machine: an empty home, no
/// secrets, no XDG directories, no session bus.
fn clean(cwd: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(UNITLET)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(cwd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run unitlet")
}

fn both(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// A Service manifest named NAME with `extra` spec lines.
fn service(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/true]\n{extra}"
    )
}

/// Issue 23 acceptance 4: the shipped manifests on a clean checkout with
/// no secrets: valid with warnings naming the missing environment file;
/// `--strict` makes them errors; `-o json` has every finding with its
/// severity and field.
#[test]
fn a_clean_checkout_validates_with_warnings_and_strict_fails() {
    let home = tempfile::tempdir().unwrap();
    let o = clean(&repo(), home.path(), &["validate", "manifests/"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let out = stdout(&o);
    let env_file = out
        .lines()
        .find(|l| l.contains("grafana.env"))
        .unwrap_or_else(|| panic!("no warning names the environment file:\n{out}"));
    assert!(
        env_file.starts_with("manifests/grafana.yaml:") && env_file.contains(": warning: "),
        "{env_file}"
    );
    assert!(out.contains(" 0 error(s) in 7 file(s)"), "{out}");

    let o = clean(
        &repo(),
        home.path(),
        &["validate", "--strict", "manifests/"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.contains("grafana.env") && l.contains(": error: ")),
        "{}",
        stdout(&o)
    );

    let o = clean(
        &repo(),
        home.path(),
        &["validate", "-o", "json", "manifests"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&o)));
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["manifests"], 8, "{v}");
    let findings = v["findings"].as_array().expect("findings");
    let f = findings
        .iter()
        .find(|f| f["field"] == "spec.environmentFile")
        .unwrap_or_else(|| panic!("no finding for spec.environmentFile: {v}"));
    assert_eq!(f["severity"], "warning", "{f}");
    assert_eq!(f["file"], "manifests/grafana.yaml", "{f}");
    assert!(
        f["line"].as_u64().unwrap() > 1 && f["column"].as_u64().unwrap() > 1,
        "{f}"
    );
    assert!(
        f["message"].as_str().unwrap().contains("grafana.env"),
        "{f}"
    );
    for f in findings {
        assert_eq!(f["severity"], "warning", "{f}");
    }
    let o = clean(
        &repo(),
        home.path(),
        &["validate", "--strict", "-o", "json", "manifests"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    assert!(v["errors"].as_u64().unwrap() >= 1, "{v}");
}

/// Issue 23 acceptance 4: files and directories together; a manifest
/// error (an unknown field) is still an error with file:line:col, in text
/// and in JSON; a path that does not exist is an operational error.
#[test]
fn files_and_directories_are_checked_together_and_errors_stay_errors() {
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(tmp.path().join("a.yaml"), service("a", "  comand: [x]\n")).unwrap();
    std::fs::write(dir.join("b.yaml"), service("b", "")).unwrap();
    std::fs::write(dir.join("c.yml"), service("c", "")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();
    std::fs::write(dir.join(".hidden.yaml"), "not: [a manifest").unwrap();
    let o = clean(tmp.path(), home.path(), &["validate", "a.yaml", "dir/"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("a.yaml:7:3: error: unknown field `comand`")),
        "{out}"
    );
    assert!(
        out.contains("2 manifest(s) valid, 1 error(s) in 3 file(s)"),
        "{out}"
    );
    let o = clean(
        tmp.path(),
        home.path(),
        &["validate", "-o", "json", "a.yaml", "dir"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &v["findings"][0];
    assert_eq!(
        (
            &f["file"],
            &f["line"],
            &f["column"],
            &f["severity"],
            &f["field"]
        ),
        (
            &serde_json::json!("a.yaml"),
            &serde_json::json!(7),
            &serde_json::json!(3),
            &serde_json::json!("error"),
            &serde_json::json!("spec.comand")
        ),
        "{v}"
    );
    // The same name in a file and in a directory is one set's duplicate.
    std::fs::write(tmp.path().join("b.yaml"), service("b", "")).unwrap();
    let o = clean(tmp.path(), home.path(), &["validate", "b.yaml", "dir"]);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(stdout(&o).contains("defined 2 times"), "{}", stdout(&o));
    // A directory named twice is read once.
    let o = clean(tmp.path(), home.path(), &["validate", "dir", "dir/b.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let o = clean(
        tmp.path(),
        home.path(),
        &["validate", "dir", "missing.yaml"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(
        stderr(&o).contains("missing.yaml does not exist"),
        "{}",
        stderr(&o)
    );
}

/// Issue 23: with a user manager that answers, a unit directory off its
/// unit path is a fact about this machine: a warning, an error with
/// `--strict`.
#[test]
fn a_unit_directory_off_the_managers_path_is_a_warning() {
    let um = UserManager::start();
    let elsewhere = um.runtime.join("not-on-the-unit-path");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(um.manifests.join("a.yaml"), service("a", "")).unwrap();
    let env = [("UNITLET_UNIT_DIR", elsewhere.as_path())];
    let o = um.unitlet_env(&["validate"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("warning: unit directory")
                && l.contains("not on the user manager's unit search path")),
        "{}",
        both(&o)
    );
    let o = um.unitlet_env(&["validate", "--strict"], &env);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    // On the path: nothing to say.
    let o = um.unitlet(&["validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    assert!(stdout(&o).contains(", 0 warning(s)"), "{}", both(&o));
}

/// Debian's Python with python3-jsonschema and python3-yaml: the real
/// validator the schema is checked with. Never skipped: without it the
/// test fails and says what to install.
const PYTHON: &str = "/usr/bin/python3";

/// Validates each YAML document of each file against the schema; prints
/// `OK file#n` or `INVALID file#n: reason` per document.
const CHECK: &str = r#"
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    for n, doc in enumerate(yaml.safe_load_all(open(path))):
        errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            print(f"INVALID {path}#{n}: {errors[0].message}")
        else:
            print(f"OK {path}#{n}")
"#;

fn schema_check(schema: &Path, files: &[PathBuf]) -> String {
    let o = Command::new(PYTHON)
        .arg("-c")
        .arg(CHECK)
        .arg(schema)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON}: {e}; install python3-jsonschema and python3-yaml"));
    assert!(
        o.status.success(),
        "{PYTHON} could not check the schema (install python3-jsonschema and python3-yaml): {}",
        both(&o)
    );
    stdout(&o)
}

/// Issue 23 acceptance 5: every shipped manifest is valid against
/// `unitlet schema`, and an unknown field, a wrong type and a missing
/// required field are rejected by the schema and by `unitlet validate`.
#[test]
fn the_schema_accepts_the_shipped_manifests_and_rejects_what_validate_rejects() {
    let home = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let o = clean(tmp.path(), home.path(), &["schema"]);
    assert_eq!(o.status.code(), Some(0), "{}", both(&o));
    let schema = tmp.path().join("schema.json");
    std::fs::write(&schema, &o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");

    let mut shipped: Vec<PathBuf> = std::fs::read_dir(repo().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    shipped.sort();
    assert_eq!(shipped.len(), 7, "{shipped:?}");
    let out = schema_check(&schema, &shipped);
    assert_eq!(out.lines().count(), 8, "one line per document: {out}");
    assert!(out.lines().all(|l| l.starts_with("OK ")), "{out}");

    let bad = [
        ("unknown-field.yaml", service("u", "  comand: [x]\n")),
        ("wrong-type.yaml", service("w", "  enabled: [yes]\n")),
        (
            "missing-name.yaml",
            "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  labels: {a: b}\nspec:\n  command: [/bin/true]\n".to_string(),
        ),
        (
            "not-a-backup-field.yaml",
            "apiVersion: unitlet/v1\nkind: Backup\nmetadata:\n  name: b\nspec:\n  schedule: every 1h\n  command: [x]\n  prometheus: {url: 'http://127.0.0.1:9090'}\n".to_string(),
        ),
    ];
    let mut files = Vec::new();
    for (name, text) in &bad {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        files.push(f.clone());
        let o = clean(tmp.path(), home.path(), &["validate", name]);
        assert_eq!(o.status.code(), Some(1), "validate {name}: {}", both(&o));
        assert!(
            stdout(&o).starts_with(&format!("{name}:")) && stdout(&o).contains(": error: "),
            "{name}: {}",
            stdout(&o)
        );
    }
    let out = schema_check(&schema, &files);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), bad.len(), "{out}");
    for l in &lines {
        assert!(l.starts_with("INVALID "), "the schema accepts it: {out}");
    }
    assert!(lines[0].contains("comand"), "{out}");
    assert!(lines[1].contains("not of type 'boolean'"), "{out}");
    assert!(lines[2].contains("'name' is a required property"), "{out}");
    assert!(lines[3].contains("command"), "{out}");
}
