// The map's graph model: /v1/map nodes and edges turned into indexed arrays the layout and the
// canvas work on, with parallel edges (same pair, several ports) folded into one drawn link.

import type { DependencyMap, MapEdge, MapNode } from "../api";

export type EdgeVerdict = "allowed" | "denied" | "audit" | "mixed";

/** allowed / denied / audit when only one kind was seen; mixed = some denied among others. */
export function edgeVerdict(e: Pick<MapEdge, "allowed" | "denied" | "audit">): EdgeVerdict {
  const kinds = (e.allowed > 0 ? 1 : 0) + (e.denied > 0 ? 1 : 0) + (e.audit > 0 ? 1 : 0);
  if (kinds > 1) return e.denied > 0 ? "mixed" : "audit";
  if (e.denied > 0) return "denied";
  if (e.audit > 0) return "audit";
  return "allowed";
}

export interface GNode {
  node: MapNode;
  i: number;
  x: number;
  y: number;
  r: number;
  ns: string;
  label: string;
}

/** One drawn line: every edge between an ordered pair of nodes. */
export interface GLink {
  s: number;
  t: number;
  edges: MapEdge[];
  connections: number;
  verdict: EdgeVerdict;
}

export interface Graph {
  nodes: GNode[];
  links: GLink[];
  byId: Map<string, number>;
  namespaces: string[];
}

/** The address in a member description: `1.2.3.4`, or `name (1.2.3.4)`. */
export function memberIp(member: string): string | null {
  const m = /\(([^()]+)\)$/.exec(member);
  const ip = (m ? m[1] : member).trim();
  return /^[0-9.]+$/.test(ip) || ip.includes(":") ? ip : null;
}

function net24(ip: string): string {
  if (/^\d+\.\d+\.\d+\.\d+$/.test(ip)) return ip.split(".").slice(0, 3).join(".") + ".0/24";
  return ip; // IPv6 stays as the server grouped it
}

/**
 * External peers the server named by DNS can be regrouped by network (/24), so a service
 * reached under many names is one node. Edges between merged nodes are summed.
 */
export function groupExternalsByNetwork(m: DependencyMap): DependencyMap {
  const rename = new Map<string, string>();
  const nodes = new Map<string, MapNode>();
  for (const n of m.nodes) {
    let id = n.id;
    if (n.kind === "external") {
      const ip = n.members.map(memberIp).find((x) => x !== null);
      if (ip) id = net24(ip);
    }
    rename.set(n.id, id);
    const prev = nodes.get(id);
    if (prev) prev.members = [...new Set([...prev.members, ...n.members])];
    else nodes.set(id, { ...n, id, members: [...n.members], evidence: n.kind === "external" && id !== n.id ? "network /24" : n.evidence });
  }
  const edges = new Map<string, MapEdge>();
  for (const e of m.edges) {
    const src = rename.get(e.src) ?? e.src;
    const dst = rename.get(e.dst) ?? e.dst;
    const key = `${src}\u0000${dst}\u0000${e.protocol}\u0000${e.port}`;
    const prev = edges.get(key);
    if (prev) {
      prev.allowed += e.allowed;
      prev.denied += e.denied;
      prev.audit += e.audit;
      prev.first_ns = Math.min(prev.first_ns, e.first_ns);
      prev.last_ns = Math.max(prev.last_ns, e.last_ns);
      prev.rules = [...new Set([...prev.rules, ...e.rules])];
    } else edges.set(key, { ...e, src, dst, rules: [...e.rules] });
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

/** Short text for a node on the canvas: the id without its namespace prefix. */
function shortLabel(n: MapNode): string {
  if (n.namespace && n.id.startsWith(n.namespace + "/")) return n.id.slice(n.namespace.length + 1);
  return n.id;
}

export function buildGraph(m: DependencyMap): Graph {
  const byId = new Map<string, number>();
  const nodes: GNode[] = [];
  const add = (n: MapNode) => {
    byId.set(n.id, nodes.length);
    nodes.push({ node: n, i: nodes.length, x: 0, y: 0, r: 5, ns: n.kind === "external" ? "(external)" : n.namespace ?? "", label: shortLabel(n) });
  };
  for (const n of m.nodes) if (!byId.has(n.id)) add(n);
  // An edge naming a node the list lacks still gets drawn.
  for (const e of m.edges)
    for (const id of [e.src, e.dst])
      if (!byId.has(id)) add({ id, kind: "external", namespace: null, members: [id], evidence: "" });
  const links = new Map<string, GLink>();
  for (const e of m.edges) {
    const s = byId.get(e.src)!;
    const t = byId.get(e.dst)!;
    const key = `${s},${t}`;
    let l = links.get(key);
    if (!l) links.set(key, (l = { s, t, edges: [], connections: 0, verdict: "allowed" }));
    l.edges.push(e);
    l.connections += e.allowed + e.denied + e.audit;
  }
  const degree = new Float64Array(nodes.length);
  for (const l of links.values()) {
    l.verdict = edgeVerdict({
      allowed: l.edges.reduce((a, e) => a + e.allowed, 0),
      denied: l.edges.reduce((a, e) => a + e.denied, 0),
      audit: l.edges.reduce((a, e) => a + e.audit, 0),
    });
    degree[l.s] += 1;
    degree[l.t] += 1;
  }
  for (const n of nodes) n.r = 4 + Math.min(8, Math.sqrt(n.node.members.length) * 1.5 + Math.log2(1 + degree[n.i]));
  const namespaces = [...new Set(nodes.map((n) => n.ns))].sort();
  return { nodes, links: [...links.values()], byId, namespaces };
}
