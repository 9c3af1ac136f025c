//! The JSON Schema of the manifest format (`unitlet schema`), derived from
//! the very types the parser deserializes into ([`RawDocument`] and the
//! types it holds), so editors check what unitlet checks.

use schemars::Schema;
use serde_json::json;

use super::model::API_VERSION;
use super::parse::{BACKUP_FIELDS, RawDocument, SERVICE_FIELDS};

/// The JSON Schema (draft 2020-12) of one manifest document.
///
/// The structure (fields, their types, which are required, that unknown
/// fields are refused) comes from the parser's own serde types; on top,
/// the two things serde cannot say: `apiVersion` is `unitlet/v1`, and
/// which `spec` fields each `kind` has (the lists the parser's
/// "not a field of kind" messages use).
pub fn json_schema() -> serde_json::Value {
    let schema: Schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RawDocument>();
    let mut v = schema.to_value();
    let kinds = |kind: &str, fields: &[&str]| {
        json!({
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {"properties": {"spec": {"propertyNames": {"enum": fields}}}}
        })
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("title".into(), json!("unitlet manifest"));
        o.insert(
            "allOf".into(),
            json!([
                kinds("Service", SERVICE_FIELDS),
                kinds("Backup", BACKUP_FIELDS)
            ]),
        );
        if let Some(p) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
            let mut set = |field: &str, key: &str, value: serde_json::Value| {
                if let Some(f) = p.get_mut(field).and_then(|f| f.as_object_mut()) {
                    f.insert(key.into(), value);
                }
            };
            set("apiVersion", "const", json!(API_VERSION));
            set("kind", "enum", json!(["Service", "Backup"]));
            // Optional in the serde type only so that its absence gets
            // unitlet's own message ("Service \"x\" has no spec").
            set("spec", "$ref", json!("#/$defs/Spec"));
            if let Some(spec) = p.get_mut("spec").and_then(|f| f.as_object_mut()) {
                spec.remove("anyOf");
            }
        }
        if let Some(r) = o.get_mut("required").and_then(|r| r.as_array_mut()) {
            r.push(json!("spec"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `spec` field the parser knows is in the schema, and the
    /// per-kind lists cover exactly the parser's fields.
    #[test]
    fn the_schema_has_every_field_of_the_parser() {
        let s = json_schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let spec = &s["$defs"]["Spec"]["properties"];
        let mut in_schema: Vec<&str> = spec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut in_lists: Vec<&str> = SERVICE_FIELDS
            .iter()
            .chain(BACKUP_FIELDS)
            .copied()
            .collect();
        in_schema.sort();
        in_lists.sort();
        assert_eq!(in_schema, in_lists);
    }
}
