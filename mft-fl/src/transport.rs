//! The Fleet API over HTTP/1.1: `POST {scheme}://{host:port}/v1/fleet/{rpc}` with the
//! serialized request as an `application/protobuf` body and the node's signed headers
//! ([`crate::auth`]); the reply is the serialized response, or a JSON error with a non-200
//! status. TLS (rustls) verifies the SuperLink against the Mozilla roots or the certificates
//! given; `--insecure` speaks plain HTTP, for loopback and tests.
//!
//! Every call counts the bytes it sends and receives ([`Traffic`]), for the round metrics.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use crate::auth::NodeKey;
use crate::error::{Error, Result};

/// The largest reply read (an object is at most a 5 MiB chunk plus its header; a pulled
/// message is metadata only).
const MAX_REPLY: u64 = 64 << 20;

/// Bytes sent and received, over all calls.
#[derive(Debug, Default)]
pub struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Traffic {
    /// Bytes sent (request bodies).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes received (reply bodies).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Where the SuperLink is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// Plain HTTP (no TLS).
    pub insecure: bool,
}

impl Endpoint {
    /// Checks `address` (`host:port`; a `[v6]:port` too).
    ///
    /// # Errors
    /// [`Error::Usage`] naming `--superlink` when the address has no port or a bad one.
    pub fn parse(address: &str, insecure: bool) -> Result<Endpoint> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "--superlink {address:?}: {why}; expected HOST:PORT, e.g. 127.0.0.1:9092"
            ))
        };
        if address.contains("://") {
            return Err(bad("give the address without a scheme (--insecure chooses http)"));
        }
        let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(bad("no host"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("an IPv6 address needs brackets"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Endpoint { address: address.to_string(), insecure }),
            _ => Err(bad("the port is not a number from 1 to 65535")),
        }
    }

    /// The URL of `rpc`.
    pub fn url(&self, rpc: &str) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/v1/fleet/{rpc}", self.address)
    }
}

/// A blocking Fleet API client. Cheap to clone (the heartbeat thread has its own).
#[derive(Clone)]
pub struct Fleet {
    agent: ureq::Agent,
    endpoint: Endpoint,
    key: NodeKey,
    traffic: Arc<Traffic>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl Fleet {
    /// A client of `endpoint` signing with `key`; `root_certificates` (a PEM file) replaces the
    /// Mozilla roots; `timeout` bounds each call.
    ///
    /// # Errors
    /// An unreadable certificate file, or one with no certificate.
    pub fn new(
        endpoint: Endpoint,
        key: NodeKey,
        root_certificates: Option<&Path>,
        timeout: Duration,
    ) -> Result<Fleet> {
        let roots = match root_certificates {
            None => RootCerts::WebPki,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
                let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(Error::Usage(format!(
                        "--root-certificates {}: no PEM certificate in the file",
                        path.display()
                    )));
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .user_agent(concat!("mft-fl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Fleet { agent, endpoint, key, traffic: Arc::new(Traffic::default()) })
    }

    /// The SuperLink's address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The node's key.
    pub fn key(&self) -> &NodeKey {
        &self.key
    }

    /// Bytes moved so far.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Calls `rpc` with `request`.
    ///
    /// # Errors
    /// [`Error::Unreachable`] (no connection, TLS failure, timeout); [`Error::Unauthorized`]
    /// (HTTP 401); [`Error::Refused`] (any other status but 200, with the SuperLink's
    /// explanation); [`Error::Decode`] (a reply that is not `Resp`).
    pub fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        rpc: &'static str,
        request: &Req,
    ) -> Result<Resp> {
        let body = request.encode_to_vec();
        let mut builder = self
            .agent
            .post(self.endpoint.url(rpc))
            .header("content-type", "application/protobuf")
            .header("accept", "application/protobuf");
        for (name, value) in self.key.headers(SystemTime::now()) {
            builder = builder.header(name, value);
        }
        let unreachable = |e: ureq::Error| Error::Unreachable {
            address: self.endpoint.address.clone(),
            rpc,
            problem: e.to_string(),
        };
        let mut response = builder.send(&body[..]).map_err(unreachable)?;
        self.traffic.sent.fetch_add(body.len() as u64, Ordering::Relaxed);
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .read_to_vec()
            .map_err(unreachable)?;
        self.traffic.received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match status {
            200 => {
                Resp::decode(&bytes[..]).map_err(|e| Error::Decode { rpc, problem: e.to_string() })
            }
            401 => Err(Error::Unauthorized {
                address: self.endpoint.address.clone(),
                rpc,
                detail: error_detail(&bytes),
            }),
            status => Err(Error::Refused { rpc, status, detail: error_detail(&bytes) }),
        }
    }
}

/// The explanation in an error reply: its JSON `detail`/`message`, or its text, shortened.
fn error_detail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let detail = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            ["detail", "message", "error"].iter().find_map(|k| match &v[*k] {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
        })
        .unwrap_or_else(|| text.trim().to_string());
    let detail = if detail.is_empty() { "(no explanation)".to_string() } else { detail };
    match detail.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &detail[..i]),
        None => detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let e = Endpoint::parse("127.0.0.1:9092", true).unwrap();
        assert_eq!(e.url("pull-messages"), "http://127.0.0.1:9092/v1/fleet/pull-messages");
        let e = Endpoint::parse("link.example.org:443", false).unwrap();
        assert_eq!(e.url("push-object"), "https://link.example.org:443/v1/fleet/push-object");
        assert!(Endpoint::parse("[::1]:9092", true).is_ok());
        for (bad, why) in [
            ("127.0.0.1", "no port"),
            ("127.0.0.1:http", "port"),
            ("127.0.0.1:0", "port"),
            (":9092", "no host"),
            ("http://127.0.0.1:9092", "scheme"),
            ("::1:9092", "brackets"),
        ] {
            let err = Endpoint::parse(bad, true).unwrap_err().to_string();
            assert!(err.contains("--superlink") && err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn error_details() {
        assert_eq!(
            error_detail(br#"{"detail": "Invalid SuperNode authentication"}"#),
            "Invalid SuperNode authentication"
        );
        assert_eq!(error_detail(b"Internal Server Error"), "Internal Server Error");
        assert_eq!(error_detail(b""), "(no explanation)");
        assert!(error_detail(&[b'x'; 1000]).ends_with('…'));
    }

    #[test]
    fn an_unreachable_superlink_is_a_transient_error_naming_it() {
        // A port nothing listens on: bind one, then close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::load_or_create(&dir.path().join("k.pem")).unwrap();
        let endpoint = Endpoint::parse(&format!("127.0.0.1:{port}"), true).unwrap();
        let fleet = Fleet::new(endpoint, key, None, Duration::from_secs(5)).unwrap();
        let err = fleet
            .call::<_, crate::proto::Empty>("pull-messages", &crate::proto::Empty {})
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
