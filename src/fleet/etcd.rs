//! The small etcd v3 client the fleet needs, over etcd's JSON gateway.
//!
//! etcd (3.4 and later) serves its v3 API as JSON over HTTP on the client
//! URL (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, `/v3/lease/...`),
//! next to gRPC. Speaking that over the HTTP client unitlet already has
//! keeps the build free of protobuf code generation (no `protoc`), and of a
//! gRPC stack. Keys and values travel base64-encoded, 64-bit integers as
//! decimal strings (the protobuf JSON mapping); fields at their default
//! value are omitted by etcd, so every field here has a default.
//!
//! The API mirrors the subset of the `etcd-client` crate that unitlet used:
//! ranges, puts, transactions with compares, prefix watches resumed from a
//! revision, and leases with keep-alives. Streams (`/v3/watch`,
//! `/v3/lease/keepalive`) answer newline-delimited `{"result": …}` or
//! `{"error": …}` objects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::BodyLines;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

/// A failed etcd request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The member could not be reached or the connection broke.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// An answer (or one line of a stream) was larger than
    /// [`MAX_ANSWER`], or broke off while read.
    #[error(transparent)]
    Body(#[from] crate::http::BodyError),
    /// etcd answered with an error (no leader, permission denied, …).
    #[error("etcd answered: {message} (gRPC code {code})")]
    Status {
        /// The gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// The answer was not what the v3 JSON API sends.
    #[error("unexpected answer from etcd: {0}")]
    Decode(String),
    /// Unusable options (a certificate that does not parse, an endpoint that
    /// is not a URL).
    #[error("{0}")]
    InvalidArgs(String),
}

/// The most read of one answer: a unary call's body, or one line of a
/// stream. Far above what a fleet's manifests take (a snapshot is every
/// manifest, base64-encoded, in one answer), low enough that a broken
/// member or gateway cannot take the host's memory.
pub const MAX_ANSWER: u64 = 256 << 20;

/// The most read of an error answer to a watch (its message is all we use).
const MAX_ERROR_ANSWER: u64 = 64 << 10;

/// gRPC's code for an expired or unknown auth token.
const UNAUTHENTICATED: i64 = 16;

/// A PEM CA certificate that signed the members' certificates.
#[derive(Debug, Clone)]
pub struct Certificate(Vec<u8>);

impl Certificate {
    /// The certificate from its PEM text.
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Certificate {
        Certificate(pem.into())
    }
}

/// A PEM client certificate and its key.
#[derive(Debug, Clone)]
pub struct Identity {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Identity {
    /// The identity from the PEM texts of the certificate and of its key.
    pub fn from_pem(cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Identity {
        Identity {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// TLS settings: which CA to trust (only it, when given) and a client identity.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    ca: Option<Certificate>,
    identity: Option<Identity>,
}

impl TlsOptions {
    /// No CA of its own (the system's roots) and no client identity.
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }
    /// Trust only `ca` for the members' certificates.
    pub fn ca_certificate(mut self, ca: Certificate) -> TlsOptions {
        self.ca = Some(ca);
        self
    }
    /// Present `id` to the members (client certificate authentication).
    pub fn identity(mut self, id: Identity) -> TlsOptions {
        self.identity = Some(id);
        self
    }
}

/// How to connect: timeouts, TCP keep-alive, credentials, TLS.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    connect_timeout: Duration,
    timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    require_leader: bool,
    user: Option<(String, String)>,
    tls: Option<TlsOptions>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            keep_alive: None,
            require_leader: false,
            user: None,
            tls: None,
        }
    }
}

impl ConnectOptions {
    /// The defaults: 5 s to connect, 10 s per request, no keep-alive,
    /// no credentials, no TLS settings.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }
    /// How long to wait for a connection to a member.
    pub fn with_connect_timeout(mut self, t: Duration) -> ConnectOptions {
        self.connect_timeout = t;
        self
    }
    /// The deadline of each unary request (not of a watch stream).
    pub fn with_timeout(mut self, t: Duration) -> ConnectOptions {
        self.timeout = t;
        self
    }
    /// TCP keep-alive probes every `interval`; a peer that answers none
    /// within `timeout` breaks the connection (and so a watch).
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> ConnectOptions {
        self.keep_alive = Some((interval, timeout));
        self
    }
    /// Refuse answers from a member that has no leader.
    pub fn with_require_leader(mut self, on: bool) -> ConnectOptions {
        self.require_leader = on;
        self
    }
    /// Authenticate as `name` with `password` (etcd's auth API); the
    /// token is renewed when etcd says it expired.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }
    /// Connect over TLS with these settings.
    pub fn with_tls(mut self, tls: TlsOptions) -> ConnectOptions {
        self.tls = Some(tls);
        self
    }
}

/// Range options: a prefix instead of one key, or only the count.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    prefix: bool,
    count_only: bool,
}

