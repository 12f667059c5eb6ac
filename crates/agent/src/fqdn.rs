//! Learning DNS answers for FQDN egress policy. The datapath holds every DNS answer on its way
//! to an endpoint whose egress rules name domains (bpf/lib/dns.h); the enforcement thread reads
//! each one here, records which addresses it gave for which names, programs them, and only then
//! releases the answer. So the first connection after a lookup never races the policy.
//!
//! Why hold-and-release rather than a DNS proxy: nothing changes for the workload (its resolver,
//! its server, UDP or TCP, its retries), the agent parses only answers its workloads already
//! received, and an agent that is down cannot answer for anyone — it only delays answers to the
//! endpoints that need learning (fail closed). Measured cost: docs/benchmarks.md ("FQDN").
//!
//! Names of an address: the question's name and every CNAME on the way to the A/AAAA record, so
//! `*.example.com` admits `cdn.other.net` reached through `www.example.com CNAME cdn.other.net`.
//! An address is kept for its TTL, at least `min_ttl`, and longer while connections that used
//! it are still tracked by the datapath (ending them would be worse than keeping a name).

use simple_dns::rdata::RData;
use simple_dns::Packet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One learned answer: an address, the names that lead to it, and its TTL in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub ip: IpAddr,
    pub names: Vec<String>,
    pub ttl: u32,
}

fn lower(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

/// The A/AAAA answers of a DNS message with their names (CNAME chains followed backwards).
/// Anything that is not a well-formed response yields nothing.
pub fn parse_answers(msg: &[u8]) -> Vec<Learned> {
    let Ok(p) = Packet::parse(msg) else {
        return Vec::new();
    };
    // target → aliases pointing at it, with the alias record's TTL.
    let mut aliases: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for rr in &p.answers {
        if let RData::CNAME(c) = &rr.rdata {
            aliases
                .entry(lower(&c.0.to_string()))
                .or_default()
                .push((lower(&rr.name.to_string()), rr.ttl));
        }
    }
    let mut out = Vec::new();
    for rr in &p.answers {
        let ip = match &rr.rdata {
            RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
            RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
            _ => continue,
        };
        // Walk the aliases back from the record's owner; the chain's shortest TTL counts.
        let mut names = BTreeSet::new();
        let mut ttl = rr.ttl;
        let mut todo = vec![(lower(&rr.name.to_string()), rr.ttl)];
        while let Some((n, t)) = todo.pop() {
            if names.len() > 64 || !names.insert(n.clone()) {
                continue;
            }
            ttl = ttl.min(t);
            if let Some(a) = aliases.get(&n) {
                todo.extend(a.iter().cloned());
            }
        }
        out.push(Learned {
            ip,
            names: names.into_iter().collect(),
            ttl,
        });
    }
    out
}

/// What the transport carried: where the answer came from and went, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub tcp: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// TCP sequence number of the payload's first byte.
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Ethernet → IPv4/IPv6 → UDP/TCP payload. `None` for anything else (and for IPv6 extension
/// headers, which the datapath does not walk either).
pub fn segment(frame: &[u8]) -> Option<Segment<'_>> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (proto, src, dst, l4, total) = match ethertype {
        0x0800 => {
            let ihl = ((ip.first()? & 0x0f) as usize) * 4;
            let total = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize;
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                *ip.get(9)?,
                IpAddr::from(src),
                IpAddr::from(dst),
                ihl,
                total,
            )
        }
        0x86dd => {
            let plen = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize;
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                *ip.get(6)?,
                IpAddr::from(src),
                IpAddr::from(dst),
                40,
                40 + plen,
            )
        }
        _ => return None,
    };
    // The IP length bounds the payload (frames may carry padding).
    let ip = ip.get(..total.min(ip.len()))?;
    let l4 = ip.get(l4..)?;
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    match proto {
        17 => Some(Segment {
            tcp: false,
            src,
            dst,
            sport,
            dport,
            seq: 0,
            payload: l4.get(8..)?,
        }),
        6 => {
            let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
            let off = ((l4.get(12)? >> 4) as usize) * 4;
            Some(Segment {
                tcp: true,
                src,
                dst,
                sport,
                dport,
                seq,
                payload: l4.get(off..)?,
            })
        }
        _ => None,
    }
}

