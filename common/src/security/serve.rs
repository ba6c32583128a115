//! The server side: accepts TCP connections, completes the TLS handshake (mutual when the peer
//! presents a certificate), and hands tonic connections that carry the peer's identity as
//! connect info ([`PeerInfo`]), so the authorization layer and handlers can read it.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;

use super::SecurityError;
use super::identity::Identity;
use super::tls::{ReloadingTls, TlsArgs};

/// What the server knows of a connection's peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's socket address.
    pub remote: SocketAddr,
    /// Whether the connection is TLS (false only with --insecure-loopback).
    pub tls: bool,
    /// The identity its verified client certificate names, if it presented one.
    pub identity: Option<Result<Identity, String>>,
}

/// How a server listens: TLS with the given material, or plain text on loopback.
#[derive(Clone)]
pub enum ServerSecurity {
    /// Mutual TLS (client certificates verified against the CA when presented).
    Tls(Arc<ReloadingTls>),
    /// Plain text; allowed only on a loopback address.
    InsecureLoopback,
}

impl ServerSecurity {
    /// Checks the flags against the listen address: TLS needs a certificate; plain text needs
    /// `--insecure-loopback` and a loopback address.
    pub fn from_args(args: &TlsArgs, listen: SocketAddr) -> Result<Self, SecurityError> {
        match args.load()? {
            Some(tls) => {
                if args.insecure_loopback {
                    return Err(SecurityError::Config(
                        "--insecure-loopback and TLS files exclude each other".into(),
                    ));
                }
                tls.server_config()?;
                Ok(ServerSecurity::Tls(tls))
            }
            None if args.insecure_loopback => {
                if listen.ip().is_loopback() {
                    Ok(ServerSecurity::InsecureLoopback)
                } else {
                    Err(SecurityError::Config(format!(
                        "--insecure-loopback serves plain text only on a loopback address; {listen} is not one: give --tls-ca, --tls-cert and --tls-key"
                    )))
                }
            }
            None => Err(SecurityError::Config(format!(
                "no TLS configured for {listen}: give --tls-ca, --tls-cert and --tls-key (see `ringvault certs`), or --insecure-loopback on a loopback address"
            ))),
        }
    }
}

/// A connection handed to tonic.
pub struct Conn {
    io: Io,
    info: PeerInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The stream of accepted connections tonic serves (`serve_with_incoming_shutdown`).
pub type Incoming = ReceiverStream<Result<Conn, std::io::Error>>;

/// Binds `listen` and accepts connections in the background; handshakes run concurrently so
/// a slow or hostile peer never holds up the others.
pub async fn incoming(listen: SocketAddr, sec: ServerSecurity) -> Result<Incoming, SecurityError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| SecurityError::Config(format!("cannot listen on {listen}: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            let sec = sec.clone();
            tokio::spawn(async move {
                if let Some(conn) = handshake(tcp, remote, &sec).await
                    && tx.send(Ok(conn)).await.is_err()
                {
                    tracing::debug!("server stopped; dropping a connection");
                }
            });
        }
    });
    Ok(ReceiverStream::new(rx))
}

async fn handshake(tcp: TcpStream, remote: SocketAddr, sec: &ServerSecurity) -> Option<Conn> {
    match sec {
        ServerSecurity::InsecureLoopback => Some(Conn {
            io: Io::Plain(tcp),
            info: PeerInfo {
                remote,
                tls: false,
                identity: None,
            },
        }),
        ServerSecurity::Tls(tls) => {
            let cfg = match tls.server_config() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "no usable TLS configuration; refusing connection");
                    return None;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %remote, error = %e, "TLS handshake refused");
                        return None;
                    }
                    Err(_) => {
                        tracing::warn!(peer = %remote, "TLS handshake timed out");
                        return None;
                    }
                };
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| super::identity_of_certificate(leaf.as_ref()));
            Some(Conn {
                io: Io::Tls(Box::new(stream)),
                info: PeerInfo {
                    remote,
                    tls: true,
                    identity,
                },
            })
        }
    }
}
