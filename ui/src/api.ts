// The REST API: JSON types (mirroring crates/api and crates/policy serde types; `?` where the
// Rust side has Option / skip_serializing_if) and one fetch wrapper that turns every non-2xx
// answer into an ApiError carrying the API's own message.

export type Verdict = "allowed" | "denied" | "audit" | "revoked";
export type Role = "admin" | "read";

export interface Whoami { name: string; role: Role }

export interface ErrorDetail { status: number; reason: string; message: string }

export interface MapNode {
  id: string;
  kind: "workload" | "external";
  namespace?: string | null;
  members: string[];
  evidence?: string | null;
  split?: string | null;
}
export interface MapEdge {
  src: string;
  dst: string;
  protocol: string;
  port: number;
  allowed: number;
  denied: number;
  audit: number;
  first_ns: number;
  last_ns: number;
  rules: string[];
}
export interface DependencyMap { nodes: MapNode[]; edges: MapEdge[] }
export interface MapResponse { map: DependencyMap }

export interface FlowRecord {
  id: number;
  time_unix_ns: number;
  node: string;
  src: string;
  dst: string;
  src_ip: string;
  dst_ip: string;
  protocol: string;
  port: number;
  verdict: Verdict;
  direction: "ingress" | "egress";
  rule: string | null;
  count: number;
  dst_names?: string[];
}
export interface FlowLoss { kernel_events_lost: number; agent_records_dropped: number; batches_missed: number }
export interface FlowList { flows: FlowRecord[]; loss: Record<string, FlowLoss> }

export interface PolicyItem {
  id: string;
  kind: string;
  namespace?: string | null;
  name: string;
  tier: string;
  priority: number;
  mode: string;
  expires_at?: number | null;
  rules: number;
  version: number;
  changed_by: string;
  changed_at_ms: number;
  seconds_left?: number | null;
  policy: unknown;
}
export interface PolicyList { items: PolicyItem[] }

export interface ObjectVersion {
  kind: string;
  key: string;
  version: number;
  revision: number;
  deleted: boolean;
  actor: string;
  at_ms: number;
  body?: unknown;
}
export interface PolicyHistory { versions: ObjectVersion[] }

export interface RuleStats {
  rule: string;
  policy: string;
  direction: string;
  index: number;
  name?: string | null;
  action: string;
  connections: number;
  flows: number;
  by_day: Record<string, number>;
  last_ns?: number | null;
  peers: string[];
  unused: boolean;
  broad?: string | null;
  shadowed?: string | null;
}
export interface RuleList { items: RuleStats[]; since: string; history_rows: number }

export interface TierVerdict { allowed: boolean; rule: number; tier: string | null; reason: string }
export interface ExplainRule { rule: number; description: string; action: string; matched: boolean }
export interface ExplainPolicy { policy: string; mode: string; rules: ExplainRule[] }
export interface ExplainTier { tier: string; policies: ExplainPolicy[]; outcome: string }
export interface DirectionWalk {
  direction: string;
  endpoint: string;
  tiers: ExplainTier[];
  verdict: TierVerdict;
  rule: string | null;
}
export interface Explanation {
  src: string;
  dst: string;
  protocol: string;
  port: number;
  decision: { allowed: boolean; egress: TierVerdict; ingress: TierVerdict; audit?: unknown };
  deciding_rule?: string | null;
  egress: DirectionWalk;
  ingress: DirectionWalk;
  audit?: unknown;
}
export interface ExplainResponse { explanation: Explanation; text: string }

export interface NodeItem {
  name: string;
  joined_ms: number;
  applied_version: number;
  applied_unix_micros: number;
  apply_micros: number;
  last_error: string;
  last_seen_ms: number;
  kernel_events_lost: number;
  agent_records_dropped: number;
  flow_batches_missed: number;
  lag: number;
  pending_ms?: number | null;
  seconds_since_seen: number;
  workloads: { key: string; ips: string[]; interface: string; labels: Record<string, string>; host: boolean }[];
  refused: { reports: number; flows: number; last: string };
  has_cert: boolean;
  cert_expires_ms?: number | null;
}
export interface NodeList { revision: number; items: NodeItem[] }

export interface Alert {
  id: number;
  at_ms: number;
  kind: string;
  severity: "info" | "warning" | "critical";
  src: string;
  dst: string;
  protocol: string;
  port: number;
  rule?: string | null;
  message: string;
  connections: number;
  first_ns: number;
  last_ns: number;
}
export interface AlertList { alerts: Alert[]; suppressed: number; webhook_dropped: number }

export interface QuarantineItem { workload: string; reason: string; allow_from?: string | null; by: string; since_ms: number }
export interface QuarantineList { items: QuarantineItem[] }

export interface Workload {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  ips: string[];
  ports: { name?: string | null; port: number; protocol: string }[];
  node?: string | null;
  host_network: boolean;
}
export interface WorkloadList { revision: number; items: Workload[] }

export type ProposedPeer =
  | { pods: { namespace: string; labels: Record<string, string> } }
  | { cidr: { cidr: string } }
  | { domain: { name: string } };
