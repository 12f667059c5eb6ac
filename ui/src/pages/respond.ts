// Respond page: incident response. Quarantine a workload (cut it off except from an optional
// peer) and release it; watch compliance alerts as they come (poll every 3 s for ids above the
// last seen); and the nodes' health (applied revision, lag, loss counters, certificate).

import { get, post, url, type Alert, type AlertList, type NodeList, type QuarantineList } from "../api";
import { badge, field, fmtMs, h, replace, table } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";
import { workloadList } from "../workloads";

const MAX_ALERTS = 2000;
const ALERT_PAGE = 500;
/** `k=v[,k=v...]` or `cidr:ADDR/LEN`; browsers compile `pattern` with the `v` flag, so `-` and `/` are escaped in classes. */
const ALLOW_FROM_PATTERN = "cidr:[0-9A-Fa-f.:]+\\/[0-9]{1,3}|[A-Za-z0-9._\\/\\-]+=[A-Za-z0-9._\\-]*( *, *[A-Za-z0-9._\\/\\-]+=[A-Za-z0-9._\\-]*)*";

export const respondPage: Page = (root, ctx) => {
  const qHost = h("div");
  const alertsBody = h("tbody");
  const alertsNote = h("p", { class: "muted" });
  const nodesHost = h("div");
  let lastAlert = 0;
  let timer = 0;
  let alive = true;

  root.append(h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Respond")));
  if (ctx.admin) {
    const workload = h("input", { id: "q-workload", type: "text", list: "q-workloads", required: true, placeholder: "ns/name", "data-write": true });
    const reason = h("input", { id: "q-reason", type: "text", placeholder: "why (recorded)", "data-write": true });
    // The API takes pod labels (any namespace) or a CIDR here, never a workload name.
    const allowFrom = h("input", {
      id: "q-allow-from", type: "text", placeholder: "app=mgmt,team=sec or cidr:10.0.0.0/24", pattern: ALLOW_FROM_PATTERN,
      title: "Still allowed in (optional): pod labels k=v[,k=v...] (any namespace) or cidr:ADDR/LEN", "data-write": true,
    });
    const submit = h("button", { id: "q-submit", type: "submit", class: "danger-btn", "data-write": true }, "Quarantine");
    root.append(h("form", { class: "toolbar card", onsubmit: async (e: Event) => {
      e.preventDefault();
      submit.disabled = true;
      const body: Record<string, string> = { workload: workload.value.trim() };
      if (reason.value.trim()) body.reason = reason.value.trim();
      if (allowFrom.value.trim()) body.allow_from = allowFrom.value.trim();
      const ok = await attempt(() => post<unknown>(url("quarantine"), body));
      submit.disabled = false;
      if (ok === undefined) return;
      workload.value = reason.value = allowFrom.value = "";
      await loadQuarantines();
    } }, field("Workload", workload), workloadList("q-workloads"), field("Reason", reason), field("Allow from", allowFrom), submit));
  }
  root.append(
    h("h2", null, "Quarantines in force"), qHost,
    h("h2", null, "Alerts"), alertsNote,
    h("div", { class: "table-wrap tall" }, h("table", { "data-testid": "alerts" },
      h("thead", null, h("tr", null, ["Time", "Severity", "Kind", "Source", "Destination", "Port", "Rule", "Connections", "Message"].map((x) => h("th", { scope: "col" }, x)))),
      alertsBody)),
    h("h2", null, "Nodes"), nodesHost);

  async function loadQuarantines(): Promise<void> {
    const res = await attempt(() => get<QuarantineList>(url("quarantine")));
    if (!res) return;
    replace(qHost, table("quarantines", ["Workload", "Reason", "Allow from", "By", "Since", ""], res.items.map((q) =>
      h("tr", { "data-workload": q.workload },
        h("td", null, q.workload), h("td", null, q.reason), h("td", null, q.allow_from ?? ""), h("td", null, q.by), h("td", { class: "nowrap" }, fmtMs(q.since_ms)),
        h("td", null, ctx.admin ? h("button", { type: "button", class: "release small", "data-write": true, "aria-label": `Release ${q.workload}`,
          onclick: async () => {
            const ok = await attempt(() => post<unknown>(url("release"), { workload: q.workload }));
            if (ok !== undefined) await loadQuarantines();
          } }, "Release") : null)))),
      res.items.length ? null : h("p", { class: "muted" }, "No workload is quarantined."));
  }

  function alertRow(a: Alert): HTMLTableRowElement {
    return h("tr", { "data-id": a.id, "data-severity": a.severity, class: `sev-${a.severity}` },
      h("td", { class: "nowrap" }, fmtMs(a.at_ms)), h("td", null, badge(a.severity)), h("td", null, a.kind),
      h("td", null, a.src), h("td", null, a.dst), h("td", null, `${a.protocol}/${a.port}`),
      h("td", null, a.rule ? h("code", null, a.rule) : ""), h("td", { class: "num" }, a.connections), h("td", null, a.message));
  }

  /** Alerts shown, oldest first (the table shows them newest first). */
  let shown: Alert[] = [];
  let lastNote: AlertList | null = null;

  /**
   * The API answers the OLDEST `limit` alerts above `after`: keep asking forward until a short
   * page comes back (the first load may start far behind), keeping the newest MAX_ALERTS.
   */
  async function pollAlerts(): Promise<void> {
    let fresh: Alert[] = [];
    for (;;) {
      const res = await attempt(() => get<AlertList>(url("alerts", { after: lastAlert || undefined, limit: ALERT_PAGE })));
      if (!alive) return;
      if (!res) break;
      lastNote = res;
      const page = res.alerts.filter((a) => a.id > lastAlert).sort((a, b) => a.id - b.id);
      for (const a of page) lastAlert = Math.max(lastAlert, a.id);
      fresh = fresh.concat(page);
      if (fresh.length > MAX_ALERTS) fresh = fresh.slice(fresh.length - MAX_ALERTS);
      if (res.alerts.length < ALERT_PAGE || !page.length) break;
    }
    if (fresh.length) {
      shown = shown.concat(fresh);
      const drop = Math.max(0, shown.length - MAX_ALERTS);
      if (drop >= shown.length - fresh.length) {
        // Everything old falls out: rebuild from what is kept.
        shown = shown.slice(drop);
        replace(alertsBody, shown.slice().reverse().map(alertRow));
      } else {
        shown = shown.slice(drop);
        alertsBody.prepend(...fresh.slice().reverse().map(alertRow));
        for (let i = 0; i < drop; i++) alertsBody.lastElementChild?.remove();
      }
    }
    const res = lastNote;
    alertsNote.textContent = `${alertsBody.rows.length} alerts (newest first, refreshed every 3 s)` +
      (res?.suppressed ? ` · ${res.suppressed} suppressed as duplicates` : "") + (res?.webhook_dropped ? ` · ${res.webhook_dropped} webhook deliveries dropped` : "");
  }

  function schedule(): void {
    timer = window.setTimeout(async () => { await pollAlerts(); if (alive) schedule(); }, 3000);
  }

  async function loadNodes(): Promise<void> {
    const res = await attempt(() => get<NodeList>(url("nodes")));
    if (!res) return;
    replace(nodesHost, h("p", { class: "muted" }, `Store revision ${res.revision}.`),
      table("nodes", ["Node", "Applied / revision", "Lag", "Pending", "Kernel events lost", "Records dropped", "Batches missed", "Last error", "Last seen", "Certificate"], res.items.map((n) => {
        const stale = n.seconds_since_seen > 60;
        return h("tr", { "data-node": n.name, class: n.last_error || stale ? "problem" : "" },
          h("td", null, n.name, h("div", { class: "muted small" }, `${n.workloads.length} workloads`)),
          h("td", null, `${n.applied_version} / ${res.revision}`),
          h("td", { class: "num" }, n.lag ? badge("warning", String(n.lag)) : "0"),
          h("td", { class: "num" }, n.pending_ms === null || n.pending_ms === undefined ? "" : `${n.pending_ms} ms`),
          h("td", { class: "num" }, n.kernel_events_lost), h("td", { class: "num" }, n.agent_records_dropped), h("td", { class: "num" }, n.flow_batches_missed),
          h("td", null, n.last_error ? h("span", { class: "error-text" }, n.last_error) : ""),
          h("td", null, stale ? badge("warning", `${n.seconds_since_seen}s ago`) : `${n.seconds_since_seen}s ago`),
          h("td", null, n.has_cert ? `expires ${n.cert_expires_ms ? fmtMs(n.cert_expires_ms) : "?"}` : badge("warning", "none")));
      })));
  }

  void loadQuarantines();
  void loadNodes();
  void pollAlerts().then(() => { if (alive) schedule(); });
  return () => { alive = false; window.clearTimeout(timer); };
};