impl GetOptions {
    /// One key, its value.
    pub fn new() -> GetOptions {
        GetOptions::default()
    }
    /// Every key that starts with the key given.
    pub fn with_prefix(mut self) -> GetOptions {
        self.prefix = true;
        self
    }
    /// Only the number of keys, no values.
    pub fn with_count_only(mut self) -> GetOptions {
        self.count_only = true;
        self
    }
}

/// Put options: the lease the key lives under.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    lease: i64,
}

impl PutOptions {
    /// No lease: the key lives until deleted.
    pub fn new() -> PutOptions {
        PutOptions::default()
    }
    /// The key is deleted when lease `lease` expires or is revoked.
    pub fn with_lease(mut self, lease: i64) -> PutOptions {
        self.lease = lease;
        self
    }
}

/// Delete options: a prefix instead of one key.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    prefix: bool,
}

impl DeleteOptions {
    /// One key.
    pub fn new() -> DeleteOptions {
        DeleteOptions::default()
    }
    /// Every key that starts with the key given.
    pub fn with_prefix(mut self) -> DeleteOptions {
        self.prefix = true;
        self
    }
}

/// Watch options: a prefix, and the revision to start from.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    prefix: bool,
    start_revision: i64,
}

impl WatchOptions {
    /// One key, from the next change on.
    pub fn new() -> WatchOptions {
        WatchOptions::default()
    }
    /// Every key that starts with the key given.
    pub fn with_prefix(mut self) -> WatchOptions {
        self.prefix = true;
        self
    }
    /// Changes from revision `rev` on (inclusive), so a watch can resume
    /// where a read left off.
    pub fn with_start_revision(mut self, rev: i64) -> WatchOptions {
        self.start_revision = rev;
        self
    }
}

/// The end of the range of keys starting with `key` (etcd's `range_end`).
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

fn range_request(key: Vec<u8>, opts: Option<GetOptions>) -> Value {
    let opts = opts.unwrap_or_default();
    let mut r = json!({ "key": B64.encode(&key) });
    if opts.prefix {
        r["range_end"] = B64.encode(prefix_end(&key)).into();
    }
    if opts.count_only {
        r["count_only"] = true.into();
    }
    r
}

fn put_request(key: Vec<u8>, value: Vec<u8>, opts: Option<PutOptions>) -> Value {
    let mut r = json!({ "key": B64.encode(key), "value": B64.encode(value) });
    if let Some(o) = opts
        && o.lease != 0
    {
        r["lease"] = o.lease.to_string().into();
    }
    r
}

fn delete_request(key: Vec<u8>, opts: Option<DeleteOptions>) -> Value {
    let mut r = json!({ "key": B64.encode(&key) });
    if opts.is_some_and(|o| o.prefix) {
        r["range_end"] = B64.encode(prefix_end(&key)).into();
    }
    r
}

/// How a compare relates the key's field to the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `>`
    Greater,
    /// `<`
    Less,
    /// `!=`
    NotEqual,
}

