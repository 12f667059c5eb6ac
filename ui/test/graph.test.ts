// The map's model: verdict of an edge, folding parallel edges, regrouping external peers, and a
// layout that is deterministic and finite.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DependencyMap, MapEdge } from "../src/api";
import { buildGraph, edgeVerdict, groupExternalsByNetwork, memberIp } from "../src/map/graph";
import { layout } from "../src/map/layout";

const edge = (src: string, dst: string, port: number, allowed: number, denied: number, audit = 0): MapEdge => ({
  src, dst, protocol: "TCP", port, allowed, denied, audit, first_ns: 1, last_ns: 2, rules: [`r${port}`],
});

test("an edge's verdict: one kind shows as itself; any denial among others is mixed", () => {
  assert.equal(edgeVerdict({ allowed: 3, denied: 0, audit: 0 }), "allowed");
  assert.equal(edgeVerdict({ allowed: 0, denied: 2, audit: 0 }), "denied");
  assert.equal(edgeVerdict({ allowed: 0, denied: 0, audit: 1 }), "audit");
  assert.equal(edgeVerdict({ allowed: 1, denied: 1, audit: 0 }), "mixed");
  assert.equal(edgeVerdict({ allowed: 0, denied: 1, audit: 1 }), "mixed");
  assert.equal(edgeVerdict({ allowed: 5, denied: 0, audit: 1 }), "audit", "would-be-denied traffic must not look clean");
  assert.equal(edgeVerdict({ allowed: 0, denied: 0, audit: 0 }), "allowed");
});

test("member addresses are read from both forms the API writes", () => {
  assert.equal(memberIp("203.0.113.7"), "203.0.113.7");
  assert.equal(memberIp("api.example.com (203.0.113.7)"), "203.0.113.7");
  assert.equal(memberIp("2001:db8::1"), "2001:db8::1");
  assert.equal(memberIp("shop/web-1"), null);
});

const map: DependencyMap = {
  nodes: [
    { id: "shop/app=web", kind: "workload", namespace: "shop", members: ["shop/web-1", "shop/web-2"], evidence: "labels app=web" },
    { id: "a.example.com", kind: "external", namespace: null, members: ["a.example.com (203.0.113.7)"] },
    { id: "203.0.113.9", kind: "external", namespace: null, members: ["203.0.113.9"] },
    { id: "198.51.100.1", kind: "external", namespace: null, members: ["198.51.100.1"] },
    { id: "2001:db8::1", kind: "external", namespace: null, members: ["2001:db8::1"] },
  ],
  edges: [
    edge("shop/app=web", "a.example.com", 443, 10, 0),
    edge("shop/app=web", "203.0.113.9", 443, 5, 2),
    edge("shop/app=web", "198.51.100.1", 443, 1, 0),
    edge("shop/app=web", "2001:db8::1", 443, 1, 0),
  ],
};

test("externals regroup by /24: members and counts merge, workloads and IPv6 stay", () => {
  const g = groupExternalsByNetwork(map);
  const ids = g.nodes.map((n) => n.id).sort();
  assert.deepEqual(ids, ["198.51.100.0/24", "2001:db8::1", "203.0.113.0/24", "shop/app=web"]);
  const net = g.nodes.find((n) => n.id === "203.0.113.0/24")!;
  assert.deepEqual([...net.members].sort(), ["203.0.113.9", "a.example.com (203.0.113.7)"]);
  const e = g.edges.find((x) => x.dst === "203.0.113.0/24")!;
  assert.deepEqual([e.allowed, e.denied], [15, 2]);
  assert.equal(g.edges.length, 3);
  assert.equal(map.edges[0].allowed, 10, "the map it was given is left as it was");
});

test("parallel edges (same pair, several ports) fold into one link; unknown ends still drawn", () => {
  const g = buildGraph({
    nodes: [map.nodes[0]],
    edges: [edge("shop/app=web", "db/app=pg", 5432, 4, 0), edge("shop/app=web", "db/app=pg", 6379, 0, 3)],
  });
  assert.equal(g.nodes.length, 2, "an edge's end missing from the node list gets a node");
  assert.equal(g.links.length, 1);
  assert.equal(g.links[0].connections, 7);
  assert.equal(g.links[0].verdict, "mixed");
  assert.equal(g.links[0].edges.length, 2);
});

test("layout: the same map lays out the same way, with finite coordinates", () => {
  const big: DependencyMap = { nodes: [], edges: [] };
  for (let i = 0; i < 60; i++) big.nodes.push({ id: `ns${i % 4}/app=s${i}`, kind: "workload", namespace: `ns${i % 4}`, members: [`ns${i % 4}/s${i}`] });
  for (let i = 0; i < 59; i++) big.edges.push(edge(big.nodes[i].id, big.nodes[(i * 7 + 1) % 60].id, 80, 1, 0));
  const a = buildGraph(big), b = buildGraph(big);
  layout(a, 10_000);
  layout(b, 10_000);
  assert.ok(a.nodes.every((n) => Number.isFinite(n.x) && Number.isFinite(n.y)));
  assert.deepEqual(a.nodes.map((n) => [n.x, n.y]), b.nodes.map((n) => [n.x, n.y]));
  const spread = Math.max(...a.nodes.map((n) => n.x)) - Math.min(...a.nodes.map((n) => n.x));
  assert.ok(spread > 50, `nodes are spread out (${spread})`);
});
