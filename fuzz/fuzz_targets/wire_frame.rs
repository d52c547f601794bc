//! Wire frames, and the replication state machines fed whatever decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multibee_feed::{FeedKey, proof};
use multibee_net::protocol::{Client, Limits, Server, receive_announce};
use multibee_net::wire;

const KEY: FeedKey = FeedKey([7; 32]);

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_frame(data, 1 << 16);
    if let Some(prefix) = data.first_chunk::<{ wire::PREFIX_BYTES }>() {
        let _ = wire::body_length(*prefix, wire::DEFAULT_MAX_FRAME_BYTES);
    }
    let _ = receive_announce(data);
    let mut server = Server::new(b"local", b"remote", Limits::default());
    if server.receive(data, |_| Some(KEY)).is_ok() {
        let _ = server.have(10);
        let _ = server.next_range(10);
    }
    // The client in each state: new, after its Want, and streaming after a Have. Each
    // message the input splits into (at 0xFF 0xFE markers) is fed in turn.
    for state in 0..3 {
        let mut client = Client::new(KEY, b"local", b"remote");
        if state >= 1 {
            let _ = client.want(0);
        }
        if state == 2 {
            let have = wire::Message::Have(wire::Have {
                discovery_key: KEY.discovery_key(),
                length: 10,
            });
            let frame = wire::encode(&have, 1 << 16).expect("encodes");
            client
                .receive(&frame[wire::PREFIX_BYTES..], |_| Ok(()))
                .expect("accepted");
        }
        for body in data.split(|&b| b == 0xFE) {
            let _ = client.receive(body, |batch| {
                proof::verify(&batch.feed, batch.start, &batch.entries, &[], &batch.proof)
                    .map(drop)
                    .map_err(|reason| multibee_feed::Error::Rejected {
                        feed: batch.feed,
                        reason,
                    })
            });
        }
    }
});
