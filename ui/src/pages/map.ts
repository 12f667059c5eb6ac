// Map page: the service dependency graph from /v1/map on a canvas (pan/zoom, click a link or a
// node), its edges as a table below (the keyboard / screen-reader alternative), and the detail
// of a chosen edge: summary, deciding rules and the flows behind it.

import { get, url, type FlowList, type FlowRecord, type MapEdge, type MapResponse } from "../api";
import { badge, field, fmtNs, h, replace, select, table } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";
import { buildGraph, edgeVerdict, groupExternalsByNetwork, memberIp, type GNode, type Graph } from "../map/graph";
import { layout } from "../map/layout";
import { MapView, VERDICT_COLOURS, type Hit } from "../map/view";

declare global {
  interface Window { cellwallMapStats?: { nodes: number; edges: number; layoutMs: number; drawMs: number } }
}

/** Edge detail: how many members of the workload side get their flows fetched. */
const MAX_FLOW_MEMBERS = 5;

export const mapPage: Page = (root, ctx) => {
  const since = select("map-since", ["15m", "1h", "24h", "7d"], ctx.params.get("since") ?? "1h");
  const asked = ctx.params.get("group_by") ?? "auto";
  const groupBy = select("map-group-by", ["auto", "app", "owner", "workload", "namespace", ["label", "label keys…"]],
    asked.startsWith("label:") ? "label" : asked);
  // `label:KEY[,KEY]`: the shop's own labelling convention, when none of the others fits.
  const labelKeys = h("input", {
    id: "map-label-keys", type: "text", placeholder: "KEY[,KEY]", size: 16,
    value: asked.startsWith("label:") ? asked.slice(6) : "",
    onchange: () => void load(),
  });
  const labelField = field("Label keys", labelKeys);
  const groupValue = () => (groupBy.value === "label" ? `label:${labelKeys.value.trim()}` : groupBy.value);
  const showLabelField = () => { labelField.hidden = groupBy.value !== "label"; };
  showLabelField();
  const externals = select("map-externals", [["name", "by name (as learned)"], ["network", "by network (/24)"]], "name");
  // The keyboard's way to a service (the canvas is a picture): choosing one selects it.
  const service = h("select", { id: "map-service", onchange: () => chooseService() }, h("option", { value: "" }, "—"));
  const fitBtn = h("button", { type: "button", id: "map-fit" }, "Fit");
  const zoomIn = h("button", { type: "button", "aria-label": "Zoom in" }, "+");
  const zoomOut = h("button", { type: "button", "aria-label": "Zoom out" }, "−");
  const status = h("span", { class: "muted", role: "status" });
  const canvas = h("canvas", {
    id: "map-canvas",
    tabindex: "0",
    role: "img",
    "aria-label": "Service map. Drag or use arrow keys to pan, wheel or + and - to zoom, 0 to fit. The table of edges below lists the same.",
  });
  const nodeInfo = h("div", { class: "node-info", "data-testid": "node-info" });
  const detail = h("section", { class: "edge-detail", "data-testid": "edge-detail", "aria-label": "Selected edge" },
    h("p", { class: "muted" }, "Click an edge on the map or a row of the table to see its flows and deciding rules."));
  const edgesHost = h("div");
  const legend = h("div", { class: "legend" },
    (["allowed", "denied", "audit", "mixed"] as const).map((v) => {
      const sw = h("span", { class: "swatch" });
      sw.style.background = VERDICT_COLOURS[v];
      return h("span", null, sw, v === "mixed" ? "mixed (some denied)" : v);
    }),
    h("span", { class: "muted" }, "width = connections (log)"),
  );

  root.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Map"),
      h("div", { class: "toolbar" },
        field("Window", since), field("Group by", groupBy), labelField, field("External peers", externals), field("Service", service),
        h("div", { class: "btn-group" }, zoomOut, zoomIn, fitBtn), status)),
    h("div", { class: "map-layout" },
      h("div", { class: "map-canvas-wrap" }, canvas, legend),
      h("aside", { class: "map-side", "aria-label": "Selected service" }, nodeInfo)),
    detail,
    h("h2", null, "Edges"),
    edgesHost,
  );

  let view: MapView | null = null;
  let graph: Graph | null = null;
  let rows = new Map<MapEdge, HTMLTableRowElement>();
  let seq = 0;
  let first = true;

  async function load(): Promise<void> {
    const my = ++seq;
    status.textContent = "Loading…";
    const res = await attempt(() => get<MapResponse>(url("map", { since: since.value, group_by: groupValue() })));
    if (my !== seq) return;
    status.textContent = "";
    if (!res) return;
    const m = externals.value === "network" ? groupExternalsByNetwork(res.map) : res.map;
    graph = buildGraph(m);
    const stats = layout(graph);
    // One view per canvas: the old one's listeners and frames go before the new one binds.
    view?.destroy();
    view = null;
    view = new MapView(canvas, graph, pick, (drawMs) => {
      if (first) {
        first = false;
        window.cellwallMapStats = { nodes: graph!.nodes.length, edges: m.edges.length, layoutMs: Math.round(stats.ms), drawMs: Math.round(drawMs * 10) / 10 };
        document.body.dataset.mapRendered = "1";
      }
    });
    status.textContent = `${m.nodes.length} services, ${m.edges.length} edges`;
    replace(service, h("option", { value: "" }, "—"),
      [...graph.nodes].sort((x, y) => x.node.id.localeCompare(y.node.id)).map((n) => h("option", { value: String(n.i) }, n.node.id)));
    renderEdges(m.edges);
    showNodeHint();
  }

  function showNodeHint(): void {
    replace(nodeInfo, h("div", { class: "card muted" }, "Click a service on the map to see its members. Drag to pan, wheel to zoom; with the map focused, arrow keys pan, + and − zoom, 0 fits."));
  }

  /**
   * One row per edge. Built in slices off the document (so the map stays responsive) and
   * attached once: a 10,000-row table is laid out one time, not per slice.
   */
  function renderEdges(edges: MapEdge[]): void {
    const my = seq;
    rows = new Map();
    const tbody = h("tbody");
    const head = ["Source", "Destination", "Port", "Verdict", "Allowed", "Denied", "Audit", "Last seen"];
    const build = (from: number) => {
      if (my !== seq) return;
      const end = Math.min(edges.length, from + 2000);
      for (let i = from; i < end; i++) tbody.appendChild(edgeRow(edges[i]));
      if (end < edges.length) { setTimeout(() => build(end), 0); return; }
      replace(edgesHost, h("div", { class: "table-wrap" }, h("table", { "data-testid": "map-edges", class: "fixed" },
        h("thead", null, h("tr", null, head.map((x) => h("th", { scope: "col" }, x)))), tbody)));
    };
    replace(edgesHost, h("p", { class: "muted" }, `Listing ${edges.length} edges…`));
    build(0);
  }

  function edgeRow(e: MapEdge): HTMLTableRowElement {
    const v = edgeVerdict(e);
    const open = () => showEdges([e]);
    const tr = h("tr", {
      tabindex: "0",
      class: "clickable",
      "data-src": e.src,
      "data-dst": e.dst,
      "data-protocol": e.protocol,
      "data-port": e.port,
      "data-verdict": v,
      onclick: open,
      onkeydown: (ev: Event) => {
        const k = (ev as KeyboardEvent).key;
        if (k === "Enter" || k === " ") { ev.preventDefault(); open(); }
      },
    },
    h("td", null, e.src), h("td", null, e.dst), h("td", null, `${e.protocol}/${e.port}`), h("td", null, badge(v)),
    h("td", { class: "num" }, e.allowed), h("td", { class: "num" }, e.denied), h("td", { class: "num" }, e.audit),
    h("td", null, fmtNs(e.last_ns)));
    rows.set(e, tr);
    return tr;
  }

  function pick(hit: Hit): void {
    if (!view || !graph) return;
    if (hit && "link" in hit) {
      view.selectedNode = null;
      showNodeHint();
      showEdges(hit.link.edges);
    } else if (hit && "node" in hit) {
      service.value = String(hit.node.i);
      view.selectedNode = hit.node;
      view.selectedLink = null;
      showNode(hit.node);
    } else {
      view.selectedNode = null;
      view.selectedLink = null;
      showNodeHint();
    }
    view.request();
  }

  function chooseService(): void {
    const n = graph?.nodes[Number(service.value)];
    pick(service.value && n ? { node: n } : null);
  }

  function showNode(n: GNode): void {
    const links = graph!.links.filter((l) => l.s === n.i || l.t === n.i);
    replace(nodeInfo, h("div", { class: "card" },
      h("h3", null, n.node.id),
      h("p", null, badge(n.node.kind), " ", n.node.namespace ? `namespace ${n.node.namespace}` : "", n.node.evidence ? ` · ${n.node.evidence}` : ""),
      h("p", { class: "muted" }, `${links.length} links; ${n.node.members.length} member(s):`),
      h("ul", { class: "members" }, n.node.members.slice(0, 50).map((m) => h("li", null, m))),
      n.node.members.length > 50 ? h("p", { class: "muted" }, `… and ${n.node.members.length - 50} more`) : null));
  }

  /** Shows one edge (table row) or every edge of a drawn link (several ports). */
  function showEdges(edges: MapEdge[]): void {
    if (!graph || !edges.length) return;
    for (const tr of rows.values()) tr.classList.remove("selected");
    for (const e of edges) rows.get(e)?.classList.add("selected");
    const s = graph.byId.get(edges[0].src), t = graph.byId.get(edges[0].dst);
    if (view) {
      view.selectedLink = graph.links.find((l) => l.s === s && l.t === t) ?? null;
      view.request();
    }
    const src = graph.nodes[s!].node, dst = graph.nodes[t!].node;
    const rules = [...new Set(edges.flatMap((e) => e.rules))];
    const flowsHost = h("div", null, h("p", { class: "muted" }, "Loading flows…"));
    replace(detail, h("div", { class: "edge-summary" },
      h("h3", null, `${src.id} → ${dst.id}`),
      h("table", { class: "kv" }, h("tbody", null, edges.map((e) =>
        h("tr", null, h("th", { scope: "row" }, `${e.protocol}/${e.port}`),
          h("td", null, badge(edgeVerdict(e)), ` allowed ${e.allowed} · denied ${e.denied} · audit ${e.audit}`,
            h("br"), h("span", { class: "muted" }, `${fmtNs(e.first_ns)} – ${fmtNs(e.last_ns)}`)))))),
      h("h4", null, "Deciding rules"),
      rules.length ? h("ul", { class: "rules" }, rules.map((r) => h("li", null, h("code", null, r)))) : h("p", { class: "muted" }, "None (default allow).")),
      h("div", { class: "edge-flows" }, h("h4", null, "Flows"), flowsHost));
    void loadFlows(edges, src.members, dst.members, src.kind === "workload", flowsHost);
  }

  async function loadFlows(edges: MapEdge[], srcMembers: string[], dstMembers: string[], srcIsWorkload: boolean, host: HTMLElement): Promise<void> {
    // The flow filter takes one workload (either end): ask about up to MAX_FLOW_MEMBERS members
    // of a workload side of the edge, in parallel, and merge.
    const side = srcIsWorkload ? srcMembers : dstMembers;
    const anchors = side.slice(0, MAX_FLOW_MEMBERS);
    const answers = await Promise.all(anchors.map((m) => attempt(() => get<FlowList>(url("flows", { workload: m, since: since.value, limit: 500 })))));
    if (!host.isConnected) return;
    const got = answers.filter((r): r is FlowList => r !== undefined);
    if (!got.length) { replace(host, h("p", { class: "muted" }, "Could not load the flows.")); return; }
    const byId = new Map<number, FlowRecord>();
    for (const r of got) for (const f of r.flows) byId.set(f.id, f);
    const names = (ms: string[]) => new Set(ms.flatMap((m) => [m, memberIp(m) ?? m]));
    const sset = names(srcMembers), dset = names(dstMembers);
    const ports = new Set(edges.map((e) => `${e.protocol}/${e.port}`));
    const flows = [...byId.values()]
      .filter((f) => sset.has(f.src) && (dset.has(f.dst) || (f.dst_names ?? []).some((n) => dset.has(`${n} (${f.dst_ip})`))) && ports.has(`${f.protocol}/${f.port}`))
      .sort((a, b) => b.id - a.id);
    const partial = side.length > MAX_FLOW_MEMBERS ? ` (first ${MAX_FLOW_MEMBERS} members)` : "";
    if (!flows.length) {
      replace(host, h("p", { class: "muted" }, `No stored flow of this edge among the latest 500 of each of its ${anchors.length} workload(s)${partial}.`));
      return;
    }
    const note = h("p", { class: "muted" }, `${flows.length} flow(s), newest first, from the latest 500 of each of ${anchors.length} member(s)${partial}.`);
    replace(host, note, table("edge-flows", ["Time", "Source", "Destination", "Port", "Verdict", "Decided at", "Rule", "Count"], flows.map((f) =>
      h("tr", { "data-id": f.id },
        h("td", { class: "nowrap" }, fmtNs(f.time_unix_ns)), h("td", null, f.src), h("td", null, f.dst), h("td", null, `${f.protocol}/${f.port}`),
        h("td", null, badge(f.verdict)),
        h("td", null, f.direction === "ingress" ? "ingress (destination)" : "egress (source)"),
        h("td", null, f.rule ?? h("span", { class: "muted" }, "default")), h("td", { class: "num" }, f.count)))));
  }

  since.addEventListener("change", () => void load());
  groupBy.addEventListener("change", () => {
    showLabelField();
    if (groupBy.value === "label" && !labelKeys.value.trim()) { labelKeys.focus(); return; }
    void load();
  });
  externals.addEventListener("change", () => void load());
  fitBtn.addEventListener("click", () => view?.fit());
  zoomIn.addEventListener("click", () => view?.zoom(1.25));
  zoomOut.addEventListener("click", () => view?.zoom(0.8));
  void load();
  return () => { seq++; view?.destroy(); view = null; delete document.body.dataset.mapRendered; };
};
