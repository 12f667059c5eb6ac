//! Per-minute connection history: endpoints and rule descriptions stored once in `names` and
//! referenced by id, so a history row is a few integers; counts add up on conflict.

use super::*;

impl SqliteStore {
    pub(super) fn add_history_rows(&self, rows: &[HistRow]) -> Result<()> {
        use cellwall_policy::discover::Observed;
        let mut db = self.conn();
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.transaction()?;
        {
            let mut ins_name =
                tx.prepare_cached("INSERT OR IGNORE INTO names(text) VALUES (?1)")?;
            let mut get_name = tx.prepare_cached("SELECT id FROM names WHERE text = ?1")?;
            let mut id = |text: String| -> Result<i64> {
                if let Some(i) = names.get(&text) {
                    return Ok(*i);
                }
                ins_name.execute(params![text])?;
                let i: i64 = get_name.query_row(params![text], |r| r.get(0))?;
                names.insert(text, i);
                Ok(i)
            };
            let mut st = tx.prepare_cached(
                "INSERT INTO flow_history(bucket, src, dst, protocol, port, verdict, rule, count,
                   first_ns, last_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(bucket, src, dst, protocol, port, verdict, rule) DO UPDATE SET
                   count = CASE WHEN count > 9223372036854775807 - excluded.count
                     THEN 9223372036854775807 ELSE count + excluded.count END,
                   first_ns = MIN(first_ns, excluded.first_ns),
                   last_ns = MAX(last_ns, excluded.last_ns)",
            )?;
            // Endpoints repeat within a batch: serialized and looked up once each.
            let mut ep_ids: HashMap<&cellwall_policy::discover::Endpoint, i64> = HashMap::new();
            for r in rows {
                let f = &r.flow;
                let mut ids = [0i64; 2];
                for (slot, e) in ids.iter_mut().zip([&f.src, &f.dst]) {
                    *slot = match ep_ids.get(e) {
                        Some(i) => *i,
                        None => {
                            let i = id(serde_json::to_string(e).expect("json"))?;
                            ep_ids.insert(e, i);
                            i
                        }
                    };
                }
                let [src, dst] = ids;
                let rule = id(f.rule.clone().unwrap_or_default())?;
                let verdict = match f.observed {
                    Observed::Allowed => 0,
                    Observed::Denied => 1,
                    Observed::Audit => 2,
                };
                st.execute(params![
                    r.bucket as i64,
                    src,
                    dst,
                    f.protocol.number(),
                    f.port,
                    verdict,
                    rule,
                    i64::try_from(f.connections).unwrap_or(i64::MAX),
                    f.first_ns as i64,
                    f.last_ns as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn history_rows(
        &self,
        since_ns: u64,
    ) -> Result<Vec<cellwall_policy::discover::HistFlow>> {
        use cellwall_policy::discover::{Endpoint, HistFlow, Observed};
        use cellwall_policy::Protocol;
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT src, dst, protocol, port, verdict, rule, SUM(count), MIN(first_ns),
                    MAX(last_ns)
             FROM flow_history WHERE bucket >= ?1
             GROUP BY src, dst, protocol, port, verdict, rule",
        )?;
        let mut text_of = db.prepare_cached("SELECT text FROM names WHERE id = ?1")?;
        let mut eps: HashMap<i64, Endpoint> = HashMap::new();
        let mut rules: HashMap<i64, Option<String>> = HashMap::new();
        let mut out = Vec::new();
        let mut rows = st.query(params![(since_ns / BUCKET_NS) as i64])?;
        while let Some(r) = rows.next()? {
            let mut ep = |i: usize| -> Result<Endpoint> {
                let id: i64 = r.get(i)?;
                if let Some(e) = eps.get(&id) {
                    return Ok(e.clone());
                }
                let s: String = text_of.query_row(params![id], |r| r.get(0))?;
                let e: Endpoint = serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
                    kind: "history endpoint".into(),
                    key: s.clone(),
                    source: e,
                })?;
                eps.insert(id, e.clone());
                Ok(e)
            };
            let (src, dst) = (ep(0)?, ep(1)?);
            let rule_id: i64 = r.get(5)?;
            let rule = match rules.get(&rule_id) {
                Some(r) => r.clone(),
                None => {
                    let t: String = text_of.query_row(params![rule_id], |r| r.get(0))?;
                    let v = (!t.is_empty()).then_some(t);
                    rules.insert(rule_id, v.clone());
                    v
                }
            };
            let protocol = match r.get::<_, u8>(2)? {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                132 => Protocol::Sctp,
                _ => continue,
            };
            let observed = match r.get::<_, u8>(4)? {
                0 => Observed::Allowed,
                1 => Observed::Denied,
                _ => Observed::Audit,
            };
            out.push(HistFlow {
                src,
                dst,
                protocol,
                port: r.get(3)?,
                observed,
                rule,
                connections: r.get::<_, i64>(6)? as u64,
                first_ns: r.get::<_, i64>(7)? as u64,
                last_ns: r.get::<_, i64>(8)? as u64,
            });
        }
        // Order does not matter: map, proposal and simulation aggregate into sorted maps.
        Ok(out)
    }
}