impl CompareOp {
    fn name(self) -> &'static str {
        match self {
            CompareOp::Equal => "EQUAL",
            CompareOp::Greater => "GREATER",
            CompareOp::Less => "LESS",
            CompareOp::NotEqual => "NOT_EQUAL",
        }
    }
}

/// A transaction's condition on one key.
#[derive(Debug, Clone)]
pub struct Compare(Value);

impl Compare {
    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: &str, field: &str, v: i64) -> Self {
        let mut c = json!({
            "key": B64.encode(key.into()),
            "target": target,
            "result": op.name(),
        });
        c[field] = v.to_string().into();
        Compare(c)
    }
    /// The key's version (0: the key does not exist).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Compare {
        Compare::new(key, op, "VERSION", "version", version)
    }
    /// The revision of the key's last change.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: i64) -> Compare {
        Compare::new(key, op, "MOD", "mod_revision", rev)
    }
    /// The key's value (a key that does not exist never compares equal).
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Compare {
        Compare(json!({
            "key": B64.encode(key.into()),
            "target": "VALUE",
            "result": op.name(),
            "value": B64.encode(value.into()),
        }))
    }
    /// The lease the key lives under (0: none; etcd 3.3 and later).
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Compare {
        Compare::new(key, op, "LEASE", "lease", lease)
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub struct TxnOp(Value);

impl TxnOp {
    /// Read a key, or a prefix with [`GetOptions::with_prefix`].
    pub fn get(key: impl Into<Vec<u8>>, opts: Option<GetOptions>) -> TxnOp {
        TxnOp(json!({ "request_range": range_request(key.into(), opts) }))
    }
    /// Write a key.
    pub fn put(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        opts: Option<PutOptions>,
    ) -> Self {
        TxnOp(json!({ "request_put": put_request(key.into(), value.into(), opts) }))
    }
    /// Delete a key, or a prefix with [`DeleteOptions::with_prefix`].
    pub fn delete(key: impl Into<Vec<u8>>, opts: Option<DeleteOptions>) -> TxnOp {
        TxnOp(json!({ "request_delete_range": delete_request(key.into(), opts) }))
    }
}

/// A transaction: if every compare holds, the `and_then` operations run.
#[derive(Debug, Clone, Default)]
pub struct Txn {
    compare: Vec<Compare>,
    success: Vec<TxnOp>,
}

impl Txn {
    /// No compares, no operations.
    pub fn new() -> Txn {
        Txn::default()
    }
    /// The compares that must all hold for the operations to run.
    pub fn when(mut self, compares: impl Into<Vec<Compare>>) -> Txn {
        self.compare = compares.into();
        self
    }
    /// The operations run, in one revision, when every compare holds.
    pub fn and_then(mut self, ops: impl Into<Vec<TxnOp>>) -> Txn {
        self.success = ops.into();
        self
    }
}

/// A protobuf int64 in JSON: a decimal string (or a number).
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum I {
        S(String),
        N(i64),
    }
    match I::deserialize(d)? {
        I::N(n) => Ok(n),
        I::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// Protobuf bytes in JSON: base64.
fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    B64.decode(s).map_err(serde::de::Error::custom)
}

/// The header of every answer: the store's revision when it was served.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseHeader {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

impl ResponseHeader {
    /// The store's revision when the answer was served.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

/// A key, its value and the revision of its last change.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeyValue {
    #[serde(default, deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(default, deserialize_with = "bytes")]
    value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int64")]
    lease: i64,
}

impl KeyValue {
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The value; empty in a delete event.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
    /// The revision of the key's last change.
    pub fn mod_revision(&self) -> i64 {
        self.mod_revision
    }
    /// The lease the key lives under (0: none).
    pub fn lease(&self) -> i64 {
        self.lease
    }
}

/// The answer to a range.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GetResponse {
    #[serde(default)]
    header: Option<ResponseHeader>,
    #[serde(default)]
    kvs: Vec<KeyValue>,
    #[serde(default, deserialize_with = "int64")]
    count: i64,
}

