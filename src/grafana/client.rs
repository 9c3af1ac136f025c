//! A small client for the parts of Grafana's HTTP API that backup and
//! restore need: search, folders (nested, by `parentUid`) and their
//! permissions, dashboards, datasources, library panels and the alerting
//! provisioning API.
//!
//! Every request has a timeout and is retried with exponential backoff and
//! jitter on connection errors, timeouts and 5xx, because a Grafana that is
//! restarting or briefly overloaded should not fail a nightly backup. 4xx is
//! never retried: the answer would not change.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use super::GrafanaError;

type Result<T, E = GrafanaError> = std::result::Result<T, E>;

/// Grafana's default and documented page size for search and folders.
const DEFAULT_PAGE_SIZE: usize = 1000;

/// Largest answer read from Grafana. A dashboard of thousands of panels is a
/// few MiB; a bigger answer is not one Grafana gives, and is not read.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;

/// How to authenticate. `Debug` never shows the secret.
#[derive(Clone)]
pub enum Auth {
    /// A service-account token, sent as `Authorization: Bearer`.
    Token(String),
    /// HTTP basic auth, for setups without service accounts.
    Basic {
        /// The Grafana user.
        username: String,
        /// Its password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Auth {
    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        // Both helpers mark the header as sensitive, so reqwest's own
        // debug output does not show it either.
        match self {
            Auth::Token(token) => request.bearer_auth(token),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        }
    }
}

/// A folder as backed up: enough to recreate it in the same place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Folder {
    /// Stable identity; restore recreates the folder under the same uid so
    /// dashboards and links keep pointing at it.
    pub uid: String,
    /// Shown in Grafana's UI.
    pub title: String,
    /// `None` for a top-level folder. Grafana sends `""` or omits the field
    /// for those; both become `None`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub parent_uid: Option<String>,
}

/// One `/api/search` result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    /// The dashboard uid, what the dashboard API is keyed by.
    pub uid: String,
    /// Its title.
    pub title: String,
    /// `None` for the General (root) folder.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub folder_uid: Option<String>,
}

/// `GET /api/dashboards/uid/:uid`'s answer, kept whole so a backup holds
/// everything Grafana returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardDoc {
    /// The dashboard model (what Grafana's "export JSON" shows).
    pub dashboard: Value,
    /// Grafana's metadata; `meta.folderUid` says where the dashboard lives.
    #[serde(default)]
    pub meta: Value,
}

