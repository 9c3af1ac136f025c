//! Manifests: the YAML documents a person writes, parsed strictly and
//! validated into the typed model the rest of unitlet works from.
//!
//! Architecture Invariant: [`parse_str`] and everything it calls is pure (no
//! I/O). Only [`load_dir`] touches the filesystem, to list and read files and
//! the unit files that manifests adopt.

mod load;
mod matcher;
mod model;
mod parse;
mod schema;
mod validate;

pub use load::*;
pub use matcher::*;
pub use model::*;
pub use parse::*;
pub use schema::*;
pub use validate::*;

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::path::{Path, PathBuf};

    pub(crate) fn ctx() -> PathContext {
        PathContext {
            manifest_dir: PathBuf::from("/m"),
            home: Some(PathBuf::from("/home/u")),
        }
    }

    pub(crate) fn parse(y: &str) -> ParsedFile {
        parse_str(y, Path::new("/m/x.yaml"), &ctx())
    }

    pub(crate) fn one_err(y: &str) -> ManifestError {
        let p = parse(y);
        assert!(
            p.manifests.is_empty(),
            "expected an error, got {:?}",
            p.manifests
        );
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        p.errors[0].clone()
    }

    pub(crate) const HEAD: &str =
        "apiVersion: unitlet/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n";

    pub(crate) fn assemble_texts(files: &[(&str, &str)]) -> LoadedSet {
        let mut set = LoadedSet::default();
        let parsed = files
            .iter()
            .map(|(f, y)| (PathBuf::from(f), parse_str(y, Path::new(f), &ctx())))
            .collect();
        assemble(&mut set, parsed);
        set
    }
}
