//! A small client for the parts of Prometheus' HTTP API that backups need:
//! the TSDB snapshot admin endpoint, readiness, and instant queries (to
//! prove that restored data answers).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::PrometheusError;

type Result<T, E = PrometheusError> = std::result::Result<T, E>;

/// Largest answer read from Prometheus. Snapshot and readiness answers are
/// tiny; instant queries that prove a restore are small vectors.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;

/// One element of an instant query's vector result (or the scalar, with
/// an empty label set).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Labels of the series.
    pub metric: BTreeMap<String, String>,
    /// The evaluation timestamp, unix seconds.
    pub timestamp: f64,
    /// The value (`NaN` and `±Inf` as Prometheus spells them).
    pub value: f64,
}

/// A client for one Prometheus.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Always ends with `/`, so joining `api/v1/...` keeps a route prefix.
    base: Url,
    timeout: Duration,
    /// Snapshots flush the head block to disk, which takes much longer than
    /// a query on a large TSDB; it gets its own, longer timeout.
    snapshot_timeout: Duration,
    /// Answers longer than this are refused, never buffered whole.
    max_body: u64,
}

/// Prometheus' JSON envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct SnapshotData {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorElem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

impl Client {
    /// A client for Prometheus at `base_url`, with `timeout` on every request
    /// (the snapshot request gets at least 10 minutes, see
    /// [`Client::with_snapshot_timeout`]).
    ///
    /// # Errors
    /// [`PrometheusError::InvalidUrl`] for anything but a plain http(s) URL
    /// (credentials in it would end up in error messages);
    /// [`PrometheusError::Setup`] if the HTTP client cannot be built.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Client> {
        let invalid = |reason: &str| PrometheusError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = crate::http::base_url(base_url).map_err(|e| match e {
            crate::http::BaseUrlError::Invalid(r) => invalid(&r),
            crate::http::BaseUrlError::Credentials => PrometheusError::InvalidUrl {
                url: "(redacted: it contains credentials)".to_owned(),
                reason: "credentials in the URL would show up in logs".to_owned(),
            },
        })?;
        // No client-wide timeout: each request sets its own, so the long
        // snapshot request is not cut short by the short default.
        let http = crate::http::client_builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|source| PrometheusError::Setup { source })?;
        Ok(Client {
            http,
            base,
            timeout,
            snapshot_timeout: timeout.max(Duration::from_secs(600)),
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Sets the timeout of the snapshot request.
    pub fn with_snapshot_timeout(mut self, timeout: Duration) -> Client {
        self.snapshot_timeout = timeout;
        self
    }

    /// Sets the largest answer read (default [`DEFAULT_MAX_BODY`]).
    pub fn with_max_body(mut self, bytes: u64) -> Client {
        self.max_body = bytes;
        self
    }

    /// The base URL as configured (with a trailing `/`).
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    #[expect(
        clippy::expect_used,
        reason = "the API paths are constant relative paths, which always join"
    )]
    fn url(&self, rel: &str) -> Url {
        self.base.join(rel).expect("relative API paths always join")
    }

    fn transport(&self, url: &Url, timeout: Duration, e: reqwest::Error) -> PrometheusError {
        let base = self.base.to_string();
        let url = url.to_string();
        if e.is_timeout() {
            PrometheusError::Timeout { base, url, timeout }
        } else if e.is_connect() {
            PrometheusError::Unreachable {
                base,
                url,
                source: e,
            }
        } else {
            PrometheusError::Request { url, source: e }
        }
    }

    /// Sends `req` and returns status and body; transport errors mapped.
    async fn send(
        &self,
        url: &Url,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let mut resp = req
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.transport(url, timeout, e))?;
        let status = resp.status();
        let too_large = || PrometheusError::TooLarge {
            base: self.base.to_string(),
            url: url.to_string(),
            limit: self.max_body,
        };
        let body = crate::http::read_body(&mut resp, self.max_body)
            .await
            .map_err(|e| match e {
                crate::http::BodyError::TooLarge { .. } => too_large(),
                crate::http::BodyError::Transport(e) => self.transport(url, timeout, e),
            })?;
        Ok((status, body))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        status: StatusCode,
        body: &[u8],
    ) -> Result<T> {
        if !status.is_success() {
            return Err(PrometheusError::Status {
                url: url.to_string(),
                status,
                message: error_message(body),
            });
        }
        let decode_err = |reason: String| PrometheusError::Decode {
            base: self.base.to_string(),
            url: url.to_string(),
            reason,
        };
        let env: Envelope<T> =
            serde_json::from_slice(body).map_err(|e| decode_err(e.to_string()))?;
        if env.status != "success" {
            return Err(PrometheusError::Status {
                url: url.to_string(),
                status,
                message: env
                    .error
                    .unwrap_or_else(|| format!("status {:?}", env.status)),
            });
        }
        env.data
            .ok_or_else(|| decode_err("the answer has no `data`".to_owned()))
    }

    /// Asks Prometheus to snapshot its TSDB (head included) into
    /// `DATADIR/snapshots/NAME` and returns NAME.
    ///
    /// # Errors
    /// [`PrometheusError::AdminApiDisabled`] when Prometheus runs without
    /// `--web.enable-admin-api` (Prometheus 2.x answers 500 or 503 "admin
    /// APIs disabled", a proxy or other versions 404); transport and status
    /// errors otherwise.
    pub async fn snapshot(&self) -> Result<String> {
        let url = self.url("api/v1/admin/tsdb/snapshot");
        let (status, body) = self
            .send(&url, self.http.post(url.clone()), self.snapshot_timeout)
            .await?;
        if is_admin_disabled(status, &body) {
            return Err(PrometheusError::AdminApiDisabled {
                base: self.base.to_string(),
                url: url.to_string(),
                detail: format!("{status}: {}", error_message(&body)),
            });
        }
        let data: SnapshotData = self.decode(&url, status, &body)?;
        if !is_plain_name(&data.name) {
            return Err(PrometheusError::Decode {
                base: self.base.to_string(),
                url: url.to_string(),
                reason: format!(
                    "snapshot name {:?} is not a plain directory name",
                    data.name
                ),
            });
        }
        Ok(data.name)
    }

    /// Whether Prometheus says it is ready to serve (`/-/ready` is 2xx).
    ///
    /// # Errors
    /// Transport errors; a non-2xx answer is [`PrometheusError::Status`].
    pub async fn ready(&self) -> Result<()> {
        let url = self.url("-/ready");
        let (status, body) = self
            .send(&url, self.http.get(url.clone()), self.timeout)
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(PrometheusError::Status {
                url: url.to_string(),
                status,
                message: error_message(&body),
            })
        }
    }

    /// Polls [`Client::ready`] until it succeeds or `timeout` passes.
    ///
    /// # Errors
    /// [`PrometheusError::NotReady`] with the last answer seen; `unit`
    /// only feeds its journal hint.
    pub async fn wait_ready(&self, unit: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last;
        loop {
            match tokio::time::timeout_at(deadline, self.ready()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = crate::error_chain(&e),
                Err(_) => last = "no answer".to_owned(),
            }
            if tokio::time::Instant::now() + Duration::from_millis(250) > deadline {
                return Err(PrometheusError::NotReady {
                    base: self.base.to_string(),
                    unit: unit.to_owned(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Evaluates `expr` at `time` (unix seconds; now when `None`).
    ///
    /// # Errors
    /// Transport errors, [`PrometheusError::Status`] with Prometheus'
    /// `error` (e.g. a PromQL parse error), or [`PrometheusError::Decode`]
    /// for result types other than vector and scalar.
    pub async fn query(&self, expr: &str, time: Option<f64>) -> Result<Vec<Sample>> {
        let url = self.url("api/v1/query");
        let mut params = vec![("query", expr.to_owned())];
        if let Some(t) = time {
            params.push(("time", format!("{t:.3}")));
        }
        let (status, body) = self
            .send(
                &url,
                self.http.get(url.clone()).query(&params),
                self.timeout,
            )
            .await?;
        let data: QueryData = self.decode(&url, status, &body)?;
        let decode_err = |reason: String| PrometheusError::Decode {
            base: self.base.to_string(),
            url: url.to_string(),
            reason,
        };
        match data.result_type.as_str() {
            "vector" => {
                let elems: Vec<VectorElem> =
                    serde_json::from_value(data.result).map_err(|e| decode_err(e.to_string()))?;
                Ok(elems
                    .into_iter()
                    .map(|e| Sample {
                        metric: e.metric,
                        timestamp: e.value.0,
                        value: parse_value(&e.value.1),
                    })
                    .collect())
            }
            "scalar" => {
                let (ts, v): (f64, String) =
                    serde_json::from_value(data.result).map_err(|e| decode_err(e.to_string()))?;
                Ok(vec![Sample {
                    metric: BTreeMap::new(),
                    timestamp: ts,
                    value: parse_value(&v),
                }])
            }
            other => Err(decode_err(format!(
                "result type {other:?}; only instant vectors and scalars are supported"
            ))),
        }
    }
}

/// Prometheus spells special floats `NaN`, `+Inf`, `-Inf`.
fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// The `error` field of a Prometheus error answer, else a short excerpt.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<String>,
    }
    if let Ok(ErrorBody { error: Some(e) }) = serde_json::from_slice(body) {
        return e;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut cut = text.len().min(300);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

/// The admin API is off: Prometheus' own "admin APIs disabled" error
/// (2.42 answers it with 500) or a 404 (route not there at all).
fn is_admin_disabled(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::NOT_FOUND
        || (!status.is_success() && error_message(body).contains("admin APIs disabled"))
}

/// A single normal path component: what Prometheus returns cannot make us
/// look outside `DATADIR/snapshots`.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_disabled_is_recognised_in_both_spellings() {
        assert!(is_admin_disabled(
            StatusCode::NOT_FOUND,
            b"404 page not found"
        ));
        // What Prometheus 2.42 really answers.
        assert!(is_admin_disabled(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"status":"error","errorType":"unavailable","error":"admin APIs disabled"}"#
        ));
        assert!(!is_admin_disabled(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"status":"error","error":"create snapshot: no space left on device"}"#
        ));
    }

    #[test]
    fn error_message_prefers_the_error_field() {
        assert_eq!(
            error_message(br#"{"status":"error","error":"parse error at char 3"}"#),
            "parse error at char 3"
        );
        assert_eq!(error_message(b"  plain text  "), "plain text");
        assert_eq!(error_message(b""), "(empty body)");
        assert_eq!(error_message("é".repeat(400).as_bytes()).len(), 300);
    }

    #[test]
    fn snapshot_names_must_be_one_component() {
        assert!(is_plain_name("20171210T211224Z-2be650b6d019eb54"));
        for bad in ["", ".", "..", "../x", "a/b", "a\0"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn base_urls_keep_their_prefix_and_refuse_credentials() {
        let c = Client::new("http://127.0.0.1:9090/prom", Duration::from_secs(1)).unwrap();
        assert_eq!(
            c.url("api/v1/query").as_str(),
            "http://127.0.0.1:9090/prom/api/v1/query"
        );
        let err = Client::new("http://u:secret@host:9090", Duration::from_secs(1)).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(Client::new("ftp://host", Duration::from_secs(1)).is_err());
        assert!(Client::new("not a url", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn special_float_values() {
        assert_eq!(parse_value("+Inf"), f64::INFINITY);
        assert_eq!(parse_value("-Inf"), f64::NEG_INFINITY);
        assert!(parse_value("NaN").is_nan());
        assert_eq!(parse_value("1.5"), 1.5);
    }

    #[tokio::test]
    async fn connection_refused_says_is_it_running() {
        // Bind and drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let err = c.snapshot().await.unwrap_err();
        assert!(
            matches!(err, PrometheusError::Unreachable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("is it running?"), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }

    /// Serves one connection: an HTTP 200 whose body never ends (chunked,
    /// no Content-Length), or with a Content-Length of `declared`.
    fn endless_server(declared: Option<u64>) -> (u16, std::thread::JoinHandle<u64>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let _ = conn.read(&mut req);
            let head = match declared {
                Some(n) => format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {n}\r\n\r\n"),
                None => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned(),
            };
            conn.write_all(head.as_bytes()).unwrap();
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0u64;
            // Stops when the client hangs up (or after 1 GiB, a failure).
            while sent < 1 << 30 {
                let ok = match declared {
                    Some(_) => conn.write_all(&chunk),
                    None => conn
                        .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                        .and_then(|()| conn.write_all(&chunk))
                        .and_then(|()| conn.write_all(b"\r\n")),
                };
                if ok.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
            sent
        });
        (port, handle)
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_limit_and_named() {
        for declared in [None, Some(1 << 30)] {
            let (port, server) = endless_server(declared);
            let c = Client::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30))
                .unwrap()
                .with_max_body(1 << 20);
            let err = c.query("up", None).await.unwrap_err();
            assert!(matches!(err, PrometheusError::TooLarge { .. }), "{err:?}");
            assert!(err.to_string().contains("1 MiB"), "{err}");
            drop(c);
            let sent = tokio::task::spawn_blocking(move || server.join().unwrap())
                .await
                .unwrap();
            assert!(sent < 256 << 20, "the client kept reading: {sent} bytes");
        }
    }
}
