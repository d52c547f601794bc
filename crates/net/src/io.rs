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
