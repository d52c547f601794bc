//! Frames on a byte stream: the thin IO around [`crate::wire`].

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::FrameError;
use crate::wire::{self, Message, PREFIX_BYTES};

/// Reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The stream failed or ended inside a frame.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The prefix announced a frame over the limit.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame that had begun did not arrive whole within the deadline.
    #[error("a frame took longer than {0:?} to arrive")]
    Slow(Duration),
}

/// Reads one frame body into `buf`; `Ok(false)` on a clean end of stream between frames.
///
/// Waiting for a frame to begin has no deadline (a live stream may be quiet for hours), but
/// once its first byte arrived the rest must arrive within `deadline`. The body buffer grows as
/// bytes arrive, never ahead of them: a prefix that claims a large frame costs nothing until
/// the bytes are sent.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
    buf: &mut Vec<u8>,
    deadline: Duration,
) -> Result<bool, ReadError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    if reader.read(&mut prefix[..1]).await? == 0 {
        return Ok(false);
    }
    let rest = async {
        reader.read_exact(&mut prefix[1..]).await?;
        let length = wire::body_length(prefix, max_frame_bytes)?;
        buf.clear();
        let read = reader.take(length as u64).read_to_end(buf).await?;
        if read < length {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(true)
    };
    tokio::time::timeout(deadline, rest)
        .await
        .map_err(|_| ReadError::Slow(deadline))?
}

/// Writes one whole frame (prefix included) and flushes it.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

/// Encodes and writes one message.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
    max_frame_bytes: usize,
) -> std::io::Result<()> {
    let frame = wire::encode(message, max_frame_bytes).map_err(std::io::Error::other)?;
    write_frame(writer, &frame).await
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;
    use crate::wire::{Announce, DEFAULT_MAX_FRAME_BYTES};

    const PATIENCE: Duration = Duration::from_secs(60);

    fn frame() -> Vec<u8> {
        let message = Message::Announce(Announce {
            discovery_keys: vec![],
        });
        wire::encode(&message, DEFAULT_MAX_FRAME_BYTES).unwrap()
    }

    #[tokio::test]
    async fn frames_are_read_one_at_a_time_until_a_clean_end() {
        let mut bytes = frame();
        bytes.extend(frame());
        let mut reader = Cursor::new(bytes);
        let mut buf = Vec::new();
        for _ in 0..2 {
            assert!(
                read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf, PATIENCE)
                    .await
                    .unwrap()
            );
            assert!(wire::decode(&buf).is_ok());
        }
        assert!(
            !read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf, PATIENCE)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_end_inside_a_frame_is_an_error() {
        let bytes = frame();
        for cut in [2, bytes.len() - 1] {
            let mut reader = Cursor::new(bytes[..cut].to_vec());
            let read = read_frame(
                &mut reader,
                DEFAULT_MAX_FRAME_BYTES,
                &mut Vec::new(),
                PATIENCE,
            )
            .await;
            assert!(matches!(read, Err(ReadError::Io(_))), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn an_oversized_prefix_is_refused_before_the_body_is_read() {
        let mut bytes = (1u32 << 30).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut reader = Cursor::new(bytes);
        let mut buf = Vec::new();
        let read = read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf, PATIENCE).await;
        assert!(matches!(
            read,
            Err(ReadError::Frame(FrameError::TooLarge { .. }))
        ));
        assert!(buf.capacity() < 1024, "nothing was allocated for the body");
    }

    /// A reader that yields `bytes`, then neither data nor an end.
    fn stalls_after(bytes: Vec<u8>) -> impl futures::AsyncRead + Unpin {
        use futures::TryStreamExt;
        let never = futures::stream::pending::<std::io::Result<Vec<u8>>>().into_async_read();
        Cursor::new(bytes).chain(never)
    }

    #[tokio::test]
    async fn a_large_claim_allocates_only_what_arrived_and_must_finish_in_time() {
        let mut bytes = (8u32 << 20).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 100]);
        let mut buf = Vec::new();
        let deadline = Duration::from_millis(50);
        let read = read_frame(
            &mut stalls_after(bytes),
            DEFAULT_MAX_FRAME_BYTES,
            &mut buf,
            deadline,
        )
        .await;
        assert!(matches!(read, Err(ReadError::Slow(_))), "{read:?}");
        assert!(
            buf.capacity() < 4096,
            "{} bytes held for 100 received",
            buf.capacity()
        );
    }

    #[tokio::test]
    async fn waiting_for_a_frame_to_begin_has_no_deadline() {
        let mut buf = Vec::new();
        let mut quiet = stalls_after(Vec::new());
        let read = read_frame(
            &mut quiet,
            DEFAULT_MAX_FRAME_BYTES,
            &mut buf,
            Duration::ZERO,
        );
        let waited = tokio::time::timeout(Duration::from_millis(50), read).await;
        assert!(waited.is_err(), "still waiting: {waited:?}");
    }
}
