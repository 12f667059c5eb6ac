// Proposals page: learn least-privilege policies from history into a named draft, review its
// rules one by one with their evidence (approve / reject, with a comment), simulate the
// approved rules against history, and apply them.

import { stringify } from "yaml";
import { get, post, url, type Draft, type DraftApplyResult, type DraftList, type DraftRule, type ProposedPeer } from "../api";
import { badge, field, fmtMs, fmtNs, h, replace, select, table } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";
import { runSimulation } from "../simresult";

function peerText(p: ProposedPeer): string {
  if ("pods" in p) {
    const labels = Object.entries(p.pods.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(",");
    return `${p.pods.namespace}/${labels ? "{" + labels + "}" : "*"}`;
  }
  if ("cidr" in p) return p.cidr.cidr;
  if ("domain" in p) return p.domain.name;
  return JSON.stringify(p);
}

export const proposalsPage: Page = (root, ctx) => {
  const listHost = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const detail = h("section", { class: "draft-detail", "aria-label": "Draft" });
  let current: string | null = ctx.params.get("draft");
  let listRows: HTMLTableRowElement[] = [];
  /** The review comment outlives re-renders of the draft (after each decision). */
  let commentText = "";
  /** Bumped by every open / review: only the newest answer renders the detail. */
  let seq = 0;
  let listSeq = 0;
  let alive = true;
  /** The draft's review buttons with their own disabled state, disabled together while a review is in flight. */
  let reviewButtons: [HTMLButtonElement, boolean][] = [];
  /** The draft simulation in progress (aborted on re-render and when the page is left). */
  let sim: AbortController | null = null;

  const head = h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Proposals"));
  root.append(head);
  if (ctx.admin) {
    const name = h("input", { id: "prop-name", type: "text", required: true, pattern: "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?", placeholder: "e.g. shop-q3", "data-write": true });
    const since = select("prop-since", ["1h", "24h", "7d", "30d"], "24h", { "data-write": true });
    const groupBy = select("prop-group-by", ["auto", "app", "owner", "workload", "namespace"], "auto", { "data-write": true });
    const repl = h("input", { id: "prop-replace", type: "checkbox", "data-write": true });
    const save = h("button", { id: "prop-save", type: "submit", class: "primary", "data-write": true }, "Generate draft");
    root.append(h("form", { class: "toolbar card", onsubmit: async (e: Event) => {
      e.preventDefault();
      save.disabled = true;
      const d = await attempt(() => post<Draft>(url("drafts"), { name: name.value.trim(), since: since.value, group_by: groupBy.value, replace: repl.checked }));
      save.disabled = false;
      if (!d) return;
      current = d.name ?? name.value.trim();
      await loadList();
      await open(current);
    } }, field("Draft name", name), field("From history of", since), field("Group by", groupBy), h("label", { class: "check" }, repl, " Replace an existing draft"), save));
  }
  root.append(h("h2", null, "Drafts"), listHost, detail);

  async function loadList(): Promise<void> {
    const my = ++listSeq;
    const res = await attempt(() => get<DraftList>(url("drafts")));
    if (!res || !alive || my !== listSeq) return;
    listRows = res.items.map((d) => {
      const tr = h("tr", {
        "data-name": d.name, tabindex: "0", class: d.name === current ? "clickable selected" : "clickable",
        onclick: () => void open(d.name),
        onkeydown: (e: Event) => { const k = (e as KeyboardEvent).key; if (k === "Enter" || k === " ") { e.preventDefault(); void open(d.name); } },
      },
      h("td", null, d.name), h("td", null, d.created_by), h("td", { class: "nowrap" }, fmtMs(d.created_at_ms)),
      h("td", { class: "num" }, d.rules), h("td", { class: "num" }, d.approved), h("td", { class: "num" }, d.rejected), h("td", { class: "num" }, d.pending),
      h("td", null, d.applied_at_ms ? fmtMs(d.applied_at_ms) : ""));
      return tr;
    });
    replace(listHost, table("drafts", ["Name", "Created by", "Created", "Rules", "Approved", "Rejected", "Pending", "Applied"], listRows),
      res.items.length ? null : h("p", { class: "muted" }, "No draft yet."));
  }

  async function open(name: string): Promise<void> {
    current = name;
    const my = ++seq;
    for (const r of listRows) r.classList.toggle("selected", r.dataset.name === name);
    const d = await attempt(() => get<Draft>(url("drafts/show", { name })));
    if (!d || !alive || my !== seq || current !== name) return;
    render(d);
  }

  function setReviewing(buttons: [HTMLButtonElement, boolean][], on: boolean): void {
    for (const [b, off] of buttons) b.disabled = on || off;
  }

  async function review(d: Draft, decision: "approve" | "reject", rules: string[], comment: string): Promise<void> {
    const my = ++seq;
    const buttons = reviewButtons;
    setReviewing(buttons, true);
    // The API answers the updated draft: render it as is, no second request.
    const updated = await attempt(() => post<Draft>(url("drafts/review"), { name: d.name, decision, rules, ...(comment ? { comment } : {}) }));
    if (!alive) return;
    if (buttons === reviewButtons) setReviewing(buttons, false);
    if (!updated || my !== seq || current !== d.name) return;
    render(updated);
    void loadList();
  }

  function render(d: Draft): void {
    sim?.abort();
    sim = null;
    reviewButtons = [];
    const comment = ctx.admin ? h("textarea", { id: "review-comment", rows: "2", placeholder: "Comment recorded with the decisions (optional)", "data-write": true,
      value: commentText, oninput: (e: Event) => { commentText = (e.target as HTMLTextAreaElement).value; } }) : null;
    const simHost = h("div", { class: "sim-out" });
    const resultHost = h("div");
    const counts = { pending: 0, approved: 0, rejected: 0 };
    for (const r of d.rules) counts[r.status]++;
    if (d.applied) {
      replace(resultHost, h("div", { class: "card", "data-testid": "draft-result" },
        h("p", null, `Applied by ${d.applied.by} at ${fmtMs(d.applied.at_ms)} (revision ${d.applied.revision}). Policies written:`),
        h("ul", null, d.applied.policies.map((p) => h("li", null, h("code", null, p))))));
    }
    const rowsEls = d.rules.map((r) => ruleRow(d, r, comment));
    const actions = h("div", { class: "toolbar" },
      ctx.admin ? reviewButton(h("button", { id: "approve-pending", type: "button", "data-write": true, disabled: counts.pending === 0,
        onclick: () => void review(d, "approve", ["pending"], comment?.value.trim() ?? "") }, `Approve all pending (${counts.pending})`), counts.pending === 0) : null,
      h("button", { id: "draft-simulate", type: "button", onclick: async (e: Event) => {
        const b = e.currentTarget as HTMLButtonElement;
        sim?.abort();
        const ac = new AbortController();
        sim = ac;
        b.disabled = true;
        await runSimulation(simHost, { documents: [], draft: d.name, since: d.since }, `simulation-${d.name}.json`, ac.signal);
        if (sim === ac) sim = null;
        b.disabled = false;
      } }, "Simulate approved rules"),
      ctx.admin ? h("button", { id: "draft-apply", type: "button", class: "primary", "data-write": true, onclick: async (e: Event) => {
        const b = e.currentTarget as HTMLButtonElement;
        b.disabled = true;
        const res = await attempt(() => post<DraftApplyResult>(url("drafts/apply"), { name: d.name }));
        b.disabled = false;
        if (!res) return;
        replace(resultHost, h("div", { class: "card", "data-testid": "draft-result" },
          h("p", null, `Applied at revision ${res.committed.revision}. Policies written (${res.policies.length}):`),
          h("ul", { class: "written" }, res.policies.map((p) => h("li", null, h("code", null, p)))),
          h("p", null, `Left out, no rule approved (${res.left_out.length}):`),
          h("ul", { class: "left-out" }, res.left_out.map((p) => h("li", null, h("code", null, p))))));
        void loadList();
      } }, "Apply approved rules") : null);

    replace(detail,
      h("h2", null, `Draft ${d.name}`),
      h("p", { class: "muted" }, `Learned from ${d.since} of history (group by ${d.group_by}) by ${d.created_by} at ${fmtMs(d.created_at_ms)} · `,
        `${counts.approved} approved, ${counts.rejected} rejected, ${counts.pending} pending`),
      comment ? field("Review comment", comment) : null,
      actions,
      resultHost,
      table("draft-rules", ["Id", "Policy", "Direction", "Peer", "Port", "Evidence", "Status", ""], rowsEls),
      h("details", null, h("summary", null, "Proposal YAML"), h("pre", { class: "yaml" }, stringify(d.proposal, { lineWidth: 0 }))),
      h("h3", null, "Simulation"),
      simHost);
  }

  function reviewButton(b: HTMLButtonElement, off: boolean): HTMLButtonElement {
    reviewButtons.push([b, off]);
    return b;
  }

  function ruleRow(d: Draft, r: DraftRule, comment: HTMLTextAreaElement | null): HTMLTableRowElement {
    const ev = r.rule.evidence;
    return h("tr", { "data-rule": r.id, "data-status": r.status },
      h("td", { class: "nowrap" }, h("code", null, r.id)), h("td", null, r.policy), h("td", null, r.direction),
      h("td", null, peerText(r.rule.peer)),
      h("td", { class: "nowrap" }, r.rule.port === null || r.rule.port === undefined ? r.rule.protocol : `${r.rule.protocol}/${r.rule.port}`),
      h("td", null, `${ev.connections} conn. · ${Math.round(ev.coverage * 100)}% of its traffic`, ev.review ? [" ", badge("review", "few: check")] : null,
        h("div", { class: "muted small" }, `${fmtNs(ev.first_ns)} – ${fmtNs(ev.last_ns)}`)),
      h("td", null, badge(r.status), r.decided_by ? h("div", { class: "small" }, `by ${r.decided_by}${r.decided_at_ms ? " at " + fmtMs(r.decided_at_ms) : ""}`) : null,
        r.comment ? h("div", { class: "muted small" }, `“${r.comment}”`) : null),
      h("td", { class: "nowrap" }, ctx.admin ? [
        reviewButton(h("button", { type: "button", class: "approve small", "data-write": true, disabled: r.status === "approved", "aria-label": `Approve ${r.id}`,
          onclick: () => void review(d, "approve", [r.id], comment?.value.trim() ?? "") }, "Approve"), r.status === "approved"),
        " ",
        reviewButton(h("button", { type: "button", class: "reject small", "data-write": true, disabled: r.status === "rejected", "aria-label": `Reject ${r.id}`,
          onclick: () => void review(d, "reject", [r.id], comment?.value.trim() ?? "") }, "Reject"), r.status === "rejected"),
      ] : null));
  }

  void loadList().then(() => { if (current) void open(current); });
  return () => { alive = false; seq++; current = null; sim?.abort(); sim = null; };
};
