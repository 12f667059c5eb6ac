// The shell: login, header (whoami, logout, navigation), the error banner, and hash routing
// (`#/PAGE?query`) to one page module at a time.

import { ApiError, get, session, UNAUTHORIZED, url, type Whoami } from "./api";
import { h, replace } from "./dom";
import { clearError, setErrorHost } from "./notify";
import type { Page } from "./page";
import { mapPage } from "./pages/map";
import { flowsPage } from "./pages/flows";
import { explainPage } from "./pages/explain";
import { policiesPage } from "./pages/policies";
import { simulatePage } from "./pages/simulate";
import { proposalsPage } from "./pages/proposals";
import { respondPage } from "./pages/respond";

const PAGES: [string, string, Page][] = [
  ["map", "Map", mapPage],
  ["flows", "Flows", flowsPage],
  ["policies", "Policies", policiesPage],
  ["explain", "Explain", explainPage],
  ["simulate", "Simulate", simulatePage],
  ["proposals", "Proposals", proposalsPage],
  ["respond", "Respond", respondPage],
];

const app = document.getElementById("app") ?? document.body.appendChild(h("div", { id: "app" }));
let me: Whoami | null = null;
let cleanup: (() => void) | void;

function login(message?: string): void {
  if (cleanup) cleanup();
  cleanup = undefined;
  me = null;
  setErrorHost(null);
  const token = h("input", { id: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "login-help" });
  const err = h("p", { class: "login-error", "data-testid": "login-error", role: "alert" }, message ?? "");
  if (!message) err.hidden = true;
  const button = h("button", { id: "login", type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "login", onsubmit: (ev: Event) => { ev.preventDefault(); void submit(); } },
    h("h1", null, "Cellwall"),
    h("label", { for: "token" }, "API token"),
    token,
    h("p", { id: "login-help", class: "muted" }, "An admin or read token (cellwall tokens create). It is kept in this tab only."),
    button,
    err,
  );
  async function submit(): Promise<void> {
    const t = token.value.trim();
    if (!t) return;
    button.disabled = true;
    try {
      const who = await get<Whoami>(url("whoami"), t);
      session.set(t);
      me = who;
      shell(true);
    } catch (e) {
      err.hidden = false;
      err.textContent = e instanceof ApiError ? e.message : String(e);
    } finally {
      button.disabled = false;
    }
  }
  replace(app, h("main", { class: "login-page" }, form));
  token.focus();
}

let content: HTMLElement;

/** Builds the header and the content area; `focusPage` moves focus to the page (after login). */
function shell(focusPage = false): void {
  if (!me) return;
  const nav = h(
    "nav",
    { "aria-label": "Pages" },
    PAGES.map(([id, label]) => h("a", { href: `#/${id}`, "data-page": id }, label)),
  );
  const errors = h("div", { class: "errors", "aria-live": "assertive" });
  content = h("main", { id: "content", tabindex: "-1" });
  const header = h(
    "header",
    { class: "top" },
    h("span", { class: "brand" }, "Cellwall"),
    nav,
    h(
      "div",
      { class: "who" },
      h("span", { "data-testid": "whoami" }, `${me.name} (${me.role})`),
      h("button", { id: "logout", type: "button", onclick: () => { session.clear(); location.hash = "#/map"; login(); } }, "Log out"),
    ),
  );
  replace(app, header, errors, content);
  setErrorHost(errors);
  route(focusPage);
}

/**
 * Shows the page of the current hash. After a navigation (not the first load) focus moves to
 * the new page's heading, or the content area, so keyboard and screen-reader users start there.
 */
function route(focusPage = false): void {
  if (!me) return;
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, query] = [hash.split("?")[0], hash.includes("?") ? hash.slice(hash.indexOf("?") + 1) : ""];
  const entry = PAGES.find(([id]) => id === name) ?? PAGES[0];
  if (entry[0] !== name) {
    history.replaceState(null, "", `#/${entry[0]}`);
  }
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a[data-page]")) {
    if (a.dataset.page === entry[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (cleanup) cleanup();
  cleanup = undefined;
  clearError();
  replace(content);
  document.title = `${entry[1]} · Cellwall`;
  cleanup = entry[2](content, {
    me,
    admin: me.role === "admin",
    params: new URLSearchParams(query),
    go: (to) => { location.hash = to; },
  });
  if (focusPage) {
    const h1 = content.querySelector<HTMLElement>("h1");
    (h1?.hasAttribute("tabindex") ? h1 : content).focus();
  }
}

window.addEventListener("hashchange", () => route(true));
window.addEventListener(UNAUTHORIZED, (ev) => {
  if (!me) return;
  session.clear();
  login(`Signed out: ${(ev as CustomEvent<string>).detail}`);
});

async function start(): Promise<void> {
  const t = session.token();
  if (!t) return login();
  try {
    me = await get<Whoami>(url("whoami"), t);
    shell();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) session.clear();
    login(e instanceof Error ? e.message : String(e));
  }
}

void start();
