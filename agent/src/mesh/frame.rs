//! Framing of WireGuard datagrams on the TLS byte stream: each datagram is preceded by its
//! length as a big-endian u16. A zero length is not a datagram and is a protocol error.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest datagram a frame can carry.
pub(super) const MAX_FRAME: usize = u16::MAX as usize;

/// Why a connection's byte stream is no longer usable.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    #[error("zero-length frame")]
    Empty,
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Append `datagram` as one frame to `out`. Returns false (appending nothing) when it does not
/// fit in a frame.
pub(super) fn encode(datagram: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = u16::try_from(datagram.len()) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(datagram);
    true
}

/// Read one frame; `None` when the stream ends cleanly between frames.
pub(super) async fn read<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 2];
    if reader.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    read_exact(reader, &mut len[1..]).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let mut datagram = vec![0u8; len];
    read_exact(reader, &mut datagram).await?;
    Ok(Some(datagram))
}

async fn read_exact<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<(), FrameError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(err) => Err(FrameError::Io(err)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_a_clean_end_is_not_an_error() {
        let mut wire = Vec::new();
        assert!(encode(b"one", &mut wire));
        assert!(encode(&[9u8; 1500], &mut wire));
        assert_eq!(&wire[..2], &[0, 3]);
        let mut reader = wire.as_slice();
        assert_eq!(read(&mut reader).await.unwrap().unwrap(), b"one");
        assert_eq!(read(&mut reader).await.unwrap().unwrap(), vec![9u8; 1500]);
        assert!(read(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn malformed_streams_are_errors_not_panics() {
        assert!(matches!(
            read(&mut &[0u8, 0][..]).await,
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            read(&mut &[0u8][..]).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read(&mut &[0u8, 5, 1, 2][..]).await,
            Err(FrameError::Truncated)
        ));
        let mut out = Vec::new();
        assert!(!encode(&[], &mut out));
        assert!(!encode(&vec![0u8; MAX_FRAME + 1], &mut out));
        assert!(out.is_empty());
        assert!(encode(&vec![0u8; MAX_FRAME], &mut out));
    }
}
