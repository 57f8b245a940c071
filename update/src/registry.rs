//! A small, blocking OCI distribution client: what the device agent needs to pull (manifests and blobs,
//! streamed) and what signing needs to push (small blobs and manifests).
//!
//! Written on `ureq` rather than taking the builder's `oci-client`, which brings tokio and reqwest into
//! a binary that runs one download at a time. Auth follows the distribution spec: anonymous first; on a
//! 401 the `WWW-Authenticate` challenge says `Basic` (send the credentials) or `Bearer` (fetch a token
//! from the realm, with the credentials if any, and retry). HTTPS always, except for loopback
//! registries and those named insecure (as the builder does).

use std::io::Read;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use ureq::http::{Method, Request, Response, StatusCode};
use ureq::{Agent, Body, BodyReader};

/// Manifests, indexes and signature payloads are small; a registry sending more is not trusted.
pub const MAX_MANIFEST: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("image reference `{reference}`: {message}")]
    Reference { reference: String, message: String },
    #[error("{method} {url}: {message}")]
    Http { method: String, url: String, message: String },
    #[error("{method} {url}: HTTP {status}{hint}: {body}")]
    Status { method: String, url: String, status: u16, hint: String, body: String },
    #[error("{url}: registry authentication: {message}")]
    Auth { url: String, message: String },
}

/// `registry/repository[:tag][@sha256:...]`, normalised as Docker does (`alpine` is
/// `docker.io/library/alpine:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, RegistryError> {
        let bad = |message: &str| RegistryError::Reference {
            reference: text.into(),
            message: message.into(),
        };
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if crate::oci::sha256_hex(d).is_none() {
                    return Err(bad("the digest after `@` is not sha256:<64 lowercase hex>"));
                }
                (r, Some(d.to_owned()))
            }
            None => (text, None),
        };
        // A tag is after the last `:` that follows the last `/` (a `:` before it is a port).
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_owned())),
            _ => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            Some(_) => ("docker.io".to_owned(), name.to_owned()),
            None => ("docker.io".to_owned(), format!("library/{name}")),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !repository.split('/').all(component_ok) {
            return Err(bad(
                "the repository must be lowercase letters, digits, `.`, `_`, `-`, `/`",
            ));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(bad("the tag must be 1-128 of letters, digits, `.`, `_`, `-`"));
            }
        }
        Ok(Reference { registry, repository, tag, digest })
    }

    /// `registry/repository`: what cosign writes as the payload's docker-reference.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The digest if pinned, else the tag (`latest` when neither is given).
    pub fn tag_or_digest(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The same repository at another tag or digest.
    pub fn at(&self, tag_or_digest: &str) -> Reference {
        let mut r = self.clone();
        if tag_or_digest.starts_with("sha256:") {
            (r.tag, r.digest) = (None, Some(tag_or_digest.into()));
        } else {
            (r.tag, r.digest) = (Some(tag_or_digest.into()), None);
        }
        r
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Registry credentials (the device reads them from its credentials file; the CLI from Docker's
/// `config.json`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <password>)"),
        }
    }
}

/// Plain HTTP only for loopback registries and the ones named insecure.
pub fn plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry),
    };
    host == "localhost"
        || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
        || insecure.iter().any(|i| i == registry || i == host)
}

/// One registry, with the credentials and the bearer token it handed out.
pub struct Client {
    agent: Agent,
    base: String,
    credentials: Credentials,
    /// The `Authorization` header that last worked (a bearer token or basic credentials).
    authorization: Mutex<Option<String>>,
}

impl Client {
    pub fn new(registry: &str, credentials: Credentials, insecure: &[String]) -> Client {
        let scheme = if plain_http(registry, insecure) { "http" } else { "https" };
        let host = if registry == "docker.io" { "registry-1.docker.io" } else { registry };
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails (and resumes later) instead of hanging the agent.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("rpixen-update/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: Agent::new_with_config(config),
            base: format!("{scheme}://{host}"),
            credentials,
            authorization: Mutex::new(None),
        }
    }

    fn url(&self, repository: &str, tail: &str) -> String {
        format!("{}/v2/{repository}/{tail}", self.base)
    }