/// DNS over TCP: messages are length-prefixed on a byte stream that segments split anywhere.
/// Kept per connection; a segment out of order (a gap, a retransmission) is passed on unread.
#[derive(Debug, Default)]
struct Stream {
    next_seq: u32,
    buf: Vec<u8>,
}

type StreamKey = (IpAddr, IpAddr, u16, u16);

/// Most TCP streams followed at once; beyond, the oldest are forgotten (their later answers
/// are then not learned: fail closed).
const MAX_STREAMS: usize = 4096;
/// Most bytes buffered for one stream (a DNS message is at most 65,535 bytes).
const MAX_STREAM_BYTES: usize = 65_537;

/// The learned names, with their expiry (Unix seconds), and the TCP streams being read.
#[derive(Debug)]
pub struct Learner {
    min_ttl: u32,
    table: HashMap<IpAddr, BTreeMap<String, i64>>,
    streams: HashMap<StreamKey, Stream>,
    order: std::collections::VecDeque<StreamKey>,
}

impl Learner {
    pub fn new(min_ttl: u32) -> Self {
        Self {
            min_ttl,
            table: HashMap::new(),
            streams: HashMap::new(),
            order: Default::default(),
        }
    }

    /// The DNS messages a held frame completes (none, one, or several for TCP).
    pub fn messages(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let Some(s) = segment(frame) else {
            return Vec::new();
        };
        if !s.tcp {
            return vec![s.payload.to_vec()];
        }
        if s.payload.is_empty() {
            return Vec::new();
        }
        let key = (s.src, s.dst, s.sport, s.dport);
        let st = match self.streams.get_mut(&key) {
            Some(st) => st,
            None => {
                if self.order.len() >= MAX_STREAMS {
                    if let Some(old) = self.order.pop_front() {
                        self.streams.remove(&old);
                    }
                }
                self.order.push_back(key);
                self.streams.entry(key).or_insert(Stream {
                    next_seq: s.seq,
                    buf: Vec::new(),
                })
            }
        };
        if s.seq != st.next_seq {
            return Vec::new();
        }
        st.next_seq = s.seq.wrapping_add(s.payload.len() as u32);
        st.buf.extend_from_slice(s.payload);
        let mut out = Vec::new();
        while st.buf.len() >= 2 {
            let n = u16::from_be_bytes([st.buf[0], st.buf[1]]) as usize;
            if st.buf.len() < 2 + n {
                break;
            }
            out.push(st.buf[2..2 + n].to_vec());
            st.buf.drain(..2 + n);
        }
        if st.buf.len() > MAX_STREAM_BYTES {
            st.buf.clear();
        }
        out
    }

    /// Records answers at `now`; returns the addresses whose set of names changed, with all
    /// their current names (what the engine must be told).
    pub fn learn(&mut self, now: i64, answers: &[Learned]) -> Vec<(IpAddr, Vec<String>)> {
        let mut changed = BTreeSet::new();
        for a in answers {
            let until = now + i64::from(a.ttl.max(self.min_ttl));
            let names = self.table.entry(a.ip).or_default();
            for n in &a.names {
                let e = names.entry(n.clone()).or_insert_with(|| {
                    changed.insert(a.ip);
                    until
                });
                *e = (*e).max(until);
            }
        }
        changed.into_iter().map(|ip| (ip, self.names(ip))).collect()
    }

