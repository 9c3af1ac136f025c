//! An in-memory, stateful fake of the parts of Grafana's HTTP API that
//! unitlet (and grafana-backup-tool, which keeps the fake honest) use, so
//! backup and restore are tested end to end without a Grafana binary.
//!
//! It follows Grafana's documented behaviour where a client depends on it:
//! auth (401 `{"message":"Unauthorized"}`; `/api/health` needs none),
//! `/api/search` paging with `limit` (default 1000) and `page`, nested
//! folders by `parentUid` and their permissions (POST replaces them all),
//! dashboard saves that assign ids, bump `version` and keep a version
//! history, 412 `version-mismatch` / `name-exists`, 404 `{"message": ...}`;
//! datasources with write-only `secureJsonData` (reads show only
//! `secureJsonFields`), 409 on a taken name; library elements with 412 on a
//! version mismatch; and the alerting provisioning API, which records
//! `provenance: "api"` unless the write carries `X-Disable-Provenance`, and
//! answers a missing alert rule with a 404 *without a body* as Grafana does.
//!
//! Writes (anything but GET/HEAD) are counted per kind, whatever their
//! answer. Accepted sockets have Nagle disabled (`TCP_NODELAY`): with
//! delayed ACKs a keep-alive client would otherwise wait ~40 ms per request.
//! Fault knobs inject 500s, deletions between search and fetch, and a fixed
//! per-request latency.

// Shared with the benches, which use only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::{Value, json};

/// A folder as the fake stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFolder {
    pub id: i64,
    pub uid: String,
    pub title: String,
    pub parent_uid: Option<String>,
    pub version: i64,
}

/// A dashboard as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeDashboard {
    pub id: i64,
    pub uid: String,
    pub title: String,
    pub folder_uid: Option<String>,
    pub version: i64,
    /// The stored model, with `id`, `uid` and `version` set by the fake.
    pub model: Value,
    /// Version history entries, oldest first.
    pub versions: Vec<Value>,
}

#[derive(Default)]
struct Faults {
    /// Dashboard GETs numbered `fail_from ..fail_from + fail_count`
    /// (counting from 1) answer 500.
    fail_from: usize,
    fail_count: usize,
    delete_after_search: Vec<String>,
    hide_from_search: HashSet<String>,
    latency: Duration,
}

/// A datasource: what reads show, and the write-only secure values.
#[derive(Debug, Clone)]
struct FakeDatasource {
    /// The full DTO without `secureJsonFields` (computed on read).
    dto: Value,
    secure: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    folders: BTreeMap<String, FakeFolder>,
    /// Direct permission items per folder: `{role|userId|teamId, permission}`.
    folder_permissions: BTreeMap<String, Vec<Value>>,
    dashboards: BTreeMap<String, FakeDashboard>,
    datasources: BTreeMap<String, FakeDatasource>,
    /// Library elements as `GET /api/library-elements/:uid` shows them.
    library: BTreeMap<String, Value>,
    /// Alert rules as the provisioning API shows them.
    rules: BTreeMap<String, Value>,
    /// (folder uid, group title) → evaluation interval in seconds.
    groups: BTreeMap<(String, String), i64>,
    /// Writes per alert rule uid (create, update, group replace).
    rule_writes: BTreeMap<String, usize>,
    contact_points: BTreeMap<String, Value>,
    policies: Option<Value>,
    mute_timings: BTreeMap<String, Value>,
    templates: BTreeMap<String, Value>,
    next_id: i64,
    next_version_id: i64,
    clock: i64,
    /// `Authorization` header values that are accepted.
    accepted: Vec<String>,
    faults: Faults,
    dashboard_gets: usize,
    mutations: usize,
    requests: usize,
    /// Requests with a method that can change state (anything but GET and
    /// HEAD), counted on arrival whether they succeed or not.
    writes: usize,
    writes_by_kind: BTreeMap<String, usize>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running fake; the server stops when this is dropped.
pub struct FakeGrafana {
    url: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An error answer as Grafana shapes them; `Value::Null` is an empty body.
type ApiError = (StatusCode, Value);
type ApiResult = Result<(StatusCode, Value), ApiError>;

fn api_error(status: StatusCode, message: &str) -> ApiError {
    (status, json!({ "message": message }))
}

fn ok(body: Value) -> ApiResult {
    Ok((StatusCode::OK, body))
}

/// The default notification policy tree of a fresh Grafana.
fn default_policies() -> Value {
    json!({ "receiver": "grafana-default-email", "group_by": ["grafana_folder", "alertname"] })
}

impl FakeGrafana {
    /// A fake accepting `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> FakeGrafana {
        Self::start_with(vec![format!("Bearer {token}")]).await
    }

    /// A fake accepting HTTP basic auth as `username`/`password`.
    pub async fn start_basic(username: &str, password: &str) -> FakeGrafana {
        let encoded = base64(format!("{username}:{password}").as_bytes());
        Self::start_with(vec![format!("Basic {encoded}")]).await
    }

    async fn start_with(accepted: Vec<String>) -> FakeGrafana {
        let state: Shared = Arc::new(Mutex::new(Inner {
            accepted,
            ..Inner::default()
        }));
        let app = Router::new().fallback(dispatch).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGrafana { url, state, server }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap()
    }

    /// Creates a folder directly (not counted as an API mutation).
    pub fn add_folder(&self, uid: &str, title: &str, parent: Option<&str>) {
        let mut body = json!({ "uid": uid, "title": title });
        if let Some(p) = parent {
            body["parentUid"] = json!(p);
        }
        self.lock().create_folder(&body).unwrap();
    }

    /// Replaces a folder's permissions directly, as the UI would.
    pub fn set_folder_permissions(&self, uid: &str, items: Value) {
        self.lock()
            .set_permissions(uid, &json!({ "items": items }))
            .unwrap();
    }

