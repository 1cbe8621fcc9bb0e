//! The messages inside a sealed datagram; the seal's `kind` byte says which one follows.

use crate::record::NodeRecord;
use serde::{Deserialize, Serialize};

pub const KIND_HELLO: u8 = 1;
pub const KIND_SWIM: u8 = 2;
pub const KIND_RECORDS: u8 = 3;
pub const KIND_SYNC_REQUEST: u8 = 4;

/// "I run Clump and hold the key": the discovery message, answered with a hello of our own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub record: NodeRecord,
    /// The sender's foca generation, so the receiver can `announce` to its exact identity.
    pub gen: u32,
    pub want_reply: bool,
    /// Sent to the subnet's broadcast address: in a large cluster only a few answer.
    pub broadcast: bool,
}

/// A batch of node records; the sender's own record comes first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    pub records: Vec<NodeRecord>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// A foca packet, passed to foca as it is.
    Swim(Vec<u8>),
    Records(Records),
    SyncRequest,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("undecodable {0} message")]
    Body(&'static str),
    #[error("a record breaks the size limits")]
    Record,
}

impl Message {
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => KIND_HELLO,
            Message::Swim(_) => KIND_SWIM,
            Message::Records(_) => KIND_RECORDS,
            Message::SyncRequest => KIND_SYNC_REQUEST,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = match self {
            Message::Hello(hello) => postcard::to_allocvec(hello),
            Message::Records(records) => postcard::to_allocvec(records),
            Message::Swim(bytes) => return bytes.clone(),
            Message::SyncRequest => return Vec::new(),
        };
        // Serialising our own plain structs into a Vec cannot fail; an empty body would be
        // refused by every receiver, which is the right outcome if it ever did.
        body.unwrap_or_default()
    }

    pub fn decode(kind: u8, body: &[u8]) -> Result<Self, DecodeError> {
        match kind {
            KIND_HELLO => {
                let hello: Hello = strict(body).ok_or(DecodeError::Body("hello"))?;
                if !hello.record.is_valid() {
                    return Err(DecodeError::Record);
                }
                Ok(Message::Hello(hello))
            }
            KIND_SWIM => Ok(Message::Swim(body.to_vec())),
            KIND_RECORDS => {
                let records: Records = strict(body).ok_or(DecodeError::Body("records"))?;
                if records.records.is_empty() || !records.records.iter().all(NodeRecord::is_valid) {
                    return Err(DecodeError::Record);
                }
                Ok(Message::Records(records))
            }
            KIND_SYNC_REQUEST if body.is_empty() => Ok(Message::SyncRequest),
            KIND_SYNC_REQUEST => Err(DecodeError::Body("sync request")),
            other => Err(DecodeError::Kind(other)),
        }
    }
}

/// Decodes the whole body or nothing: trailing bytes mean the sender and we disagree on the format.
fn strict<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Option<T> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Some(value),
        _ => None,
    }
}

/// Encoded size of one record, to fill a datagram without overflowing it.
pub fn record_len(record: &NodeRecord) -> usize {
    postcard::to_allocvec(record)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::sample;

    #[test]
    fn round_trips() {
        let messages = [
            Message::Hello(Hello {
                record: sample(1, 3),
                gen: 9,
                want_reply: true,
                broadcast: false,
            }),
            Message::Swim(vec![1, 2, 3]),
            Message::Records(Records {
                records: vec![sample(1, 1), sample(2, 7)],
            }),
            Message::SyncRequest,
        ];
        for m in messages {
            assert_eq!(Message::decode(m.kind(), &m.encode()), Ok(m));
        }
    }

    #[test]
    fn a_record_is_small() {
        // ~15 records fit in a datagram: what the window-to-the-world gossip relies on.
        let len = record_len(&sample(200, u64::from(u32::MAX)));
        assert!(len < 90, "record is {len} bytes");
    }

    #[test]
    fn rejects_truncated_trailing_and_unknown() {
        let hello = Message::Hello(Hello {
            record: sample(1, 3),
            gen: 9,
            want_reply: true,
            broadcast: true,
        });
        let bytes = hello.encode();
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(KIND_HELLO, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::decode(KIND_HELLO, &longer).is_err());
        assert_eq!(Message::decode(99, &bytes), Err(DecodeError::Kind(99)));
        assert!(Message::decode(KIND_SYNC_REQUEST, &[1]).is_err());
        assert_eq!(Message::decode(KIND_RECORDS, &[0]), Err(DecodeError::Record));
    }

    #[test]
    fn rejects_oversized_strings() {
        let mut record = sample(1, 1);
        record.hostname = "h".repeat(1000);
        let m = Message::Records(Records {
            records: vec![record],
        });
        assert_eq!(
            Message::decode(KIND_RECORDS, &m.encode()),
            Err(DecodeError::Record)
        );
    }
}
