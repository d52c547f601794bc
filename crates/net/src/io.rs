
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
            assert!(read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf).await.unwrap());
            assert!(wire::decode(&buf).is_ok());
        }
        assert!(!read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES, &mut buf).await.unwrap());
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
        assert!(matches!(read, Err(ReadError::Frame(FrameError::TooLarge { .. }))));
        assert!(buf.capacity() < 1024, "nothing was allocated for the body");
    }
}
