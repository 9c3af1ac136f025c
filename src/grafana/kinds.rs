//! The kinds beyond folders and dashboards: folder permissions,
//! datasources, library panels and Grafana-managed alerting (alert rules,
//! contact points, the notification policy tree, mute timings, message
//! templates).
//!
//! Each kind has a pure normalisation (what is content and what Grafana
//! assigns per instance or per save: ids, versions, timestamps,
//! provenance), used both when a set is written and when restore compares
//! the set with what Grafana holds, and a restore that decides existence
//! and equality from one listing, fetching one object only when the
//! listing cannot tell.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::GrafanaError;
use super::client::Client;

/// Set file: `{folder uid: [permission item]}`.
pub const PERMISSIONS_FILE: &str = "folder-permissions.json";
/// Set file: `[datasource]`, secure fields recorded by name only.
pub const DATASOURCES_FILE: &str = "datasources.json";
/// Set file: `[library panel]`.
pub const LIBRARY_FILE: &str = "library-panels.json";
/// Set file: `{groups: [{folderUid, title, interval}], rules: [rule]}`.
pub const RULES_FILE: &str = "alert-rules.json";
/// Set file: `[contact point]`.
pub const CONTACT_POINTS_FILE: &str = "contact-points.json";
/// Set file: the notification policy tree.
pub const POLICIES_FILE: &str = "policies.json";
/// Set file: `[mute timing]`.
pub const MUTE_TIMINGS_FILE: &str = "mute-timings.json";
/// Set file: `[message template]`.
pub const TEMPLATES_FILE: &str = "templates.json";

/// Largest dashboard file a restore reads. Backup refuses to write a bigger
/// one, so every set it makes can be restored.
pub const MAX_DASHBOARD_FILE: u64 = 128 << 20;

/// A kind of Grafana object, in restore order (dependencies first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// A (possibly nested) folder.
    Folder,
    /// A folder's direct permissions.
    FolderPermissions,
    /// A datasource.
    Datasource,
    /// A library panel.
    LibraryPanel,
    /// A dashboard.
    Dashboard,
    /// An alerting message template.
    Template,
    /// An alerting contact point.
    ContactPoint,
    /// An alerting mute timing.
    MuteTiming,
    /// The notification policy tree.
    Policies,
    /// A Grafana-managed alert rule (or its group's interval).
    AlertRule,
}

impl ObjectKind {
    /// Every kind, in restore order.
    pub const ALL: [ObjectKind; 10] = [
        ObjectKind::Folder,
        ObjectKind::FolderPermissions,
        ObjectKind::Datasource,
        ObjectKind::LibraryPanel,
        ObjectKind::Dashboard,
        ObjectKind::Template,
        ObjectKind::ContactPoint,
        ObjectKind::MuteTiming,
        ObjectKind::Policies,
        ObjectKind::AlertRule,
    ];

    /// The name `restore --only` takes and the report's counts show.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Folder => "folders",
            ObjectKind::FolderPermissions => "folder-permissions",
            ObjectKind::Datasource => "datasources",
            ObjectKind::LibraryPanel => "library-panels",
            ObjectKind::Dashboard => "dashboards",
            ObjectKind::Template => "templates",
            ObjectKind::ContactPoint => "contact-points",
            ObjectKind::MuteTiming => "mute-timings",
            ObjectKind::Policies => "policies",
            ObjectKind::AlertRule => "alert-rules",
        }
    }

    /// The kind `restore --only` names `name` (its plural).
    pub fn from_plural(name: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.plural() == name)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Folder => "folder",
            ObjectKind::FolderPermissions => "folder-permissions",
            ObjectKind::Datasource => "datasource",
            ObjectKind::LibraryPanel => "library-panel",
            ObjectKind::Dashboard => "dashboard",
            ObjectKind::Template => "template",
            ObjectKind::ContactPoint => "contact-point",
            ObjectKind::MuteTiming => "mute-timing",
            ObjectKind::Policies => "policies",
            ObjectKind::AlertRule => "alert-rule",
        })
    }
}