export interface Evidence { connections: number; first_ns: number; last_ns: number; coverage: number; review: boolean }
export interface ProposedRule { peer: ProposedPeer; protocol: string; port: number | null; evidence: Evidence; [k: string]: unknown }
export interface DraftRule {
  id: string;
  policy: string;
  direction: string;
  rule: ProposedRule;
  status: "pending" | "approved" | "rejected";
  decided_by?: string | null;
  decided_at_ms?: number | null;
  comment?: string | null;
}
export interface Draft {
  name: string;
  created_by: string;
  created_at_ms: number;
  since: string;
  group_by: string;
  proposal: unknown;
  rules: DraftRule[];
  applied?: { by: string; at_ms: number; revision: number; policies: string[] } | null;
}
export interface DraftSummary {
  name: string;
  created_by: string;
  created_at_ms: number;
  rules: number;
  approved: number;
  rejected: number;
  pending: number;
  applied_at_ms?: number | null;
}
export interface DraftList { items: DraftSummary[] }
export interface Committed { revision: number; changes: unknown[] }
export interface DraftApplyResult { committed: Committed; policies: string[]; left_out: string[] }

export type SimClass = "permitted" | "would-be-rejected" | "escaped" | "rejected" | "would-be-opened";
export const SIM_CLASSES: SimClass[] = ["would-be-rejected", "permitted", "escaped", "rejected", "would-be-opened"];
export interface SimVerdict { allowed: boolean; rule: string | null }
export interface SimRow {
  class: SimClass;
  src: string;
  dst: string;
  protocol: string;
  port: number;
  connections: number;
  observed: string;
  current: SimVerdict;
  candidate: SimVerdict;
}
export interface SimulateResult {
  candidate: string[];
  flows: number;
  breakage: number;
  summary: Partial<Record<SimClass, { flows: number; connections: number }>>;
  details: SimRow[];
  read_ms: number;
  replay_ms: number;
}
export interface SimulateRequest { documents: { file: string; text: string }[]; draft?: string; since?: string }

/** An answer other than 2xx, with the API's message (or the transport's). */
export class ApiError extends Error {
  constructor(public status: number, public reason: string, message: string) {
    super(message);
  }
}

const TOKEN_KEY = "cellwall.token";
export const session = {
  token(): string | null { return sessionStorage.getItem(TOKEN_KEY); },
  set(token: string): void { sessionStorage.setItem(TOKEN_KEY, token); },
  clear(): void { sessionStorage.removeItem(TOKEN_KEY); },
};

/** The event `raw` sends when the API no longer accepts the session's token. */
export const UNAUTHORIZED = "cellwall:unauthorized";

/** Builds `/v1/PATH?query`, leaving out empty parameters. */
export function url(path: string, query?: Record<string, string | number | undefined | null>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const s = q.toString();
  return `/v1/${path}${s ? "?" + s : ""}`;
}

/** Turns a failed response into an ApiError with the API's `{"error":{message}}` when it has one. */
async function failure(res: Response): Promise<ApiError> {
  let text = "";
  try { text = await res.text(); } catch { /* the body is gone; the status still says something */ }
  try {
    const e = (JSON.parse(text) as { error?: ErrorDetail }).error;
    if (e && typeof e.message === "string") return new ApiError(res.status, e.reason ?? "", e.message);
  } catch { /* not JSON: fall through to the raw text */ }
  return new ApiError(res.status, res.statusText, text.trim() || `HTTP ${res.status} ${res.statusText}`);
}

/** Sends a request with the session's bearer token (or an explicit one, for login). */
export async function raw(path: string, init: RequestInit = {}, token = session.token()): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (init.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  let res: Response;
  try {
    res = await fetch(path, { ...init, headers, cache: "no-store" });
  } catch (e) {
    // Cancelled by the caller (init.signal): not a network failure, pass the AbortError on.
    if (init.signal?.aborted) throw e;
    throw new ApiError(0, "network", `cannot reach the manager: ${(e as Error).message}`);
  }
  if (!res.ok) {
    const e = await failure(res);
    // A token revoked or expired mid-session: back to the login page, saying why.
    if (res.status === 401 && token && token === session.token()) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED, { detail: e.message }));
    }
    throw e;
  }
  return res;
}

export async function get<T>(path: string, token?: string): Promise<T> {
  const res = await raw(path, {}, token ?? session.token());
  return (await res.json()) as T;
}

export async function post<T>(path: string, body: unknown): Promise<T> {
  const res = await raw(path, { method: "POST", body: JSON.stringify(body) });
  const text = await res.text();
  return (text ? JSON.parse(text) : {}) as T;
}

/**
 * POST /v1/simulate answers NDJSON: progress lines while history is replayed, then a result or
 * an error line. Read the stream as it arrives so the progress is live.
 */
export async function simulate(req: SimulateRequest, onProgress: (done: number, total: number) => void, signal?: AbortSignal): Promise<SimulateResult> {
  const res = await raw(url("simulate"), { method: "POST", body: JSON.stringify(req), signal });
  if (!res.body) throw new ApiError(0, "stream", "the browser gave no response stream");
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let result: SimulateResult | null = null;
  const line = (l: string) => {
    if (!l.trim()) return;
    const m = JSON.parse(l) as { progress?: { done: number; total: number }; result?: SimulateResult; error?: ErrorDetail };
    if (m.progress) onProgress(m.progress.done, m.progress.total);
    else if (m.result) result = m.result;
    else if (m.error) throw new ApiError(m.error.status, m.error.reason, m.error.message);
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (value) buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        line(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (done) break;
    }
    line(buf);
  } catch (e) {
    // An error line, a broken stream or an abort: stop reading (the server may stop sending).
    reader.cancel().catch(() => undefined);
    throw e;
  }
  if (!result) throw new ApiError(0, "stream", "the simulation ended without a result");
  return result;
}

/** True for the error a fetch / stream read throws once its AbortSignal fired. */
export function isAbort(e: unknown, signal?: AbortSignal): boolean {
  return (signal?.aborted ?? false) || (e instanceof DOMException && e.name === "AbortError");
}