impl GetResponse {
    /// The answer's header, if etcd sent one.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
    /// The keys read, in key order (none with `with_count_only`).
    pub fn kvs(&self) -> &[KeyValue] {
        &self.kvs
    }
    /// How many keys the range matched.
    pub fn count(&self) -> i64 {
        self.count
    }
}

/// The answer to a put or a delete.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PutResponse {
    #[serde(default)]
    header: Option<ResponseHeader>,
}

impl PutResponse {
    /// The answer's header, if etcd sent one.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
}

/// The answer to one operation of a transaction.
#[derive(Debug, Clone, Deserialize)]
pub enum TxnOpResponse {
    /// The answer to a [`TxnOp::get`].
    #[serde(rename = "response_range")]
    Get(GetResponse),
    /// The answer to a [`TxnOp::put`].
    #[serde(rename = "response_put")]
    Put(PutResponse),
    /// The answer to a [`TxnOp::delete`].
    #[serde(rename = "response_delete_range")]
    Delete(PutResponse),
}

/// The answer to a transaction.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TxnResponse {
    #[serde(default)]
    header: Option<ResponseHeader>,
    #[serde(default)]
    succeeded: bool,
    #[serde(default)]
    responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    /// The answer's header, if etcd sent one.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
    /// Whether every compare held (and the operations ran).
    pub fn succeeded(&self) -> bool {
        self.succeeded
    }
    /// The answers of the operations, in their order (none when a compare
    /// failed).
    pub fn op_responses(&self) -> Vec<TxnOpResponse> {
        self.responses.clone()
    }
}

/// A granted lease.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseGrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

impl LeaseGrantResponse {
    /// The lease's id, for [`PutOptions::with_lease`].
    pub fn id(&self) -> i64 {
        self.id
    }
    /// The time to live etcd granted, in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}

/// The answer to a keep-alive: the lease's remaining time to live, 0 when it
/// has expired.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseKeepAliveResponse {
    #[serde(rename = "ID", default, deserialize_with = "int64")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int64")]
    ttl: i64,
}

impl LeaseKeepAliveResponse {
    /// The lease's id.
    pub fn id(&self) -> i64 {
        self.id
    }
    /// The remaining time to live, in seconds; 0 when the lease expired.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum EventType {
    /// The key was written.
    #[default]
    #[serde(rename = "PUT")]
    Put,
    /// The key was deleted.
    #[serde(rename = "DELETE")]
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Event {
    #[serde(rename = "type", default)]
    kind: EventType,
    #[serde(default)]
    kv: Option<KeyValue>,
}

impl Event {
    /// Whether the key was written or deleted.
    pub fn event_type(&self) -> EventType {
        self.kind
    }
    /// The key after the change (for a delete: the key, no value).
    pub fn kv(&self) -> Option<&KeyValue> {
        self.kv.as_ref()
    }
}

/// One message of a watch stream.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchResponse {
    #[serde(default)]
    header: Option<ResponseHeader>,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<Event>,
}

impl WatchResponse {
    /// The message's header, if etcd sent one.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
    /// The first message of a watch: etcd accepted it.
    pub fn created(&self) -> bool {
        self.created
    }
    /// etcd ended the watch (see [`Self::cancel_reason`] and
    /// [`Self::compact_revision`]).
    pub fn canceled(&self) -> bool {
        self.canceled
    }
    /// When cancelled because the start revision was compacted: the oldest
    /// revision etcd still has.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }
    /// Why etcd ended the watch, when it said.
    pub fn cancel_reason(&self) -> &str {
        &self.cancel_reason
    }
    /// The changes this message carries, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// The error object of the gateway: `{"error": "…", "message": "…",
/// "code": N}` for a unary call, `{"grpc_code": N, "message": "…"}` in a
/// stream.
fn status_error(v: &Value) -> Error {
    let message = v
        .get("message")
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_string();
    let code = v
        .get("code")
        .or_else(|| v.get("grpc_code"))
        .and_then(Value::as_i64)
        .unwrap_or(2);
    Error::Status { code, message }
}

/// One line of a stream: `{"result": …}` or `{"error": …}`.
fn stream_item<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, Error> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| Error::Decode(format!("{e}: {}", String::from_utf8_lossy(line))))?;
    if let Some(err) = v.get("error") {
        return Err(status_error(err));
    }
    let result = v.get("result").cloned().unwrap_or(v);
    serde_json::from_value(result).map_err(|e| Error::Decode(e.to_string()))
}