/// What restore did (or, in a dry run, would do) to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Create,
    /// It existed and differed; `detail` says how and what was kept.
    Update {
        /// What changed and where the previous state is.
        detail: String,
    },
    /// Already as in the backup; nothing was sent.
    Unchanged,
    /// Not restored; the other objects were still processed.
    Failed {
        /// Why, and what to do about it.
        reason: String,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReport {
    /// Folder or dashboard.
    pub kind: ObjectKind,
    /// Its uid.
    pub uid: String,
    /// Its title in the backup.
    pub title: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Request errors that concern one object become its `Failed` outcome; the
/// rest abort the restore.
pub(super) fn per_object(e: GrafanaError) -> Result<Outcome, GrafanaError> {
    if e.is_fatal() {
        Err(e)
    } else {
        Ok(failed(e.to_string()))
    }
}

/// A `Failed` outcome for `reason`.
pub(super) fn failed(reason: String) -> Outcome {
    Outcome::Failed { reason }
}

/// Datasource fields that are content (the rest Grafana assigns).
const DATASOURCE_FIELDS: [&str; 12] = [
    "uid",
    "name",
    "type",
    "access",
    "url",
    "user",
    "database",
    "basicAuth",
    "basicAuthUser",
    "withCredentials",
    "isDefault",
    "jsonData",
];

/// Secret datasource values from the file `restore --secure-values` names:
/// datasource uid → secure field → value. `Debug` never shows a value.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecureValues(BTreeMap<String, BTreeMap<String, String>>);

impl fmt::Debug for SecureValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: BTreeMap<&String, Vec<&String>> = self
            .0
            .iter()
            .map(|(k, v)| (k, v.keys().collect()))
            .collect();
        write!(f, "SecureValues({names:?}, values redacted)")
    }
}

impl SecureValues {
    /// Parses the file's text: a YAML (or JSON) mapping of datasource uid to
    /// a mapping of secure field to value.
    ///
    /// # Errors
    /// A message saying what shape is expected; it never quotes the text.
    pub fn parse(text: &str) -> Result<SecureValues, String> {
        if text.trim().is_empty() {
            return Ok(SecureValues::default());
        }
        serde_saphyr::from_str(text).map_err(|_| {
            "it is not a mapping of datasource uid to {secure field: value} (e.g. `prom-main: {basicAuthPassword: ...}`)".to_owned()
        })
    }

    /// Builds values directly (tests, other callers).
    pub fn from_map(map: BTreeMap<String, BTreeMap<String, String>>) -> SecureValues {
        SecureValues(map)
    }

    fn get(&self, uid: &str, field: &str) -> Option<&str> {
        self.0.get(uid)?.get(field).map(String::as_str)
    }
}

/// A datasource secure field restore could not supply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSecret {
    /// The datasource uid.
    pub uid: String,
    /// Its name.
    pub name: String,
    /// The secure field, e.g. `basicAuthPassword`.
    pub field: String,
}

/// A rule group's own settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleGroup {
    /// The folder it is in.
    pub folder_uid: String,
    /// Its title (the rules' `ruleGroup`).
    pub title: String,
    /// Evaluation interval in seconds.
    pub interval: i64,
}

/// What `alert-rules.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RulesFile {
    /// Every group the rules are in.
    pub groups: Vec<RuleGroup>,
    /// The rules, normalised.
    pub rules: Vec<Value>,
}

fn without(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
        o.retain(|_, x| !x.is_null());
    }
    v
}

