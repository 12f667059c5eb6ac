// Flows page: the stored flow records, newest first, with filters, a live tail (poll every 2 s
// for ids above the newest shown) and paging back (ids below the oldest shown). Each row can
// be explained: it opens Explain with the row's endpoints and probe filled in.

import { get, url, type FlowList, type FlowRecord } from "../api";
import { badge, field, fmtNs, h, replace, select } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";
import { workloadList } from "../workloads";

const PAGE = 500;
const MAX_ROWS = 20000;
/** How many extra requests one poll may make to fill the gap behind a full page. */
const MAX_GAP_FETCHES = 10;
/** What Explain accepts: `from` is ns/name, the probe TCP|UDP|SCTP/PORT. */
const EXPLAINABLE_SRC = /^[^/]+\/[^/]+$/;
const EXPLAINABLE_PROTO = new Set(["TCP", "UDP", "SCTP"]);

type Filters = Record<string, string>;

export const flowsPage: Page = (root, ctx) => {
  const p = ctx.params;
  const workload = h("input", { id: "flow-workload", type: "text", list: "flow-workloads", placeholder: "ns/name", value: p.get("workload") ?? "" });
  const verdict = select("flow-verdict", [["", "any"], "allowed", "denied", "audit", "revoked"], p.get("verdict") ?? "");
  const port = h("input", { id: "flow-port", type: "number", min: "1", max: "65535", placeholder: "any", value: p.get("port") ?? "" });
  const rule = h("input", { id: "flow-rule", type: "text", placeholder: "exact rule text", value: p.get("rule") ?? "" });
  const since = h("input", { id: "flow-since", type: "text", list: "flow-since-list", placeholder: "all", title: "A duration like 10m, 1h, 7d; empty for everything stored", pattern: "[0-9]{1,9}(ms|s|m|h|d)", value: p.get("since") ?? "", size: 10 });
  const sinceList = h("datalist", { id: "flow-since-list" }, ["15m", "1h", "24h", "7d"].map((v) => h("option", { value: v })));
  const apply = h("button", { id: "flow-apply", type: "submit", class: "primary" }, "Apply");
  const follow = h("input", { id: "flow-follow", type: "checkbox" });
  const older = h("button", { id: "flow-older", type: "button" }, "Load older");
  // Announced: loads and paging. The live tail's counter is a separate, silent line.
  const status = h("span", { class: "muted", role: "status" });
  const tailInfo = h("span", { class: "muted" });
  const gap = h("p", { class: "warn", role: "status" });
  gap.hidden = true;
  const loss = h("div");
  const tbody = h("tbody");

  const form = h("form", { class: "toolbar filters", onsubmit: (e: Event) => { e.preventDefault(); void reload(); } },
    field("Workload", workload), workloadList("flow-workloads"),
    field("Verdict", verdict), field("Port", port), field("Rule", rule), field("Since", since), sinceList, apply,
    h("label", { class: "check" }, follow, " Live tail"));

  root.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Flows"), status, tailInfo),
    form, gap, loss,
    h("div", { class: "table-wrap tall" },
      h("table", { "data-testid": "flows" },
        h("thead", null, h("tr", null, ["Time", "Source", "Destination", "Port", "Verdict", "Decided at", "Rule", "Count", "Node", ""].map((x) => h("th", { scope: "col" }, x)))),
        tbody)),
    h("div", { class: "below-table" }, older));

  let minId = Infinity, maxId = 0, seq = 0;
  let timer = 0;
  /** The filters of the last Apply: paging back and the tail keep to them, whatever the form says now. */
  let applied: Filters = {};

  function filters(): Filters {
    return { workload: workload.value.trim(), verdict: verdict.value, port: port.value.trim(), rule: rule.value.trim(), since: since.value.trim() };
  }

  function explainable(f: FlowRecord): boolean {
    return EXPLAINABLE_SRC.test(f.src) && EXPLAINABLE_PROTO.has(f.protocol.toUpperCase());
  }

  function row(f: FlowRecord): HTMLTableRowElement {
    const to = f.dst;
    return h("tr", { "data-id": f.id, "data-verdict": f.verdict },
      h("td", { class: "nowrap" }, fmtNs(f.time_unix_ns)),
      h("td", null, f.src, f.src_ip && f.src_ip !== f.src ? h("span", { class: "muted ip" }, ` ${f.src_ip}`) : null),
      h("td", null, f.dst, f.dst_ip && f.dst_ip !== f.dst ? h("span", { class: "muted ip" }, ` ${f.dst_ip}`) : null,
        f.dst_names?.length ? h("div", { class: "muted" }, f.dst_names.join(", ")) : null),
      h("td", null, `${f.protocol}/${f.port}`),
      h("td", null, badge(f.verdict)),
      h("td", null, f.direction),
      h("td", { class: "rule" }, f.rule ?? h("span", { class: "muted" }, "default")),
      h("td", { class: "num" }, f.count),
      h("td", null, f.node),
      h("td", null, explainable(f) ? h("button", {
        type: "button", class: "explain small", "aria-label": `Explain ${f.src} to ${to} ${f.protocol}/${f.port}`,
        onclick: () => ctx.go(`#/explain?${new URLSearchParams({ from: f.src, to, probe: `${f.protocol.toUpperCase()}/${f.port}`, run: "1" }).toString()}`),
      }, "Explain") : h("span", { class: "muted", title: "Explain needs a workload source and a TCP, UDP or SCTP port" }, "—")));
  }

  function track(list: FlowRecord[]): void {
    for (const f of list) { minId = Math.min(minId, f.id); maxId = Math.max(maxId, f.id); }
  }

  function showLoss(res: FlowList): void {
    const bad = Object.entries(res.loss ?? {}).filter(([, l]) => l.kernel_events_lost || l.agent_records_dropped || l.batches_missed);
    replace(loss, bad.length ? h("p", { class: "warn" }, "Incomplete: ", bad.map(([n, l]) =>
      `${n}: ${l.kernel_events_lost} kernel events lost, ${l.agent_records_dropped} records dropped, ${l.batches_missed} batches missed. `)) : null);
  }

  async function reload(): Promise<void> {
    const my = ++seq;
    const f = filters();
    status.textContent = "Loading…";
    const res = await attempt(() => get<FlowList>(url("flows", { ...f, limit: PAGE })));
    if (my !== seq) return;
    status.textContent = "";
    if (!res) return;
    applied = f;
    minId = Infinity; maxId = 0;
    track(res.flows);
    gap.hidden = true;
    gap.textContent = "";
    tailInfo.textContent = "";
    replace(tbody, res.flows.slice().reverse().map(row));
    older.disabled = res.flows.length < PAGE;
    older.textContent = older.disabled ? "No older flows" : "Load older";
    showLoss(res);
    status.textContent = `${tbody.rows.length} flows shown`;
  }

  async function loadOlder(): Promise<void> {
    if (minId === Infinity) return;
    const my = seq;
    const res = await attempt(() => get<FlowList>(url("flows", { ...applied, before: minId, limit: PAGE })));
    if (!res || my !== seq) return;
    const list = res.flows.filter((f) => f.id < minId);
    track(list);
    tbody.append(...list.slice().reverse().map(row));
    if (res.flows.length < PAGE) { older.disabled = true; older.textContent = "No older flows"; }
    status.textContent = `${tbody.rows.length} flows shown`;
  }

  /**
   * The API answers the NEWEST `limit` records above `after`: a full page means records between
   * the last seen id and the page's oldest may be missing, so ask for that gap (before = the
   * oldest received) until a short page comes back, at most MAX_GAP_FETCHES times.
   */
  async function poll(): Promise<void> {
    const my = seq;
    const prevMax = maxId;
    const res = await attempt(() => get<FlowList>(url("flows", { ...applied, after: prevMax || undefined, limit: PAGE })));
    if (!res || my !== seq || !follow.checked) return;
    let fresh = res.flows.filter((f) => f.id > prevMax);
    let full = res.flows.length >= PAGE;
    for (let i = 0; full && fresh.length && i < MAX_GAP_FETCHES; i++) {
      const oldest = fresh.reduce((m, f) => Math.min(m, f.id), Infinity);
      const more = await attempt(() => get<FlowList>(url("flows", { ...applied, after: prevMax || undefined, before: oldest, limit: PAGE })));
      if (my !== seq || !follow.checked) return;
      if (!more) break;
      const add = more.flows.filter((f) => f.id > prevMax && f.id < oldest);
      fresh = fresh.concat(add);
      full = more.flows.length >= PAGE && add.length > 0;
    }
    if (full) {
      gap.hidden = false;
      gap.textContent = "gap: some records were skipped, press Apply to reload";
    }
    if (!fresh.length) return;
    fresh.sort((a, b) => b.id - a.id);
    track(fresh);
    tbody.prepend(...fresh.map(row));
    if (tbody.rows.length > MAX_ROWS) {
      while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild?.remove();
      // The oldest rows went: paging back continues from the oldest row still shown.
      minId = Infinity;
      for (const tr of tbody.rows) minId = Math.min(minId, Number(tr.dataset.id));
      older.disabled = false;
      older.textContent = "Load older";
    }
    showLoss(res);
    // The count changes every poll: shown in a silent line, not in the announced status.
    if (status.textContent) status.textContent = "";
    tailInfo.textContent = `${tbody.rows.length} flows shown (live)`;
  }

  function schedule(): void {
    window.clearTimeout(timer);
    if (!follow.checked) return;
    timer = window.setTimeout(async () => { await poll(); schedule(); }, 2000);
  }

  follow.addEventListener("change", schedule);
  older.addEventListener("click", () => void loadOlder());
  void reload();
  return () => { seq++; follow.checked = false; window.clearTimeout(timer); };
};
