//! A ticket: one string that lets a new peer join a database (iroh's document tickets, for
//! multibee): the database's identity, the inviting peer and where to reach it, and a one-time
//! secret. Shown as `mb1` followed by lowercase hex.

use std::fmt;
use std::str::FromStr;

use multibee_multibee::FeedKey;
use multibee_net::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// The text that starts every ticket (and says which format follows).
const PREFIX: &str = "mb1";
/// The longest ticket text accepted.
const MAX_TEXT: usize = 8192;

/// An invitation to join a database, as made by [`crate::Served::invite`] and taken by
/// [`crate::join`]. Anyone who holds it can join once: pass it only to the peer it is for.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The database's identity (its first writer's diff feed key).
    pub database: FeedKey,
    /// The inviting peer.
    pub inviter: PeerId,
    /// Addresses the inviting peer listens on.
    pub addrs: Vec<Multiaddr>,
    /// The one-time secret the inviter redeems.
    pub secret: [u8; 32],
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("database", &self.database)
            .field("inviter", &self.inviter)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    database: [u8; 32],
    inviter: Vec<u8>,
    addrs: Vec<Vec<u8>>,
    secret: [u8; 32],
}

/// Why a string is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a multibee ticket: {0}")]
pub struct TicketError(String);

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wire = Wire {
            database: self.database.0,
            inviter: self.inviter.to_bytes(),
            addrs: self.addrs.iter().map(|a| a.to_vec()).collect(),
            secret: self.secret,
        };
        let bytes = postcard::to_stdvec(&wire).map_err(|_| fmt::Error)?;
        write!(f, "{PREFIX}{}", hex::encode(bytes))
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TEXT {
            return Err(TicketError(format!(
                "{} characters is too long",
                text.len()
            )));
        }
        let body = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| TicketError(format!("it does not start with {PREFIX:?}")))?;
        let bytes = hex::decode(body).map_err(|e| TicketError(format!("bad hex: {e}")))?;
        let wire: Wire =
            postcard::from_bytes(&bytes).map_err(|e| TicketError(format!("bad contents: {e}")))?;
        let inviter = PeerId::from_bytes(&wire.inviter)
            .map_err(|e| TicketError(format!("bad peer id: {e}")))?;
        let addrs = wire
            .addrs
            .into_iter()
            .map(Multiaddr::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TicketError(format!("bad address: {e}")))?;
        Ok(Ticket {
            database: FeedKey(wire.database),
            inviter,
            addrs,
            secret: wire.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            database: FeedKey([7; 32]),
            inviter: PeerId::random(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            secret: [9; 32],
        }
    }

    #[test]
    fn tickets_round_trip_as_text() {
        let t = ticket();
        let text = t.to_string();
        assert!(text.starts_with("mb1"));
        assert_eq!(text.parse::<Ticket>().unwrap(), t);
        assert_eq!(format!(" {text}\n").parse::<Ticket>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains("secret"),
            "Debug hides the secret"
        );
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        let text = ticket().to_string();
        for (bad, why) in [
            ("", "does not start"),
            ("mb2abcd", "does not start"),
            ("mb1zz", "bad hex"),
            ("mb1abcd", "bad contents"),
            (&text[..text.len() - 2], "bad"),
        ] {
            let err = bad.parse::<Ticket>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        let long = format!("mb1{}", "0".repeat(MAX_TEXT));
        assert!(
            long.parse::<Ticket>()
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }
}
