//! What every HTTP client of unitlet shares: the TLS provider, the
//! user agent, the rules for a service's base URL, and the one bounded
//! body reader.

use reqwest::Url;

/// A client builder with unitlet's user agent and a TLS provider.
///
/// reqwest is built without a default provider (ring is lighter to build
/// than aws-lc); installing it is idempotent and must precede any client.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().user_agent(concat!("unitlet/", env!("CARGO_PKG_VERSION")))
}

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseUrlError {
    /// Not a URL, or not http(s), or with a query or fragment.
    Invalid(String),
    /// It embeds credentials, which would end up in every error message.
    Credentials,
}

/// Parse a service's base URL: http(s) only, no credentials, no query or
/// fragment, and a path ending in `/` so relative API paths join onto it.
pub fn base_url(s: &str) -> Result<Url, BaseUrlError> {
    let mut base = Url::parse(s).map_err(|e| BaseUrlError::Invalid(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(BaseUrlError::Invalid(
            "only http and https are supported".into(),
        ));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(BaseUrlError::Credentials);
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(BaseUrlError::Invalid(
            "the base URL must not have a query or fragment".into(),
        ));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// A URL with any password replaced by `***` (`user:***@host`), for every
/// place a URL is shown (status, events, logs, errors); requests still use
/// the real URL. Parsed with [`Url`]: a URL without a scheme (an etcd
/// endpoint `user:pw@host:2379`) is read as `http://`; one that carries
/// credentials is shown as [`Url`] writes it; one without is shown as
/// given. What does not parse loses everything up to its last `@`.
pub fn redact_url(s: &str) -> String {
    let schemeless = !s.contains("://");
    let parsed = if schemeless {
        Url::parse(&format!("http://{s}"))
    } else {
        Url::parse(s)
    };
    match parsed {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            let shown = u.to_string();
            match shown.strip_prefix("http://") {
                Some(rest) if schemeless => rest.to_string(),
                _ => shown,
            }
        }
        Ok(_) => s.to_string(),
        Err(_) => match s.rsplit_once('@') {
            Some((_, rest)) => format!("***@{rest}"),
            None => s.to_string(),
        },
    }
}

/// Why a response body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit (by its Content-Length or as it arrived);
    /// nothing past the limit was read.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The connection failed while reading.
    #[error("reading the answer failed")]
    Transport(#[source] reqwest::Error),
}

/// A whole response body of at most `limit` bytes, checked as it arrives:
/// neither a lying Content-Length nor an endless body makes us buffer (or
/// wait for) more than the limit.
///
/// # Errors
/// [`BodyError`].
pub async fn read_body(resp: &mut reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first `limit` bytes of a response body (for a message), reading
/// no further; a failure mid-way keeps what came before it.
pub async fn body_prefix(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c[..c.len().min(limit - body.len())]),
            _ => break,
        }
    }
    body
}

/// Newline-delimited records from a streaming answer (etcd's watch and
/// keep-alive streams), each line at most `limit` bytes: a line that never
/// ends is refused at the limit, not buffered.
#[derive(Debug)]
pub struct BodyLines {
    resp: reqwest::Response,
    buf: Vec<u8>,
    limit: u64,
}

impl BodyLines {
    /// Lines of `resp`'s body, each at most `limit` bytes.
    pub fn new(resp: reqwest::Response, limit: u64) -> BodyLines {
        BodyLines {
            resp,
            buf: Vec::new(),
            limit,
        }
    }

    /// The next non-empty line (newline included); `None` at the end of the
    /// body. Cancel safe: a chunk is appended only once it has arrived.
    ///
    /// # Errors
    /// [`BodyError`].
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, BodyError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            // No newline in what came: one line, too long to wait for.
            if self.buf.len() as u64 > self.limit {
                let limit = self.limit;
                return Err(BodyError::TooLarge { limit });
            }
            match self.resp.chunk().await.map_err(BodyError::Transport)? {
                Some(c) => self.buf.extend_from_slice(&c),
                None if self.buf.trim_ascii().is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buf))),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One bounded reader: no file in src/ but this one reads a response
    /// body itself (`chunk`, `bytes`, `text`, `json`, `bytes_stream`).
    #[test]
    fn only_http_reads_response_bodies() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let reads = [
            ".chunk().await",
            ".bytes().await",
            ".text().await",
            ".json().await",
            ".json::<",
            "bytes_stream(",
        ];
        let mut found = Vec::new();
        for e in walkdir::WalkDir::new(&src) {
            let e = e.unwrap();
            let path = e.path();
            if path.extension().is_none_or(|x| x != "rs") || path.ends_with("src/http.rs") {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            for (n, line) in text.lines().enumerate() {
                if reads.iter().any(|r| line.contains(r)) {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "read bodies through http::read_body, body_prefix or BodyLines:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:3000").unwrap().as_str(),
            "http://127.0.0.1:3000/"
        );
        assert_eq!(
            base_url("http://h/grafana").unwrap().as_str(),
            "http://h/grafana/"
        );
        assert_eq!(base_url("http://u:p@h/"), Err(BaseUrlError::Credentials));
        assert!(matches!(
            base_url("ftp://h/"),
            Err(BaseUrlError::Invalid(_))
        ));
        assert!(matches!(
            base_url("http://h/?q=1"),
            Err(BaseUrlError::Invalid(_))
        ));
    }

    /// Serves one answer on a local port: the head, then `chunk` over and
    /// over (an endless body) until the client goes away.
    pub(crate) async fn endless(head: &'static str, chunk: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req).await;
            s.write_all(head.as_bytes()).await.unwrap();
            while s.write_all(chunk).await.is_ok() {}
        });
        format!("http://{addr}/")
    }

    /// Issue 20 item 5: a body over the cap is refused (or cut, for a
    /// message) without being read to its end, which never comes here.
    #[tokio::test]
    async fn bodies_over_the_cap_are_not_read_to_the_end() {
        let deadline = std::time::Duration::from_secs(10);
        let c = client_builder().build().unwrap();
        let url = endless(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            &[b'x'; 4096],
        )
        .await;
        let mut r = c.get(&url).send().await.unwrap();
        let e = tokio::time::timeout(deadline, read_body(&mut r, 64 * 1024))
            .await
            .expect("stops at the cap");
        assert!(
            matches!(e, Err(BodyError::TooLarge { limit: 65536 })),
            "{e:?}"
        );
        let url = endless("HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n", b"error! ").await;
        let r = c.get(&url).send().await.unwrap();
        let p = tokio::time::timeout(deadline, body_prefix(r, 300))
            .await
            .expect("stops at the cap");
        assert_eq!(p.len(), 300);
        // A Content-Length over the cap is refused before any of it is read.
        let url = endless("HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", b"y").await;
        let mut r = c.get(&url).send().await.unwrap();
        assert!(matches!(
            read_body(&mut r, 1024).await,
            Err(BodyError::TooLarge { limit: 1024 })
        ));
    }
}
