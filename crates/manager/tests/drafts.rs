//! Business-flow approval through REST: a proposal saved as a draft, reviewed rule by rule
//! (who, when, why in the audit trail), simulated and applied with its approved rules only; a
//! read-only token can look but not decide. Needs no root.

mod common;

use common::*;

/// The answer of `POST /v1/simulate`: the result line of the NDJSON stream.
fn simulate_result(base: &str, token: &str, body: Value) -> Value {
    let resp = ureq::post(&format!("{base}/v1/simulate"))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body)
        .unwrap();
    let text = resp.into_string().unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_is_reviewed_rule_by_rule_and_only_approved_rules_are_applied() {
    let w = World::with("drafts", &inventory_with_ips(), |_| {}).await;
    let mut c = w.node("n1").await;
    // web -> db on 5432, seen a few times: the history the proposal learns from.
    let rec = cellwall_proto::FlowRecord {
        count: 5,
        ..record(unix_ns(), 5432)
    };
    c.report_flows(cellwall_proto::FlowBatch {
        node: "n1".into(),
        records: vec![rec],
        kernel_events_lost: 0,
        agent_records_dropped: 0,
        seq: 1,
    })
    .await
    .unwrap();
    let (_, read) = w.new_token("read", json!({})).await;

    // A read-only token may not save a draft; an admin may, once per name.
    let save = json!({"name": "shop-v1", "since": "1h"});
    let (s, _) = w
        .rest_as(Some(&read), "POST", "/v1/drafts", Some(save.clone()))
        .await;
    assert_eq!(s, 403);
    let (s, d) = w.rest("POST", "/v1/drafts", Some(save.clone())).await;
    assert_eq!(s, 200, "{d}");
    let rules = d["rules"].as_array().unwrap().clone();
    let id_of = |policy: &str, dir: &str| -> String {
        rules
            .iter()
            .find(|r| r["policy"] == policy && r["direction"] == dir)
            .unwrap_or_else(|| panic!("{policy} {dir}: {rules:?}"))["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (db_in, web_out) = (
        id_of("shop/cw-db", "ingress"),
        id_of("shop/cw-web", "egress"),
    );
    assert!(rules.iter().all(|r| r["status"] == "pending"));
    assert_eq!(rules[0]["rule"]["evidence"]["connections"], 5);
    let (s, v) = w.rest("POST", "/v1/drafts", Some(save)).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("exists"),
        "{v}"
    );
    for bad in ["Shop", "a/b", "-x", ""] {
        let (s, _) = w
            .rest("POST", "/v1/drafts", Some(json!({"name": bad})))
            .await;
        assert_eq!(s, 400, "{bad}");
    }

    // Nothing decided: nothing to apply.
    let (s, v) = w
        .rest("POST", "/v1/drafts/apply", Some(json!({"name": "shop-v1"})))
        .await;
    assert_eq!(s, 409, "{v}");

    // The read-only token sees the draft but cannot decide; an unknown rule changes nothing.
    let (s, _) = w
        .rest_as(Some(&read), "GET", "/v1/drafts/show?name=shop-v1", None)
        .await;
    assert_eq!(s, 200);
    let review = |decision: &str, rules: Value, comment: &str| json!({"name": "shop-v1", "decision": decision, "rules": rules, "comment": comment});
    let (s, _) = w
        .rest_as(
            Some(&read),
            "POST",
            "/v1/drafts/review",
            Some(review("approve", json!([db_in]), "x")),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = w
        .rest(
            "POST",
            "/v1/drafts/review",
            Some(review("approve", json!([db_in, "r0000000"]), "x")),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, d) = w.rest("GET", "/v1/drafts/show?name=shop-v1", None).await;
    assert!(d["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "pending"));

    // Approve the database's ingress; reject the web's egress.
    let (s, d) = w
        .rest(
            "POST",
            "/v1/drafts/review",
            Some(review("approve", json!([db_in]), "orders need the db")),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    let (s, d) = w
        .rest(
            "POST",
            "/v1/drafts/review",
            Some(review(
                "reject",
                json!([web_out]),
                "web must go through the api",
            )),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    let r = |id: &str| {
        d["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(r(&db_in)["status"], "approved");
    assert_eq!(r(&web_out)["status"], "rejected");
    assert_eq!(r(&db_in)["comment"], "orders need the db");
    let who = r(&db_in)["decided_by"].as_str().unwrap().to_string();
    assert!(!who.is_empty());

    // Who decided what, when: in the audit trail.
    let (_, audit) = w.rest("GET", "/v1/audit?limit=100", None).await;
    let events = audit["events"].as_array().unwrap();
    let approve = events
        .iter()
        .find(|e| e["action"] == "draft.approve")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(approve["actor"], who.as_str());
    assert!(approve["detail"].as_str().unwrap().contains(&db_in));
    assert!(approve["detail"]
        .as_str()
        .unwrap()
        .contains("orders need the db"));
    assert!(events.iter().any(|e| e["action"] == "draft.reject"));

    // Simulated: the rejected egress breaks the one observed flow.
    let sim = simulate_result(
        &w.base,
        &w.admin,
        json!({"draft": "shop-v1", "since": "1h"}),
    );
    assert_eq!(sim["breakage"], 1, "{sim}");

    // Applied: both policies, the web's without its rejected rule.
    let (s, v) = w
        .rest("POST", "/v1/drafts/apply", Some(json!({"name": "shop-v1"})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["policies"], json!(["shop/cw-db", "shop/cw-web"]), "{v}");
    let (_, pols) = w.rest("GET", "/v1/policies", None).await;
    let text = pols.to_string();
    assert!(text.contains("cw-db") && text.contains("cw-web"), "{pols}");
    let (_, d) = w.rest("GET", "/v1/drafts/show?name=shop-v1", None).await;
    assert_eq!(d["applied"]["by"], who.as_str());
    let (_, list) = w.rest_as(Some(&read), "GET", "/v1/drafts", None).await;
    assert_eq!(list["items"][0]["approved"], 1, "{list}");
    assert_eq!(list["items"][0]["rejected"], 1, "{list}");

    // Rule hygiene over the same history: the applied db rule decided the flow, read-only
    // tokens may look.
    let (s, rules) = w
        .rest_as(Some(&read), "GET", "/v1/rules?since=1h", None)
        .await;
    assert_eq!(s, 200, "{rules}");
    let db = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "Policy/shop/cw-db ingress[0]")
        .unwrap_or_else(|| panic!("{rules}"));
    assert_eq!(db["connections"], 5, "{db}");
    assert_eq!(db["unused"], false);
    let (_, unused) = w.rest("GET", "/v1/rules?since=1h&unused=true", None).await;
    assert!(unused["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["unused"] == true && r["rule"] != "Policy/shop/cw-db ingress[0]"));

    // Deleted: gone from the list, its versions still in the audit trail.
    let (s, _) = w
        .rest(
            "POST",
            "/v1/drafts/delete",
            Some(json!({"name": "shop-v1"})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, list) = w.rest("GET", "/v1/drafts", None).await;
    assert_eq!(list["items"], json!([]));
    let (s, _) = w.rest("GET", "/v1/drafts/show?name=shop-v1", None).await;
    assert_eq!(s, 404);
}
