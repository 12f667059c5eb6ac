//! The REST contract (`crates/api`): every request body the manager reads as JSON and every
//! query string it reads with serde_urlencoded, exactly as its router does.
//!
//! Input: a selector byte (modulo 13), then the body or query string:
//! 0 ApplyRequest, 1 SimulateRequest, 2 QuarantineRequest, 3 ReleaseRequest, 4 ImportRequest,
//! 5 TokenRequest, 6 RevokeTokenRequest, 7 RevokeNodeRequest (JSON bodies);
//! 8 FlowQuery, 9 AlertQuery, 10 ExplainQuery, 11 MapQuery, 12 ProposeQuery (query strings,
//! bytes read as UTF-8 with invalid sequences replaced).
//!
//! Asserts: no panic; what parses serializes (as the CLI sends it: JSON, or serde_urlencoded
//! for queries) and parses back to the same value; the manager's duration parser, used on the
//! `since`, `ttl` and `every` fields, never panics and keeps what the OpenAPI document promises
//! (`^[0-9]{1,9}(ms|s|m|h|d)$` is always accepted).

#![no_main]

use cellwall_api::*;
use cellwall_manager::parse_duration_ms;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

fn body<T: DeserializeOwned + Serialize + PartialEq + Debug>(b: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(b).ok()?;
    let json = serde_json::to_vec(&v).expect("a request serializes");
    let back: T = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "{v:?} sent as {} is refused: {e}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back, v);
    Some(v)
}

fn query<T: DeserializeOwned + Serialize + PartialEq + Debug>(b: &[u8]) -> Option<T> {
    let q = String::from_utf8_lossy(b);
    let v: T = serde_urlencoded::from_str(&q).ok()?;
    let sent = serde_urlencoded::to_string(&v).expect("a query serializes");
    let back: T = serde_urlencoded::from_str(&sent)
        .unwrap_or_else(|e| panic!("{v:?} sent as {sent:?} is refused: {e}"));
    assert_eq!(back, v);
    Some(v)
}

/// The duration form the API documents.
fn documented_duration(s: &str) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    (1..=9).contains(&digits) && matches!(&s[digits..], "ms" | "s" | "m" | "h" | "d")
}

fn duration(s: Option<&str>) {
    if let Some(s) = s {
        let got = parse_duration_ms(s);
        if documented_duration(s) {
            assert!(got.is_some(), "{s:?} is a documented duration");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    match sel % 13 {
        0 => drop(body::<ApplyRequest>(b)),
        1 => {
            if let Some(r) = body::<SimulateRequest>(b) {
                duration(r.since.as_deref());
            }
        }
        2 => drop(body::<QuarantineRequest>(b)),
        3 => drop(body::<ReleaseRequest>(b)),
        4 => {
            if let Some(r) = body::<ImportRequest>(b) {
                duration(r.every.as_deref());
            }
        }
        5 => {
            if let Some(r) = body::<TokenRequest>(b) {
                duration(r.ttl.as_deref());
            }
        }
        6 => drop(body::<RevokeTokenRequest>(b)),
        7 => drop(body::<RevokeNodeRequest>(b)),
        8 => {
            if let Some(q) = query::<FlowQuery>(b) {
                duration(q.since.as_deref());
            }
        }
        9 => drop(query::<AlertQuery>(b)),
        10 => drop(query::<ExplainQuery>(b)),
        11 => {
            if let Some(q) = query::<MapQuery>(b) {
                duration(q.since.as_deref());
            }
        }
        _ => {
            if let Some(q) = query::<ProposeQuery>(b) {
                duration(q.since.as_deref());
            }
        }
    }
});
