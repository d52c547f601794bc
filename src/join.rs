//! Joining a database with a ticket: the `/multibee/join/1` protocol.
//!
//! The joiner opens a stream to the inviter named in the ticket (the connection's Noise
//! handshake proves the inviter's peer id, so the secret goes to no one else) and sends one
//! request: the database, the ticket's secret and its own diff feed key. The inviter redeems the
//! secret ([`MultiBee::redeem_invite`]: once, in the transaction that writes the `Add`
//! membership operation) and answers. Both messages are length-prefixed postcard, versioned,
//! with small hard limits; a stream that stalls is dropped after [`JOIN_TIMEOUT`].

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use multibee_multibee::{FeedKey, MultiBee, Options};
use multibee_net::{Config, Control, Multiaddr, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::ticket::Ticket;
use crate::{Error, Result, Served, serve};

const PROTOCOL: &str = "/multibee/join/1";
/// The largest message either side sends.
const MAX_MESSAGE: usize = 1024;
/// How long a join may take, from dialing to the answer.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many join requests are answered at once; streams beyond are closed unread, so
/// that a peer opening many cannot hold memory or tasks without bound.
const MAX_CONCURRENT_JOINS: usize = 16;

#[derive(Serialize, Deserialize)]
enum Request {
    V1 {
        database: [u8; 32],
        secret: [u8; 32],
        writer: [u8; 32],
    },
}

#[derive(Serialize, Deserialize)]
enum Reply {
    V1(Result<(), String>),
}

fn protocol() -> StreamProtocol {
    StreamProtocol::new(PROTOCOL)
}

async fn send<T: Serialize>(stream: &mut multibee_net::Stream, message: &T) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_le_bytes()).await?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}

async fn receive<T: for<'de> Deserialize<'de>>(
    stream: &mut multibee_net::Stream,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "a join message of {len} bytes (at most {MAX_MESSAGE})"
        )));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes).await?;
    postcard::from_bytes(&bytes).map_err(std::io::Error::other)
}

/// Answers join requests on `control` for `mb` until the node stops.
pub(crate) async fn accept(mb: MultiBee, mut control: Control) {
    let mut incoming = match control.accept(protocol()) {
        Ok(incoming) => incoming,
        Err(e) => {
            tracing::warn!(error = %e, "cannot accept join requests");
            return;
        }
    };
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_JOINS));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many join requests at once: stream closed");
            continue;
        };
        let mb = mb.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answered = tokio::time::timeout(JOIN_TIMEOUT, async {
                let request: Request = receive(&mut stream).await?;
                let reply = redeem(&mb, request).await;
                if let Err(reason) = &reply {
                    tracing::warn!(%peer, %reason, "join refused");
                } else {
                    tracing::info!(%peer, "peer joined");
                }
                send(&mut stream, &Reply::V1(reply)).await
            })
            .await;
            if let Ok(Err(e)) = answered {
                tracing::debug!(%peer, error = %e, "join request dropped");
            }
        });
    }
}

async fn redeem(mb: &MultiBee, request: Request) -> std::result::Result<(), String> {
    let Request::V1 {
        database,
        secret,
        writer,
    } = request;
    let ours = mb.database().map_err(|e| e.to_string())?;
    if database != ours.0 {
        return Err(format!(
            "this peer is not in database {}",
            FeedKey(database)
        ));
    }
    mb.redeem_invite(secret, FeedKey(writer))
        .await
        .map_err(|e| e.to_string())
}

impl Served {
    /// Makes a one-time ticket that lets one new peer join this database through this peer
    /// ([`join`]): this peer's addresses (those it listens on, less unspecified ones) and a
    /// fresh secret. Fails unless this peer is a member.
    pub async fn invite(&self) -> Result<Ticket> {
        let secret = self.mb.create_invite().await?;
        let addrs = self
            .listen_addrs()
            .await?
            .into_iter()
            .filter(|a| !a.to_string().contains("/0.0.0.0/") && !a.to_string().contains("/::/"))
            .collect();
        Ok(Ticket {
            database: self.mb.database()?,
            inviter: self.peer_id(),
            addrs,
            secret,
        })
    }
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The inviter could not be reached in time.
    #[error("the inviter {0} could not be reached at {1:?} within {JOIN_TIMEOUT:?}")]
    Unreachable(multibee_net::PeerId, Vec<Multiaddr>),
    /// The inviter refused (for example: a secret already used, expired, or not its own).
    #[error("the inviter refused: {0}")]
    Refused(String),
    /// The request or its answer did not get through.
    #[error("the join exchange failed: {0}")]
    Exchange(String),
}

/// Opens a peer of the database named in `ticket` in `dir` (a new folder, or one that joined
/// this database before), serves it with `config`, and asks the inviter to add it as a writer.
/// Returns once the inviter has written the membership operation; the peer then replicates the
/// database from every peer it reaches, and its writes count once the inviter's operation
/// reaches them. Cancel-safe up to the request: dropping the future before the inviter answers
/// leaves a peer that is not a member (yet); the secret is spent only if the inviter answered.
pub async fn join(
    dir: impl AsRef<std::path::Path>,
    ticket: &Ticket,
    options: Options,
    config: Config,
) -> Result<Served> {
    let mb = MultiBee::open_with(dir, options.database(ticket.database)).await?;
    let served = serve(&mb, config).await?;
    let handle = served.node();
    let mut events = handle.subscribe();
    for addr in &ticket.addrs {
        // A bad address is the same as an unreachable one: the others may work.
        let _ = handle.dial(addr.clone()).await;
    }
    let connected = tokio::time::timeout(JOIN_TIMEOUT, async {
        if handle.connected_peers().await?.contains(&ticket.inviter) {
            return Ok(());
        }
        loop {
            match events.recv().await {
                Ok(multibee_net::Event::PeerConnected { peer, .. }) if peer == ticket.inviter => {
                    return Ok(());
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if handle.connected_peers().await?.contains(&ticket.inviter) {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Error::Net(multibee_net::Error::Stopped));
                }
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(Error::Join(JoinError::Unreachable(
                ticket.inviter,
                ticket.addrs.clone(),
            )));
        }
    }
    let request = Request::V1 {
        database: ticket.database.0,
        secret: ticket.secret,
        writer: mb.diff_key().0,
    };
    let mut control = handle.streams();
    let exchange = tokio::time::timeout(JOIN_TIMEOUT, async {
        let mut stream = control
            .open_stream(ticket.inviter, protocol())
            .await
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        send(&mut stream, &request).await?;
        receive::<Reply>(&mut stream).await
    })
    .await;
    match exchange {
        Ok(Ok(Reply::V1(Ok(())))) => Ok(served),
        Ok(Ok(Reply::V1(Err(reason)))) => Err(Error::Join(JoinError::Refused(reason))),
        Ok(Err(e)) => Err(Error::Join(JoinError::Exchange(e.to_string()))),
        Err(_) => Err(Error::Join(JoinError::Exchange(format!(
            "no answer within {JOIN_TIMEOUT:?}"
        )))),
    }
}
