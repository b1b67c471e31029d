//! Integration tests of attestmesh-devnet (one binary, one module per emulator / area).

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bundler;
mod cli;
mod demo;
mod dstack_simulator;
mod gas_manager;
mod gateway;
mod local_chain;
mod paymaster_drain;
mod up;

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The dstack GetKey test vector, kept once in test/vectors/ (see dstack/tests/it/main.rs).
pub const VECTOR_JSON: &str = include_str!("../../../test/vectors/dstack-getkey-simulator.json");

/// One raw HTTP/1.1 request over a unix socket, without the project's client, so the tests see
/// exactly what goes over the wire. Returns the status code and the body parsed as JSON.
pub async fn raw_request(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let json = serde_json::from_str(body)
        .unwrap_or_else(|err| panic!("body is not JSON ({err}): {body:?}"));
    (status, json)
}