    fn names(&self, ip: IpAddr) -> Vec<String> {
        self.table
            .get(&ip)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets names past their expiry, except on addresses `in_use` (connections the datapath
    /// still tracks); returns the addresses whose names changed, with what is left.
    pub fn expire(
        &mut self,
        now: i64,
        in_use: impl Fn(IpAddr) -> bool,
    ) -> Vec<(IpAddr, Vec<String>)> {
        let mut changed = Vec::new();
        for (ip, names) in self.table.iter_mut() {
            let before = names.len();
            if in_use(*ip) {
                continue;
            }
            names.retain(|_, until| *until > now);
            if names.len() != before {
                changed.push(*ip);
            }
        }
        self.table.retain(|_, n| !n.is_empty());
        changed.sort();
        changed.into_iter().map(|ip| (ip, self.names(ip))).collect()
    }

    /// The earliest expiry (Unix seconds), so the loop knows when to look again.
    pub fn next_expiry(&self) -> Option<i64> {
        self.table.values().flat_map(|m| m.values()).min().copied()
    }

    /// Addresses learned, for metrics.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{Name, ResourceRecord, CLASS};

    fn response(q: &str, records: &[(&str, RData<'static>, u32)]) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.questions.push(simple_dns::Question::new(
            Name::new_unchecked(q).into_owned(),
            simple_dns::TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        for (name, rdata, ttl) in records {
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked(name).into_owned(),
                CLASS::IN,
                *ttl,
                rdata.clone(),
            ));
        }
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn cname_chains_name_every_address_and_take_the_shortest_ttl() {
        let msg = response(
            "www.example.com",
            &[
                (
                    "www.example.com",
                    RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.net").into_owned())),
                    300,
                ),
                (
                    "edge.cdn.net",
                    RData::A(A {
                        address: 0xc6336401,
                    }),
                    20,
                ),
                (
                    "edge.cdn.net",
                    RData::AAAA(AAAA {
                        address: 0x2001_0db8_0000_0000_0000_0000_0000_0001,
                    }),
                    600,
                ),
            ],
        );
        let got = parse_answers(&msg);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].ip, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].names, ["edge.cdn.net", "www.example.com"]);
        assert_eq!(got[0].ttl, 20);
        assert_eq!(got[1].ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(got[1].ttl, 300);
        assert!(parse_answers(b"garbage").is_empty());
    }

    #[test]
    fn names_live_for_their_ttl_with_a_floor_and_while_in_use() {
        let mut l = Learner::new(10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = |names: &[&str], ttl| Learned {
            ip,
            names: names.iter().map(|s| s.to_string()).collect(),
            ttl,
        };
        assert_eq!(
            l.learn(100, &[a(&["a.example.com"], 2)]),
            [(ip, vec!["a.example.com".to_string()])]
        );
        // The same answer again changes nothing (no recompile), but extends.
        assert!(l.learn(105, &[a(&["a.example.com"], 2)]).is_empty());
        assert!(l.expire(114, |_| false).is_empty(), "floor: 105 + 10");
        assert!(l.expire(200, |_| true).is_empty(), "in use: kept");
        assert_eq!(l.expire(200, |_| false), [(ip, vec![])]);
        assert!(l.is_empty());
    }

    fn frame_tcp(seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 20 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            6,
            0,
            0,
        ];
        ip.extend([10, 0, 0, 53, 10, 0, 0, 2]);
        f.extend(ip);
        let mut tcp = vec![0, 53, 0x9c, 0x40];
        tcp.extend(seq.to_be_bytes());
        tcp.extend([0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0]);
        f.extend(tcp);
        f.extend(payload);
        f
    }

    #[test]
    fn tcp_messages_are_reassembled_across_segments() {
        let msg = response(
            "a.example.com",
            &[(
                "a.example.com",
                RData::A(A {
                    address: 0x0a000001,
                }),
                5,
            )],
        );
        let mut stream = (msg.len() as u16).to_be_bytes().to_vec();
        stream.extend(&msg);
        stream.extend((msg.len() as u16).to_be_bytes());
        stream.extend(&msg);
        let mut l = Learner::new(1);
        let cut = 7;
        assert!(l.messages(&frame_tcp(1000, &stream[..cut])).is_empty());
        // A retransmission of the first part is passed on unread.
        assert!(l.messages(&frame_tcp(1000, &stream[..cut])).is_empty());
        let got = l.messages(&frame_tcp(1000 + cut as u32, &stream[cut..]));
        assert_eq!(got, [msg.clone(), msg]);
    }
}