    /// Sends a request, answering one auth challenge (the request is rebuilt for the retry).
    fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response<Body>, RegistryError> {
        let mut challenged = false;
        loop {
            let mut req = Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let auth = self.authorization.lock().expect("not poisoned").clone();
            if let Some(a) = &auth {
                req = req.header("Authorization", a.as_str());
            }
            let req = req.body(body).map_err(|e| http_err(&method, url, e))?;
            let resp = self.agent.run(req).map_err(|e| http_err(&method, url, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED || challenged {
                return Ok(resp);
            }
            challenged = true;
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let header = self.answer(url, &challenge)?;
            *self.authorization.lock().expect("not poisoned") = Some(header);
        }
    }

    /// The `Authorization` value answering a `WWW-Authenticate` challenge.
    fn answer(&self, url: &str, challenge: &str) -> Result<String, RegistryError> {
        let auth_err = |message: String| RegistryError::Auth { url: url.into(), message };
        let basic = match &self.credentials {
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credentials::Anonymous => None,
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                auth_err("the registry wants credentials and none were given".into())
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(auth_err(format!("unsupported challenge `{challenge}`")));
        }
        let params = challenge_params(params);
        let get = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v);
        let realm = get("realm").ok_or_else(|| auth_err("Bearer challenge has no realm".into()))?;
        let mut token_url = realm.clone();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        for key in ["service", "scope"] {
            if let Some(v) = get(key) {
                token_url.push_str(&format!("{sep}{key}={}", query_escape(v)));
                sep = '&';
            }
        }
        let mut req = self.agent.get(&token_url);
        if let Some(b) = &basic {
            req = req.header("Authorization", b.as_str());
        }
        let resp = req.call().map_err(|e| http_err(&Method::GET, &token_url, e))?;
        if !resp.status().is_success() {
            return Err(status_err(&Method::GET, &token_url, resp));
        }
        let bytes = read_small(&Method::GET, &token_url, resp)?;
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&bytes)
            .map_err(|e| auth_err(format!("token response from {token_url}: {e}")))?;
        let t = t
            .token
            .or(t.access_token)
            .ok_or_else(|| auth_err(format!("no token in the response from {token_url}")))?;
        Ok(format!("Bearer {t}"))
    }

    /// A manifest by tag or digest: its bytes and media type, or `None` when the registry has none.
    pub fn manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<Option<(Vec<u8>, String)>, RegistryError> {
        let url = self.url(repository, &format!("manifests/{tag_or_digest}"));
        let resp = self.send(Method::GET, &url, &[("Accept", crate::oci::ACCEPT)], &[])?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_err(&Method::GET, &url, resp));
        }
        let media = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(Some((read_small(&Method::GET, &url, resp)?, media)))
    }

    /// A blob's bytes as a stream, from `offset` on (a resumed download). Returns the reader and whether
    /// the registry honoured the offset (else the stream starts at 0).
    pub fn blob(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
    ) -> Result<(BodyReader<'static>, bool), RegistryError> {
        let url = self.url(repository, &format!("blobs/{digest}"));
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 { &[("Range", &range)] } else { &[] };
        let resp = self.send(Method::GET, &url, headers, &[])?;
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        if !resp.status().is_success() {
            return Err(status_err(&Method::GET, &url, resp));
        }
        Ok((resp.into_body().into_reader(), partial))
    }

    /// A small blob (a signature payload), read whole.
    pub fn small_blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let url = self.url(repository, &format!("blobs/{digest}"));
        let resp = self.send(Method::GET, &url, &[], &[])?;
        if !resp.status().is_success() {
            return Err(status_err(&Method::GET, &url, resp));
        }
        read_small(&Method::GET, &url, resp)
    }

    pub fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(repository, &format!("blobs/{digest}"));
        let resp = self.send(Method::HEAD, &url, &[], &[])?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_err(&Method::HEAD, &url, resp)),
        }
    }

    /// Uploads a blob in one request (POST for a session, then PUT with the digest), unless present.
    pub fn put_blob(&self, repository: &str, bytes: &[u8]) -> Result<String, RegistryError> {
        let digest = crate::oci::sha256(bytes);
        if self.blob_exists(repository, &digest)? {
            return Ok(digest);
        }
        let url = self.url(repository, "blobs/uploads/");
        let resp = self.send(Method::POST, &url, &[("Content-Length", "0")], &[])?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_err(&Method::POST, &url, resp));
        }
        let location =
            resp.headers().get("location").and_then(|v| v.to_str().ok()).ok_or_else(|| {
                RegistryError::Http {
                    method: "POST".into(),
                    url: url.clone(),
                    message: "the upload session has no Location".into(),
                }
            })?;
        let mut put_url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.into()
        };
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str(&format!("digest={}", query_escape(&digest)));
        let resp = self.send(
            Method::PUT,
            &put_url,
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_err(&Method::PUT, &put_url, resp));
        }
        Ok(digest)
    }

    /// Stores a manifest under a tag or its digest.
    pub fn put_manifest(
        &self,
        repository: &str,
        tag_or_digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(repository, &format!("manifests/{tag_or_digest}"));
        let resp = self.send(Method::PUT, &url, &[("Content-Type", media_type)], bytes)?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_err(&Method::PUT, &url, resp));
        }
        Ok(())
    }
}