    /// A folder's direct permissions, `{role|userId|teamId, permission}`.
    pub fn folder_permissions(&self, uid: &str) -> Vec<Value> {
        self.lock()
            .folder_permissions
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a dashboard directly, with `overwrite`, as a person in the UI
    /// would: it gets a new version. Not counted as an API mutation.
    pub fn put_dashboard(&self, uid: &str, title: &str, folder: Option<&str>, panels: Value) {
        self.put_dashboard_model(
            json!({ "id": null, "uid": uid, "title": title, "panels": panels, "schemaVersion": 39 }),
            folder,
        );
    }

    /// Saves a whole dashboard model directly (see [`Self::put_dashboard`]).
    pub fn put_dashboard_model(&self, model: Value, folder: Option<&str>) {
        let body =
            json!({ "dashboard": model, "folderUid": folder.unwrap_or(""), "overwrite": true });
        self.lock().save_dashboard(&body).unwrap();
    }

    /// Creates a datasource directly, `secureJsonData` included.
    pub fn add_datasource(&self, body: Value) {
        self.lock().create_datasource(&body).unwrap();
    }

    /// Datasources as `GET /api/datasources/uid/:uid` shows them.
    pub fn datasources(&self) -> Vec<Value> {
        let s = self.lock();
        s.datasources.values().map(datasource_json).collect()
    }

    /// The secure values a datasource holds (never readable through the API).
    pub fn datasource_secrets(&self, uid: &str) -> BTreeMap<String, String> {
        self.lock()
            .datasources
            .get(uid)
            .map(|d| d.secure.clone())
            .unwrap_or_default()
    }

    /// Creates a library panel directly.
    pub fn add_library_panel(&self, uid: &str, name: &str, folder: Option<&str>, model: Value) {
        let body = json!({ "uid": uid, "name": name, "folderUid": folder.unwrap_or(""), "kind": 1, "model": model });
        self.lock().create_library_element(&body).unwrap();
    }

    pub fn library_panels(&self) -> Vec<Value> {
        self.lock().library.values().cloned().collect()
    }

    /// Creates or replaces a rule group directly (provenance none).
    pub fn put_rule_group(&self, folder: &str, group: &str, interval: i64, rules: Value) {
        let body =
            json!({ "title": group, "folderUid": folder, "interval": interval, "rules": rules });
        self.lock()
            .replace_rule_group(folder, group, &body, "")
            .unwrap();
    }

    /// Edits one alert rule directly, as a person in the UI would.
    pub fn edit_alert_rule(&self, uid: &str, edit: impl FnOnce(&mut Value)) {
        let mut s = self.lock();
        let mut rule = s.rules.get(uid).cloned().unwrap();
        edit(&mut rule);
        s.clock += 1;
        rule["updated"] = json!(timestamp(s.clock));
        s.rules.insert(uid.to_owned(), rule);
    }

    pub fn alert_rules(&self) -> Vec<Value> {
        self.lock().rules.values().cloned().collect()
    }

    /// How often each alert rule was written through the API.
    pub fn rule_writes(&self) -> BTreeMap<String, usize> {
        self.lock().rule_writes.clone()
    }

    /// Rule groups: (folder uid, title) → interval in seconds.
    pub fn rule_groups(&self) -> BTreeMap<(String, String), i64> {
        self.lock().groups.clone()
    }

    pub fn add_contact_point(&self, body: Value) {
        self.lock().create_contact_point(&body, "").unwrap();
    }

    pub fn contact_points(&self) -> Vec<Value> {
        self.lock().contact_points.values().cloned().collect()
    }

    pub fn set_policies(&self, tree: Value) {
        self.lock().put_policies(&tree, "").unwrap();
    }

    pub fn policies(&self) -> Value {
        self.lock().policies_json()
    }

    pub fn add_mute_timing(&self, body: Value) {
        self.lock().create_mute_timing(&body, "").unwrap();
    }

    pub fn mute_timings(&self) -> Vec<Value> {
        self.lock().mute_timings.values().cloned().collect()
    }

    pub fn add_template(&self, name: &str, template: &str) {
        self.lock()
            .put_template(name, &json!({ "template": template }), "")
            .unwrap();
    }

    pub fn templates(&self) -> Vec<Value> {
        self.lock().templates.values().cloned().collect()
    }

    pub fn rename_folder(&self, uid: &str, title: &str) {
        self.lock().folders.get_mut(uid).unwrap().title = title.to_owned();
    }

    pub fn delete_dashboard(&self, uid: &str) {
        self.lock().dashboards.remove(uid);
    }

    /// Deletes everything, as a lost Grafana database would: the
    /// notification policy tree goes back to Grafana's default.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.folders.clear();
        s.folder_permissions.clear();
        s.dashboards.clear();
        s.datasources.clear();
        s.library.clear();
        s.rules.clear();
        s.groups.clear();
        s.contact_points.clear();
        s.policies = None;
        s.mute_timings.clear();
        s.templates.clear();
    }

    pub fn folders(&self) -> Vec<FakeFolder> {
        self.lock().folders.values().cloned().collect()
    }

    pub fn dashboards(&self) -> Vec<FakeDashboard> {
        self.lock().dashboards.values().cloned().collect()
    }

    pub fn dashboard(&self, uid: &str) -> Option<FakeDashboard> {
        self.lock().dashboards.get(uid).cloned()
    }

    /// Everything a restore must bring back, without what Grafana assigns
    /// per instance or per save (ids, versions, timestamps), keyed by kind.
    /// Datasource secure values are included: they must come back too.
    pub fn content(&self) -> BTreeMap<&'static str, Value> {
        let s = self.lock();
        let strip = |v: &Value, keys: &[&str]| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                for k in keys {
                    o.remove(*k);
                }
            }
            v
        };
        let mut out = BTreeMap::new();
        out.insert(
            "folders",
            Value::Array(
                s.folders
                    .values()
                    .map(|f| json!([f.uid, f.title, f.parent_uid]))
                    .collect(),
            ),
        );
        out.insert("folder-permissions", json!(s.folder_permissions));
        out.insert(
            "dashboards",
            Value::Array(
                s.dashboards
                    .values()
                    .map(|d| {
                        json!([
                            d.uid,
                            d.title,
                            d.folder_uid,
                            strip(&d.model, &["id", "version"])
                        ])
                    })
                    .collect(),
            ),
        );
        out.insert(
            "datasources",
            Value::Array(
                s.datasources
                    .values()
                    .map(|d| json!([strip(&d.dto, &["id", "version"]), d.secure]))
                    .collect(),
            ),
        );
        out.insert(
            "library-panels",
            Value::Array(
                s.library
                    .values()
                    .map(|l| json!([l["uid"], l["name"], l["folderUid"], l["kind"], l["model"]]))
                    .collect(),
            ),
        );
        out.insert(
            "alert-rules",
            Value::Array(
                s.rules
                    .values()
                    .map(|r| strip(r, &["id", "updated"]))
                    .collect(),
            ),
        );
        out.insert(
            "rule-groups",
            Value::Array(
                s.groups
                    .iter()
                    .map(|((f, g), i)| json!([f, g, i]))
                    .collect(),
            ),
        );
        out.insert(
            "contact-points",
            Value::Array(s.contact_points.values().cloned().collect()),
        );
        out.insert("policies", s.policies_json());
        out.insert(
            "mute-timings",
            Value::Array(
                s.mute_timings
                    .values()
                    .map(|m| strip(m, &["version"]))
                    .collect(),
            ),
        );
        out.insert(
            "templates",
            Value::Array(
                s.templates
                    .values()
                    .map(|t| strip(t, &["version"]))
                    .collect(),
            ),
        );
        out
    }

    /// Version history entries over all dashboards.
    pub fn total_versions(&self) -> usize {
        self.lock()
            .dashboards
            .values()
            .map(|d| d.versions.len())
            .sum()
    }

    /// Successful API calls that changed state.
    pub fn mutations(&self) -> usize {
        self.lock().mutations
    }

    /// Write requests (POST, PUT, PATCH, DELETE) seen, whatever their
    /// answer: a restore that must not write can be held to zero.
    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    /// Write requests per kind: `folders`, `folder-permissions`,
    /// `dashboards`, `datasources`, `library-elements`, `alert-rules`,
    /// `rule-groups`, `contact-points`, `policies`, `mute-timings`,
    /// `templates`.
    pub fn writes_by_kind(&self) -> BTreeMap<String, usize> {
        self.lock().writes_by_kind.clone()
    }

    /// All requests seen, authorized or not.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    /// Dashboard GETs number `nth` (from 1) to `nth + times - 1` answer 500.
    pub fn fail_dashboard_gets(&self, nth: usize, times: usize) {
        let mut s = self.lock();
        s.faults.fail_from = nth;
        s.faults.fail_count = times;
    }

    /// The next search answers as usual, then `uid` is deleted: the race of
    /// a person deleting a dashboard during a backup.
    pub fn delete_after_next_search(&self, uid: &str) {
        self.lock().faults.delete_after_search.push(uid.to_owned());
    }

    /// Search leaves `uid` out, as it does for a dashboard the caller may
    /// not list.
    pub fn hide_from_search(&self, uid: &str) {
        self.lock().faults.hide_from_search.insert(uid.to_owned());
    }

    /// Every request waits this long before being handled.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().faults.latency = latency;
    }
}

/// The kind a write to `segments` (the path without `api`) counts under.
fn write_kind(segments: &[&str]) -> String {
    match segments {
        ["folders", _, "permissions"] => "folder-permissions".into(),
        ["v1", "provisioning", "folder", ..] => "rule-groups".into(),
        ["v1", "provisioning", kind, ..] => (*kind).to_owned(),
        [kind, ..] => (*kind).to_owned(),
        [] => String::new(),
    }
}

