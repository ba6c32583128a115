//! The client side: a tonic channel to an `https://` URL over TLS with this component's
//! certificate (taken afresh from disk at every connection, so rotation needs no restart), or
//! to an `http://` URL only when the host is a loopback address.
use std::net::IpAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::SecurityError;
use super::tls::ReloadingTls;

/// What a client may use to reach a server.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// TLS material; `None`: only `http://` loopback URLs can be reached.
    pub tls: Option<Arc<ReloadingTls>>,
}

/// Whether `host` (from a URL) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ClientSecurity {
    /// A lazily connecting channel to `url`; `tune` sets timeouts and keep-alives.
    pub fn channel(
        &self,
        url: &str,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, SecurityError> {
        Ok(match self.target(url, tune)? {
            Target::Plain(ep) => ep.connect_lazy(),
            Target::Tls(ep, c) => ep.connect_with_connector_lazy(c.service()),
        })
    }

    /// A channel to `url`, connected now so an unreachable or refusing server is reported at
    /// once, with the reason (a TLS refusal names what failed).
    pub async fn connect(
        &self,
        url: &str,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, SecurityError> {
        let unreachable = |e: tonic::transport::Error| SecurityError::Unreachable {
            url: url.to_string(),
            reason: error_chain(&e),
        };
        match self.target(url, tune)? {
            Target::Plain(ep) => ep.connect().await.map_err(unreachable),
            Target::Tls(ep, c) => ep
                .connect_with_connector(c.service())
                .await
                .map_err(unreachable),
        }
    }

    fn target(
        &self,
        url: &str,
        tune: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Target, SecurityError> {
        let bad = |why: &str| SecurityError::Url {
            url: url.to_string(),
            reason: why.to_string(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().ok_or_else(|| bad("has no port"))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .ok_or_else(|| bad("has no host"))?;
        // tonic speaks HTTP/2 over whatever stream the connector returns; the scheme it sees is
        // always http because TLS is done here.
        let ep = tune(
            Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| bad(&e.to_string()))?
                .tcp_nodelay(true),
        );
        match uri.scheme_str() {
            Some("http") if is_loopback_host(&host) => Ok(Target::Plain(ep)),
            Some("http") => Err(bad(
                "plain-text http:// is allowed only to a loopback address; use https://",
            )),
            Some("https") => {
                let tls = self.tls.clone().ok_or_else(|| {
                    bad("https:// needs --tls-ca (and --tls-cert/--tls-key for mutual TLS)")
                })?;
                let server_name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| bad("host is not a valid TLS server name"))?;
                Ok(Target::Tls(
                    ep,
                    TlsConnect {
                        tls,
                        server_name,
                        host,
                        port,
                    },
                ))
            }
            _ => Err(bad("scheme must be https:// (or http:// on loopback)")),
        }
    }
}

enum Target {
    Plain(Endpoint),
    Tls(Endpoint, TlsConnect),
}

/// Opens TCP + TLS with the configuration as it is on disk at that moment.
#[derive(Clone)]
struct TlsConnect {
    tls: Arc<ReloadingTls>,
    server_name: rustls::pki_types::ServerName<'static>,
    host: String,
    port: u16,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl TlsConnect {
    fn service(
        self,
    ) -> impl tower::Service<
        Uri,
        Response = TlsIo,
        Error = std::io::Error,
        Future = impl Future<Output = std::io::Result<TlsIo>> + Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |_: Uri| {
            let c = self.clone();
            async move {
                let cfg = c.tls.client_config().map_err(std::io::Error::other)?;
                let tcp = tokio::net::TcpStream::connect((c.host.as_str(), c.port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tokio_rustls::TlsConnector::from(cfg)
                    .connect(c.server_name, tcp)
                    .await?;
                Ok(TokioIo::new(stream))
            }
        })
    }
}

/// An error and its sources on one line (TLS failures hide the reason in a source).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