fn http_err(method: &Method, url: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Http { method: method.to_string(), url: url.into(), message: e.to_string() }
}

fn status_err(method: &Method, url: &str, resp: Response<Body>) -> RegistryError {
    let status = resp.status().as_u16();
    let hint = match status {
        401 | 403 => " (check the registry credentials)",
        _ => "",
    };
    let mut body = String::new();
    let _ = resp.into_body().into_reader().take(512).read_to_string(&mut body);
    RegistryError::Status {
        method: method.to_string(),
        url: url.into(),
        status,
        hint: hint.into(),
        body: body.trim().to_owned(),
    }
}

fn read_small(method: &Method, url: &str, resp: Response<Body>) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut out)
        .map_err(|e| http_err(method, url, e))?;
    if out.len() as u64 > MAX_MANIFEST {
        return Err(http_err(method, url, format!("response larger than {MAX_MANIFEST} bytes")));
    }
    Ok(out)
}

/// `key="value", key2="v2"` of a `WWW-Authenticate` header (quoted values may hold commas).
fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(q) => match q.find('"') {
                Some(end) => (q[..end].to_owned(), &q[end + 1..]),
                None => (q.to_owned(), ""),
            },
            None => match after.find(',') {
                Some(end) => (after[..end].trim().to_owned(), &after[end..]),
                None => (after.trim().to_owned(), ""),
            },
        };
        out.push((key, value));
        rest = tail.trim_start().trim_start_matches(',');
    }
    out
}

/// Percent-encodes a query value (RFC 3986 unreserved characters and `:` stay).
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("127.0.0.1:5000/fleet/slot:v2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "fleet/slot", Some("v2"))
        );
        assert_eq!(r.name(), "127.0.0.1:5000/fleet/slot");
        assert_eq!(r.to_string(), "127.0.0.1:5000/fleet/slot:v2");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!((r.tag_or_digest(), r.registry.as_str()), (d.as_str(), "localhost"));
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine");
        assert_eq!(r.tag_or_digest(), "latest");
        assert_eq!(r.at("sha256-x.sig").to_string(), "docker.io/library/alpine:sha256-x.sig");
        assert!(Reference::parse("reg.io/Upper:v1").is_err());
        assert!(Reference::parse("reg.io/x@sha256:short").is_err());
        assert!(Reference::parse("reg.io/x:bad tag").is_err());
    }

    #[test]
    fn bearer_challenge() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull,push".into()),
            ]
        );
        assert_eq!(query_escape("repository:a/b:pull,push"), "repository:a%2Fb:pull%2Cpush");
    }

    #[test]
    fn http_only_for_loopback_or_named() {
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("[::1]:5000", &[]));
        assert!(!plain_http("10.0.2.2:5000", &[]));
        assert!(plain_http("10.0.2.2:5000", &["10.0.2.2:5000".into()]));
    }
}
