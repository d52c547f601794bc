#![allow(clippy::unwrap_used)]
//! Concurrent streams per peer are capped: beyond the cap a request is refused as busy.

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{Stream, StreamProtocol};
use multibee_net::protocol::Client;
use multibee_net::wire::{self, Message, Refusal};

use crate::common::{Peer, Transport, Watchdog, append, bare_swarm, config, dial_bare, within};

async fn read_message(stream: &mut Stream) -> Message {
    let mut prefix = [0u8; wire::PREFIX_BYTES];
    stream.read_exact(&mut prefix).await.unwrap();
    let length = wire::body_length(prefix, wire::DEFAULT_MAX_FRAME_BYTES).unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    wire::decode(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_cap_are_refused_as_busy() {
    let _watchdog = Watchdog::arm("limits::streams_beyond_the_cap_are_refused_as_busy");
    let mut small = config().kademlia(false);
    small.max_streams_per_peer = 4;
    let server = Peer::start(small).await;
    let feed = server.store.create_feed().await.unwrap();
    append(&feed, 0, 3).await;

    let mut swarm = bare_swarm();
    let me = *swarm.local_peer_id();
    let mut control = swarm.behaviour().new_control();
    assert!(dial_bare(&mut swarm, server.addr(Transport::Tcp).await).await);
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });

    let them = server.node.peer_id();
    let protocol = StreamProtocol::new(wire::REPLICATE_PROTOCOL);
    let mut open = Vec::new();
    for i in 0..5 {
        let mut stream = within(
            "a stream to open",
            control.open_stream(them, protocol.clone()),
        )
        .await
        .unwrap();
        let mut client = Client::new(feed.key(), &me.to_bytes(), &them.to_bytes());
        let want = wire::encode(&client.want(0), wire::DEFAULT_MAX_FRAME_BYTES).unwrap();
        let answer = within("a request to be answered", async {
            stream.write_all(&want).await.unwrap();
            stream.flush().await.unwrap();
            read_message(&mut stream).await
        })
        .await;
        match i {
            0..4 => assert!(matches!(answer, Message::Have(_)), "{answer:?}"),
            _ => assert_eq!(answer, Message::Refused(Refusal::Busy)),
        }
        open.push(stream);
    }
    // A stream that closes gives its slot back.
    drop(open.pop());
    drop(open.remove(0));
    // The slot comes back once the server noticed the close: until then a request is busy.
    within("a closed stream's slot to be given back", async {
        loop {
            let mut stream = control.open_stream(them, protocol.clone()).await.unwrap();
            let mut client = Client::new(feed.key(), &me.to_bytes(), &them.to_bytes());
            let want = wire::encode(&client.want(0), wire::DEFAULT_MAX_FRAME_BYTES).unwrap();
            stream.write_all(&want).await.unwrap();
            stream.flush().await.unwrap();
            match read_message(&mut stream).await {
                Message::Have(_) => return,
                answer => assert_eq!(answer, Message::Refused(Refusal::Busy)),
            }
        }
    })
    .await;
}