/// A connection to one etcd member.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    timeout: Duration,
    require_leader: bool,
    user: Option<(String, String)>,
    /// The auth token (with a user), renewed when etcd says it expired.
    token: Arc<Mutex<Option<String>>>,
    /// [`MAX_ANSWER`]; lower in tests.
    max_answer: u64,
}

fn http_client(opts: &ConnectOptions) -> Result<reqwest::Client, Error> {
    let mut b = crate::http::client_builder().connect_timeout(opts.connect_timeout);
    if let Some((interval, timeout)) = opts.keep_alive {
        let probes = (timeout.as_secs_f64() / interval.as_secs_f64())
            .ceil()
            .max(1.0) as u32;
        b = b
            .tcp_keepalive(interval)
            .tcp_keepalive_interval(interval)
            .tcp_keepalive_retries(probes);
    }
    if let Some(tls) = &opts.tls {
        if let Some(ca) = &tls.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&ca.0)
                .map_err(|e| Error::InvalidArgs(format!("the CA certificate: {e}")))?;
            b = b.tls_certs_only(certs);
        }
        if let Some(id) = &tls.identity {
            let mut pem = id.cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(&id.key);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::InvalidArgs(format!("the client certificate and key: {e}")))?;
            b = b.identity(id);
        }
    }
    b.build()
        .map_err(|e| Error::InvalidArgs(format!("cannot set up the HTTP client: {e}")))
}

