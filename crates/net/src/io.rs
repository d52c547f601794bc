//! Frames on a byte stream: the thin IO around [`crate::wire`].

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
}

/// Reads one frame body into `buf`; `Ok(false)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
    buf: &mut Vec<u8>,
) -> Result<bool, ReadError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut filled = 0;
    while filled < PREFIX_BYTES {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return match filled {
                0 => Ok(false),
                _ => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            };
        }
        filled += n;
    }
    let length = wire::body_length(prefix, max_frame_bytes)?;
    buf.clear();
    buf.resize(length, 0);
    reader.read_exact(buf).await?;
    Ok(true)
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
                read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf)
                    .await
                    .unwrap()
            );
            assert!(wire::decode(&buf).is_ok());
        }
        assert!(
            !read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_end_inside_a_frame_is_an_error() {
        let bytes = frame();
        for cut in [2, bytes.len() - 1] {
            let mut reader = Cursor::new(bytes[..cut].to_vec());
            let read = read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut Vec::new()).await;
            assert!(matches!(read, Err(ReadError::Io(_))), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn an_oversized_prefix_is_refused_before_the_body_is_read() {
        let mut bytes = (1u32 << 30).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut reader = Cursor::new(bytes);
        let mut buf = Vec::new();
        let read = read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf).await;
        assert!(matches!(
            read,
            Err(ReadError::Frame(FrameError::TooLarge { .. }))
        ));
        assert!(buf.capacity() < 1024, "nothing was allocated for the body");
    }
}