impl DashboardDoc {
    /// `None` for the General (root) folder.
    pub fn folder_uid(&self) -> Option<&str> {
        self.meta
            .get("folderUid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The dashboard's uid (empty if the model lacks one).
    pub fn uid(&self) -> &str {
        self.dashboard
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The dashboard's title.
    pub fn title(&self) -> &str {
        self.dashboard
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The version Grafana stored it as.
    pub fn version(&self) -> Option<i64> {
        self.dashboard.get("version").and_then(Value::as_i64)
    }
}

/// The answer to a request whose body was read completely, so the body read
/// is covered by the request's timeout and retries.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

/// A Grafana HTTP API client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Always ends with `/` so joining `api/...` keeps any sub-path
    /// (Grafana served under `/grafana/`).
    base: Url,
    auth: Auth,
    /// How the credentials were obtained, for error messages.
    auth_label: String,
    timeout: Duration,
    max_tries: usize,
    min_delay: Duration,
    page_size: usize,
    /// Answers longer than this are refused, never buffered whole.
    max_body: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("auth", &self.auth)
            .field("auth_label", &self.auth_label)
            .field("timeout", &self.timeout)
            .field("max_tries", &self.max_tries)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for Grafana at `base_url`.
    ///
    /// `auth_label` says where the credentials came from ("service-account
    /// token from ~/.config/grafana-token", "basic auth as admin (password
    /// from FILE)"); it is what 401/403 errors show instead of the secret.
    ///
    /// # Errors
    /// [`GrafanaError::InvalidUrl`] for a URL that is not http(s) or that
    /// embeds credentials (they would end up in every error message);
    /// [`GrafanaError::Setup`] if the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        auth: Auth,
        auth_label: impl Into<String>,
        timeout: Duration,
    ) -> Result<Client> {
        let invalid = |reason: &str| GrafanaError::InvalidUrl {
            url: crate::http::redact_url(base_url),
            reason: reason.to_owned(),
        };
        let base = crate::http::base_url(base_url).map_err(|e| match e {
            crate::http::BaseUrlError::Invalid(r) => invalid(&r),
            crate::http::BaseUrlError::Credentials => invalid(
                "credentials in the URL would show up in logs; use grafana.tokenFile or grafana.basicAuth",
            ),
        })?;
        let http = crate::http::client_builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|source| GrafanaError::Setup { source })?;
        Ok(Client {
            http,
            base,
            auth,
            auth_label: auth_label.into(),
            timeout,
            max_tries: 4,
            min_delay: Duration::from_millis(250),
            page_size: DEFAULT_PAGE_SIZE,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Sets how many times a request is tried in all (at least 1) and the
    /// first backoff delay; tests use short delays.
    pub fn with_retry(mut self, max_tries: usize, min_delay: Duration) -> Client {
        self.max_tries = max_tries.max(1);
        self.min_delay = min_delay;
        self
    }

    /// Sets the page size for search and folder listing (at least 1).
    pub fn with_page_size(mut self, page_size: usize) -> Client {
        self.page_size = page_size.max(1);
        self
    }

    /// Sets the largest answer read (default [`DEFAULT_MAX_BODY`]).
    pub fn with_max_body(mut self, bytes: u64) -> Client {
        self.max_body = bytes;
        self
    }

    /// The base URL, as recorded as a set's source.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Every dashboard `/api/search` lists, deduplicated by uid.
    ///
    /// Pages until a short page: Grafana has no total count, and a full last
    /// page costs one extra empty request only.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn search_dashboards(&self) -> Result<Vec<SearchHit>> {
        let mut seen = BTreeSet::new();
        let mut hits = Vec::new();
        for page in 1.. {
            let query = [
                ("type", "dash-db".to_owned()),
                ("limit", self.page_size.to_string()),
                ("page", page.to_string()),
            ];
            let batch: Vec<SearchHit> = self.get_json("api/search", &query).await?;
            let short = batch.len() < self.page_size;
            // Pages can shift while we read them; a uid seen twice is kept once.
            hits.extend(batch.into_iter().filter(|h| seen.insert(h.uid.clone())));
            if short {
                break;
            }
        }
        Ok(hits)
    }

    /// The folders directly inside `parent_uid` (top level for `None`).
    ///
    /// # Errors
    /// Any request failure.
    pub async fn child_folders(&self, parent_uid: Option<&str>) -> Result<Vec<Folder>> {
        #[derive(Deserialize)]
        struct Listed {
            uid: String,
            title: String,
        }
        let mut out = Vec::new();
        for page in 1.. {
            let mut query = vec![
                ("limit", self.page_size.to_string()),
                ("page", page.to_string()),
            ];
            if let Some(parent) = parent_uid {
                query.push(("parentUid", parent.to_owned()));
            }
            let batch: Vec<Listed> = self.get_json("api/folders", &query).await?;
            let short = batch.len() < self.page_size;
            out.extend(batch.into_iter().map(|f| Folder {
                uid: f.uid,
                title: f.title,
                parent_uid: parent_uid.map(str::to_owned),
            }));
            if short {
                break;
            }
        }
        Ok(out)
    }

    /// Every folder, walked from the top by `parentUid`, parents before
    /// children.
    ///
    /// # Caveats
    /// A Grafana without nested folders ignores `parentUid` and lists the
    /// top level again; folders already seen are skipped, so the walk still
    /// ends and yields each folder once, at the top level.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn all_folders(&self) -> Result<Vec<Folder>> {
        let mut seen = BTreeSet::new();
        let mut out: Vec<Folder> = Vec::new();
        let mut next = 0;
        for folder in self.child_folders(None).await? {
            if seen.insert(folder.uid.clone()) {
                out.push(folder);
            }
        }
        while next < out.len() {
            let parent = out[next].uid.clone();
            next += 1;
            for folder in self.child_folders(Some(&parent)).await? {
                if seen.insert(folder.uid.clone()) {
                    out.push(folder);
                }
            }
        }
        Ok(out)
    }

    /// The folder with `uid`, or `None` if there is none.
    ///
    /// # Errors
    /// Any request failure but 404.
    pub async fn folder(&self, uid: &str) -> Result<Option<Folder>> {
        self.get_optional(&format!("api/folders/{}", path_segment(checked_uid(uid)?)))
            .await
    }

    /// Creates `folder` under its uid and parent.
    ///
    /// # Errors
    /// Any request failure, e.g. 409 when the uid or the title (in that
    /// parent) is taken.
    pub async fn create_folder(&self, folder: &Folder) -> Result<()> {
        let mut body = json!({ "uid": folder.uid, "title": folder.title });
        if let Some(parent) = &folder.parent_uid {
            body["parentUid"] = json!(parent);
        }
        self.send_json(Method::POST, "api/folders", &body).await
    }

    /// Renames folder `uid`. `overwrite` makes Grafana skip its version
    /// check: restore means "make it as in the backup".
    ///
    /// # Errors
    /// Any request failure.
    pub async fn rename_folder(&self, uid: &str, title: &str) -> Result<()> {
        let body = json!({ "title": title, "overwrite": true });
        let path = format!("api/folders/{}", path_segment(checked_uid(uid)?));
        self.send_json(Method::PUT, &path, &body).await
    }

    /// Moves folder `uid` under `parent_uid` (top level for `None`).
    ///
    /// # Errors
    /// Any request failure.
    pub async fn move_folder(&self, uid: &str, parent_uid: Option<&str>) -> Result<()> {
        let body = json!({ "parentUid": parent_uid.unwrap_or("") });
        let path = format!("api/folders/{}/move", path_segment(checked_uid(uid)?));
        self.send_json(Method::POST, &path, &body).await
    }

    /// The dashboard with `uid` and its metadata, or `None` if there is
    /// none (it may have been deleted since it was listed).
    ///
    /// # Errors
    /// Any request failure but 404.
    pub async fn dashboard(&self, uid: &str) -> Result<Option<DashboardDoc>> {
        self.get_optional(&format!(
            "api/dashboards/uid/{}",
            path_segment(checked_uid(uid)?)
        ))
        .await
    }

    /// Saves `model` into `folder_uid` with `overwrite: true`, creating or
    /// replacing the dashboard with the model's uid. The model's `id` is
    /// nulled: ids differ between Grafana instances, uids do not.
    ///
    /// # Errors
    /// Any request failure; a 412 carries Grafana's `status`
    /// (`name-exists`, ...) in [`GrafanaError::grafana_status`].
    pub async fn save_dashboard(
        &self,
        model: &Value,
        folder_uid: Option<&str>,
        message: &str,
    ) -> Result<Option<i64>> {
        let mut model = model.clone();
        if let Some(obj) = model.as_object_mut() {
            obj.insert("id".to_owned(), Value::Null);
        }
        let body = json!({
            "dashboard": model,
            "folderUid": folder_uid.unwrap_or(""),
            "overwrite": true,
            "message": message,
        });
        let url = self.url("api/dashboards/db", &[]);
        let reply = self.call(Method::POST, &url, Some(&body)).await?;
        self.check(&Method::POST, &url, &reply)?;
        let answer: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        Ok(answer.get("version").and_then(Value::as_i64))
    }

    /// The direct permission items of folder `uid`, as Grafana lists them.
    ///
    /// # Errors
    /// Any request failure (404 when the folder is gone).
    pub async fn folder_permissions(&self, uid: &str) -> Result<Vec<Value>> {
        let path = format!(
            "api/folders/{}/permissions",
            path_segment(checked_uid(uid)?)
        );
        self.get_json(&path, &[]).await
    }

    /// Replaces every direct permission of folder `uid` with `items`.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn set_folder_permissions(&self, uid: &str, items: &[Value]) -> Result<()> {
        let path = format!(
            "api/folders/{}/permissions",
            path_segment(checked_uid(uid)?)
        );
        self.send_json(Method::POST, &path, &json!({ "items": items }))
            .await
    }

    /// `GET /api/datasources`: every datasource, as list items (a subset of
    /// the fields; no `secureJsonFields`).
    ///
    /// # Errors
    /// Any request failure.
    pub async fn datasources(&self) -> Result<Vec<Value>> {
        self.get_json("api/datasources", &[]).await
    }

    /// One datasource with every field Grafana shows, or `None`.
    ///
    /// # Errors
    /// Any request failure but 404.
    pub async fn datasource(&self, uid: &str) -> Result<Option<Value>> {
        self.get_optional(&format!(
            "api/datasources/uid/{}",
            path_segment(checked_uid(uid)?)
        ))
        .await
    }

    /// Creates a datasource (`body` may carry `secureJsonData`).
    ///
    /// # Errors
    /// Any request failure, e.g. 409 when the name is taken.
    pub async fn create_datasource(&self, body: &Value) -> Result<()> {
        self.send_json(Method::POST, "api/datasources", body).await
    }

    /// Replaces datasource `uid`; secure values not sent are kept.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn update_datasource(&self, uid: &str, body: &Value) -> Result<()> {
        let path = format!("api/datasources/uid/{}", path_segment(checked_uid(uid)?));
        self.send_json(Method::PUT, &path, body).await
    }