impl Client {
    /// A client of the member at `endpoint` (`http(s)://host:port`); with a
    /// user, authenticates first.
    ///
    /// # Errors
    /// Bad options, an unreachable member, refused credentials.
    pub async fn connect(endpoint: &str, opts: Option<ConnectOptions>) -> Result<Client, Error> {
        let opts = opts.unwrap_or_default();
        let with_scheme = if endpoint.contains("://") {
            endpoint.to_string()
        } else if opts.tls.is_some() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        };
        let base = crate::http::base_url(&with_scheme)
            .map_err(|e| Error::InvalidArgs(format!("endpoint {endpoint}: {e:?}")))?;
        let client = Client {
            http: http_client(&opts)?,
            base,
            timeout: opts.timeout,
            require_leader: opts.require_leader,
            user: opts.user,
            token: Arc::new(Mutex::new(None)),
            max_answer: MAX_ANSWER,
        };
        if client.user.is_some() {
            client.authenticate().await?;
        }
        Ok(client)
    }

    async fn authenticate(&self) -> Result<(), Error> {
        let Some((name, password)) = &self.user else {
            return Ok(());
        };
        #[derive(Deserialize)]
        struct Auth {
            token: String,
        }
        let body = json!({ "name": name, "password": password });
        let a: Auth = self.post_once("v3/auth/authenticate", &body).await?;
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(a.token);
        Ok(())
    }

    #[expect(
        clippy::expect_used,
        reason = "the gateway paths are constant relative paths, which always join"
    )]
    fn request(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self.http.post(self.base.join(path).expect("relative path"));
        if self.require_leader {
            r = r.header("Grpc-Metadata-Hasleader", "true");
        }
        if let Some(t) = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_deref()
        {
            r = r.header(reqwest::header::AUTHORIZATION, t);
        }
        r.json(body)
    }

    /// One unary call; an error answer becomes [`Error::Status`].
    async fn post_once<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, Error> {
        let resp = self
            .request(path, body)
            .timeout(self.timeout)
            .send()
            .await?;
        let ok = resp.status().is_success();
        let mut resp = resp;
        let bytes = crate::http::read_body(&mut resp, self.max_answer).await?;
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Decode(format!("{path}: {e}")))?;
        if !ok {
            return Err(status_error(&v));
        }
        serde_json::from_value(v).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    /// A unary call, authenticating again once if the token expired.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
    ) -> Result<T, Error> {
        match self.post_once(path, &body).await {
            Err(Error::Status { code, .. }) if code == UNAUTHENTICATED && self.user.is_some() => {
                self.authenticate().await?;
                self.post_once(path, &body).await
            }
            r => r,
        }
    }

    /// Read a key, or every key under a prefix.
    pub async fn get(
        &mut self,
        key: impl Into<Vec<u8>>,
        opts: Option<GetOptions>,
    ) -> Result<GetResponse, Error> {
        self.post("v3/kv/range", range_request(key.into(), opts))
            .await
    }

    /// Write a key.
    pub async fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        opts: Option<PutOptions>,
    ) -> Result<PutResponse, Error> {
        self.post("v3/kv/put", put_request(key.into(), value.into(), opts))
            .await
    }

    /// Run a transaction.
    pub async fn txn(&mut self, txn: Txn) -> Result<TxnResponse, Error> {
        let body = json!({
            "compare": txn.compare.into_iter().map(|c| c.0).collect::<Vec<_>>(),
            "success": txn.success.into_iter().map(|o| o.0).collect::<Vec<_>>(),
        });
        self.post("v3/kv/txn", body).await
    }

    /// Grant a lease of `ttl` seconds (`_opts` is unused, as in
    /// etcd-client's signature).
    pub async fn lease_grant(
        &mut self,
        ttl: i64,
        _opts: Option<()>,
    ) -> Result<LeaseGrantResponse, Error> {
        self.post("v3/lease/grant", json!({ "TTL": ttl.to_string() }))
            .await
    }

    /// Revoke a lease: every key under it goes at once.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<(), Error> {
        self.post::<Value>("v3/lease/revoke", json!({ "ID": id.to_string() }))
            .await
            .map(drop)
    }

    /// Keep a lease alive: each [`LeaseKeeper::keep_alive`] refreshes it and
    /// its answer arrives on the stream (the first one already has).
    pub async fn lease_keep_alive(
        &mut self,
        id: i64,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream), Error> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut keeper = LeaseKeeper {
            client: self.clone(),
            id,
            tx,
        };
        keeper.keep_alive().await?;
        Ok((keeper, LeaseKeepAliveStream { rx }))
    }

    /// Start a watch stream with one watch; add more with
    /// [`WatchStream::watch`] before reading it. The request is sent at the
    /// first [`WatchStream::message`].
    pub async fn watch(
        &mut self,
        key: impl Into<Vec<u8>>,
        opts: Option<WatchOptions>,
    ) -> Result<WatchStream, Error> {
        let mut s = WatchStream {
            client: self.clone(),
            pending: Vec::new(),
            lines: None,
        };
        s.watch(key, opts).await?;
        Ok(s)
    }
}

/// Sends keep-alives for one lease.
#[derive(Debug)]
pub struct LeaseKeeper {
    client: Client,
    id: i64,
    tx: tokio::sync::mpsc::UnboundedSender<LeaseKeepAliveResponse>,
}

impl LeaseKeeper {
    /// Refresh the lease; the answer goes to the keep-alive stream.
    pub async fn keep_alive(&mut self) -> Result<(), Error> {
        let body = json!({ "ID": self.id.to_string() });
        let mut attempt = 0;
        loop {
            let req = self.client.request("v3/lease/keepalive", &body);
            let resp = req.timeout(self.client.timeout).send().await?;
            let mut lines = BodyLines::new(resp, self.client.max_answer);
            let line = lines
                .next()
                .await?
                .ok_or_else(|| Error::Decode("the keep-alive answer was empty".into()))?;
            match stream_item::<LeaseKeepAliveResponse>(&line) {
                Err(Error::Status { code, .. })
                    if code == UNAUTHENTICATED && self.client.user.is_some() && attempt == 0 =>
                {
                    attempt += 1;
                    self.client.authenticate().await?;
                }
                r => {
                    let _ = self.tx.send(r?);
                    return Ok(());
                }
            }
        }
    }
}

