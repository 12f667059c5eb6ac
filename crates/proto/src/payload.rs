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
}

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
        }
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
