//! What every HTTP client of unitlet shares: the TLS provider, the
//! user agent, and the rules for a service's base URL.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