/// The answers to a lease's keep-alives.
#[derive(Debug)]
pub struct LeaseKeepAliveStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<LeaseKeepAliveResponse>,
}

impl LeaseKeepAliveStream {
    /// The next answer; `None` once the keeper is gone. Cancel safe.
    pub async fn message(&mut self) -> Result<Option<LeaseKeepAliveResponse>, Error> {
        Ok(self.rx.recv().await)
    }
}

/// One watch stream (one HTTP request, one gRPC stream in the member)
/// carrying one or more watches.
#[derive(Debug)]
pub struct WatchStream {
    client: Client,
    pending: Vec<Value>,
    lines: Option<BodyLines>,
}

impl WatchStream {
    /// Add a watch on `key` (or every key under it). Only before the first
    /// [`WatchStream::message`]: the gateway reads the requests when the
    /// stream opens.
    ///
    /// # Errors
    /// When the stream has already started.
    pub async fn watch(
        &mut self,
        key: impl Into<Vec<u8>>,
        opts: Option<WatchOptions>,
    ) -> Result<(), Error> {
        if self.lines.is_some() {
            return Err(Error::InvalidArgs(
                "watches are added before the watch stream is read".into(),
            ));
        }
        let key = key.into();
        let opts = opts.unwrap_or_default();
        let mut r = json!({ "key": B64.encode(&key) });
        if opts.prefix {
            r["range_end"] = B64.encode(prefix_end(&key)).into();
        }
        if opts.start_revision > 0 {
            r["start_revision"] = opts.start_revision.to_string().into();
        }
        self.pending.push(json!({ "create_request": r }));
        Ok(())
    }

