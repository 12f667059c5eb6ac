// Runs a simulation (POST /v1/simulate, NDJSON) into a host element: live progress, then the
// summary per class, the breakage (would-be-rejected) first, the other rows after, and a JSON
// download of the whole result. Shared by the Simulate page and a draft's "simulate".

import { isAbort, simulate, SIM_CLASSES, type SimClass, type SimRow, type SimulateRequest, type SimulateResult } from "./api";
import { append, badge, h, replace, table } from "./dom";
import { showError } from "./notify";

const CLASS_HELP: Record<SimClass, string> = {
  "would-be-rejected": "allowed today, the candidate denies it (breakage)",
  permitted: "happened, and the candidate allows it",
  escaped: "happened although the policy in force denies it",
  rejected: "denied today and by the candidate",
  "would-be-opened": "denied today, the candidate would allow it",
};

function rowOf(r: SimRow): HTMLTableRowElement {
  const verdict = (v: { allowed: boolean; rule: string | null }) =>
    h("td", null, badge(v.allowed ? "allowed" : "denied"), " ", v.rule ? h("code", null, v.rule) : h("span", { class: "muted" }, "default"));
  return h("tr", { "data-class": r.class },
    h("td", null, badge(r.class)), h("td", null, r.src), h("td", null, r.dst), h("td", null, `${r.protocol}/${r.port}`),
    h("td", { class: "num" }, r.connections), h("td", null, badge(r.observed)), verdict(r.current), verdict(r.candidate));
}

const HEAD = ["Class", "Source", "Destination", "Port", "Connections", "Observed", "Current rule", "Candidate rule"];

/**
 * Runs one simulation into `host`. `signal` belongs to the caller (the page aborts it when left
 * or when a newer run starts): an aborted run ends quietly, without the error banner.
 */
export async function runSimulation(host: HTMLElement, req: SimulateRequest, filename = "simulation.json", signal?: AbortSignal): Promise<SimulateResult | undefined> {
  const bar = h("progress", { max: "1", value: "0" });
  const label = h("span", null, "Starting…");
  // A short status line (the summary and tables that follow are appended outside it).
  replace(host, h("div", { class: "sim-progress", "data-testid": "sim-progress", role: "status" }, bar, label));
  let res: SimulateResult;
  try {
    res = await simulate(req, (done, total) => {
      if (signal?.aborted) return;
      bar.max = Math.max(1, total);
      bar.value = done;
      label.textContent = `${done} / ${total} flows replayed`;
    }, signal);
  } catch (e) {
    if (isAbort(e, signal)) { label.textContent = "Cancelled."; return undefined; }
    showError(e);
    label.textContent = "Failed.";
    return undefined;
  }
  if (signal?.aborted) return undefined;
  label.textContent = `Done: ${res.flows} flows replayed (read ${res.read_ms} ms, replay ${res.replay_ms} ms).`;
  bar.max = 1;
  bar.value = 1;

  const download = h("button", {
    id: "sim-download", type: "button",
    onclick: () => {
      const blob = new Blob([JSON.stringify(res, null, 2)], { type: "application/json" });
      const a = h("a", { href: URL.createObjectURL(blob), download: filename });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    },
  }, "Download JSON");
  const breakage = res.details.filter((r) => r.class === "would-be-rejected");
  const others = res.details.filter((r) => r.class !== "would-be-rejected")
    .sort((a, b) => SIM_CLASSES.indexOf(a.class) - SIM_CLASSES.indexOf(b.class));
  append(host, [
    h("div", { class: "sim-summary", "data-testid": "sim-summary" }, SIM_CLASSES.map((c) => {
      const n = res.summary[c] ?? { flows: 0, connections: 0 };
      return h("div", { class: `stat stat-${c}`, "data-class": c, "data-flows": n.flows, "data-connections": n.connections, title: CLASS_HELP[c] },
        h("div", { class: "stat-label" }, c), h("div", { class: "stat-value" }, String(n.flows)), h("div", { class: "muted" }, `flows (per minute) · ${n.connections} connections`));
    })),
    h("p", null, res.candidate.length ? ["Candidate: ", res.candidate.map((c, i) => [i ? ", " : "", h("code", null, c)])] : "Candidate: no policy.", " ", download),
    h("h3", { class: res.breakage ? "danger" : "" }, `Breakage: ${breakage.length} edge(s) allowed today would be rejected (${res.breakage} flows)`),
    table("sim-breakage", HEAD, breakage.map(rowOf)),
    breakage.length ? null : h("p", { class: "ok" }, "Nothing allowed today would be rejected."),
    h("h3", null, "Other flows"),
    table("sim-rows", HEAD, others.map(rowOf)),
  ]);
  return res;
}
