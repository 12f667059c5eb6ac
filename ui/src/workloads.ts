// The workload names (`namespace/name`) for the <datalist>s of the Explain, Flows and Respond
// forms; fetched once per page view, failures reported like any other.

import { get, url, type WorkloadList } from "./api";
import { datalist, replace } from "./dom";
import { attempt } from "./notify";

/** A <datalist id=ID> that fills itself with the workloads once they arrive. */
export function workloadList(id: string): HTMLDataListElement {
  const dl = datalist(id, []);
  void attempt(() => get<WorkloadList>(url("workloads"))).then((res) => {
    if (!res) return;
    const names = res.items.map((w) => `${w.namespace}/${w.name}`).sort();
    replace(dl, ...datalist(id, names).childNodes);
  });
  return dl;
}
