//! How the pooled upstream client connects: hyper-rustls's HTTP-or-HTTPS
//! connector, with a TLS connection's session kept behind a box.
//!
//! Every pooled connection's task holds its I/O inline. rustls's session
//! state makes hyper-rustls's `MaybeHttpsStream` 1,112 bytes where a TCP
//! stream is 40, so each plain-HTTP connection (a local Ollama, an
//! operator's in-house endpoint) carried room for a TLS session it never
//! had, and each open stream holds one connection. Here a TLS connection
//! costs one allocation more, once per connection (they are pooled), and a
//! plain one ~1 KiB less.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Tcp = TokioIo<TcpStream>;
type Https = HttpsConnector<HttpConnector>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream client's connector.
#[derive(Clone)]
pub struct Connector(Https);

impl Connector {
    /// Wraps hyper-rustls's connector.
    pub fn new(https: Https) -> Self {
        Self(https)
    }
}

/// One upstream connection's I/O.
pub enum UpstreamIo {
    /// Plain HTTP.
    Plain(Tcp),
    /// HTTPS: the rustls session, boxed.
    Tls(Box<MaybeHttpsStream<Tcp>>),
}

impl UpstreamIo {
    fn of(stream: MaybeHttpsStream<Tcp>) -> Self {
        match stream {
            MaybeHttpsStream::Http(tcp) => Self::Plain(tcp),
            tls => Self::Tls(Box::new(tls)),
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Connecting(self.0.call(uri))
    }
}

/// The future of [`Connector`]'s `call`: hyper-rustls's, its stream
/// rewrapped.
pub struct Connecting(<Https as tower::Service<Uri>>::Future);

impl Future for Connecting {
    type Output = Result<UpstreamIo, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map_ok(UpstreamIo::of)
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(tcp) => tcp.connected(),
            // Says whether ALPN chose HTTP/2.
            Self::Tls(tls) => tls.connected(),
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_connection_carries_no_room_for_a_tls_session() {
        assert!(
            std::mem::size_of::<UpstreamIo>() <= std::mem::size_of::<Tcp>() + 8,
            "{} bytes",
            std::mem::size_of::<UpstreamIo>()
        );
    }
}