type Params = Query<HashMap<String, String>>;

async fn dispatch(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let decoded: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let Some(("api", api)) = segments.split_first().map(|(a, r)| (*a, r)) else {
        return reply(Err(api_error(StatusCode::NOT_FOUND, "Not found")));
    };
    let (authorized, latency) = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        if !matches!(method, Method::GET | Method::HEAD) {
            s.writes += 1;
            *s.writes_by_kind.entry(write_kind(api)).or_default() += 1;
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        (
            given.is_some_and(|g| s.accepted.iter().any(|a| a == g)),
            s.faults.latency,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if api == ["health"] {
        return reply(ok(
            json!({ "commit": "fake", "database": "ok", "version": "11.3.0" }),
        ));
    }
    if !authorized {
        return reply(Err(api_error(StatusCode::UNAUTHORIZED, "Unauthorized")));
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(_) => return reply(Err(api_error(StatusCode::BAD_REQUEST, "bad request data"))),
        }
    };
    let provenance = if headers
        .get("x-disable-provenance")
        .is_some_and(|v| !v.is_empty())
    {
        ""
    } else {
        "api"
    };
    let mut s = state.lock().unwrap();
    let result = s.route(&method, api, &params, body.as_ref(), provenance);
    if !matches!(method, Method::GET | Method::HEAD) && result.is_ok() {
        s.mutations += 1;
    }
    reply(result)
}

fn reply(result: ApiResult) -> Response {
    let (status, body) = match result {
        Ok(r) => r,
        Err(e) => e,
    };
    if body.is_null() {
        return status.into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn paging(params: &HashMap<String, String>, size: &str, default: usize) -> (usize, usize) {
    let limit = params
        .get(size)
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(default)
        .min(5000);
    let page = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(1usize);
    (limit, page)
}

fn bad(message: &str) -> ApiError {
    api_error(StatusCode::BAD_REQUEST, message)
}

fn timestamp(clock: i64) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        clock / 3600 % 24,
        clock / 60 % 60,
        clock % 60
    )
}

fn datasource_json(d: &FakeDatasource) -> Value {
    let mut v = d.dto.clone();
    let fields: serde_json::Map<String, Value> =
        d.secure.keys().map(|k| (k.clone(), json!(true))).collect();
    v["secureJsonFields"] = Value::Object(fields);
    v
}

fn str_field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Inner {
    fn route(
        &mut self,
        method: &Method,
        path: &[&str],
        params: &HashMap<String, String>,
        body: Option<&Value>,
        provenance: &str,
    ) -> ApiResult {
        let empty = Value::Null;
        let b = body.unwrap_or(&empty);
        match (method.as_str(), path) {
            ("GET", ["auth", "keys"]) => ok(json!([])),
            ("GET", ["search"]) => ok(self.search(params)),
            ("GET", ["folders"]) => self.list_folders(params),
            ("POST", ["folders"]) => self.create_folder(b).map(|v| (StatusCode::OK, v)),
            ("GET", ["folders", uid]) => self
                .folders
                .get(*uid)
                .map(|f| (StatusCode::OK, self.folder_json(f)))
                .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "folder not found")),
            ("PUT", ["folders", uid]) => self.update_folder(uid, b).map(|v| (StatusCode::OK, v)),
            ("DELETE", ["folders", uid]) => self.delete_folder(uid),
            ("POST", ["folders", uid, "move"]) => {
                self.move_folder(uid, b).map(|v| (StatusCode::OK, v))
            }
            ("GET", ["folders", uid, "permissions"]) => self.get_permissions(uid),
            ("POST", ["folders", uid, "permissions"]) => self.set_permissions(uid, b),
            ("POST", ["dashboards", "db"]) => self.save_dashboard(b).map(|v| (StatusCode::OK, v)),
            ("GET", ["dashboards", "uid", uid]) => self.get_dashboard(uid),
            ("DELETE", ["dashboards", "uid", uid]) => self.delete_dashboard(uid),
            ("GET", ["dashboards", "uid", uid, "versions"]) => self.versions(uid),
            ("GET", ["datasources"]) => ok(self.list_datasources()),
            ("POST", ["datasources"]) => self.create_datasource(b),
            ("GET", ["datasources", "uid", uid]) => self
                .datasources
                .get(*uid)
                .map(|d| (StatusCode::OK, datasource_json(d)))
                .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "Data source not found")),
            ("PUT", ["datasources", "uid", uid]) => self.update_datasource(uid, b),
            ("DELETE", ["datasources", "uid", uid]) => match self.datasources.remove(*uid) {
                Some(_) => ok(json!({ "message": "Data source deleted" })),
                None => Err(api_error(StatusCode::NOT_FOUND, "Data source not found")),
            },
            ("GET", ["library-elements"]) => ok(self.list_library(params)),
            ("POST", ["library-elements"]) => self
                .create_library_element(b)
                .map(|v| (StatusCode::OK, json!({ "result": v }))),
            ("GET", ["library-elements", uid]) => self
                .library
                .get(*uid)
                .map(|v| (StatusCode::OK, json!({ "result": v })))
                .ok_or_else(|| {
                    api_error(StatusCode::NOT_FOUND, "library element could not be found")
                }),
            ("PATCH", ["library-elements", uid]) => self.patch_library_element(uid, b),
            ("DELETE", ["library-elements", uid]) => match self.library.remove(*uid) {
                Some(_) => ok(json!({ "message": "Library element deleted" })),
                None => Err(api_error(
                    StatusCode::NOT_FOUND,
                    "library element could not be found",
                )),
            },
            ("GET", ["v1", "provisioning", "alert-rules"]) => {
                ok(Value::Array(self.rules.values().cloned().collect()))
            }
            ("POST", ["v1", "provisioning", "alert-rules"]) => self
                .create_rule(b, provenance)
                .map(|v| (StatusCode::CREATED, v)),
            // Grafana answers a missing rule with a bare 404.
            ("GET", ["v1", "provisioning", "alert-rules", uid]) => self
                .rules
                .get(*uid)
                .map(|r| (StatusCode::OK, r.clone()))
                .ok_or((StatusCode::NOT_FOUND, Value::Null)),
            ("PUT", ["v1", "provisioning", "alert-rules", uid]) => {
                self.update_rule(uid, b, provenance)
            }
            ("DELETE", ["v1", "provisioning", "alert-rules", uid]) => {
                self.rules.remove(*uid);
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
            ("GET", ["v1", "provisioning", "folder", folder, "rule-groups", group]) => {
                self.get_rule_group(folder, group)
            }
            ("PUT", ["v1", "provisioning", "folder", folder, "rule-groups", group]) => self
                .replace_rule_group(folder, group, b, provenance)
                .map(|v| (StatusCode::OK, v)),
            ("GET", ["v1", "provisioning", "contact-points"]) => {
                let name = params.get("name");
                ok(Value::Array(
                    self.contact_points
                        .values()
                        .filter(|c| name.is_none_or(|n| c["name"] == **n))
                        .cloned()
                        .collect(),
                ))
            }
            ("POST", ["v1", "provisioning", "contact-points"]) => self
                .create_contact_point(b, provenance)
                .map(|v| (StatusCode::ACCEPTED, v)),
            ("PUT", ["v1", "provisioning", "contact-points", uid]) => {
                self.update_contact_point(uid, b, provenance)
            }
            ("DELETE", ["v1", "provisioning", "contact-points", uid]) => {
                self.contact_points.remove(*uid);
                Ok((
                    StatusCode::ACCEPTED,
                    json!({ "message": "contactpoint deleted" }),
                ))
            }
            ("GET", ["v1", "provisioning", "policies"]) => ok(self.policies_json()),
            ("PUT", ["v1", "provisioning", "policies"]) => self.put_policies(b, provenance),
            ("GET", ["v1", "provisioning", "mute-timings"]) => {
                ok(Value::Array(self.mute_timings.values().cloned().collect()))
            }
            ("POST", ["v1", "provisioning", "mute-timings"]) => self
                .create_mute_timing(b, provenance)
                .map(|v| (StatusCode::CREATED, v)),
            ("GET", ["v1", "provisioning", "mute-timings", name]) => self
                .mute_timings
                .get(*name)
                .map(|m| (StatusCode::OK, m.clone()))
                .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "mute timing not found")),
            ("PUT", ["v1", "provisioning", "mute-timings", name]) => {
                self.update_mute_timing(name, b, provenance)
            }
            ("GET", ["v1", "provisioning", "templates"]) => {
                ok(Value::Array(self.templates.values().cloned().collect()))
            }
            ("GET", ["v1", "provisioning", "templates", name]) => self
                .templates
                .get(*name)
                .map(|t| (StatusCode::OK, t.clone()))
                .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "template not found")),
            ("PUT", ["v1", "provisioning", "templates", name]) => self
                .put_template(name, b, provenance)
                .map(|v| (StatusCode::ACCEPTED, v)),
            _ => Err(api_error(StatusCode::NOT_FOUND, "Not found")),
        }
    }

    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn tick(&mut self) -> String {
        self.clock += 1;
        timestamp(self.clock)
    }

    // --- search, folders, permissions --------------------------------------

    fn search(&mut self, params: &HashMap<String, String>) -> Value {
        let (limit, page) = paging(params, "limit", 1000);
        let kind = params.get("type").map(String::as_str);
        let query = params.get("query").map(|q| q.to_lowercase());
        let matches = |title: &str| {
            query
                .as_ref()
                .is_none_or(|q| title.to_lowercase().contains(q))
        };
        let mut hits: Vec<(String, Value)> = Vec::new();
        if kind != Some("dash-db") {
            for f in self.folders.values().filter(|f| matches(&f.title)) {
                let mut hit = json!({ "id": f.id, "uid": f.uid, "title": f.title, "type": "dash-folder",
                        "uri": format!("db/{}", slug(&f.title)),
                        "url": format!("/dashboards/f/{}/", f.uid), "tags": [], "isStarred": false });
                if let Some(p) = f.parent_uid.as_ref().and_then(|p| self.folders.get(p)) {
                    hit["folderUid"] = json!(p.uid);
                    hit["folderTitle"] = json!(p.title);
                }
                hits.push((format!("0{}\0{}", f.title.to_lowercase(), f.uid), hit));
            }
        }
        if kind != Some("dash-folder") {
            for d in self.dashboards.values() {
                if self.faults.hide_from_search.contains(&d.uid) || !matches(&d.title) {
                    continue;
                }
                let mut hit = json!({
                    "id": d.id, "uid": d.uid, "title": d.title, "type": "dash-db",
                    "uri": format!("db/{}", slug(&d.title)),
                    "url": format!("/d/{}/{}", d.uid, slug(&d.title)),
                    "slug": "", "tags": [], "isStarred": false,
                });
                if let Some(folder) = d.folder_uid.as_ref().and_then(|f| self.folders.get(f)) {
                    hit["folderId"] = json!(folder.id);
                    hit["folderUid"] = json!(folder.uid);
                    hit["folderTitle"] = json!(folder.title);
                    hit["folderUrl"] = json!(format!("/dashboards/f/{}/", folder.uid));
                }
                hits.push((format!("1{}\0{}", d.title.to_lowercase(), d.uid), hit));
            }
        }
        hits.sort_by(|a, b| a.0.cmp(&b.0));
        let page: Vec<Value> = hits
            .into_iter()
            .skip((page - 1) * limit)
            .take(limit)
            .map(|(_, v)| v)
            .collect();
        for uid in std::mem::take(&mut self.faults.delete_after_search) {
            self.dashboards.remove(&uid);
        }
        Value::Array(page)
    }

    fn list_folders(&self, params: &HashMap<String, String>) -> ApiResult {
        let (limit, page) = paging(params, "limit", 1000);
        let parent = params.get("parentUid").filter(|p| !p.is_empty());
        if let Some(p) = parent
            && !self.folders.contains_key(p)
        {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        }
        let mut children: Vec<&FakeFolder> = self
            .folders
            .values()
            .filter(|f| f.parent_uid.as_ref() == parent)
            .collect();
        children.sort_by(|a, b| {
            (a.title.to_lowercase(), &a.uid).cmp(&(b.title.to_lowercase(), &b.uid))
        });
        let page: Vec<Value> = children
            .into_iter()
            .skip((page - 1) * limit)
            .take(limit)
            .map(|f| {
                let mut v = json!({ "id": f.id, "uid": f.uid, "title": f.title });
                if let Some(p) = &f.parent_uid {
                    v["parentUid"] = json!(p);
                }
                v
            })
            .collect();
        ok(Value::Array(page))
    }

    fn folder_json(&self, f: &FakeFolder) -> Value {
        let mut parents = Vec::new();
        let mut at = f.parent_uid.clone();
        while let Some(p) = at.and_then(|uid| self.folders.get(&uid)) {
            parents.insert(0, json!({ "uid": p.uid, "title": p.title }));
            at = p.parent_uid.clone();
        }
        let mut v = json!({
            "id": f.id, "uid": f.uid, "title": f.title,
            "url": format!("/dashboards/f/{}/", f.uid),
            "hasAcl": false, "canSave": true, "canEdit": true, "canAdmin": true, "canDelete": true,
            "version": f.version, "parents": parents,
        });
        if let Some(p) = &f.parent_uid {
            v["parentUid"] = json!(p);
        }
        v
    }

    fn subtree(&self, uid: &str) -> HashSet<String> {
        let mut out = HashSet::from([uid.to_owned()]);
        loop {
            let more: Vec<String> = self
                .folders
                .values()
                .filter(|f| {
                    !out.contains(&f.uid) && f.parent_uid.as_ref().is_some_and(|p| out.contains(p))
                })
                .map(|f| f.uid.clone())
                .collect();
            if more.is_empty() {
                return out;
            }
            out.extend(more);
        }
    }

    fn title_taken(&self, parent: Option<&String>, title: &str, except: &str) -> bool {
        self.folders
            .values()
            .any(|f| f.uid != except && f.parent_uid.as_ref() == parent && f.title == title)
    }

    fn create_folder(&mut self, body: &Value) -> Result<Value, ApiError> {
        let title = body["title"].as_str().unwrap_or("").trim().to_owned();
        if title.is_empty() {
            return Err(bad("folder title cannot be empty"));
        }
        let parent = str_field(body, "parentUid").map(str::to_owned);
        if let Some(p) = &parent
            && !self.folders.contains_key(p)
        {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        }
        let uid = match str_field(body, "uid") {
            Some(u) => u.to_owned(),
            None => format!("f{}", self.next_id + 1),
        };
        if self.folders.contains_key(&uid) || self.dashboards.contains_key(&uid) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "a folder or dashboard with the same uid already exists",
            ));
        }
        if self.title_taken(parent.as_ref(), &title, &uid) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "a folder with the same name already exists in the current location",
            ));
        }
        let folder = FakeFolder {
            id: self.next_id(),
            uid: uid.clone(),
            title,
            parent_uid: parent,
            version: 1,
        };
        let json = self.folder_json(&folder);
        self.folders.insert(uid.clone(), folder);
        // Grafana's defaults for a new folder's roles.
        self.folder_permissions.insert(
            uid,
            vec![
                json!({ "role": "Editor", "permission": 2 }),
                json!({ "role": "Viewer", "permission": 1 }),
            ],
        );
        Ok(json)
    }

    fn update_folder(&mut self, uid: &str, body: &Value) -> Result<Value, ApiError> {
        let Some(current) = self.folders.get(uid).cloned() else {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        };
        let overwrite = body["overwrite"].as_bool().unwrap_or(false);
        if !overwrite && body["version"].as_i64() != Some(current.version) {
            return Err((
                StatusCode::PRECONDITION_FAILED,
                json!({ "status": "version-mismatch", "message": "the folder has been changed by someone else" }),
            ));
        }
        let title = body["title"].as_str().unwrap_or("").trim().to_owned();
        if title.is_empty() {
            return Err(bad("folder title cannot be empty"));
        }
        if self.title_taken(current.parent_uid.as_ref(), &title, uid) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "a folder with the same name already exists in the current location",
            ));
        }
        let folder = self.folders.get_mut(uid).unwrap();
        folder.title = title;
        folder.version += 1;
        let folder = folder.clone();
        Ok(self.folder_json(&folder))
    }

    fn move_folder(&mut self, uid: &str, body: &Value) -> Result<Value, ApiError> {
        let Some(current) = self.folders.get(uid).cloned() else {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        };
        let parent = str_field(body, "parentUid").map(str::to_owned);
        if let Some(p) = &parent
            && !self.folders.contains_key(p)
        {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        }
        if parent
            .as_ref()
            .is_some_and(|p| self.subtree(uid).contains(p))
        {
            return Err(bad(
                "a folder cannot be moved into itself or one of its subfolders",
            ));
        }
        if self.title_taken(parent.as_ref(), &current.title, uid) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "a folder with the same name already exists in the current location",
            ));
        }
        let folder = self.folders.get_mut(uid).unwrap();
        folder.parent_uid = parent;
        folder.version += 1;
        let folder = folder.clone();
        Ok(self.folder_json(&folder))
    }

    fn delete_folder(&mut self, uid: &str) -> ApiResult {
        let Some(folder) = self.folders.get(uid).cloned() else {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        };
        // Grafana deletes the subtree and the dashboards in it.
        let doomed = self.subtree(uid);
        self.folders.retain(|k, _| !doomed.contains(k));
        self.folder_permissions.retain(|k, _| !doomed.contains(k));
        self.dashboards
            .retain(|_, d| !d.folder_uid.as_ref().is_some_and(|f| doomed.contains(f)));
        ok(json!({ "message": "Folder deleted", "title": folder.title, "id": folder.id }))
    }

    /// `GET /api/folders/:uid/permissions`: one item per grant, shaped as
    /// Grafana's `dtos.DashboardACLInfoDTO`.
    fn get_permissions(&self, uid: &str) -> ApiResult {
        let Some(f) = self.folders.get(uid) else {
            return Err(api_error(StatusCode::NOT_FOUND, "Folder not found"));
        };
        let items = self
            .folder_permissions
            .get(uid)
            .cloned()
            .unwrap_or_default();
        let out: Vec<Value> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let permission = item["permission"].as_i64().unwrap_or(0);
                json!({
                    "id": i + 1, "folderId": f.id, "folderUid": f.uid,
                    "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:00Z",
                    "userId": item.get("userId").cloned().unwrap_or(json!(0)),
                    "userLogin": "", "userEmail": "",
                    "teamId": item.get("teamId").cloned().unwrap_or(json!(0)),
                    "team": "",
                    "role": item.get("role").cloned().unwrap_or(json!("")),
                    "permission": permission,
                    "permissionName": match permission { 1 => "View", 2 => "Edit", _ => "Admin" },
                    "uid": f.uid, "title": f.title, "slug": slug(&f.title),
                    "isFolder": true, "url": format!("/dashboards/f/{}/", f.uid),
                    "inherited": false,
                })
            })
            .collect();
        ok(Value::Array(out))
    }

    /// `POST /api/folders/:uid/permissions`: replaces every direct grant.
    fn set_permissions(&mut self, uid: &str, body: &Value) -> ApiResult {
        if !self.folders.contains_key(uid) {
            return Err(api_error(StatusCode::NOT_FOUND, "Folder not found"));
        }
        let Some(items) = body.get("items").and_then(Value::as_array) else {
            return Err(bad("bad request data"));
        };
        let mut out = Vec::new();
        for item in items {
            let permission = item["permission"].as_i64().unwrap_or(0);
            if ![1, 2, 4].contains(&permission) {
                return Err(bad("Permission value is invalid"));
            }
            let id = |k: &str| item.get(k).and_then(Value::as_i64).filter(|i| *i != 0);
            let role = str_field(item, "role");
            let grant = match (id("userId"), id("teamId"), role) {
                (Some(u), None, None) => json!({ "userId": u, "permission": permission }),
                (None, Some(t), None) => json!({ "teamId": t, "permission": permission }),
                (None, None, Some(r)) if ["Viewer", "Editor", "Admin"].contains(&r) => {
                    json!({ "role": r, "permission": permission })
                }
                _ => {
                    return Err(bad(
                        "a permission item needs exactly one of userId, teamId and role",
                    ));
                }
            };
            out.push(grant);
        }
        self.folder_permissions.insert(uid.to_owned(), out);
        ok(json!({ "message": "Folder permissions updated" }))
    }

    // --- dashboards --------------------------------------------------------

    fn get_dashboard(&mut self, uid: &str) -> ApiResult {
        self.dashboard_gets += 1;
        let n = self.dashboard_gets;
        let f = &self.faults;
        if f.fail_count > 0 && n >= f.fail_from && n - f.fail_from < f.fail_count {
            return Err(api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
            ));
        }
        let Some(d) = self.dashboards.get(uid) else {
            return Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found"));
        };
        let folder = d.folder_uid.as_ref().and_then(|f| self.folders.get(f));
        let meta = json!({
            "type": "db", "canSave": true, "canEdit": true, "canAdmin": true, "canStar": true,
            "slug": slug(&d.title), "url": format!("/d/{}/{}", d.uid, slug(&d.title)),
            "expires": "0001-01-01T00:00:00Z", "created": "2026-01-01T00:00:00Z",
            "updated": "2026-01-01T00:00:00Z", "updatedBy": "admin", "createdBy": "admin",
            "version": d.version, "hasAcl": false, "isFolder": false, "provisioned": false,
            "folderId": folder.map_or(0, |f| f.id),
            "folderUid": folder.map_or("", |f| f.uid.as_str()),
            "folderTitle": folder.map_or("General", |f| f.title.as_str()),
            "folderUrl": folder.map_or(String::new(), |f| format!("/dashboards/f/{}/", f.uid)),
        });
        ok(json!({ "dashboard": d.model, "meta": meta }))
    }

    fn delete_dashboard(&mut self, uid: &str) -> ApiResult {
        match self.dashboards.remove(uid) {
            Some(d) => ok(json!({
                "title": d.title, "id": d.id,
                "message": format!("Dashboard {} deleted", d.title),
            })),
            None => Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found")),
        }
    }

    fn versions(&self, uid: &str) -> ApiResult {
        match self.dashboards.get(uid) {
            Some(d) => {
                let newest_first: Vec<Value> = d.versions.iter().rev().cloned().collect();
                ok(json!({ "continueToken": "", "versions": newest_first }))
            }
            None => Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found")),
        }
    }

    /// `POST /api/dashboards/db` as Grafana's dashboard service does it;
    /// the folder by `folderUid`, or by the older `folderId` (0: General).
    fn save_dashboard(&mut self, body: &Value) -> Result<Value, ApiError> {
        let Some(mut model) = body.get("dashboard").filter(|d| d.is_object()).cloned() else {
            return Err(bad("bad request data"));
        };
        let title = model["title"].as_str().unwrap_or("").trim().to_owned();
        if title.is_empty() {
            return Err(bad("Dashboard title cannot be empty"));
        }
        let overwrite = body["overwrite"].as_bool().unwrap_or(false);
        let folder = match (str_field(body, "folderUid"), body["folderId"].as_i64()) {
            (Some(f), _) => {
                if !self.folders.contains_key(f) {
                    return Err(bad("folder not found"));
                }
                Some(f.to_owned())
            }
            (None, Some(id)) if id != 0 => match self.folders.values().find(|f| f.id == id) {
                Some(f) => Some(f.uid.clone()),
                None => return Err(bad("folder not found")),
            },
            _ => None,
        };
        let id = model["id"].as_i64().filter(|i| *i != 0);
        let mut uid = str_field(&model, "uid").map(str::to_owned);
        if let Some(id) = id {
            match self.dashboards.values().find(|d| d.id == id) {
                None => return Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found")),
                Some(d) if uid.is_none() => uid = Some(d.uid.clone()),
                Some(_) => {}
            }
        }
        let uid = uid.unwrap_or_else(|| format!("gen{}", self.next_id + 1));
        let existing = self.dashboards.get(&uid).cloned();
        if let (Some(existing), false) = (&existing, overwrite) {
            if id.is_none() {
                return Err(bad("A dashboard with the same uid already exists"));
            }
            if model["version"].as_i64() != Some(existing.version) {
                return Err((
                    StatusCode::PRECONDITION_FAILED,
                    json!({ "status": "version-mismatch", "message": "The dashboard has been changed by someone else" }),
                ));
            }
        }
        // Returned even with overwrite when the uid differs, so a save never
        // silently replaces another dashboard.
        if self
            .dashboards
            .values()
            .any(|d| d.uid != uid && d.folder_uid == folder && d.title == title)
        {
            return Err((
                StatusCode::PRECONDITION_FAILED,
                json!({ "status": "name-exists", "message": "A dashboard with the same name in the folder already exists" }),
            ));
        }
        let id = match &existing {
            Some(e) => e.id,
            None => self.next_id(),
        };
        let version = existing.as_ref().map_or(1, |e| e.version + 1);
        model["id"] = json!(id);
        model["uid"] = json!(uid);
        model["version"] = json!(version);
        let mut versions = existing.map(|e| e.versions).unwrap_or_default();
        self.next_version_id += 1;
        versions.push(json!({
            "id": self.next_version_id, "dashboardId": id, "uid": uid,
            "parentVersion": version - 1, "restoredFrom": 0, "version": version,
            "created": "2026-01-01T00:00:00Z", "createdBy": "admin",
            "message": body["message"].as_str().unwrap_or(""),
        }));
        let dashboard = FakeDashboard {
            id,
            uid: uid.clone(),
            title: title.clone(),
            folder_uid: folder,
            version,
            model,
            versions,
        };
        self.dashboards.insert(uid.clone(), dashboard);
        Ok(json!({
            "id": id, "uid": uid, "status": "success", "version": version,
            "slug": slug(&title), "url": format!("/d/{uid}/{}", slug(&title)),
        }))
    }

    // --- datasources -------------------------------------------------------

    /// `GET /api/datasources`: Grafana's list items, a subset of the full
    /// DTO (no `secureJsonFields`, `basicAuthUser`, `withCredentials`,
    /// `version`).
    fn list_datasources(&self) -> Value {
        const LISTED: [&str; 14] = [
            "id",
            "uid",
            "orgId",
            "name",
            "type",
            "typeName",
            "typeLogoUrl",
            "access",
            "url",
            "user",
            "database",
            "basicAuth",
            "isDefault",
            "jsonData",
        ];
        let mut out: Vec<&FakeDatasource> = self.datasources.values().collect();
        out.sort_by_key(|d| d.dto["name"].as_str().unwrap_or("").to_lowercase());
        Value::Array(
            out.into_iter()
                .map(|d| {
                    let mut v = serde_json::Map::new();
                    for k in LISTED {
                        v.insert(k.to_owned(), d.dto[k].clone());
                    }
                    v.insert("readOnly".into(), json!(false));
                    Value::Object(v)
                })
                .collect(),
        )
    }

    fn datasource_fields(&self, body: &Value, base: &Value) -> Result<Value, ApiError> {
        let mut dto = base.clone();
        let name = str_field(body, "name").ok_or_else(|| bad("Name cannot be empty"))?;
        let kind = str_field(body, "type").ok_or_else(|| bad("Type cannot be empty"))?;
        dto["name"] = json!(name);
        dto["type"] = json!(kind);
        dto["typeName"] = json!(kind);
        dto["typeLogoUrl"] = json!(format!("public/plugins/{kind}/logo.svg"));
        dto["access"] = json!(body["access"].as_str().unwrap_or("proxy"));
        for (key, default) in [
            ("url", json!("")),
            ("user", json!("")),
            ("database", json!("")),
            ("basicAuth", json!(false)),
            ("basicAuthUser", json!("")),
            ("withCredentials", json!(false)),
            ("isDefault", json!(false)),
            ("jsonData", json!({})),
        ] {
            dto[key] = body
                .get(key)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(default);
        }
        dto["readOnly"] = json!(false);
        dto["apiVersion"] = json!("");
        Ok(dto)
    }

    fn secure_data(body: &Value) -> BTreeMap<String, String> {
        body.get("secureJsonData")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn create_datasource(&mut self, body: &Value) -> ApiResult {
        let name = str_field(body, "name").unwrap_or("");
        if self.datasources.values().any(|d| d.dto["name"] == name) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "data source with the same name already exists",
            ));
        }
        let uid = match str_field(body, "uid") {
            Some(u) => u.to_owned(),
            None => format!("ds{}", self.next_id + 1),
        };
        if self.datasources.contains_key(&uid) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "data source with the same uid already exists",
            ));
        }
        let base = json!({ "id": self.next_id + 1, "uid": uid, "orgId": 1, "version": 1 });
        let dto = self.datasource_fields(body, &base)?;
        self.next_id();
        let ds = FakeDatasource {
            dto,
            secure: Self::secure_data(body),
        };
        let shown = datasource_json(&ds);
        self.datasources.insert(uid, ds);
        ok(
            json!({ "datasource": shown, "id": shown["id"], "message": "Datasource added", "name": shown["name"] }),
        )
    }

    /// `PUT /api/datasources/uid/:uid`: secure values not sent are kept.
    fn update_datasource(&mut self, uid: &str, body: &Value) -> ApiResult {
        let Some(current) = self.datasources.get(uid).cloned() else {
            return Err(api_error(StatusCode::NOT_FOUND, "Data source not found"));
        };
        if let Some(v) = body.get("version").and_then(Value::as_i64)
            && v != 0
            && v < current.dto["version"].as_i64().unwrap_or(0)
        {
            return Err(api_error(
                StatusCode::CONFLICT,
                "Datasource has already been updated by someone else. Please reload and try again",
            ));
        }
        let name = str_field(body, "name").unwrap_or("");
        if self
            .datasources
            .iter()
            .any(|(k, d)| k != uid && d.dto["name"] == name)
        {
            return Err(api_error(
                StatusCode::CONFLICT,
                "data source with the same name already exists",
            ));
        }
        let mut dto = self.datasource_fields(body, &current.dto)?;
        dto["version"] = json!(current.dto["version"].as_i64().unwrap_or(0) + 1);
        let mut secure = current.secure;
        secure.extend(Self::secure_data(body));
        let ds = FakeDatasource { dto, secure };
        let shown = datasource_json(&ds);
        self.datasources.insert(uid.to_owned(), ds);
        ok(
            json!({ "datasource": shown, "id": shown["id"], "message": "Datasource updated", "name": shown["name"] }),
        )
    }

    // --- library elements --------------------------------------------------

    fn list_library(&self, params: &HashMap<String, String>) -> Value {
        let (per_page, page) = paging(params, "perPage", 100);
        let mut all: Vec<&Value> = self.library.values().collect();
        all.sort_by_key(|l| l["name"].as_str().unwrap_or("").to_lowercase());
        let elements: Vec<Value> = all
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|v| (*v).clone())
            .collect();
        json!({ "result": { "totalCount": all.len(), "elements": elements, "page": page, "perPage": per_page } })
    }

    fn library_json(
        &mut self,
        uid: &str,
        body: &Value,
        version: i64,
        id: i64,
    ) -> Result<Value, ApiError> {
        let name = str_field(body, "name").ok_or_else(|| bad("name cannot be empty"))?;
        let folder = str_field(body, "folderUid").map(str::to_owned);
        let folder_info = match &folder {
            Some(f) => match self.folders.get(f) {
                Some(f) => Some((f.id, f.uid.clone(), f.title.clone())),
                None => return Err(bad("folder not found")),
            },
            None => None,
        };
        if self.library.values().any(|l| {
            l["uid"] != uid
                && l["name"] == name
                && l["folderUid"].as_str().filter(|s| !s.is_empty()) == folder.as_deref()
        }) {
            return Err(bad("library element with that name already exists"));
        }
        let model = body.get("model").cloned().unwrap_or(json!({}));
        let (folder_id, folder_uid, folder_name) =
            folder_info.unwrap_or((0, String::new(), "General".to_owned()));
        let now = self.tick();
        Ok(json!({
            "id": id, "orgId": 1, "folderId": folder_id, "folderUid": folder_uid, "uid": uid,
            "name": name, "kind": body["kind"].as_i64().unwrap_or(1),
            "type": model["type"].as_str().unwrap_or(""),
            "description": model["description"].as_str().unwrap_or(""),
            "model": model, "version": version,
            "meta": {
                "folderName": folder_name, "folderUid": folder_uid, "connectedDashboards": 0,
                "created": "2026-01-01T00:00:00Z", "updated": now,
                "createdBy": { "id": 1, "name": "admin", "avatarUrl": "" },
                "updatedBy": { "id": 1, "name": "admin", "avatarUrl": "" },
            },
        }))
    }

    fn create_library_element(&mut self, body: &Value) -> Result<Value, ApiError> {
        let uid = match str_field(body, "uid") {
            Some(u) => u.to_owned(),
            None => format!("lib{}", self.next_id + 1),
        };
        if self.library.contains_key(&uid) {
            return Err(bad("library element with that uid already exists"));
        }
        let id = self.next_id + 1;
        let element = self.library_json(&uid, body, 1, id)?;
        self.next_id();
        self.library.insert(uid, element.clone());
        Ok(element)
    }

    /// `PATCH /api/library-elements/:uid`: `version` must be the current one.
    fn patch_library_element(&mut self, uid: &str, body: &Value) -> ApiResult {
        let Some(current) = self.library.get(uid).cloned() else {
            return Err(api_error(
                StatusCode::NOT_FOUND,
                "library element could not be found",
            ));
        };
        if body["version"].as_i64() != current["version"].as_i64() {
            return Err(api_error(
                StatusCode::PRECONDITION_FAILED,
                "the library element has been changed by someone else",
            ));
        }
        let version = current["version"].as_i64().unwrap_or(1) + 1;
        let id = current["id"].as_i64().unwrap_or(0);
        let element = self.library_json(uid, body, version, id)?;
        self.library.insert(uid.to_owned(), element.clone());
        ok(json!({ "result": element }))
    }

    // --- alerting ----------------------------------------------------------

    /// A provisioned alert rule as Grafana stores and shows it.
    fn rule_json(
        &mut self,
        body: &Value,
        uid: &str,
        id: i64,
        provenance: &str,
    ) -> Result<Value, ApiError> {
        for key in ["folderUID", "ruleGroup", "title", "condition"] {
            if str_field(body, key).is_none() {
                return Err(bad(&format!("invalid alert rule: {key} must be set")));
            }
        }
        if body["data"].as_array().is_none_or(|d| d.is_empty()) {
            return Err(bad(
                "invalid alert rule: no queries or expressions are found",
            ));
        }
        let folder = str_field(body, "folderUID").unwrap();
        if !self.folders.contains_key(folder) {
            return Err(bad("invalid alert rule: folder does not exist"));
        }
        let updated = self.tick();
        let or = |k: &str, d: Value| body.get(k).filter(|v| !v.is_null()).cloned().unwrap_or(d);
        Ok(json!({
            "id": id, "uid": uid, "orgID": 1, "folderUID": folder,
            "ruleGroup": body["ruleGroup"], "title": body["title"], "condition": body["condition"],
            "data": body["data"], "updated": updated,
            "noDataState": or("noDataState", json!("NoData")),
            "execErrState": or("execErrState", json!("Error")),
            "for": or("for", json!("0s")),
            "annotations": or("annotations", json!({})),
            "labels": or("labels", json!({})),
            "provenance": provenance,
            "isPaused": or("isPaused", json!(false)),
            "notification_settings": body.get("notification_settings").cloned().unwrap_or(Value::Null),
            "record": body.get("record").cloned().unwrap_or(Value::Null),
        }))
    }

    fn create_rule(&mut self, body: &Value, provenance: &str) -> Result<Value, ApiError> {
        let uid = match str_field(body, "uid") {
            Some(u) => u.to_owned(),
            None => format!("rule{}", self.next_id + 1),
        };
        if self.rules.contains_key(&uid) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "a rule with this UID already exists",
            ));
        }
        let id = self.next_id + 1;
        let rule = self.rule_json(body, &uid, id, provenance)?;
        self.next_id();
        let key = (
            rule["folderUID"].as_str().unwrap().to_owned(),
            rule["ruleGroup"].as_str().unwrap().to_owned(),
        );
        self.groups.entry(key).or_insert(60);
        self.rules.insert(uid.clone(), rule.clone());
        *self.rule_writes.entry(uid).or_default() += 1;
        Ok(rule)
    }

    fn update_rule(&mut self, uid: &str, body: &Value, provenance: &str) -> ApiResult {
        let Some(current) = self.rules.get(uid).cloned() else {
            return Err((StatusCode::NOT_FOUND, Value::Null));
        };
        let id = current["id"].as_i64().unwrap_or(0);
        let rule = self.rule_json(body, uid, id, provenance)?;
        let key = (
            rule["folderUID"].as_str().unwrap().to_owned(),
            rule["ruleGroup"].as_str().unwrap().to_owned(),
        );
        self.groups.entry(key).or_insert(60);
        self.rules.insert(uid.to_owned(), rule.clone());
        *self.rule_writes.entry(uid.to_owned()).or_default() += 1;
        self.drop_empty_groups();
        ok(rule)
    }

    fn drop_empty_groups(&mut self) {
        let used: HashSet<(String, String)> = self
            .rules
            .values()
            .map(|r| {
                (
                    r["folderUID"].as_str().unwrap_or("").to_owned(),
                    r["ruleGroup"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        self.groups.retain(|k, _| used.contains(k));
    }

    fn group_rules(&self, folder: &str, group: &str) -> Vec<Value> {
        self.rules
            .values()
            .filter(|r| r["folderUID"] == folder && r["ruleGroup"] == group)
            .cloned()
            .collect()
    }

    fn get_rule_group(&self, folder: &str, group: &str) -> ApiResult {
        match self.groups.get(&(folder.to_owned(), group.to_owned())) {
            Some(interval) => ok(json!({
                "title": group, "folderUid": folder, "interval": interval,
                "rules": self.group_rules(folder, group),
            })),
            None => Err(api_error(StatusCode::NOT_FOUND, "rule group not found")),
        }
    }

    /// `PUT .../folder/:folder/rule-groups/:group`: the group becomes
    /// exactly the rules sent; rules of it that are not sent are deleted.
    fn replace_rule_group(
        &mut self,
        folder: &str,
        group: &str,
        body: &Value,
        provenance: &str,
    ) -> Result<Value, ApiError> {
        if !self.folders.contains_key(folder) {
            return Err(bad("invalid alert rule: folder does not exist"));
        }
        let interval = body["interval"].as_i64().unwrap_or(0);
        if interval <= 0 || interval % 10 != 0 {
            return Err(bad(
                "invalid rule group: interval must be a positive multiple of 10s",
            ));
        }
        let rules = body["rules"].as_array().cloned().unwrap_or_default();
        let mut built = Vec::new();
        for r in &rules {
            let mut r = r.clone();
            r["folderUID"] = json!(folder);
            r["ruleGroup"] = json!(group);
            let uid = match str_field(&r, "uid") {
                Some(u) => u.to_owned(),
                None => format!("rule{}", self.next_id + 1),
            };
            if self
                .rules
                .get(&uid)
                .is_some_and(|o| o["folderUID"] != folder || o["ruleGroup"] != group)
            {
                return Err(bad("a rule with this UID is in another group"));
            }
            let id = match self.rules.get(&uid) {
                Some(o) => o["id"].as_i64().unwrap_or(0),
                None => self.next_id + 1,
            };
            let rule = self.rule_json(&r, &uid, id, provenance)?;
            if !self.rules.contains_key(&uid) {
                self.next_id();
            }
            built.push((uid, rule));
        }
        let sent: HashSet<&String> = built.iter().map(|(u, _)| u).collect();
        let gone: Vec<String> = self
            .group_rules(folder, group)
            .iter()
            .filter_map(|r| r["uid"].as_str().map(str::to_owned))
            .filter(|u| !sent.contains(u))
            .collect();
        for uid in gone {
            self.rules.remove(&uid);
        }
        for (uid, rule) in built {
            *self.rule_writes.entry(uid.clone()).or_default() += 1;
            self.rules.insert(uid, rule);
        }
        self.groups
            .insert((folder.to_owned(), group.to_owned()), interval);
        self.drop_empty_groups();
        if !self
            .rules
            .values()
            .any(|r| r["folderUID"] == folder && r["ruleGroup"] == group)
        {
            self.groups.remove(&(folder.to_owned(), group.to_owned()));
        }
        Ok(json!({
            "title": group, "folderUid": folder, "interval": interval,
            "rules": self.group_rules(folder, group),
        }))
    }

    fn contact_point_json(body: &Value, uid: &str, provenance: &str) -> Result<Value, ApiError> {
        let name = str_field(body, "name").ok_or_else(|| bad("contact point name must be set"))?;
        let kind = str_field(body, "type").ok_or_else(|| bad("contact point type must be set"))?;
        let settings = body
            .get("settings")
            .filter(|s| s.is_object())
            .ok_or_else(|| bad("contact point settings must be set"))?;
        Ok(json!({
            "uid": uid, "name": name, "type": kind, "settings": settings,
            "disableResolveMessage": body["disableResolveMessage"].as_bool().unwrap_or(false),
            "provenance": provenance,
        }))
    }

    fn create_contact_point(&mut self, body: &Value, provenance: &str) -> Result<Value, ApiError> {
        let uid = match str_field(body, "uid") {
            Some(u) => u.to_owned(),
            None => format!("cp{}", self.next_id()),
        };
        if self.contact_points.contains_key(&uid) {
            return Err(bad("contact point with this uid already exists"));
        }
        let cp = Self::contact_point_json(body, &uid, provenance)?;
        self.contact_points.insert(uid, cp.clone());
        Ok(cp)
    }

    fn update_contact_point(&mut self, uid: &str, body: &Value, provenance: &str) -> ApiResult {
        if !self.contact_points.contains_key(uid) {
            return Err(api_error(StatusCode::NOT_FOUND, "contact point not found"));
        }
        let cp = Self::contact_point_json(body, uid, provenance)?;
        self.contact_points.insert(uid.to_owned(), cp);
        Ok((
            StatusCode::ACCEPTED,
            json!({ "message": "contactpoint updated" }),
        ))
    }

    fn policies_json(&self) -> Value {
        self.policies.clone().unwrap_or_else(default_policies)
    }

    /// `PUT /api/v1/provisioning/policies`: every receiver and mute timing
    /// the tree names must exist.
    fn put_policies(&mut self, body: &Value, provenance: &str) -> ApiResult {
        fn check(node: &Value, inner: &Inner, top: bool) -> Result<(), ApiError> {
            match node.get("receiver").and_then(Value::as_str) {
                Some(r) if !inner.contact_points.values().any(|c| c["name"] == r) => {
                    return Err(bad(&format!(
                        "invalid object specification: receiver '{r}' does not exist"
                    )));
                }
                None if top => {
                    return Err(bad(
                        "invalid object specification: the root route must name a receiver",
                    ));
                }
                _ => {}
            }
            for t in node["mute_time_intervals"].as_array().into_iter().flatten() {
                let t = t.as_str().unwrap_or("");
                if !inner.mute_timings.contains_key(t) {
                    return Err(bad(&format!(
                        "invalid object specification: mute time interval '{t}' does not exist"
                    )));
                }
            }
            for r in node["routes"].as_array().into_iter().flatten() {
                check(r, inner, false)?;
            }
            Ok(())
        }
        check(body, self, true)?;
        let mut tree = body.clone();
        if let Some(o) = tree.as_object_mut() {
            o.remove("provenance");
            if !provenance.is_empty() {
                o.insert("provenance".into(), json!(provenance));
            }
        }
        self.policies = Some(tree);
        Ok((
            StatusCode::ACCEPTED,
            json!({ "message": "policies updated" }),
        ))
    }

    fn mute_timing_json(body: &Value, name: &str, version: i64, provenance: &str) -> Value {
        json!({
            "name": name,
            "time_intervals": body.get("time_intervals").cloned().unwrap_or(json!([])),
            "version": format!("v{version}"),
            "provenance": provenance,
        })
    }

    fn create_mute_timing(&mut self, body: &Value, provenance: &str) -> Result<Value, ApiError> {
        let name = str_field(body, "name").ok_or_else(|| bad("mute timing name must be set"))?;
        if self.mute_timings.contains_key(name) {
            return Err(api_error(
                StatusCode::CONFLICT,
                "a mute timing with this name already exists",
            ));
        }
        let m = Self::mute_timing_json(body, name, 1, provenance);
        self.mute_timings.insert(name.to_owned(), m.clone());
        Ok(m)
    }

    fn update_mute_timing(&mut self, name: &str, body: &Value, provenance: &str) -> ApiResult {
        let Some(current) = self.mute_timings.get(name) else {
            return Err(api_error(StatusCode::NOT_FOUND, "mute timing not found"));
        };
        if let Some(v) = str_field(body, "version")
            && current["version"] != v
        {
            return Err(api_error(StatusCode::CONFLICT, "version conflict"));
        }
        let n: i64 = current["version"].as_str().unwrap_or("v1")[1..]
            .parse()
            .unwrap_or(1);
        let m = Self::mute_timing_json(body, name, n + 1, provenance);
        self.mute_timings.insert(name.to_owned(), m.clone());
        ok(m)
    }

    fn put_template(
        &mut self,
        name: &str,
        body: &Value,
        provenance: &str,
    ) -> Result<Value, ApiError> {
        let Some(text) = body.get("template").and_then(Value::as_str) else {
            return Err(bad("template must be set"));
        };
        let version = self
            .templates
            .get(name)
            .and_then(|t| t["version"].as_str())
            .and_then(|v| v[1..].parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        let t = json!({ "name": name, "template": text, "version": format!("v{version}"), "provenance": provenance });
        self.templates.insert(name.to_owned(), t.clone());
        Ok(t)
    }
}

/// A path segment as Grafana's router sees it: `%XX` decoded.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = segment
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// Standard base64, enough for a Basic auth header.
fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc_examples() {
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"admin:admin"), "YWRtaW46YWRtaW4=");
}
