//! An in-memory, stateful fake of the parts of Grafana's HTTP API that
//! unitlet uses, so backup and restore are tested end to end without a
//! Grafana binary.
//!
//! It follows Grafana's documented behaviour where unitlet depends on it:
//! auth (401 `{"message":"Unauthorized"}`), `/api/search` paging with
//! `limit` (default 1000) and `page`, nested folders by `parentUid`,
//! dashboard saves that assign ids, bump `version` and keep a version
//! history, 412 `version-mismatch` / `name-exists`, and 404
//! `{"message":"Dashboard not found"}`. Fault knobs let tests inject 500s,
//! deletions between search and fetch, and latency.

// Shared with benches/grafana_backup.rs, which uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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

#[derive(Default)]
struct Inner {
    folders: BTreeMap<String, FakeFolder>,
    dashboards: BTreeMap<String, FakeDashboard>,
    next_id: i64,
    next_version_id: i64,
    /// `Authorization` header values that are accepted.
    accepted: Vec<String>,
    faults: Faults,
    dashboard_gets: usize,
    mutations: usize,
    requests: usize,
    /// Requests with a method that can change state (anything but GET and
    /// HEAD), counted on arrival whether they succeed or not.
    writes: usize,
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

/// An error answer as Grafana shapes them.
type ApiError = (StatusCode, Value);

fn api_error(status: StatusCode, message: &str) -> ApiError {
    (status, json!({ "message": message }))
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
        let app = Router::new()
            .route("/api/search", get(search))
            .route("/api/folders", get(list_folders).post(create_folder))
            .route(
                "/api/folders/{uid}",
                get(get_folder).put(update_folder).delete(delete_folder),
            )
            .route("/api/folders/{uid}/move", post(move_folder))
            .route("/api/dashboards/db", post(save_dashboard))
            .route(
                "/api/dashboards/uid/{uid}",
                get(get_dashboard).delete(delete_dashboard),
            )
            .route("/api/dashboards/uid/{uid}/versions", get(versions))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                auth_and_latency,
            ))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
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

    /// Saves a dashboard directly, with `overwrite`, as a person in the UI
    /// would: it gets a new version. Not counted as an API mutation.
    pub fn put_dashboard(&self, uid: &str, title: &str, folder: Option<&str>, panels: Value) {
        let body = json!({
            "dashboard": { "id": null, "uid": uid, "title": title, "panels": panels, "schemaVersion": 39 },
            "folderUid": folder.unwrap_or(""),
            "overwrite": true,
        });
        self.lock().save_dashboard(&body).unwrap();
    }

    pub fn rename_folder(&self, uid: &str, title: &str) {
        self.lock().folders.get_mut(uid).unwrap().title = title.to_owned();
    }

    pub fn delete_dashboard(&self, uid: &str) {
        self.lock().dashboards.remove(uid);
    }

    /// Deletes every folder and dashboard, as a lost Grafana database would.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.folders.clear();
        s.dashboards.clear();
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

    /// Write requests (POST, PUT, DELETE, ...) seen, whatever their answer:
    /// a restore that must not write can be held to zero.
    pub fn writes(&self) -> usize {
        self.lock().writes
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

async fn auth_and_latency(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let (authorized, latency) = {
        let mut s = state.lock().unwrap();
        s.requests += 1;
        if !matches!(
            *request.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        ) {
            s.writes += 1;
        }
        let given = request
            .headers()
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
    if !authorized {
        return reply(Err(api_error(StatusCode::UNAUTHORIZED, "Unauthorized")));
    }
    next.run(request).await
}

fn reply(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err((status, body)) => (status, Json(body)).into_response(),
    }
}

type Params = Query<HashMap<String, String>>;

fn paging(params: &HashMap<String, String>) -> (usize, usize) {
    let limit = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(1000usize)
        .min(5000);
    let page = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(1usize);
    (limit, page)
}

async fn search(State(state): State<Shared>, Query(params): Params) -> Response {
    let mut s = state.lock().unwrap();
    let (limit, page) = paging(&params);
    let kind = params.get("type").map(String::as_str);
    let query = params.get("query").map(|q| q.to_lowercase());
    let matches = |title: &str| {
        query
            .as_ref()
            .is_none_or(|q| title.to_lowercase().contains(q))
    };
    let mut hits: Vec<(String, Value)> = Vec::new();
    if kind != Some("dash-db") {
        for f in s.folders.values().filter(|f| matches(&f.title)) {
            hits.push((
                format!("0{}\0{}", f.title.to_lowercase(), f.uid),
                json!({ "id": f.id, "uid": f.uid, "title": f.title, "type": "dash-folder",
                        "url": format!("/dashboards/f/{}/", f.uid), "tags": [], "isStarred": false }),
            ));
        }
    }
    if kind != Some("dash-folder") {
        for d in s.dashboards.values() {
            if s.faults.hide_from_search.contains(&d.uid) || !matches(&d.title) {
                continue;
            }
            let mut hit = json!({
                "id": d.id, "uid": d.uid, "title": d.title, "type": "dash-db",
                "uri": format!("db/{}", slug(&d.title)),
                "url": format!("/d/{}/{}", d.uid, slug(&d.title)),
                "slug": "", "tags": [], "isStarred": false,
            });
            if let Some(folder) = d.folder_uid.as_ref().and_then(|f| s.folders.get(f)) {
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
    for uid in std::mem::take(&mut s.faults.delete_after_search) {
        s.dashboards.remove(&uid);
    }
    Json(Value::Array(page)).into_response()
}

async fn list_folders(State(state): State<Shared>, Query(params): Params) -> Response {
    let s = state.lock().unwrap();
    let (limit, page) = paging(&params);
    let parent = params.get("parentUid").filter(|p| !p.is_empty());
    if let Some(p) = parent
        && !s.folders.contains_key(p)
    {
        return reply(Err(api_error(StatusCode::NOT_FOUND, "folder not found")));
    }
    let mut children: Vec<&FakeFolder> = s
        .folders
        .values()
        .filter(|f| f.parent_uid.as_ref() == parent)
        .collect();
    children
        .sort_by(|a, b| (a.title.to_lowercase(), &a.uid).cmp(&(b.title.to_lowercase(), &b.uid)));
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
    Json(Value::Array(page)).into_response()
}

async fn get_folder(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    let s = state.lock().unwrap();
    reply(
        s.folders
            .get(&uid)
            .map(|f| s.folder_json(f))
            .ok_or_else(|| api_error(StatusCode::NOT_FOUND, "folder not found")),
    )
}

async fn create_folder(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    let result = s.create_folder(&body);
    s.count(&result);
    reply(result)
}

async fn update_folder(
    State(state): State<Shared>,
    Path(uid): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    let result = s.update_folder(&uid, &body);
    s.count(&result);
    reply(result)
}

async fn move_folder(
    State(state): State<Shared>,
    Path(uid): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut s = state.lock().unwrap();
    let result = s.move_folder(&uid, &body);
    s.count(&result);
    reply(result)
}

async fn delete_folder(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    let Some(folder) = s.folders.get(&uid).cloned() else {
        return reply(Err(api_error(StatusCode::NOT_FOUND, "folder not found")));
    };
    // Grafana deletes the subtree and the dashboards in it.
    let doomed = s.subtree(&uid);
    s.folders.retain(|k, _| !doomed.contains(k));
    s.dashboards
        .retain(|_, d| !d.folder_uid.as_ref().is_some_and(|f| doomed.contains(f)));
    s.mutations += 1;
    reply(Ok(
        json!({ "message": "Folder deleted", "title": folder.title, "id": folder.id }),
    ))
}

async fn get_dashboard(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    s.dashboard_gets += 1;
    let n = s.dashboard_gets;
    let f = &s.faults;
    if f.fail_count > 0 && n >= f.fail_from && n - f.fail_from < f.fail_count {
        return reply(Err(api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
        )));
    }
    let Some(d) = s.dashboards.get(&uid) else {
        return reply(Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found")));
    };
    let folder = d.folder_uid.as_ref().and_then(|f| s.folders.get(f));
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
    reply(Ok(json!({ "dashboard": d.model, "meta": meta })))
}

async fn save_dashboard(State(state): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = state.lock().unwrap();
    let result = s.save_dashboard(&body);
    s.count(&result);
    reply(result)
}

async fn delete_dashboard(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    let mut s = state.lock().unwrap();
    match s.dashboards.remove(&uid) {
        Some(d) => {
            s.mutations += 1;
            reply(Ok(json!({
                "title": d.title, "id": d.id,
                "message": format!("Dashboard {} deleted", d.title),
            })))
        }
        None => reply(Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found"))),
    }
}

async fn versions(State(state): State<Shared>, Path(uid): Path<String>) -> Response {
    let s = state.lock().unwrap();
    match s.dashboards.get(&uid) {
        Some(d) => {
            let newest_first: Vec<Value> = d.versions.iter().rev().cloned().collect();
            reply(Ok(json!({ "continueToken": "", "versions": newest_first })))
        }
        None => reply(Err(api_error(StatusCode::NOT_FOUND, "Dashboard not found"))),
    }
}

impl Inner {
    fn count(&mut self, result: &Result<Value, ApiError>) {
        if result.is_ok() {
            self.mutations += 1;
        }
    }

    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
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
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "folder title cannot be empty",
            ));
        }
        let parent = body["parentUid"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        if let Some(p) = &parent
            && !self.folders.contains_key(p)
        {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        }
        let uid = match body["uid"].as_str().filter(|u| !u.is_empty()) {
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
        self.folders.insert(uid, folder);
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
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "folder title cannot be empty",
            ));
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
        let parent = body["parentUid"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        if let Some(p) = &parent
            && !self.folders.contains_key(p)
        {
            return Err(api_error(StatusCode::NOT_FOUND, "folder not found"));
        }
        if parent
            .as_ref()
            .is_some_and(|p| self.subtree(uid).contains(p))
        {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
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

    /// `POST /api/dashboards/db` as Grafana's dashboard service does it.
    fn save_dashboard(&mut self, body: &Value) -> Result<Value, ApiError> {
        let Some(mut model) = body.get("dashboard").filter(|d| d.is_object()).cloned() else {
            return Err(api_error(StatusCode::BAD_REQUEST, "bad request data"));
        };
        let title = model["title"].as_str().unwrap_or("").trim().to_owned();
        if title.is_empty() {
            return Err(api_error(
                StatusCode::BAD_REQUEST,
                "Dashboard title cannot be empty",
            ));
        }
        let overwrite = body["overwrite"].as_bool().unwrap_or(false);
        let folder = body["folderUid"]
            .as_str()
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        if let Some(f) = &folder
            && !self.folders.contains_key(f)
        {
            return Err(api_error(StatusCode::BAD_REQUEST, "folder not found"));
        }
        let id = model["id"].as_i64().filter(|i| *i != 0);
        let mut uid = model["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
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
                return Err(api_error(
                    StatusCode::BAD_REQUEST,
                    "A dashboard with the same uid already exists",
                ));
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
