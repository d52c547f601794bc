//! Frames on a byte stream: the thin IO around [`crate::wire`].

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::FrameError;
use crate::wire::{self, Message, PREFIX_BYTES};

/// Moving a frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The stream failed or ended inside a frame.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The prefix announced a frame over the limit, or a message could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame that had begun did not move on within the deadline.
    #[error("a frame made no progress for {0:?}")]
    Slow(Duration),
}

/// How much of a begun frame must move, in either direction, within the frame deadline: a
/// peer on a slow link passes if it moves this much per deadline (2 KiB/s with the default
/// 30 s), a slowloris or a peer that stopped reading does not.
pub(crate) const PROGRESS_BYTES: usize = 64 << 10;

/// Reads one frame body into `buf`; `Ok(false)` on a clean end of stream between frames.
///
/// Waiting for a frame to begin has no deadline (a live stream may be quiet for hours), but
/// once its first byte arrived, each further [`PROGRESS_BYTES`] of it (or the rest, if less)
/// must arrive within `deadline`. The body buffer grows as bytes arrive, at most one chunk
/// ahead of them: a prefix that claims a large frame costs nothing until the bytes are sent.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
    buf: &mut Vec<u8>,
    deadline: Duration,
) -> Result<bool, StreamError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    if reader.read(&mut prefix[..1]).await? == 0 {
        return Ok(false);
    }
    in_time(deadline, reader.read_exact(&mut prefix[1..])).await?;
    let length = wire::body_length(prefix, max_frame_bytes)?;
    buf.clear();
    while buf.len() < length {
        // At most one chunk is allocated ahead of the bytes that fill it.
        let start = buf.len();
        buf.resize(start + (length - start).min(PROGRESS_BYTES), 0);
        in_time(deadline, reader.read_exact(&mut buf[start..])).await?;
    }
    Ok(true)
}

/// Writes one whole frame (prefix included) and flushes it, each [`PROGRESS_BYTES`] of it
/// within `deadline`.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
    deadline: Duration,
) -> Result<(), StreamError> {
    for chunk in frame.chunks(PROGRESS_BYTES) {
        in_time(deadline, writer.write_all(chunk)).await?;
    }
    in_time(deadline, writer.flush()).await
}

/// Runs one IO step, failing as [`StreamError::Slow`] if it takes longer than `deadline`.
async fn in_time<T>(
    deadline: Duration,
    step: impl Future<Output = std::io::Result<T>>,
) -> Result<T, StreamError> {
    match tokio::time::timeout(deadline, step).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(StreamError::Slow(deadline)),
    }
}

/// Encodes and writes one message, like [`write_frame`].
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
    max_frame_bytes: usize,
    deadline: Duration,
) -> Result<(), StreamError> {
    let frame = wire::encode(message, max_frame_bytes)?;
    write_frame(writer, &frame, deadline).await
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
            assert!(matches!(read, Err(StreamError::Io(_))), "cut at {cut}");
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
            Err(StreamError::Frame(FrameError::TooLarge { .. }))
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
        assert!(matches!(read, Err(StreamError::Slow(_))), "{read:?}");
        assert!(
            buf.capacity() <= PROGRESS_BYTES,
            "{} bytes held for 100 received",
            buf.capacity()
        );
    }

    /// A writer whose reader never reads: it takes `room` bytes, then nothing.
    struct Stalled {
        room: usize,
    }

    impl futures::AsyncWrite for Stalled {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            match self.room.min(buf.len()) {
                0 => std::task::Poll::Pending,
                n => {
                    self.room -= n;
                    std::task::Poll::Ready(Ok(n))
                }
            }
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_frame_the_reader_stops_taking_fails_as_slow() {
        let frame = vec![0u8; 3 * PROGRESS_BYTES];
        let mut roomy = Stalled { room: frame.len() };
        write_frame(&mut roomy, &frame, Duration::from_millis(50))
            .await
            .unwrap();
        let mut stalled = Stalled {
            room: PROGRESS_BYTES + 10,
        };
        let written = write_frame(&mut stalled, &frame, Duration::from_millis(50)).await;
        assert!(matches!(written, Err(StreamError::Slow(_))), "{written:?}");
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
