//! Integration tests of attestmesh-devnet (one binary, one module per emulator / area).

// A failed unwrap is a failed test, with the reason in the panic message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bundler;
mod cli;
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

/// A devnet binary run as a user runs it: its stderr is read on a thread of its own (so the pipe
/// never fills and the address it logs can be read), and it is killed if the test fails first.
#[derive(Debug)]
pub struct ServiceProcess {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts `attestmesh-devnet` with `args` (RUST_LOG unset: the binary's default level).
    pub fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_attestmesh-devnet"))
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let collected = stderr.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// What the binary wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The value of `field=` on the first log line that says `message`: how a binary told to
    /// listen on port 0 says which port it bound.
    pub async fn logged(&mut self, message: &str, field: &str) -> String {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let key = format!(" {field}=");
        loop {
            let text = self.stderr();
            if let Some(value) = text
                .lines()
                .filter(|line| line.contains(message))
                .find_map(|line| line.split_once(&key))
                .and_then(|(_, rest)| rest.split_whitespace().next())
            {
                return value.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the binary exited with {status} before logging {message:?}: {text}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the binary never logged {message:?} with {field}=: {text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (as `kill` names it: "-HUP", "-TERM").
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM, then the exit status and everything written to stderr.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, self.stderr())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
