// Explain page: why a connection is (or would be) allowed or denied, as the policy in force
// decides it. The verdict big, the server's text verbatim, then the walk tier by tier for each
// side (egress at the source, ingress at the destination).

import { get, url, type DirectionWalk, type ExplainResponse, type TierVerdict } from "../api";
import { badge, field, h, replace } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";
import { workloadList } from "../workloads";

export const explainPage: Page = (root, ctx) => {
  const p = ctx.params;
  const from = h("input", { id: "explain-from", type: "text", list: "explain-workloads", required: true, placeholder: "ns/pod", value: p.get("from") ?? "" });
  const to = h("input", { id: "explain-to", type: "text", list: "explain-workloads", required: true, placeholder: "ns/pod or IP", value: p.get("to") ?? "" });
  const probe = h("input", { id: "explain-probe", type: "text", required: true, placeholder: "TCP/5432", value: p.get("probe") ?? "TCP/80" });
  const run = h("button", { id: "explain-run", type: "submit", class: "primary" }, "Explain");
  const out = h("div");

  root.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Explain")),
    h("form", { class: "toolbar", onsubmit: (e: Event) => { e.preventDefault(); void go(); } },
      field("From", from), field("To", to), field("Probe", probe), workloadList("explain-workloads"), run),
    out);

  let alive = true;
  let seq = 0;

  async function go(): Promise<void> {
    const my = ++seq;
    // The values sent are the ones the address and the result refer to, whatever is typed meanwhile.
    const q = { from: from.value.trim(), to: to.value.trim(), probe: probe.value.trim() };
    run.disabled = true;
    const res = await attempt(() => get<ExplainResponse>(url("explain", q)));
    if (!alive || my !== seq) return;
    run.disabled = false;
    if (!res) return;
    // Keep the query in the address so the result can be shared / reloaded.
    history.replaceState(null, "", `#/explain?${new URLSearchParams(q).toString()}`);
    const x = res.explanation;
    const verdict = x.decision.allowed ? "allowed" : "denied";
    replace(out, h("section", { class: `explain-result verdict-${verdict}`, "data-testid": "explain-result", "data-verdict": verdict },
      h("div", { class: "verdict-line" }, h("span", { class: `big-verdict ${verdict}` }, verdict.toUpperCase()),
        h("span", null, `${x.src} → ${x.dst} ${x.protocol}/${x.port}`)),
      h("p", null, "Decided by ", x.deciding_rule ? h("code", null, x.deciding_rule) : h("span", { class: "muted" }, "no rule (default allow)")),
      h("div", { class: "walks" }, walk("Egress at the source", x.egress, x.decision.egress), walk("Ingress at the destination", x.ingress, x.decision.ingress)),
      h("details", { open: true }, h("summary", null, "As text"), h("pre", { class: "explain-text" }, res.text))));
  }

  function walk(title: string, w: DirectionWalk, v: TierVerdict): HTMLElement {
    const verdict = v.allowed ? "allowed" : "denied";
    return h("div", { class: "walk card" },
      h("h3", null, title, " ", badge(verdict)),
      h("p", { class: "muted" }, w.endpoint, " · ", w.verdict.reason, w.verdict.tier ? ` in the ${w.verdict.tier} tier` : ""),
      w.rule ? h("p", null, h("code", null, w.rule)) : null,
      h("ol", { class: "tiers" }, w.tiers.map((t) => h("li", null,
        h("strong", null, t.tier), ": ", t.outcome,
        t.policies.length ? h("ul", null, t.policies.map((pol) => h("li", null,
          h("code", null, pol.policy), " ", badge(pol.mode),
          h("ul", null, pol.rules.map((r) => h("li", { class: r.matched ? "matched" : "unmatched" },
            `${r.action} `, h("code", null, r.description), r.matched ? " — matches" : " — no match")))))) : null))));
  }

  if (from.value && to.value && probe.value && p.get("run")) void go();
  return () => { alive = false; };
};