    /// Every library panel (`kind=1`), paged.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn library_panels(&self) -> Result<Vec<Value>> {
        let mut out: Vec<Value> = Vec::new();
        for page in 1.. {
            let query = [
                ("kind", "1".to_owned()),
                ("perPage", self.page_size.to_string()),
                ("page", page.to_string()),
            ];
            let answer: Value = self.get_json("api/library-elements", &query).await?;
            let result = &answer["result"];
            let batch = result["elements"].as_array().cloned().unwrap_or_default();
            let total = result["totalCount"].as_u64().unwrap_or(0) as usize;
            let short = batch.len() < self.page_size;
            out.extend(batch);
            if short || out.len() >= total {
                break;
            }
        }
        Ok(out)
    }

    /// Creates a library element.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn create_library_element(&self, body: &Value) -> Result<()> {
        self.send_json(Method::POST, "api/library-elements", body)
            .await
    }

    /// Updates library element `uid`; `body.version` must be the current one.
    ///
    /// # Errors
    /// Any request failure (412 on a version mismatch).
    pub async fn update_library_element(&self, uid: &str, body: &Value) -> Result<()> {
        let path = format!("api/library-elements/{}", path_segment(checked_uid(uid)?));
        self.send_json(Method::PATCH, &path, body).await
    }

    /// A provisioning API listing (`alert-rules`, `contact-points`,
    /// `policies`, `mute-timings`, `templates`), or `None` when this Grafana
    /// has no such endpoint (404).
    ///
    /// # Errors
    /// Any request failure but 404.
    pub async fn provisioning(&self, what: &str) -> Result<Option<Value>> {
        self.get_optional(&format!("api/v1/provisioning/{what}"))
            .await
    }

    /// Rule group `group` of folder `folder`, or `None`.
    ///
    /// # Errors
    /// Any request failure but 404.
    pub async fn rule_group(&self, folder: &str, group: &str) -> Result<Option<Value>> {
        self.get_optional(&rule_group_path(folder, group)?).await
    }

    /// Replaces rule group `group` of `folder` with `body`
    /// (`{title, folderUid, interval, rules}`).
    ///
    /// # Errors
    /// Any request failure.
    pub async fn put_rule_group(&self, folder: &str, group: &str, body: &Value) -> Result<()> {
        self.send_json(Method::PUT, &rule_group_path(folder, group)?, body)
            .await
    }

    /// Creates (`key` `None`) or replaces (`key` the uid or name) one
    /// provisioned object of `what` (`alert-rules`, `contact-points`,
    /// `mute-timings`, `templates`), or the policy tree (`policies`, `key`
    /// `None`, PUT). Sent with `X-Disable-Provenance: true`, so what is
    /// restored stays editable in Grafana's UI.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn provision(&self, what: &str, key: Option<&str>, body: &Value) -> Result<()> {
        match key {
            Some(key) => {
                let path = format!(
                    "api/v1/provisioning/{what}/{}",
                    path_segment(checked_uid(key)?)
                );
                self.send_json(Method::PUT, &path, body).await
            }
            None if what == "policies" || what == "templates" => {
                self.send_json(Method::PUT, &format!("api/v1/provisioning/{what}"), body)
                    .await
            }
            None => {
                self.send_json(Method::POST, &format!("api/v1/provisioning/{what}"), body)
                    .await
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let url = self.url(path, query);
        let reply = self.call(Method::GET, &url, None).await?;
        self.check(&Method::GET, &url, &reply)?;
        self.decode(&Method::GET, &url, &reply)
    }

    async fn get_optional<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let url = self.url(path, &[]);
        let reply = self.call(Method::GET, &url, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.check(&Method::GET, &url, &reply)?;
        self.decode(&Method::GET, &url, &reply).map(Some)
    }

    async fn send_json(&self, method: Method, path: &str, body: &Value) -> Result<()> {
        let url = self.url(path, &[]);
        let reply = self.call(method.clone(), &url, Some(body)).await?;
        self.check(&method, &url, &reply)
    }

    #[expect(
        clippy::expect_used,
        reason = "API paths are relative paths (uids percent-encoded), which always join"
    )]
    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self
            .base
            .join(path)
            .expect("API paths are valid relative URLs");
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One logical request with retries; the reply may still be a 4xx.
    async fn call(&self, method: Method, url: &Url, body: Option<&Value>) -> Result<Reply> {
        let attempt = || async {
            let mut request = self
                .auth
                .apply(self.http.request(method.clone(), url.clone()));
            if let Some(body) = body {
                request = request.json(body);
            }
            // Alerting restored without provenance stays editable in the UI.
            if method != Method::GET && url.path().contains("/api/v1/provisioning/") {
                request = request.header("X-Disable-Provenance", "true");
            }
            let transport = |e| self.transport_error(&method, url, e);
            let mut response = request.send().await.map_err(transport)?;
            let status = response.status();
            let too_large = || GrafanaError::TooLarge {
                method: method.to_string(),
                url: url.to_string(),
                base: self.base_url().to_owned(),
                limit: self.max_body,
            };
            let body = crate::http::read_body(&mut response, self.max_body)
                .await
                .map_err(|e| match e {
                    crate::http::BodyError::TooLarge { .. } => too_large(),
                    crate::http::BodyError::Transport(e) => transport(e),
                })?;
            // Method, URL and status only: headers carry the credentials.
            tracing::debug!(%method, %url, status = status.as_u16(), "Grafana request");
            let reply = Reply { status, body };
            if status.is_server_error() {
                return Err(self.status_error(&method, url, &reply));
            }
            Ok(reply)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.min_delay * 16)
            .with_max_times(self.max_tries - 1)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(GrafanaError::is_transient)
            .notify(|err, delay| {
                tracing::warn!(error = %err, retry_in = ?delay, "Grafana request failed, retrying");
            })
            .await
    }

    fn check(&self, method: &Method, url: &Url, reply: &Reply) -> Result<()> {
        match reply.status {
            s if s.is_success() => Ok(()),
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(GrafanaError::Unauthorized {
                    method: method.to_string(),
                    url: url.to_string(),
                    base: self.base_url().to_owned(),
                    status: s,
                    auth_label: self.auth_label.clone(),
                })
            }
            _ => Err(self.status_error(method, url, reply)),
        }
    }

    fn status_error(&self, method: &Method, url: &Url, reply: &Reply) -> GrafanaError {
        let parsed: Option<Value> = serde_json::from_slice(&reply.body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let message = field("message").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&reply.body);
            let text = text.trim();
            if text.is_empty() {
                "(empty response)".to_owned()
            } else {
                text.chars().take(200).collect()
            }
        });
        GrafanaError::Status {
            method: method.to_string(),
            url: url.to_string(),
            status: reply.status,
            message,
            grafana_status: field("status"),
        }
    }

    fn decode<T: DeserializeOwned>(&self, method: &Method, url: &Url, reply: &Reply) -> Result<T> {
        serde_json::from_slice(&reply.body).map_err(|source| GrafanaError::Decode {
            method: method.to_string(),
            url: url.to_string(),
            base: self.base_url().to_owned(),
            source,
        })
    }

    fn transport_error(&self, method: &Method, url: &Url, source: reqwest::Error) -> GrafanaError {
        let (method, url, base) = (
            method.to_string(),
            url.to_string(),
            self.base_url().to_owned(),
        );
        if source.is_timeout() {
            GrafanaError::Timeout {
                method,
                url,
                base,
                timeout: self.timeout,
            }
        } else if source.is_connect() {
            GrafanaError::Connect {
                method,
                url,
                base,
                source,
            }
        } else {
            GrafanaError::Request {
                method,
                url,
                source,
            }
        }
    }
}

