// End to end in a real browser against a real manager holding a lab's traffic (the `cellwall
// demo` shop, run by crates/cli/tests/console.rs): log in, the map shows the lab's edges, a flow
// is explained, a simulation shows breakage, a proposal is approved and applied, a workload is
// quarantined and released. A read-only token sees no write control; markup smuggled into
// user text stays text. Screenshots of every page go to --screenshots.
//
// node ui/e2e/console.mjs --server URL --admin TOKEN --read TOKEN --screenshots DIR
//                         --cellwall BIN --lab NAME   (the lab's kernel is probed too)
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { args, check, launch } from "./browser.mjs";

const a = args();
for (const k of ["server", "admin", "read", "screenshots", "cellwall", "lab"]) {
  if (!a[k]) throw new Error(`--${k} is required`);
}
mkdirSync(a.screenshots, { recursive: true });
const PAGES = ["map", "flows", "policies", "explain", "simulate", "proposals", "respond"];
const XSS = `<img src=x onerror="window.__xss=1">`;

async function api(path, token, init = {}) {
  const r = await fetch(a.server + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
  });
  const text = await r.text();
  return { status: r.status, body: text.startsWith("{") ? JSON.parse(text) : text };
}

const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
const page = await context.newPage();
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error" && !/status of 40[134]/.test(m.text())) problems.push(`console: ${m.text()}`);
});
const shot = (name) => page.screenshot({ path: join(a.screenshots, `${name}.png`) });
const go = async (p) => {
  await page.click(`nav a[data-page=${p}]`);
  await page.waitForFunction((p) => location.hash === `#/${p}`, p);
};
/** Text whose contrast with its background is under WCAG AA (4.5:1; 3:1 for large text). */
const lowContrast = () => page.evaluate(() => {
  const rgb = (c) => (c.match(/[\d.]+/g) ?? []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const st = getComputedStyle(el);
    if (!own || !el.getClientRects().length || st.visibility === "hidden" || el.closest("[disabled]")) continue;
    const fg = rgb(st.color).slice(0, 3);
    const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(st.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
  }
  return [...new Set(bad)];
});
/** Once every node enforces the newest revision, which of
 *  frontend -> blog and blog -> frontend on TCP/80 connect in the lab (real sockets). */
async function blogTraffic() {
  for (let i = 0; ; i++) {
    const nodes = (await api("/v1/nodes", a.admin)).body;
    if (nodes.items.every((n) => n.lag === 0)) break;
    if (i > 100) throw new Error(`nodes still behind after 10 s: ${JSON.stringify(nodes.items.map((n) => [n.name, n.lag]))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const out = execFileSync(a.cellwall, ["lab", "probe", "--name", a.lab, "--probe", "TCP/80", "--timeout", "500", "-o", "json"]);
  const m = JSON.parse(out).probes[0].matrix;
  const there = m["web/frontend"]["web/blog"], back = m["web/blog"]["web/frontend"];
  return there && back ? "both ways" : !there && !back ? "none" : `only ${there ? "frontend -> blog" : "blog -> frontend"}`;
}
const login = async (token) => {
  await page.goto(`${a.server}/ui/`);
  await page.fill("#token", token);
  await page.click("#login");
};

try {
  // The console is served with a policy that forbids inline and foreign scripts.
  const r = await fetch(`${a.server}/ui/`);
  const csp = r.headers.get("content-security-policy") ?? "";
  check(r.status === 200 && csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"),
    "GET /ui/ answers with a Content-Security-Policy that allows only this origin's scripts");

  // Trusted Types: in the console's pages an HTML sink throws instead of parsing markup.
  await page.goto(`${a.server}/ui/`);
  const sink = await page.evaluate(() => {
    try { document.createElement("div").innerHTML = "<b>x</b>"; return "parsed"; } catch (e) { return e.name; }
  });
  check(sink === "TypeError", `innerHTML with a string throws in the console's pages (${sink})`);
  // Chromium also logs that violation: it was this test's own, not the console's.
  await page.waitForTimeout(300);
  problems.splice(0, problems.length, ...problems.filter((p) => !p.includes("TrustedHTML")));

  // A wrong token is refused with the API's message.
  await login("cw_not-a-token");
  await page.waitForSelector("[data-testid=login-error]");
  check(/invalid token/i.test(await page.textContent("[data-testid=login-error]")), "a wrong token is refused with the API's message");
  await shot("login");

  // A read-only token: every page, no write control; and the API refuses its writes anyway.
  await login(a.read);
  await page.waitForSelector("[data-testid=whoami]");
  check((await page.textContent("[data-testid=whoami]")).includes("(read)"), "the header names the read role");
  const readWrites = [];
  const onRequest = (r) => {
    if (r.url().includes("/v1/") && r.method() !== "GET" && !r.url().endsWith("/v1/simulate")) readWrites.push(`${r.method()} ${r.url()}`);
  };
  const onResponse = (r) => { if (r.status() === 403) readWrites.push(`403 ${r.url()}`); };
  page.on("request", onRequest);
  page.on("response", onResponse);
  for (const p of PAGES) {
    await go(p);
    await page.waitForTimeout(400);
    const n = await page.locator("[data-write]").count();
    check(n === 0, `page ${p} shows a read-only token no write control (found ${n})`);
  }
  page.off("request", onRequest);
  page.off("response", onResponse);
  check(readWrites.length === 0, `browsing every page with a read token sends no write (${readWrites.join(", ")})`);
  const refused = await page.evaluate(async (token) => {
    const r = await fetch("/v1/quarantine", {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ workload: "web/blog" }),
    });
    return r.status;
  }, a.read);
  check(refused === 403, `the API refuses a read token's quarantine from the page (${refused})`);
  await page.click("#logout");
  await page.waitForSelector("#token");

  // Admin from here on.
  await login(a.admin);
  await page.waitForSelector("[data-testid=whoami]");
  check((await page.textContent("[data-testid=whoami]")).includes("(admin)"), "the header names the admin role");

  // Keyboard: from one page link to the next with Tab, opened with Enter, focus visible.
  await page.focus("nav a[data-page=map]");
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => {
    const e = document.activeElement;
    const st = getComputedStyle(e);
    return { page: e.dataset.page, outline: st.outlineStyle !== "none" && parseFloat(st.outlineWidth) > 0 };
  });
  check(focused.page === "flows" && focused.outline, "Tab moves to the next page link and shows where focus is");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => location.hash === "#/flows");
  check(true, "Enter opens the page");

  // Map: every edge of the manager's map, with its verdict; a denied edge's deciding rule.
  await go("map");
  await page.waitForFunction(() => document.body.dataset.mapRendered === "1");
  const map = (await api("/v1/map?since=1h", a.admin)).body.map;
  const rows = page.locator("[data-testid=map-edges] tbody tr");
  check((await rows.count()) === map.edges.length && map.edges.length > 0,
    `the map lists the manager's ${map.edges.length} edges`);
  const denied = map.edges.find((e) => e.denied > 0 && e.allowed === 0 && e.src.includes("blog"));
  check(denied, "the lab's map has a connection of the blog that was only ever denied");
  const row = page.locator(`[data-testid=map-edges] tbody tr[data-src="${denied.src}"][data-dst="${denied.dst}"][data-port="${denied.port}"]`);
  check((await row.getAttribute("data-verdict")) === "denied", `${denied.src} -> ${denied.dst} is shown denied`);
  await row.click();
  await page.waitForSelector("[data-testid=edge-detail]");
  const policy = denied.rules[0].split(" ")[0].split("/").pop();
  await page.waitForFunction((p) => document.querySelector("[data-testid=edge-detail]")?.textContent.includes(p), policy);
  await page.waitForSelector("[data-testid=edge-detail] [data-testid=edge-flows] tbody tr");
  check(true, `clicking the edge shows its flows and the deciding rule (${policy})`);
  // The keyboard's way to a service: choose it, see its members.
  const api_ = map.nodes.find((n) => n.id.includes("app=api"));
  await page.selectOption("#map-service", { label: api_.id });
  await page.waitForFunction((m) => document.querySelector("[data-testid=node-info]")?.textContent.includes(m), api_.members[0]);
  check(true, `choosing ${api_.id} in the service list shows its members`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot("map");
  // The shop's own labels: group by a label key typed in.
  const byTier = (await api("/v1/map?since=1h&group_by=label:app", a.admin)).body.map;
  await page.selectOption("#map-group-by", "label");
  await page.fill("#map-label-keys", "app");
  const [asked] = await Promise.all([
    page.waitForRequest((r) => r.url().includes("/v1/map?") && r.url().includes("group_by=label%3Aapp")),
    page.locator("#map-label-keys").blur(),
  ]);
  check(asked, "typing label keys asks the manager for group_by=label:app");
  const ids = byTier.nodes.map((n) => n.id).sort();
  await page.waitForFunction((ids) => JSON.stringify([...document.querySelectorAll("#map-service option")]
    .map((o) => o.textContent).filter((t) => t !== "—").sort()) === JSON.stringify(ids), ids);
  check(true, `grouping by label:app shows the manager's ${ids.length} services`);

  // Flows: filter denied, explain one in one click.
  await go("flows");
  await page.selectOption("#flow-verdict", "denied");
  await page.click("#flow-apply");
  // The table is replaced when the filtered answer arrives: wait for that, not for any row.
  await page.waitForFunction(() => {
    const rs = [...document.querySelectorAll("[data-testid=flows] tbody tr")];
    return rs.length > 0 && rs.every((r) => r.textContent.includes("denied"));
  }, null, { timeout: 10_000 }).catch(() => {});
  const verdicts = await page.$$eval("[data-testid=flows] tbody tr", (rs) => rs.map((r) => r.textContent));
  check(verdicts.length > 0 && verdicts.every((t) => t.includes("denied")), `the denied filter shows only denied flows (${verdicts.length})`);
  await shot("flows");
  const dbRow = page.locator("[data-testid=flows] tbody tr", { hasText: "backend/db" }).first();
  await dbRow.locator("button.explain").click();
  await page.waitForFunction(() => location.hash.startsWith("#/explain"));
  await page.waitForSelector("[data-testid=explain-result][data-verdict]");
  check((await page.getAttribute("[data-testid=explain-result]", "data-verdict")) === "denied", "explaining the denied flow says denied");
  check((await page.textContent("[data-testid=explain-result]")).includes("db-from-api"), "the explanation names the deciding policy");
  await shot("explain");

  // Policies: YAML, revisions, hit counts.
  await go("policies");
  const prow = page.locator("[data-testid=policies] tbody tr", { hasText: "db-from-api" }).first();
  await prow.click();
  await page.waitForSelector("[data-testid=policy-detail] pre.yaml");
  check((await page.textContent("[data-testid=policy-detail] pre.yaml")).includes("db-from-api"), "the policy's YAML is shown");
  check((await page.locator("[data-testid=revisions] li").count()) >= 1, "its revisions are listed");
  await page.waitForSelector("[data-testid=rule-hits] tbody tr");
  // The counts are the manager's: each rule of the policy with its connections.
  const stats = (await api("/v1/rules?since=7d", a.admin)).body.items.filter((r) => r.policy.endsWith("db-from-api"));
  const shown = await page.$$eval("[data-testid=rule-hits] tbody tr", (rs) => rs.map((r) => [r.dataset.rule, r.children[2].textContent.trim()]));
  check(stats.length > 0 && stats.some((r) => r.connections > 0) &&
    JSON.stringify(shown.sort()) === JSON.stringify(stats.map((r) => [r.rule, String(r.connections)]).sort()),
    `its rules' hit counts are the manager's (${JSON.stringify(shown)})`);
  await shot("policies");

  // Simulate: an admin-tier rule denying the web namespace into the backend breaks the frontend.
  await go("simulate");
  await page.fill("#sim-candidate", [
    "apiVersion: policy.networking.k8s.io/v1alpha2",
    "kind: ClusterNetworkPolicy",
    "metadata: {name: web-out-of-backend}",
    "spec:",
    "  tier: Admin",
    "  priority: 10",
    "  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: backend}}}",
    "  ingress:",
    `  - name: '${XSS}'`,
    "    action: Deny",
    "    from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: web}}}]",
    "",
  ].join("\n"));
  await page.click("#sim-run");
  await page.waitForSelector("[data-testid=sim-breakage] tbody tr");
  const breakage = await page.$$eval("[data-testid=sim-breakage] tbody tr", (rs) => rs.map((r) => r.textContent));
  check(breakage.some((t) => t.includes("web/frontend") && t.includes("backend/api")), "the simulation lists frontend -> api as breakage");
  check(breakage.some((t) => t.includes(XSS)), "a rule name carrying markup (policy author's text) is shown as text");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#sim-download")]);
  const report = JSON.parse(readFileSync(await download.path(), "utf8"));
  check((await download.suggestedFilename()).endsWith(".json") && report.breakage > 0 &&
    report.details.some((r) => r.class === "would-be-rejected" && r.src === "web/frontend"),
    "the simulation report downloads, with its breakage");
  await shot("simulate");

  // Respond: quarantine the blog with a reason, then release it; in the kernel, the blog
  // serves the frontend before, not during, and again after.
  check(await blogTraffic() === "both ways", "before the quarantine the frontend and the blog reach each other on TCP/80");
  await go("respond");
  await page.fill("#q-workload", "web/blog");
  await page.fill("#q-reason", `suspected compromise ${XSS}`);
  await page.click("#q-submit");
  await page.waitForSelector("[data-testid=quarantines] tbody tr[data-workload='web/blog']");
  const q = (await api("/v1/quarantine", a.admin)).body.items;
  check(q.some((i) => i.workload === "web/blog" && i.reason.includes("suspected")), "the manager holds the quarantine with its reason");
  check((await page.textContent("[data-testid=quarantines]")).includes(XSS), "a reason with markup is shown as text");
  check((await page.locator("[data-testid=nodes] tbody tr").count()) >= 1, "the nodes' health is shown");
  check(await blogTraffic() === "none", "quarantined from the console: no connection to or from the blog gets through");
  await shot("respond");
  await page.locator("[data-testid=quarantines] tbody tr[data-workload='web/blog'] button.release").click();
  await page.waitForSelector("[data-testid=quarantines] tbody tr[data-workload='web/blog']", { state: "detached" });
  check((await api("/v1/quarantine", a.admin)).body.items.length === 0, "the release reached the manager");
  check(await blogTraffic() === "both ways", "released: the frontend and the blog reach each other again");


  // Proposals: generate, review with a comment (markup stays text), simulate, apply.
  await go("proposals");
  await page.fill("#prop-name", "console-e2e");
  await page.selectOption("#prop-since", "1h");
  await page.click("#prop-save");
  await page.waitForSelector("[data-testid=draft-rules] tbody tr");
  const ruleIds = await page.$$eval("[data-testid=draft-rules] tbody tr", (rs) => rs.map((r) => r.dataset.rule));
  check(ruleIds.length > 0, `the new draft shows its ${ruleIds.length} proposed rules`);
  await page.fill("#review-comment", `reviewed in the console ${XSS}`);
  await page.locator(`[data-testid=draft-rules] tbody tr[data-rule="${ruleIds[0]}"] button.reject`).click();
  await page.waitForSelector(`[data-testid=draft-rules] tbody tr[data-rule="${ruleIds[0]}"][data-status=rejected]`);
  await page.click("#approve-pending");
  await page.waitForFunction(() => [...document.querySelectorAll("[data-testid=draft-rules] tbody tr")].every((r) => r.dataset.status !== "pending"));
  const stored = (await api("/v1/drafts/show?name=console-e2e", a.admin)).body;
  check(stored.rules.find((r) => r.id === ruleIds[0]).status === "rejected" && stored.rules.filter((r) => r.status === "approved").length === ruleIds.length - 1,
    "the manager holds the decisions: one rejected, the rest approved");
  check((await page.textContent("[data-testid=draft-rules]")).includes(XSS), "a comment with markup is shown as text");
  await page.click("#draft-simulate");
  await page.waitForSelector("[data-testid=sim-summary]");
  await page.click("#draft-apply");
  await page.waitForSelector("[data-testid=draft-result]");
  const written = (await api("/v1/drafts/show?name=console-e2e", a.admin)).body.applied;
  check(written && written.policies.length > 0, `the draft's approved rules were applied (${written?.policies.length} policies)`);
  await shot("proposals");

  for (const p of PAGES) {
    await go(p);
    await page.waitForTimeout(600);
    const bad = await lowContrast();
    check(bad.length === 0, `page ${p}: all text readable (WCAG AA contrast)${bad.length ? ": " + bad.join("; ") : ""}`);
  }

  // A token revoked while its session is open stops working in the console at once.
  const created = (await api("/v1/tokens", a.admin, { method: "POST", body: JSON.stringify({ role: "read", name: "console-e2e" }) })).body;
  await page.click("#logout");
  await login(created.token);
  await page.waitForSelector("[data-testid=whoami]");
  await api("/v1/tokens/revoke", a.admin, { method: "POST", body: JSON.stringify({ id: created.id }) });
  await go("policies");
  await page.waitForSelector("[data-testid=login-error]:not([hidden])");
  check(/signed out/i.test(await page.textContent("[data-testid=login-error]")), "a revoked token's session ends with the reason");

  // The CSP would stop the payload's handler anyway: what counts is that no element was made.
  check((await page.evaluate(() => window.__xss)) === undefined && (await page.locator('img[src="x"]').count()) === 0,
    "no smuggled markup became an element or ran");
  check(problems.length === 0, `no script errors in the page (${problems.join("; ")})`);
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(e.stack ?? String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