    /// The next message; `None` when the member ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Error> {
        if self.lines.is_none() {
            // The requests, one JSON object after the other: the gateway
            // decodes them in turn into the one gRPC stream.
            let mut body = Vec::new();
            for r in self.pending.drain(..) {
                #[expect(
                    clippy::expect_used,
                    reason = "a JSON value always serializes into a Vec"
                )]
                serde_json::to_writer(&mut body, &r).expect("serializable");
                body.push(b'\n');
            }
            let resp = self
                .client
                .request("v3/watch", &Value::Null)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await?;
            if !resp.status().is_success() {
                let mut resp = resp;
                let body = crate::http::read_body(&mut resp, MAX_ERROR_ANSWER).await;
                let v: Value = body
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                return Err(status_error(&v));
            }
            self.lines = Some(BodyLines::new(resp, self.client.max_answer));
        }
        let Some(lines) = self.lines.as_mut() else {
            return Ok(None);
        };
        match lines.next().await? {
            None => Ok(None),
            Some(line) => stream_item(&line).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client of a member at `url` whose answers may be at most 64 KiB.
    async fn small_client(url: &str) -> Client {
        let mut c = Client::connect(url, None).await.unwrap();
        c.max_answer = 64 << 10;
        c
    }

    /// A unary answer larger than the cap is refused once the cap is
    /// reached, not buffered until the request's timeout.
    #[tokio::test]
    async fn an_endless_answer_is_refused_at_the_cap() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
        let url = crate::http::tests::endless(head, &[b' '; 4096]).await;
        let mut c = small_client(&url).await;
        let got = tokio::time::timeout(Duration::from_secs(10), c.get("k", None))
            .await
            .expect("stops at the cap");
        let e = got.expect_err("an endless answer");
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }

    /// One line of a watch stream longer than the cap is refused, however
    /// long the member keeps sending it.
    #[tokio::test]
    async fn an_endless_watch_line_is_refused_at_the_cap() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"result\":";
        let url = crate::http::tests::endless(head, &[b' '; 4096]).await;
        let mut c = small_client(&url).await;
        let mut w = c.watch("k", None).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .expect("stops at the cap");
        let e = got.expect_err("an endless line");
        assert!(e.to_string().contains("larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/u/a/"), b"/u/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn requests_are_the_v3_json_mapping() {
        let r = range_request(b"/p/".to_vec(), Some(GetOptions::new().with_prefix()));
        assert_eq!(r, json!({ "key": "L3Av", "range_end": "L3Aw" }));
        let t = TxnOp::put(
            "k",
            "v",
            Some(PutOptions::new().with_lease(7587848461284917765)),
        );
        // Lease ids exceed 2^53: sent as strings, as the mapping allows.
        assert_eq!(
            t.0,
            json!({ "request_put": { "key": "aw==", "value": "dg==", "lease": "7587848461284917765" } })
        );
        let c = Compare::version("k", CompareOp::Equal, 0);
        assert_eq!(
            c.0,
            json!({ "key": "aw==", "target": "VERSION", "result": "EQUAL", "version": "0" })
        );
        let c = Compare::mod_revision("k", CompareOp::Equal, 12);
        assert_eq!(c.0["target"], "MOD");
        assert_eq!(c.0["mod_revision"], "12");
    }

    /// Answers as etcd 3.4's gateway writes them: int64 as strings, fields
    /// at their default value left out.
    #[test]
    fn answers_decode_with_omitted_defaults() {
        let t: TxnResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","member_id":"2","revision":"42","raft_term":"3"},
                "succeeded":true,
                "responses":[{"response_range":{"header":{"revision":"42"},
                  "kvs":[{"key":"L3AvYQ==","create_revision":"5","mod_revision":"40","version":"2","value":"eA=="}],"count":"1"}},
                  {"response_range":{"header":{"revision":"42"}}}]}"#,
        )
        .unwrap();
        assert_eq!(t.header().unwrap().revision(), 42);
        assert!(t.succeeded());
        let ops = t.op_responses();
        let TxnOpResponse::Get(g) = &ops[0] else {
            panic!("a range")
        };
        assert_eq!(g.kvs()[0].key(), b"/p/a");
        assert_eq!(g.kvs()[0].value(), b"x");
        assert_eq!(g.kvs()[0].mod_revision(), 40);
        let TxnOpResponse::Get(g) = &ops[1] else {
            panic!("a range")
        };
        assert!(g.kvs().is_empty());
        let failed: TxnResponse = serde_json::from_str(r#"{"header":{"revision":"9"}}"#).unwrap();
        assert!(!failed.succeeded());
    }

    #[test]
    fn watch_stream_lines_decode_events_cancels_and_errors() {
        let m: WatchResponse = stream_item(
            br#"{"result":{"header":{"revision":"8"},"events":[{"kv":{"key":"YQ==","mod_revision":"8","value":"Yg=="}},{"type":"DELETE","kv":{"key":"Yw==","mod_revision":"8"}}]}}"#,
        )
        .unwrap();
        assert_eq!(m.events()[0].event_type(), EventType::Put);
        assert_eq!(m.events()[1].event_type(), EventType::Delete);
        assert_eq!(m.events()[1].kv().unwrap().key(), b"c");
        let c: WatchResponse = stream_item(
            br#"{"result":{"header":{},"watch_id":"1","canceled":true,"compact_revision":"5","cancel_reason":"mvcc: required revision has been compacted"}}"#,
        )
        .unwrap();
        assert!(c.canceled());
        assert_eq!(c.compact_revision(), 5);
        let e = stream_item::<WatchResponse>(
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Status { code: 14, message } if message == "etcdserver: no leader"),
            "{e:?}"
        );
        let k: LeaseKeepAliveResponse =
            stream_item(br#"{"result":{"header":{},"ID":"7587848461284917765"}}"#).unwrap();
        assert_eq!(k.id(), 7587848461284917765);
        assert_eq!(k.ttl(), 0, "an expired lease answers without a TTL");
    }
}
