//! Lets gRPC clients that put the socket path in `:authority` talk to the API socket.
//!
//! gRPC C-core (Python, C++, Ruby), grpc-java and grpc-swift, dialled at `unix:///run/x.sock`,
//! send the socket path as the HTTP/2 `:authority` (grpcio 1.85 sends `run%2Fx.sock`; issue 16
//! reports the raw `/run/x.sock` from others). h2 as released parses `:authority` as a URI authority and resets
//! every such stream with `PROTOCOL_ERROR` before tonic sees it (h2 0.4.20,
//! `server::Peer::convert_poll_message`: a `%` in the host, or a `/`, is refused), and neither
//! h2, hyper nor tonic has an option to skip that check. On a unix socket the authority names
//! nothing (there is one server behind the socket), so [`RewriteAuthority`] sits between the
//! socket and tonic and replaces the value of every `:authority` the client sends with
//! [`AUTHORITY`]; every other byte passes through as it came.
//!
//! Header blocks are HPACK-compressed with a state shared across the connection, so the shim
//! decodes every header block the client sends (HEADERS and its CONTINUATIONs) with its own
//! decoder and re-encodes it with an encoder that never references its dynamic table (so the
//! server's decoder needs no state from us beyond the static table). Everything else (the
//! preface, SETTINGS, DATA, WINDOW_UPDATE, PING, RST_STREAM, GOAWAY, ...) and everything the
//! server writes is forwarded byte for byte. A connection that does not start with the HTTP/2
//! preface is passed through untouched (the server refuses it itself).
//!
//! A client that breaks the framing or the HPACK rules gets its connection closed (an
//! `InvalidData` error to the server, which drops it), logged; nothing here panics. The server
//! would have closed such a connection too (a connection error in HTTP/2). So is one whose
//! header block exceeds [`MAX_BLOCK`] or [`MAX_HEADER_LIST`], far past the 16 KiB header list
//! the server accepts (where the server alone would only have refused that one stream).
//!
//! Remove this module when a released h2 accepts such authorities (an upstream change exists).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::decoder::DecoderError;
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::targets::API;

/// What every `:authority` becomes: a valid authority that names no one else.
pub const AUTHORITY: &[u8] = b"localhost";

/// The connection preface every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Stream dependency (4 bytes) and weight (1) of a HEADERS frame with PRIORITY.
const PRIORITY_LEN: usize = 5;
/// The frames the shim writes are no larger than the smallest SETTINGS_MAX_FRAME_SIZE a peer
/// may set, so they fit whatever the server advertised.
const MAX_FRAME_OUT: usize = 16_384;
/// The server (h2 behind tonic) never changes SETTINGS_HEADER_TABLE_SIZE from the protocol's
/// default, so the client's encoder may use at most this much dynamic table.
const CLIENT_TABLE_SIZE: usize = 4_096;
/// A compressed header block larger than this closes the connection. The server refuses
/// header lists over 16 KiB anyway (hyper's default SETTINGS_MAX_HEADER_LIST_SIZE); this only
/// bounds what the shim buffers.
pub const MAX_BLOCK: usize = 256 * 1024;
/// A decoded header list larger than this (counted as HPACK does: name + value + 32 per field)
/// closes the connection: it bounds what a small block referencing the dynamic table again and
/// again could make the shim allocate.
pub const MAX_HEADER_LIST: usize = 1024 * 1024;

/// Why a client's byte stream could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("stream {stream}: frame type {kind:#x} inside a header block (CONTINUATION expected)")]
    ExpectedContinuation { stream: u32, kind: u8 },
    #[error("stream {stream}: CONTINUATION without a HEADERS frame before it")]
    UnexpectedContinuation { stream: u32 },
    #[error("stream {stream}: CONTINUATION for a header block of stream {block_stream}")]
    ContinuationStreamMismatch { stream: u32, block_stream: u32 },
    #[error("stream {stream}: header block over {MAX_BLOCK} bytes")]
    BlockTooLarge { stream: u32 },
    #[error("stream {stream}: decoded header list over {MAX_HEADER_LIST} bytes")]
    HeaderListTooLarge { stream: u32 },
    #[error("stream {stream}: HEADERS frame too short for its padding or priority fields")]
    BadHeadersFrame { stream: u32 },
    #[error("stream {stream}: header block does not decode (HPACK): {source}")]
    Hpack {
        stream: u32,
        #[source]
        source: DecoderError,
    },
    #[error("stream {stream}: header block could not be re-encoded: {source}")]
    Encode {
        stream: u32,
        #[source]
        source: io::Error,
    },
    #[error("the connection ended inside a frame")]
    Truncated,
}

