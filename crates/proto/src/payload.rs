//! [`DesiredState`]: a snapshot or a delta as JSON, deflated when large, encoded once for
//! every agent.

use crate::{DesiredState, StateDelta, StateDoc};
use std::io::{Read, Write};

/// A [`DesiredState`] that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("inflating the state: {0}")]
    Inflate(#[from] std::io::Error),
    #[error("decoding the state: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "a part of version {got} (base {got_base}) continues version {want} (base {want_base})"
    )]
    PartMismatch {
        got: u64,
        got_base: u64,
        want: u64,
        want_base: u64,
    },
    #[error("a message in parts exceeds {limit} bytes")]
    PartsTooLarge { limit: usize },
}

/// The size of each part of a message sent in parts ([`DesiredState::parts`]): what one
/// connection holds encoded in the manager at a time, whatever the snapshot's size.
pub const PART_BYTES: usize = 64 << 10;

/// What a [`DesiredState`] carries.
#[derive(Debug)]
pub enum Payload {
    Snapshot(StateDoc),
    Delta {
        base_version: u64,
        delta: StateDelta,
    },
}

/// Payloads above this are deflated (a delta of one relabel is a few hundred bytes; a snapshot
/// of 100,000 workloads is ~20 MB of JSON).
const DEFLATE_ABOVE: usize = 16 << 10;

fn pack(json: Vec<u8>) -> (bytes::Bytes, bool) {
    if json.len() <= DEFLATE_ABOVE {
        return (json.into(), false);
    }
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::fast(),
    );
    z.write_all(&json).expect("writing to memory");
    (z.finish().expect("writing to memory").into(), true)
}

impl DesiredState {
    pub fn snapshot(version: u64, doc: &StateDoc, issued_unix_ms: i64) -> Self {
        let (state_json, deflate) = pack(doc.to_json());
        Self {
            version,
            state_json,
            issued_unix_ms,
            base_version: 0,
            deflate,
            more: false,
        }
    }

    /// `base_version` must be nonzero (revision 0 is the empty model nobody holds).
    pub fn delta(version: u64, base_version: u64, d: &StateDelta, issued_unix_ms: i64) -> Self {
        let (state_json, deflate) =
            pack(serde_json::to_vec(d).expect("the policy model always serializes"));
        Self {
            version,
            state_json,
            issued_unix_ms,
            base_version,
            deflate,
            more: false,
        }
    }

    /// This message in parts of at most `part` bytes of `state_json` (itself when it fits):
    /// the parts share its bytes (no copy); all but the last have `more` set.
    pub fn parts(&self, part: usize) -> Vec<DesiredState> {
        let part = part.max(1);
        let n = self.state_json.len().div_ceil(part).max(1);
        (0..n)
            .map(|i| {
                let end = ((i + 1) * part).min(self.state_json.len());
                DesiredState {
                    state_json: self.state_json.slice(i * part..end),
                    more: i + 1 < n,
                    ..self.clone()
                }
            })
            .collect()
    }

    pub fn payload(&self) -> Result<Payload, PayloadError> {
        let inflated;
        let json: &[u8] = if self.deflate {
            let mut out = Vec::with_capacity(self.state_json.len() * 8);
            flate2::read::DeflateDecoder::new(&self.state_json[..]).read_to_end(&mut out)?;
            inflated = out;
            &inflated
        } else {
            &self.state_json
        };
        Ok(if self.base_version == 0 {
            Payload::Snapshot(StateDoc::from_json(json)?)
        } else {
            Payload::Delta {
                base_version: self.base_version,
                delta: serde_json::from_slice(json)?,
            }
        })
    }
}

/// Joins the parts of messages sent in parts (`more`) back into whole messages, within a size
/// limit (the agent's limit on one gRPC message), so parts cost the agent nothing new.
#[derive(Debug)]
pub struct Reassembly {
    limit: usize,
    head: Option<DesiredState>,
    buf: Vec<u8>,
}

impl Reassembly {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            head: None,
            buf: Vec::new(),
        }
    }

    /// Takes the next message off the stream: the whole message when this completes one,
    /// `None` while parts are still to come. A part that does not continue the message in
    /// progress (another version or base) is an error, and so is growing past the limit.
    pub fn push(&mut self, m: DesiredState) -> Result<Option<DesiredState>, PayloadError> {
        if let Some(h) = &self.head {
            if (h.version, h.base_version, h.deflate) != (m.version, m.base_version, m.deflate) {
                let err = PayloadError::PartMismatch {
                    got: m.version,
                    got_base: m.base_version,
                    want: h.version,
                    want_base: h.base_version,
                };
                self.head = None;
                self.buf = Vec::new();
                return Err(err);
            }
        } else if !m.more {
            return Ok(Some(m));
        }
        if self.buf.len() + m.state_json.len() > self.limit {
            self.head = None;
            self.buf = Vec::new();
            return Err(PayloadError::PartsTooLarge { limit: self.limit });
        }
        self.buf.extend_from_slice(&m.state_json);
        if m.more {
            if self.head.is_none() {
                self.head = Some(DesiredState {
                    state_json: bytes::Bytes::new(),
                    ..m
                });
            }
            return Ok(None);
        }
        let head = self.head.take().expect("a part in progress");
        Ok(Some(DesiredState {
            state_json: std::mem::take(&mut self.buf).into(),
            more: false,
            ..head
        }))
    }
}
