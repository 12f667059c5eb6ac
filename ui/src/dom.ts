// Element building without HTML parsing: everything the console shows comes from agents, imports
// and users, so text only ever lands in the DOM through textContent / attribute setters.

export type Child = Node | string | number | null | undefined | false | Child[];
export type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** Attributes that load or navigate to a URL: only same-origin paths, fragments and blobs. */
const URL_ATTRS = new Set(["href", "src", "action", "formaction", "srcdoc", "xlink:href", "poster", "data", "ping", "background"]);

function safeUrl(v: string): boolean {
  return v.startsWith("#") || (v.startsWith("/") && !v.startsWith("//")) || v.startsWith("blob:");
}

/**
 * Builds an element. Attribute rules: `on<event>` functions become listeners; `true` sets a
 * boolean attribute, `false`/null/undefined leave it out; `value` / `checked` are set as
 * properties (so form state follows). Children are text or nodes, nested arrays flattened.
 * Throws on an `on…` attribute that is not a function (it would be inline script) and on a URL
 * attribute that is not local (`#…`, `/…` or `blob:…`).
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      const key = k.toLowerCase();
      if (key.startsWith("on") && typeof v !== "function") {
        throw new TypeError(`h(${tag}): attribute ${k} must be a function, not ${typeof v}`);
      }
      if (URL_ATTRS.has(key) && typeof v !== "function" && !safeUrl(String(v))) {
        throw new TypeError(`h(${tag}): ${k} must start with "#", "/" or "blob:"`);
      }
      if (typeof v === "function") {
        el.addEventListener(k.slice(2).toLowerCase(), v);
      } else if (k === "value") {
        (el as HTMLInputElement).value = String(v);
      } else if (k === "checked") {
        (el as HTMLInputElement).checked = Boolean(v);
      } else if (v === true) {
        el.setAttribute(k, "");
      } else {
        el.setAttribute(k, String(v));
      }
    }
  }
  append(el, children);
  return el;
}

/** Appends text/nodes (nested arrays flattened, falsy skipped); text goes in as Text nodes. */
export function append(parent: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(parent, c);
    else if (c instanceof Node) parent.appendChild(c);
    else parent.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, children);
}

/** A <table> with a sticky header row; `testid` goes on the wrapper table. */
export function table(testid: string | null, headers: string[], rows: HTMLTableRowElement[]): HTMLElement {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { "data-testid": testid },
      h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", null, rows),
    ),
  );
}

/** A coloured pill for a verdict / mode / severity / status (class `badge badge-VALUE`). */
export function badge(value: string, text?: string): HTMLElement {
  return h("span", { class: `badge badge-${value.replace(/[^a-z0-9-]/gi, "")}` }, text ?? value);
}

/** A <select> with the given options (value, or [value, label]). */
export function select(id: string, options: (string | [string, string])[], value?: string, extra?: Attrs): HTMLSelectElement {
  return h(
    "select",
    { id, ...extra },
    options.map((o) => {
      const [v, label] = typeof o === "string" ? [o, o] : o;
      return h("option", { value: v, selected: v === value }, label);
    }),
  );
}

/** A labelled form field. */
export function field(label: string, control: HTMLElement): HTMLElement {
  return h("label", { class: "field" }, h("span", null, label), control);
}

/** Formats a millisecond Unix time for tables (local time, seconds precision). */
export function fmtMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Nanosecond times arrive as JSON numbers above 2^53: precision is lost below the microsecond, fine for display. */
export function fmtNs(ns: number | null | undefined): string {
  return ns === null || ns === undefined ? "" : fmtMs(ns / 1e6);
}

/** A <datalist> of suggestions. */
export function datalist(id: string, values: string[]): HTMLDataListElement {
  return h("datalist", { id }, values.map((v) => h("option", { value: v })));
}