/// A frame header as sent on the wire.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        Self {
            len,
            kind: bytes[3],
            flags: bytes[4],
            stream,
        }
    }
}

/// A header block still waiting for its END_HEADERS.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_LEN]>,
    fragment: Vec<u8>,
}

#[derive(Debug)]
enum State {
    /// Matching the client preface; `matched` bytes so far.
    Preface { matched: usize },
    /// Collecting the 9 bytes of a frame header.
    FrameHeader {
        bytes: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Forwarding the rest of a frame that is not part of a header block.
    Forward { remaining: usize },
    /// Collecting a HEADERS or CONTINUATION payload.
    HeaderFrame { head: FrameHead, payload: Vec<u8> },
    /// Not HTTP/2 with prior knowledge, or failed: everything is forwarded untouched.
    PassThrough,
}

/// The sans-IO core: bytes from the client in, bytes for the server out.
pub struct HeaderRewriter {
    state: State,
    block: Option<Block>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    /// `:authority` values rewritten so far on this connection.
    rewritten: u64,
}

impl fmt::Debug for HeaderRewriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderRewriter")
            .field("state", &self.state)
            .field("block", &self.block)
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Default for HeaderRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderRewriter {
    pub fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(CLIENT_TABLE_SIZE);
        let mut encoder = Encoder::new();
        // No dynamic table on the way out: every block we write stands on the static table
        // alone, whatever the server's decoder holds.
        encoder.set_max_table_size(0);
        Self {
            state: State::Preface { matched: 0 },
            block: None,
            decoder,
            encoder,
            rewritten: 0,
        }
    }