fn pick(v: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for k in keys {
        out.insert((*k).to_owned(), v.get(*k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// Direct (not inherited) permission items as Grafana accepts them back:
/// `{userId|teamId|role, permission}`, in listing order.
pub fn permission_items(listed: &[Value]) -> Vec<Value> {
    listed
        .iter()
        .filter(|i| i["inherited"] != json!(true))
        .filter_map(|i| {
            let permission = i["permission"].as_i64()?;
            let id = |k: &str| i.get(k).and_then(Value::as_i64).filter(|n| *n != 0);
            let role = i["role"].as_str().filter(|r| !r.is_empty());
            Some(match (id("userId"), id("teamId"), role) {
                (Some(u), _, _) => json!({ "userId": u, "permission": permission }),
                (None, Some(t), _) => json!({ "teamId": t, "permission": permission }),
                (None, None, Some(r)) => json!({ "role": r, "permission": permission }),
                _ => return None,
            })
        })
        .collect()
}

/// Permission lists compare as sets: Grafana does not keep their order.
fn same_permissions(a: &[Value], b: &[Value]) -> bool {
    let set = |v: &[Value]| v.iter().map(Value::to_string).collect::<BTreeSet<_>>();
    set(a) == set(b)
}

/// A datasource as backed up: its content fields and the names of its
/// secure fields (`secureJsonFields: [name]`), never their values.
pub fn datasource(full: &Value) -> Value {
    let mut v = pick(full, &DATASOURCE_FIELDS);
    let secure: Vec<&String> = full["secureJsonFields"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, set)| **set == json!(true))
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    v["secureJsonFields"] = json!(secure);
    v
}

fn secure_names(ds: &Value) -> Vec<String> {
    ds["secureJsonFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

/// A library panel as backed up and compared.
pub fn library_panel(listed: &Value) -> Value {
    let folder = listed["folderUid"]
        .as_str()
        .filter(|f| !f.is_empty())
        .map_or(Value::Null, |f| json!(f));
    json!({
        "uid": listed["uid"], "name": listed["name"], "kind": listed["kind"],
        "folderUid": folder, "model": listed["model"],
    })
}

/// An alert rule without what Grafana assigns (`id`, `orgID`, `updated`,
/// `provenance`) and without null fields.
pub fn alert_rule(v: &Value) -> Value {
    without(v, &["id", "orgID", "updated", "provenance"])
}

/// A contact point, policy tree, mute timing or template without what
/// Grafana assigns (`provenance`, `version`, `id`) and null fields.
pub fn provisioned(v: &Value) -> Value {
    without(v, &["provenance", "version", "id"])
}

/// What every kind's restore shares.
pub(super) struct Ctx<'a> {
    pub client: &'a Client,
    pub dry_run: bool,
    pub secure_values: &'a SecureValues,
}

fn report(kind: ObjectKind, uid: &str, title: &str, outcome: Outcome) -> ObjectReport {
    ObjectReport {
        kind,
        uid: uid.to_owned(),
        title: title.to_owned(),
        outcome,
    }
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or("")
}

impl Ctx<'_> {
    /// Runs `write` unless this is a dry run; its failure becomes the
    /// object's outcome (or aborts, when every request would fail).
    async fn write<F>(&self, outcome: Outcome, write: F) -> Result<Outcome, GrafanaError>
    where
        F: Future<Output = Result<(), GrafanaError>>,
    {
        if self.dry_run {
            return Ok(outcome);
        }
        match write.await {
            Ok(()) => Ok(outcome),
            Err(e) => per_object(e),
        }
    }

    /// Folder permissions: only for folders restored or present; a folder
    /// just created gets its permissions without a read first.
    pub async fn permissions(
        &self,
        perms: &BTreeMap<String, Vec<Value>>,
        created: &BTreeSet<String>,
        failed_folders: &std::collections::HashSet<String>,
        titles: &HashMap<String, String>,
    ) -> Result<Vec<ObjectReport>, GrafanaError> {
        let mut out = Vec::new();
        for (uid, items) in perms {
            let title = titles.get(uid).map_or("", String::as_str);
            let outcome = if failed_folders.contains(uid) {
                failed(format!("its folder {uid} could not be restored"))
            } else if created.contains(uid) {
                self.write(
                    Outcome::Create,
                    self.client.set_folder_permissions(uid, items),
                )
                .await?
            } else {
                match self.client.folder_permissions(uid).await {
                    Ok(listed) if same_permissions(&permission_items(&listed), items) => {
                        Outcome::Unchanged
                    }
                    Ok(_) => {
                        let detail = "replaces the folder's direct permissions".to_owned();
                        self.write(
                            Outcome::Update { detail },
                            self.client.set_folder_permissions(uid, items),
                        )
                        .await?
                    }
                    Err(e) => per_object(e)?,
                }
            };
            out.push(report(ObjectKind::FolderPermissions, uid, title, outcome));
        }
        Ok(out)
    }

    /// Datasources: created with the secure values the file supplies;
    /// an existing one is read whole (the listing has no secure fields).
    pub async fn datasources(
        &self,
        items: &[Value],
        missing: &mut Vec<MissingSecret>,
    ) -> Result<Vec<ObjectReport>, GrafanaError> {
        let listed: BTreeSet<String> = self
            .client
            .datasources()
            .await?
            .iter()
            .filter_map(|d| d["uid"].as_str().map(str::to_owned))
            .collect();
        let mut out = Vec::new();
        for ds in items {
            let (uid, name) = (text(ds, "uid"), text(ds, "name"));
            let wanted = secure_names(ds);
            let current = if listed.contains(uid) {
                match self.client.datasource(uid).await {
                    Ok(c) => c,
                    Err(e) => {
                        out.push(report(ObjectKind::Datasource, uid, name, per_object(e)?));
                        continue;
                    }
                }
            } else {
                None
            };
            let present: BTreeSet<String> = current
                .as_ref()
                .map(|c| secure_names(&datasource(c)).into_iter().collect())
                .unwrap_or_default();
            let mut secure = Map::new();
            for field in wanted.iter().filter(|f| !present.contains(*f)) {
                match self.secure_values.get(uid, field) {
                    Some(value) => {
                        secure.insert(field.clone(), json!(value));
                    }
                    None => missing.push(MissingSecret {
                        uid: uid.to_owned(),
                        name: name.to_owned(),
                        field: field.clone(),
                    }),
                }
            }
            let mut body = pick(ds, &DATASOURCE_FIELDS);
            if !secure.is_empty() {
                body["secureJsonData"] = Value::Object(secure.clone());
            }
            let outcome = match &current {
                None => {
                    self.write(Outcome::Create, self.client.create_datasource(&body))
                        .await?
                }
                Some(c)
                    if pick(c, &DATASOURCE_FIELDS) == pick(ds, &DATASOURCE_FIELDS)
                        && secure.is_empty() =>
                {
                    Outcome::Unchanged
                }
                Some(c) => {
                    let mut changes = Vec::new();
                    if pick(c, &DATASOURCE_FIELDS) != pick(ds, &DATASOURCE_FIELDS) {
                        changes.push("replaces its settings".to_owned());
                    }
                    if !secure.is_empty() {
                        let names: Vec<&String> = secure.keys().collect();
                        changes.push(format!("sets secure fields {names:?}"));
                    }
                    let detail = changes.join("; ");
                    self.write(
                        Outcome::Update { detail },
                        self.client.update_datasource(uid, &body),
                    )
                    .await?
                }
            };
            out.push(report(ObjectKind::Datasource, uid, name, outcome));
        }
        Ok(out)
    }

    /// Library panels, compared with the listing (which holds the models).
    pub async fn library_panels(&self, items: &[Value]) -> Result<Vec<ObjectReport>, GrafanaError> {
        let listed: HashMap<String, Value> = self
            .client
            .library_panels()
            .await?
            .into_iter()
            .map(|l| (text(&l, "uid").to_owned(), l))
            .collect();
        let mut out = Vec::new();
        for lp in items {
            let (uid, name) = (text(lp, "uid"), text(lp, "name"));
            let mut body = lp.clone();
            if body["folderUid"].is_null() {
                body["folderUid"] = json!("");
            }
            let outcome = match listed.get(uid) {
                None => {
                    self.write(Outcome::Create, self.client.create_library_element(&body))
                        .await?
                }
                Some(cur) if library_panel(cur) == *lp => Outcome::Unchanged,
                Some(cur) => {
                    body["version"] = cur["version"].clone();
                    let detail = format!(
                        "replaces version {}",
                        cur["version"].as_i64().unwrap_or_default()
                    );
                    self.write(
                        Outcome::Update { detail },
                        self.client.update_library_element(uid, &body),
                    )
                    .await?
                }
            };
            out.push(report(ObjectKind::LibraryPanel, uid, name, outcome));
        }
        Ok(out)
    }

    /// A provisioning listing, or every object of the kind failed when this
    /// Grafana has none.
    async fn listing(&self, what: &str) -> Result<Option<Value>, GrafanaError> {
        self.client.provisioning(what).await
    }

    fn no_api(&self, what: &str) -> Outcome {
        failed(format!(
            "Grafana at {} has no alerting provisioning API for {what} (404); Grafana 9.1 or later with Grafana-managed alerting is needed",
            self.client.base_url()
        ))
    }

    /// Alert rules by group. A group Grafana lacks is created whole in one
    /// request; in an existing group, only rules that differ are written,
    /// one by one, so the others keep their alert state.
    pub async fn alert_rules(&self, file: &RulesFile) -> Result<Vec<ObjectReport>, GrafanaError> {
        let mut out = Vec::new();
        let Some(listing) = self.listing("alert-rules").await? else {
            for r in &file.rules {
                out.push(report(
                    ObjectKind::AlertRule,
                    text(r, "uid"),
                    text(r, "title"),
                    self.no_api("alert rules"),
                ));
            }
            return Ok(out);
        };
        let current: HashMap<String, Value> = listing
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (text(r, "uid").to_owned(), alert_rule(r)))
            .collect();
        for group in &file.groups {
            let rules: Vec<&Value> = file
                .rules
                .iter()
                .filter(|r| {
                    text(r, "folderUID") == group.folder_uid && text(r, "ruleGroup") == group.title
                })
                .collect();
            let exists = current.values().any(|r| {
                text(r, "folderUID") == group.folder_uid && text(r, "ruleGroup") == group.title
            });
            let elsewhere = rules.iter().any(|r| current.contains_key(text(r, "uid")));
            if !exists && !elsewhere {
                out.extend(self.create_rule_group(group, rules).await?);
                continue;
            }
            out.extend(self.rules_in_group(&rules, &current).await?);
            out.extend(self.group_interval(group, &rules).await?);
        }
        Ok(out)
    }

    /// A group Grafana lacks, created whole in one request.
    async fn create_rule_group(
        &self,
        group: &RuleGroup,
        rules: Vec<&Value>,
    ) -> Result<Vec<ObjectReport>, GrafanaError> {
        let body = json!({
            "title": group.title, "folderUid": group.folder_uid,
            "interval": group.interval, "rules": rules,
        });
        let outcome = self
            .write(
                Outcome::Create,
                self.client
                    .put_rule_group(&group.folder_uid, &group.title, &body),
            )
            .await?;
        Ok(rules
            .into_iter()
            .map(|r| {
                report(
                    ObjectKind::AlertRule,
                    text(r, "uid"),
                    text(r, "title"),
                    outcome.clone(),
                )
            })
            .collect())
    }

    /// The rules of an existing group, each written only when it differs
    /// from `current` (Grafana's rules by uid).
    async fn rules_in_group(
        &self,
        rules: &[&Value],
        current: &HashMap<String, Value>,
    ) -> Result<Vec<ObjectReport>, GrafanaError> {
        let mut out = Vec::new();
        for r in rules {
            let (uid, title) = (text(r, "uid"), text(r, "title"));
            let outcome = match current.get(uid) {
                None => {
                    self.write(
                        Outcome::Create,
                        self.client.provision("alert-rules", None, r),
                    )
                    .await?
                }
                Some(cur) if cur == *r => Outcome::Unchanged,
                Some(_) => {
                    let detail = "replaces the rule (its alert state restarts)".to_owned();
                    self.write(
                        Outcome::Update { detail },
                        self.client.provision("alert-rules", Some(uid), r),
                    )
                    .await?
                }
            };
            out.push(report(ObjectKind::AlertRule, uid, title, outcome));
        }
        Ok(out)
    }

    /// An existing group's evaluation interval, set when it differs (the
    /// listing has no group settings: one read per existing group).
    async fn group_interval(
        &self,
        group: &RuleGroup,
        rules: &[&Value],
    ) -> Result<Option<ObjectReport>, GrafanaError> {
        let key = format!("{}/{}", group.folder_uid, group.title);
        let what = format!("interval of rule group {:?}", group.title);
        let outcome = match self
            .client
            .rule_group(&group.folder_uid, &group.title)
            .await
        {
            Ok(Some(g)) if g["interval"].as_i64() == Some(group.interval) => return Ok(None),
            Ok(_) if self.dry_run => Outcome::Update {
                detail: format!("sets the evaluation interval to {}s", group.interval),
            },
            Ok(_) => {
                let body = json!({
                    "title": group.title, "folderUid": group.folder_uid,
                    "interval": group.interval, "rules": rules,
                });
                self.write(
                    Outcome::Update {
                        detail: format!("sets the evaluation interval to {}s", group.interval),
                    },
                    self.client
                        .put_rule_group(&group.folder_uid, &group.title, &body),
                )
                .await?
            }
            Err(e) => per_object(e)?,
        };
        Ok(Some(report(ObjectKind::AlertRule, &key, &what, outcome)))
    }

    /// Contact points (by uid), mute timings and templates (by name):
    /// created when missing, replaced when different.
    pub async fn keyed(
        &self,
        kind: ObjectKind,
        items: &[Value],
    ) -> Result<Vec<ObjectReport>, GrafanaError> {
        let (what, key_field, title_field, label) = match kind {
            ObjectKind::ContactPoint => ("contact-points", "uid", "name", "contact points"),
            ObjectKind::MuteTiming => ("mute-timings", "name", "name", "mute timings"),
            _ => ("templates", "name", "name", "message templates"),
        };
        let mut out = Vec::new();
        let Some(listing) = self.listing(what).await? else {
            for v in items {
                out.push(report(
                    kind,
                    text(v, key_field),
                    text(v, title_field),
                    self.no_api(label),
                ));
            }
            return Ok(out);
        };
        let current: HashMap<String, Value> = listing
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (text(v, key_field).to_owned(), provisioned(v)))
            .collect();
        for v in items {
            let (key, title) = (text(v, key_field), text(v, title_field));
            // Templates are created by PUT to their name.
            let create_key = (kind == ObjectKind::Template).then_some(key);
            let outcome = match current.get(key) {
                None => {
                    self.write(Outcome::Create, self.client.provision(what, create_key, v))
                        .await?
                }
                Some(cur) if cur == v => Outcome::Unchanged,
                Some(_) => {
                    let detail = "replaces it".to_owned();
                    self.write(
                        Outcome::Update { detail },
                        self.client.provision(what, Some(key), v),
                    )
                    .await?
                }
            };
            out.push(report(kind, key, title, outcome));
        }
        Ok(out)
    }

    /// The notification policy tree, replaced whole when it differs.
    pub async fn policies(&self, tree: &Value) -> Result<Vec<ObjectReport>, GrafanaError> {
        let title = "notification policy tree";
        let outcome = match self.listing("policies").await? {
            None => self.no_api("notification policies"),
            Some(cur) if provisioned(&cur) == *tree => Outcome::Unchanged,
            Some(_) => {
                let detail = "replaces the whole tree".to_owned();
                self.write(
                    Outcome::Update { detail },
                    self.client.provision("policies", None, tree),
                )
                .await?
            }
        };
        Ok(vec![report(
            ObjectKind::Policies,
            "policies",
            title,
            outcome,
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_keep_direct_grants_and_compare_as_sets() {
        let listed = vec![
            json!({"id": 1, "userId": 0, "teamId": 0, "role": "Viewer", "permission": 1, "inherited": false}),
            json!({"id": 2, "userId": 7, "teamId": 0, "role": "", "permission": 4}),
            json!({"id": 3, "userId": 0, "teamId": 3, "role": "", "permission": 2}),
            json!({"id": 4, "userId": 0, "teamId": 0, "role": "Editor", "permission": 2, "inherited": true}),
        ];
        let items = permission_items(&listed);
        assert_eq!(
            items,
            vec![
                json!({"role": "Viewer", "permission": 1}),
                json!({"userId": 7, "permission": 4}),
                json!({"teamId": 3, "permission": 2}),
            ]
        );
        let mut reversed = items.clone();
        reversed.reverse();
        assert!(same_permissions(&items, &reversed));
        assert!(!same_permissions(&items, &items[..2]));
    }

    #[test]
    fn a_datasource_records_secure_field_names_never_values() {
        let full = json!({
            "id": 4, "uid": "prom", "orgId": 1, "name": "Prom", "type": "prometheus",
            "access": "proxy", "url": "http://p", "user": "", "database": "", "basicAuth": true,
            "basicAuthUser": "u", "withCredentials": false, "isDefault": true, "jsonData": {},
            "secureJsonFields": {"basicAuthPassword": true, "old": false}, "version": 9,
            "secureJsonData": {"basicAuthPassword": "hunter2"},
        });
        let ds = datasource(&full);
        assert_eq!(ds["secureJsonFields"], json!(["basicAuthPassword"]));
        assert!(ds.get("id").is_none() && ds.get("version").is_none());
        assert!(!ds.to_string().contains("hunter2"));
    }

    #[test]
    fn volatile_fields_do_not_count_as_differences() {
        let a = json!({"id": 1, "uid": "r", "orgID": 1, "updated": "t1", "provenance": "api", "title": "T", "record": null});
        let b = json!({"id": 2, "uid": "r", "orgID": 1, "updated": "t2", "provenance": "", "title": "T"});
        assert_eq!(alert_rule(&a), alert_rule(&b));
        let c = json!({"uid": "r", "title": "T2"});
        assert_ne!(alert_rule(&a), alert_rule(&c));
        let m1 = json!({"name": "w", "time_intervals": [], "version": "v1", "provenance": "api"});
        let m2 = json!({"name": "w", "time_intervals": [], "version": "v7"});
        assert_eq!(provisioned(&m1), provisioned(&m2));
        let l1 =
            json!({"uid": "l", "name": "L", "kind": 1, "folderUid": "", "model": {}, "version": 3});
        assert_eq!(library_panel(&l1)["folderUid"], Value::Null);
    }

    #[test]
    fn secure_values_parse_and_never_show_in_debug() {
        let v = SecureValues::parse("prom: {basicAuthPassword: s3cret}\n").unwrap();
        assert_eq!(v.get("prom", "basicAuthPassword"), Some("s3cret"));
        assert!(!format!("{v:?}").contains("s3cret"));
        let err = SecureValues::parse("- s3cret-in-a-list\n").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(SecureValues::parse("").is_ok());
    }
}