/// Refuses the uids that would make a URL point at another resource: `.`
/// and `..` are resolved as path steps even when percent-encoded.
fn checked_uid(uid: &str) -> Result<&str> {
    if uid.is_empty() || uid.trim_matches('.').is_empty() {
        return Err(GrafanaError::InvalidUid {
            uid: uid.to_owned(),
        });
    }
    Ok(uid)
}

fn rule_group_path(folder: &str, group: &str) -> Result<String> {
    if group.is_empty() {
        return Err(GrafanaError::InvalidUid {
            uid: group.to_owned(),
        });
    }
    Ok(format!(
        "api/v1/provisioning/folder/{}/rule-groups/{}",
        path_segment(checked_uid(folder)?),
        path_segment(group)
    ))
}

/// Percent-encodes a uid for use as one path segment, so a uid can never
/// add segments or a query to the URL.
fn path_segment(uid: &str) -> String {
    let mut out = String::with_capacity(uid.len());
    for b in uid.bytes() {
        if b.is_ascii_alphanumeric() || b"-_~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let token = Auth::Token("glsa_secret123".into());
        let basic = Auth::Basic {
            username: "admin".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{token:?}").contains("secret123"));
        let shown = format!("{basic:?}");
        assert!(
            shown.contains("admin") && !shown.contains("hunter2"),
            "{shown}"
        );
        let client = Client::new(
            "http://127.0.0.1:3000",
            token,
            "token from f",
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("secret123"));
    }

    #[test]
    fn base_url_keeps_a_sub_path_and_refuses_credentials() {
        let auth = Auth::Token("t".into());
        let t = Duration::from_secs(1);
        let client = Client::new("http://h:3000/grafana", auth.clone(), "l", t).unwrap();
        assert_eq!(client.base_url(), "http://h:3000/grafana");
        assert_eq!(
            client.url("api/search", &[("page", "2".into())]).as_str(),
            "http://h:3000/grafana/api/search?page=2"
        );
        let err = Client::new("http://admin:pw1234@h:3000", auth.clone(), "l", t).unwrap_err();
        assert!(!err.to_string().contains("pw1234"), "{err}");
        assert!(Client::new("ftp://h", auth.clone(), "l", t).is_err());
        assert!(Client::new("not a url", auth, "l", t).is_err());
    }

    #[test]
    fn uids_cannot_escape_their_path_segment() {
        assert_eq!(path_segment("abc-_9"), "abc-_9");
        assert_eq!(path_segment("a/x?y"), "a%2Fx%3Fy");
        assert!(checked_uid("..").is_err() && checked_uid("").is_err());
    }

    #[test]
    fn empty_parent_uid_means_top_level() {
        let f: Folder = serde_json::from_str(r#"{"uid":"a","title":"A","parentUid":""}"#).unwrap();
        assert_eq!(f.parent_uid, None);
        let f: Folder = serde_json::from_str(r#"{"uid":"b","title":"B","parentUid":"a"}"#).unwrap();
        assert_eq!(f.parent_uid.as_deref(), Some("a"));
    }
}