    /// How many `:authority` values were rewritten so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Takes the next bytes from the client (any split) and appends what the server should
    /// read to `out`. After an error the connection must be closed.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), RewriteError> {
        while !input.is_empty() {
            match &mut self.state {
                State::PassThrough => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                State::Preface { matched } => {
                    let n = (PREFACE.len() - *matched).min(input.len());
                    let (head, rest) = input.split_at(n);
                    out.extend_from_slice(head);
                    input = rest;
                    if head != &PREFACE[*matched..*matched + n] {
                        debug!(target: API, "API connection without the HTTP/2 preface: passed through");
                        self.state = State::PassThrough;
                    } else {
                        *matched += n;
                        if *matched == PREFACE.len() {
                            self.state = State::FrameHeader {
                                bytes: [0; FRAME_HEADER_LEN],
                                have: 0,
                            };
                        }
                    }
                }
                State::FrameHeader { bytes, have } => {
                    let n = (FRAME_HEADER_LEN - *have).min(input.len());
                    bytes[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    input = &input[n..];
                    if *have == FRAME_HEADER_LEN {
                        let raw = *bytes;
                        self.start_frame(&raw, out)?;
                    }
                }
                State::Forward { remaining } => {
                    let n = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = Self::next_frame();
                    }
                }
                State::HeaderFrame { head, payload } => {
                    let n = (head.len - payload.len()).min(input.len());
                    payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if payload.len() == head.len {
                        self.finish_header_frame(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The client closed its side: an error when that cut a frame.
    pub fn finish(&self) -> Result<(), RewriteError> {
        match &self.state {
            State::FrameHeader { have: 0, .. } | State::PassThrough if self.block.is_none() => {
                Ok(())
            }
            // A client that hung up before finishing its preface sent nothing to rewrite.
            State::Preface { .. } => Ok(()),
            _ => Err(RewriteError::Truncated),
        }
    }

    fn next_frame() -> State {
        State::FrameHeader {
            bytes: [0; FRAME_HEADER_LEN],
            have: 0,
        }
    }

    fn start_frame(
        &mut self,
        raw: &[u8; FRAME_HEADER_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let head = FrameHead::parse(raw);
        match (&self.block, head.kind) {
            (Some(block), CONTINUATION) if block.stream != head.stream => {
                return Err(RewriteError::ContinuationStreamMismatch {
                    stream: head.stream,
                    block_stream: block.stream,
                });
            }
            (Some(block), CONTINUATION) if block.fragment.len() + head.len > MAX_BLOCK => {
                return Err(RewriteError::BlockTooLarge {
                    stream: head.stream,
                });
            }
            (Some(_), CONTINUATION) => {}
            (Some(_), kind) => {
                return Err(RewriteError::ExpectedContinuation {
                    stream: head.stream,
                    kind,
                });
            }
            (None, CONTINUATION) => {
                return Err(RewriteError::UnexpectedContinuation {
                    stream: head.stream,
                });
            }
            (None, HEADERS) if head.len > MAX_BLOCK => {
                return Err(RewriteError::BlockTooLarge {
                    stream: head.stream,
                });
            }
            (None, HEADERS) => {}
            (None, _) => {
                out.extend_from_slice(raw);
                self.state = if head.len == 0 {
                    Self::next_frame()
                } else {
                    State::Forward {
                        remaining: head.len,
                    }
                };
                return Ok(());
            }
        }
        self.state = State::HeaderFrame {
            head,
            payload: Vec::with_capacity(head.len),
        };
        if head.len == 0 {
            self.finish_header_frame(out)?;
        }
        Ok(())
    }

    /// A whole HEADERS or CONTINUATION payload is in: add it to the block, and rewrite the
    /// block once it is complete.
    fn finish_header_frame(&mut self, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        let State::HeaderFrame { head, payload } =
            std::mem::replace(&mut self.state, Self::next_frame())
        else {
            return Ok(());
        };
        let mut block = match self.block.take() {
            Some(mut block) => {
                block.fragment.extend_from_slice(&payload);
                block
            }
            None => {
                let bad = || RewriteError::BadHeadersFrame {
                    stream: head.stream,
                };
                let mut body = payload.as_slice();
                let padding = if head.flags & PADDED != 0 {
                    let (&pad, rest) = body.split_first().ok_or_else(bad)?;
                    body = rest;
                    usize::from(pad)
                } else {
                    0
                };
                let priority = if head.flags & PRIORITY != 0 {
                    let (fields, rest) = body.split_at_checked(PRIORITY_LEN).ok_or_else(bad)?;
                    body = rest;
                    let mut priority = [0; PRIORITY_LEN];
                    priority.copy_from_slice(fields);
                    Some(priority)
                } else {
                    None
                };
                let end = body.len().checked_sub(padding).ok_or_else(bad)?;
                Block {
                    stream: head.stream,
                    end_stream: head.flags & END_STREAM != 0,
                    priority,
                    fragment: body[..end].to_vec(),
                }
            }
        };
        if head.flags & END_HEADERS == 0 {
            self.block = Some(block);
            return Ok(());
        }
        let fragment = std::mem::take(&mut block.fragment);
        let encoded = self.rewrite_block(block.stream, &fragment)?;
        write_block(&block, &encoded, out);
        Ok(())
    }

    /// Decodes one complete header block, replaces `:authority`, and encodes it again.
    fn rewrite_block(&mut self, stream: u32, fragment: &[u8]) -> Result<Vec<u8>, RewriteError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut too_large = false;
        let mut rewritten = 0u64;
        let mut original: Option<Vec<u8>> = None;
        self.decoder
            .decode_with_cb(fragment, |name, value| {
                // Decoding goes on to the end even past the limit: the dynamic table must
                // stay in step. Only what is kept is bounded.
                size = size.saturating_add(name.len() + value.len() + 32);
                if too_large || size > MAX_HEADER_LIST {
                    too_large = true;
                    return;
                }
                if name.as_ref() == b":authority" {
                    if original.is_none() {
                        original = Some(value.to_vec());
                    }
                    rewritten += 1;
                    fields.push((name.into_owned(), AUTHORITY.to_vec()));
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|source| RewriteError::Hpack { stream, source })?;
        if too_large {
            return Err(RewriteError::HeaderListTooLarge { stream });
        }
        if rewritten > 0 && self.rewritten == 0 {
            debug!(
                target: API,
                stream,
                authority = %String::from_utf8_lossy(original.as_deref().unwrap_or_default()),
                "API connection: client :authority replaced by localhost",
            );
        }
        self.rewritten += rewritten;
        let mut encoded = Vec::with_capacity(fragment.len() + 64);
        self.encoder
            .encode_into(
                fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())),
                &mut encoded,
            )
            .map_err(|source| RewriteError::Encode { stream, source })?;
        Ok(encoded)
    }
}

/// Writes `encoded` as one HEADERS frame and as many CONTINUATIONs as needed, keeping the
/// original END_STREAM and priority (padding is dropped: it carried nothing).
fn write_block(block: &Block, encoded: &[u8], out: &mut Vec<u8>) {
    let priority_len = if block.priority.is_some() {
        PRIORITY_LEN
    } else {
        0
    };
    let first_len = encoded.len().min(MAX_FRAME_OUT - priority_len);
    let (first, mut rest) = encoded.split_at(first_len);
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(out, first_len + priority_len, HEADERS, flags, block.stream);
    if let Some(priority) = &block.priority {
        out.extend_from_slice(priority);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let n = rest.len().min(MAX_FRAME_OUT);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, n, CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // `len` is at most MAX_FRAME_OUT: it fits the 24-bit length field.
    let len = len.to_be_bytes();
    out.extend_from_slice(&len[len.len() - 3..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// A server-side connection whose client bytes go through a [`HeaderRewriter`] before the
/// server reads them; what the server writes goes straight to the client.
#[derive(Debug)]
pub struct RewriteAuthority<S> {
    inner: S,
    rewriter: HeaderRewriter,
    /// Rewritten bytes the server has not read yet, from `pending_at`.
    pending: Vec<u8>,
    pending_at: usize,
    scratch: Box<[u8]>,
    /// Set once the client's side ended or the rewrite failed.
    done: Option<Result<(), io::ErrorKind>>,
}

impl<S> RewriteAuthority<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rewriter: HeaderRewriter::new(),
            pending: Vec::new(),
            pending_at: 0,
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            done: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RewriteAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pending_at < this.pending.len() {
                let n = (this.pending.len() - this.pending_at).min(buf.remaining());
                buf.put_slice(&this.pending[this.pending_at..this.pending_at + n]);
                this.pending_at += n;
                if this.pending_at == this.pending.len() {
                    this.pending.clear();
                    this.pending_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.done {
                Some(Ok(())) => return Poll::Ready(Ok(())),
                Some(Err(kind)) => {
                    return Poll::Ready(Err(io::Error::new(
                        kind,
                        "API connection closed: the client broke HTTP/2 framing",
                    )));
                }
                None => {}
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The client hung up. Cut inside a frame or not, the server sees the same end
                // of stream it would have seen without the shim, and handles it.
                if let Err(error) = this.rewriter.finish() {
                    debug!(target: API, %error, "API connection: the client hung up mid-frame");
                }
                this.done = Some(Ok(()));
                continue;
            }
            if let Err(error) = this.rewriter.feed(read.filled(), &mut this.pending) {
                warn!(target: API, %error, "API connection closed: cannot rewrite the client's HTTP/2 headers");
                // What was rewritten before the error is dropped: the connection is over.
                this.pending.clear();
                this.pending_at = 0;
                this.done = Some(Err(io::ErrorKind::InvalidData));
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RewriteAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The server sees the peer of the unix socket itself (credentials, address).
impl<S: Connected> Connected for RewriteAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SETTINGS: u8 = 0x4;
    const DATA: u8 = 0x0;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// Splits the server-side bytes back into frames (after the preface).
    fn frames(mut bytes: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        bytes = &bytes[PREFACE.len()..];
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let head = FrameHead::parse(bytes[..FRAME_HEADER_LEN].try_into().unwrap());
            let payload = bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + head.len].to_vec();
            bytes = &bytes[FRAME_HEADER_LEN + head.len..];
            frames.push((head, payload));
        }
        frames
    }

    fn request_headers(authority: &[u8], path: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), path.to_vec()),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
        ]
    }

    /// Encodes like a client would: with its dynamic table, so later blocks refer to entries
    /// earlier blocks added.
    fn encode(encoder: &mut Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    fn run(rewriter: &mut HeaderRewriter, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            rewriter.feed(piece, &mut out).unwrap();
        }
        rewriter.finish().unwrap();
        out
    }

    fn decode_all(frames: &[(FrameHead, Vec<u8>)]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        for (head, payload) in frames {
            match head.kind {
                HEADERS => {
                    let skip = if head.flags & PRIORITY != 0 { 5 } else { 0 };
                    block.extend_from_slice(&payload[skip..]);
                }
                CONTINUATION => block.extend_from_slice(payload),
                _ => continue,
            }
            if head.flags & END_HEADERS != 0 {
                blocks.push(decoder.decode(&block).unwrap());
                block.clear();
            }
        }
        blocks
    }

    fn authority(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
        fields
            .iter()
            .filter(|(n, _)| n == b":authority")
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// The bug: grpcio's `tmp%2Fagent.sock` and grpc-java's `/tmp/agent.sock` reached h2,
    /// which reset the stream. Both become `localhost`, on every request of the connection
    /// (the later ones refer to the client's dynamic table), in any read split.
    #[test]
    fn socket_path_authorities_become_localhost_and_the_rest_is_kept() {
        for chunk in [1, 7, 4096] {
            let mut client = Encoder::new();
            let mut input = PREFACE.to_vec();
            input.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
            let mut sent = Vec::new();
            for (i, authority) in [
                &b"tmp%2Fagent.sock"[..],
                b"/tmp/agent.sock",
                b"tmp%2Fagent.sock",
            ]
            .into_iter()
            .enumerate()
            {
                let stream = 1 + 2 * u32::try_from(i).unwrap();
                let headers = request_headers(authority, b"/attestmesh.agent.v1.Agent/GetSelf");
                input.extend(frame(
                    HEADERS,
                    END_HEADERS,
                    stream,
                    &encode(&mut client, &headers),
                ));
                input.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
                sent.push(headers);
            }
            let mut rewriter = HeaderRewriter::new();
            let out = run(&mut rewriter, &input, chunk);
            assert_eq!(rewriter.rewritten(), 3);
            let frames = frames(&out);
            assert_eq!(frames[0].0.kind, SETTINGS);
            assert_eq!(
                frames[0].1,
                [0, 4, 0, 0, 0xff, 0xff],
                "SETTINGS byte for byte"
            );
            let data: Vec<_> = frames.iter().filter(|(h, _)| h.kind == DATA).collect();
            assert_eq!(data.len(), 3);
            assert!(
                data.iter()
                    .all(|(h, p)| h.flags == END_STREAM && p == &[0; 5])
            );
            let blocks = decode_all(&frames);
            assert_eq!(blocks.len(), 3);
            for (block, original) in blocks.iter().zip(&sent) {
                assert_eq!(authority(block), [AUTHORITY]);
                let others = |fields: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, Vec<u8>)> {
                    fields
                        .iter()
                        .filter(|(n, _)| n != b":authority")
                        .cloned()
                        .collect()
                };
                assert_eq!(
                    others(block),
                    others(original),
                    "every other field kept, in order"
                );
            }
        }
    }

    /// A block split over CONTINUATION frames, padded and with priority, comes out as one
    /// block with the same stream, END_STREAM and priority.
    #[test]
    fn continuation_padding_and_priority_are_handled() {
        let mut client = Encoder::new();
        let mut headers = request_headers(b"/run/agent.sock", b"/x.Y/Z");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = encode(&mut client, &headers);
        let (a, rest) = block.split_at(10);
        let (b, c) = rest.split_at(20_000);
        let mut first = vec![3u8];
        first.extend_from_slice(&[0x80, 0, 0, 1, 200]);
        first.extend_from_slice(a);
        first.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &first));
        input.extend(frame(CONTINUATION, 0, 5, b));
        input.extend(frame(CONTINUATION, END_HEADERS, 5, c));
        let out = run(&mut HeaderRewriter::new(), &input, 1000);
        let frames = frames(&out);
        assert_eq!(frames[0].0.kind, HEADERS);
        assert_eq!(frames[0].0.flags, PRIORITY | END_STREAM);
        assert_eq!(frames[0].0.stream, 5);
        assert_eq!(&frames[0].1[..5], &[0x80, 0, 0, 1, 200]);
        assert!(
            frames[1..]
                .iter()
                .all(|(h, _)| h.kind == CONTINUATION && h.stream == 5)
        );
        assert!(frames.iter().all(|(h, _)| h.len <= MAX_FRAME_OUT));
        assert_eq!(frames.last().unwrap().0.flags, END_HEADERS);
        let blocks = decode_all(&frames);
        assert_eq!(blocks.len(), 1);
        assert_eq!(authority(&blocks[0]), [AUTHORITY]);
        assert_eq!(blocks[0].last().unwrap().1.len(), 40_000);
    }

    /// A block without `:authority` (trailers, or a client that leaves it out) gains none.
    #[test]
    fn blocks_without_authority_are_left_without() {
        let mut client = Encoder::new();
        let trailers = vec![(b"grpc-status".to_vec(), b"0".to_vec())];
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            1,
            &encode(&mut client, &trailers),
        ));
        let mut rewriter = HeaderRewriter::new();
        let blocks = decode_all(&frames(&run(&mut rewriter, &input, 3)));
        assert_eq!(blocks, [trailers]);
        assert_eq!(rewriter.rewritten(), 0);
    }

    /// Anything that is not an HTTP/2 preface is passed through untouched.
    #[test]
    fn non_http2_bytes_pass_through() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x00\x05\x01";
        let out = run(&mut HeaderRewriter::new(), input, 5);
        assert_eq!(out, input);
    }

    fn feed_all(input: &[u8]) -> Result<(), RewriteError> {
        let mut rewriter = HeaderRewriter::new();
        let mut out = Vec::new();
        rewriter.feed(input, &mut out)?;
        rewriter.finish()
    }

    /// Broken framing or HPACK is an error that closes the connection, never a panic.
    #[test]
    fn malformed_frames_are_errors() {
        let with_preface = |frames: &[Vec<u8>]| {
            let mut input = PREFACE.to_vec();
            for f in frames {
                input.extend_from_slice(f);
            }
            input
        };
        use RewriteError as E;
        let hpack = |e: &E| matches!(e, E::Hpack { .. });
        let bad_headers = |e: &E| matches!(e, E::BadHeadersFrame { .. });
        let mut over_limit = vec![frame(HEADERS, 0, 1, &vec![0x82; MAX_FRAME_OUT])];
        over_limit.extend(vec![
            frame(CONTINUATION, 0, 1, &vec![0x82; MAX_FRAME_OUT]);
            MAX_BLOCK / MAX_FRAME_OUT
        ]);
        type Expected<'a> = &'a dyn Fn(&E) -> bool;
        let cases: Vec<(&str, Vec<u8>, Expected<'_>)> = vec![
            (
                "index beyond the tables",
                with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f])]),
                &hpack,
            ),
            (
                "index 0",
                with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0x80])]),
                &hpack,
            ),
            (
                "string longer than the block",
                with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0x00, 0x7f, 0x10, b'a'])]),
                &hpack,
            ),
            (
                "integer that never ends",
                with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0xff; 7])]),
                &hpack,
            ),
            (
                "table size over the server's",
                with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe1, 0x7f, 0x82])]),
                &hpack,
            ),
            (
                "bad huffman padding",
                with_preface(&[frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &[0x00, 0x81, 0x00, 0x81, 0x00],
                )]),
                &hpack,
            ),
            (
                "padding longer than the frame",
                with_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82])]),
                &bad_headers,
            ),
            (
                "padded frame without its pad length",
                with_preface(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[])]),
                &bad_headers,
            ),
            (
                "priority fields cut short",
                with_preface(&[frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0])]),
                &bad_headers,
            ),
            (
                "CONTINUATION with no HEADERS",
                with_preface(&[frame(CONTINUATION, END_HEADERS, 1, &[0x82])]),
                &|e| matches!(e, E::UnexpectedContinuation { stream: 1 }),
            ),
            (
                "another frame inside a header block",
                with_preface(&[frame(HEADERS, 0, 1, &[0x82]), frame(DATA, 0, 1, &[1])]),
                &|e| {
                    matches!(
                        e,
                        E::ExpectedContinuation {
                            stream: 1,
                            kind: DATA
                        }
                    )
                },
            ),
            (
                "CONTINUATION of another stream",
                with_preface(&[
                    frame(HEADERS, 0, 1, &[0x82]),
                    frame(CONTINUATION, END_HEADERS, 3, &[0x84]),
                ]),
                &|e| {
                    matches!(
                        e,
                        E::ContinuationStreamMismatch {
                            stream: 3,
                            block_stream: 1
                        }
                    )
                },
            ),
            (
                "header block over the limit",
                with_preface(&over_limit),
                &|e| matches!(e, E::BlockTooLarge { stream: 1 }),
            ),
            (
                "one HEADERS frame over the limit",
                // Length 2^24 - 1 in the frame header; the payload never needs to arrive.
                with_preface(&[vec![0xff, 0xff, 0xff, HEADERS, 0, 0, 0, 0, 1]]),
                &|e| matches!(e, E::BlockTooLarge { stream: 1 }),
            ),
            (
                "connection cut inside a frame",
                with_preface(&[frame(HEADERS, END_HEADERS, 1, &[0x82, 0x84])[..10].to_vec()]),
                &|e| matches!(e, E::Truncated),
            ),
            (
                "connection cut inside a header block",
                with_preface(&[frame(HEADERS, 0, 1, &[0x82])]),
                &|e| matches!(e, E::Truncated),
            ),
        ];
        for (what, input, expected) in cases {
            match feed_all(&input) {
                Err(error) if expected(&error) => println!("{what}: {error}"),
                other => panic!("{what}: {other:?}"),
            }
        }

        // A small block that expands past the header-list limit through the dynamic table.
        let mut client = Encoder::new();
        let mut block = encode(&mut client, &[(b"x-fill".to_vec(), vec![b'f'; 3000])]);
        block.extend(std::iter::repeat_n(0xbe, 400)); // index 62: that entry, again and again
        let input = with_preface(&[frame(HEADERS, END_HEADERS, 1, &block)]);
        assert!(matches!(
            feed_all(&input),
            Err(RewriteError::HeaderListTooLarge { .. })
        ));
    }

    /// Random bytes after the preface: errors or pass-through, never a panic.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let mut input = PREFACE.to_vec();
            let len = usize::try_from(next() % 300).unwrap();
            // Mostly HEADERS/CONTINUATION frames with random payloads, sometimes pure noise.
            while input.len() < PREFACE.len() + len {
                let kind =
                    [HEADERS, CONTINUATION, DATA, 0xff][usize::try_from(next() % 4).unwrap()];
                let n = usize::try_from(next() % 40).unwrap();
                let payload: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                input.extend(frame(kind, next() as u8, (next() % 4) as u32, &payload));
            }
            let mut rewriter = HeaderRewriter::new();
            let mut out = Vec::new();
            for piece in input.chunks(usize::try_from(next() % 17 + 1).unwrap()) {
                if rewriter.feed(piece, &mut out).is_err() {
                    break;
                }
            }
            let _ = rewriter.finish();
        }
    }

    /// Through the IO wrapper: rewritten on read, written through untouched.
    #[tokio::test]
    async fn io_wrapper_rewrites_reads_and_passes_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (mut client, server) = tokio::io::duplex(64);
        let mut server = RewriteAuthority::new(server);
        let mut encoder = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &encode(&mut encoder, &request_headers(b"tmp%2Fa.sock", b"/a.B/C")),
        ));
        let writer = tokio::spawn(async move {
            client.write_all(&input).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut seen = Vec::new();
        server.read_to_end(&mut seen).await.unwrap();
        server.write_all(b"server bytes").await.unwrap();
        server.shutdown().await.unwrap();
        drop(server);
        assert_eq!(writer.await.unwrap(), b"server bytes");
        let blocks = decode_all(&frames(&seen));
        assert_eq!(authority(&blocks[0]), [AUTHORITY]);

        // A broken stream is an InvalidData error on read, every time after too.
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = RewriteAuthority::new(server);
        let mut input = PREFACE.to_vec();
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &[0x82]));
        client.write_all(&input).await.unwrap();
        let mut sink = Vec::new();
        let error = server.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let again = server.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    }
}
