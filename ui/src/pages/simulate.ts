// Simulate page: replay stored history against candidate policy YAML (pasted or read from a
// file) and optionally a draft's approved rules, to see what would break before applying.

import { get, url, type DraftList } from "../api";
import { field, h, select } from "../dom";
import { attempt } from "../notify";
import type { Page } from "../page";
import { runSimulation } from "../simresult";

export const simulatePage: Page = (root) => {
  const text = h("textarea", { id: "sim-candidate", rows: "14", spellcheck: "false", placeholder: "Paste candidate policy YAML (one or more documents)…" });
  const file = h("input", { id: "sim-file", type: "file", accept: ".yaml,.yml,.json,text/yaml,application/json" });
  const since = select("sim-since", ["1h", "24h", "7d", "30d"], "24h");
  const draft = select("sim-draft", [["", "none"]], "");
  const run = h("button", { id: "sim-run", type: "submit", class: "primary" }, "Run simulation");
  const out = h("div", { class: "sim-out" });
  let fileName = "candidate.yaml";

  file.addEventListener("change", async () => {
    const f = file.files?.[0];
    if (!f) return;
    fileName = f.name;
    text.value = await f.text();
  });

  root.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Simulate")),
    h("form", { class: "sim-form", onsubmit: (e: Event) => { e.preventDefault(); void go(); } },
      field("Candidate policies", text),
      h("div", { class: "toolbar" }, field("Or upload a file", file), field("History window", since), field("Add a draft's approved rules", draft), run)),
    out);

  void attempt(() => get<DraftList>(url("drafts"))).then((res) => {
    for (const d of res?.items ?? []) draft.append(h("option", { value: d.name }, `${d.name} (${d.approved} approved)`));
  });

  /** The run in progress; aborted when the page is left. */
  let running: AbortController | null = null;

  async function go(): Promise<void> {
    running?.abort();
    const ac = new AbortController();
    running = ac;
    run.disabled = true;
    try {
      const docs = text.value.trim() ? [{ file: fileName, text: text.value }] : [];
      await runSimulation(out, { documents: docs, since: since.value, ...(draft.value ? { draft: draft.value } : {}) }, "simulation.json", ac.signal);
    } finally {
      if (running === ac) { running = null; run.disabled = false; }
    }
  }
  return () => { running?.abort(); running = null; };
};
