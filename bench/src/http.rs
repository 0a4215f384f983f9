//! A bare HTTP/1.1 keep-alive client on hyper: one TCP connection, one request at a time.
//! The load generator and the admin calls both use it, so every figure is taken with the
//! same client.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request, reusable across sends (the body is reference-counted).
#[derive(Debug, Clone)]
pub struct Call {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body (empty for none).
    pub body: Bytes,
}

impl Call {
    /// A `GET` of `path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A `POST` of a JSON body to `path`.
    pub fn post_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.into(),
        }
    }

    /// A `PUT` of a JSON body to `path`.
    pub fn put_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::PUT,
            ..Self::post_json(path, body)
        }
    }

    /// The same call with a bearer token.
    pub fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("authorization", format!("Bearer {token}")));
        self
    }

    fn to_request(&self, host: &str) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", host);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder
            .body(Full::new(self.body.clone()))
            .context("building a request")
    }
}

/// A keep-alive connection to one server.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    /// Connects to `addr` (Nagle off, as every HTTP client and server in the comparison).
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server closes it;
            // either way the next send reports it.
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends `call` and reads the whole response.
    pub async fn send(&mut self, call: &Call) -> Result<(StatusCode, Bytes)> {
        let request = call.to_request(&self.host)?;
        self.sender.ready().await.context("connection closed")?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Sends one call on a fresh connection.
pub async fn once(addr: SocketAddr, call: &Call) -> Result<(StatusCode, Bytes)> {
    Connection::open(addr).await?.send(call).await
}

/// Sends one call and parses a JSON answer, failing unless the status is `expected`.
pub async fn json(
    addr: SocketAddr,
    call: &Call,
    expected: StatusCode,
) -> Result<serde_json::Value> {
    let (status, body) = once(addr, call).await?;
    if status != expected {
        return Err(anyhow!(
            "{} {} answered {status}: {}",
            call.method,
            call.path,
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).with_context(|| format!("{} {} answer", call.method, call.path))
}
