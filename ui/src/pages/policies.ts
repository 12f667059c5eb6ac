// Policies page: every policy in force by tier (admin, application, baseline) then priority;
// a policy's detail shows it as YAML, its revisions with a diff against the one before, and
// how much each of its rules is used (/v1/rules: hits, unused, broad, shadowed).

import { diffLines } from "diff";
import { stringify } from "yaml";
import { get, url, type ObjectVersion, type PolicyHistory, type PolicyItem, type PolicyList, type RuleList } from "../api";
import { badge, fmtMs, fmtNs, h, replace, table } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";

const TIER_ORDER = ["admin", "application", "baseline"];

function tierRank(t: string): number {
  const i = TIER_ORDER.indexOf(t);
  return i < 0 ? TIER_ORDER.length : i;
}

/** YAML with sorted keys, so revisions (stored with sorted keys) diff line by line. */
function toYaml(v: unknown): string {
  return v === undefined || v === null ? "" : stringify(v, { sortMapEntries: true, lineWidth: 0 });
}

function expiry(p: PolicyItem): string {
  if (p.seconds_left === null || p.seconds_left === undefined) return "";
  if (p.seconds_left <= 0) return "expired";
  const s = p.seconds_left;
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

export const policiesPage: Page = (root, ctx) => {
  const listHost = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const detail = h("section", { class: "policy-detail", "data-testid": "policy-detail", "aria-label": "Selected policy" },
    h("p", { class: "muted" }, "Choose a policy to see its YAML, revisions and rule usage."));
  root.append(h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Policies")), listHost, detail);
  let rows: HTMLTableRowElement[] = [];
  let seq = 0;
  /** /v1/rules covers every policy: asked once per page view, on the first policy opened. */
  let rulesOnce: Promise<RuleList | undefined> | null = null;

  function ruleUsage(): Promise<RuleList | undefined> {
    if (!rulesOnce) {
      const p = attempt(() => get<RuleList>(url("rules", { since: "7d" })));
      rulesOnce = p;
      // A failure is not cached: the next policy opened asks again.
      void p.then((r) => { if (!r && rulesOnce === p) rulesOnce = null; });
    }
    return rulesOnce;
  }

  async function load(): Promise<void> {
    const res = await attempt(() => get<PolicyList>(url("policies")));
    if (!res) { replace(listHost, h("p", { class: "muted" }, "Could not load the policies.")); return; }
    const items = res.items.slice().sort((a, b) => tierRank(a.tier) - tierRank(b.tier) || a.priority - b.priority || a.id.localeCompare(b.id));
    rows = [];
    // Every tbody row is a policy (the tests count them): a tier starts with a ruled row.
    let tier = "";
    const trs: HTMLTableRowElement[] = [];
    for (const p of items) {
      const starts = p.tier !== tier;
      tier = p.tier;
      const tr = h("tr", {
        "data-id": p.id, tabindex: "0", class: starts ? "clickable tier-start" : "clickable",
        onclick: () => void open(p, tr),
        onkeydown: (e: Event) => { const k = (e as KeyboardEvent).key; if (k === "Enter" || k === " ") { e.preventDefault(); void open(p, tr); } },
      },
      h("td", null, p.id), h("td", null, p.kind), h("td", null, badge(p.tier)), h("td", { class: "num" }, p.priority),
      h("td", null, badge(p.mode)), h("td", null, expiry(p)), h("td", { class: "num" }, p.rules), h("td", { class: "num" }, p.version),
      h("td", null, p.changed_by), h("td", { class: "nowrap" }, fmtMs(p.changed_at_ms)));
      rows.push(tr);
      trs.push(tr);
    }
    replace(listHost, items.length ? table("policies", ["Id", "Kind", "Tier", "Priority", "Mode", "Expires in", "Rules", "Version", "Changed by", "Changed at"], trs)
      : [table("policies", ["Id"], []), h("p", { class: "muted" }, "No policy in force.")]);
    const want = ctx.params.get("id");
    const pre = want ? items.find((p) => p.id === want) : undefined;
    if (pre) void open(pre, rows[items.indexOf(pre)]);
  }

  async function open(p: PolicyItem, tr: HTMLTableRowElement): Promise<void> {
    const my = ++seq;
    for (const r of rows) r.classList.remove("selected");
    tr.classList.add("selected");
    const yamlPre = h("pre", { class: "yaml" }, toYaml(p.policy));
    const revHost = h("ol", { "data-testid": "revisions", class: "revisions" });
    const diffHost = h("pre", { class: "diff" }, "Loading revisions…");
    const diffTitle = h("h4", null, "Diff");
    const hitsHost = h("div", null, h("p", { class: "muted" }, "Loading rule usage…"));
    replace(detail,
      h("h2", null, p.id),
      h("p", null, badge(p.mode), " ", `${p.tier} tier, priority ${p.priority}, version ${p.version}, by ${p.changed_by} at ${fmtMs(p.changed_at_ms)}`),
      h("div", { class: "policy-cols" },
        h("div", null, h("h3", null, "Policy"), h("p", { class: "muted" }, "As Cellwall stores it: the normalized model every kind is read into (what cellwall get policies -o yaml shows)."), yamlPre),
        h("div", null, h("h3", null, "Revisions"), revHost, diffTitle, diffHost)),
      h("h3", null, "Rule usage (7 days)"), hitsHost);

    const [hist, rules] = await Promise.all([
      attempt(() => get<PolicyHistory>(url("policies/history", { id: p.id }))),
      ruleUsage(),
    ]);
    if (my !== seq) return;
    if (hist) {
      // Newest first in the list; the diff compares a version with the one before it.
      const versions = hist.versions.slice().sort((a, b) => b.version - a.version);
      const buttons: HTMLButtonElement[] = [];
      const showDiff = (i: number) => {
        buttons.forEach((b, j) => b.setAttribute("aria-pressed", String(i === j)));
        const cur = versions[i], prev = versions[i + 1];
        diffTitle.textContent = prev ? `Diff: version ${prev.version} → ${cur.version}` : `Diff: version ${cur.version} (first version)`;
        renderDiff(diffHost, prev ? body(prev) : "", body(cur));
      };
      replace(revHost, versions.map((v, i) => {
        const b = h("button", { type: "button", class: "link", onclick: () => showDiff(i) }, `version ${v.version}`);
        buttons.push(b);
        return h("li", { "data-version": v.version }, b, ` revision ${v.revision} by ${v.actor} at ${fmtMs(v.at_ms)}`, v.deleted ? " (deleted)" : "");
      }));
      if (versions.length) showDiff(0);
      else replace(diffHost, "No stored revision.");
    } else replace(diffHost, "Could not load the revisions.");
    if (rules) {
      const mine = rules.items.filter((r) => r.policy === p.id).sort((a, b) => a.direction.localeCompare(b.direction) || a.index - b.index);
      replace(hitsHost, table("rule-hits", ["Rule", "Action", "Connections", "Flows", "Last hit", "Peers", "Flags"], mine.map((r) =>
        h("tr", { "data-rule": r.rule, class: r.unused ? "unused" : "" },
          h("td", null, h("code", null, r.rule)), h("td", null, r.action), h("td", { class: "num" }, r.connections), h("td", { class: "num" }, r.flows),
          h("td", { class: "nowrap" }, fmtNs(r.last_ns)), h("td", null, r.peers.join(", ")),
          h("td", null,
            r.unused ? badge("unused") : null,
            r.broad ? h("span", { title: r.broad }, badge("broad"), h("div", { class: "muted small" }, r.broad)) : null,
            r.shadowed ? h("span", { title: r.shadowed }, badge("shadowed"), h("div", { class: "muted small" }, r.shadowed)) : null)))),
        mine.length ? null : h("p", { class: "muted" }, `No rule of this policy in the usage report (${rules.history_rows} flows in ${rules.since}).`));
    } else replace(hitsHost, h("p", { class: "muted" }, "Could not load the rule usage."));
  }

  function body(v: ObjectVersion): string {
    return v.deleted ? "" : toYaml(v.body);
  }

  function renderDiff(host: HTMLElement, before: string, after: string): void {
    const out: HTMLElement[] = [];
    for (const part of diffLines(before, after)) {
      const cls = part.added ? "add" : part.removed ? "del" : "ctx";
      const sign = part.added ? "+" : part.removed ? "-" : " ";
      const lines = part.value.replace(/\n$/, "").split("\n");
      for (const l of lines) out.push(h("span", { class: `line ${cls}` }, `${sign} ${l}\n`));
    }
    replace(host, out.length ? out : "No change.");
  }

  void load();
  return () => { seq++; };
};
