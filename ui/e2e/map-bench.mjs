// The map at scale in a real browser: 1,000 services (50 of them external peers) in 25
// namespaces and 10,000 edges (and, side by side, a tenth and three times that), answered in place of the manager's /v1/map (everything else —
// the page, login, the API — is the real manager's). Measures the first render (navigation to
// the first drawn frame, layout included) and panning (frame times while dragging), prints
// one JSON line per size, and fails past the goals times --noise.
//
// node ui/e2e/map-bench.mjs --server URL --token TOKEN [--noise 2] [--sizes 100x1000,1000x10000,...]
import { args, launch } from "./browser.mjs";

const a = args();
const noise = Number(a.noise ?? 1);
/** SERVICESxEDGES sizes, side by side in one run; the goals apply to 1000x10000. */
const SIZES = (a.sizes ?? "100x1000,1000x10000,3000x30000").split(",").map((s) => s.split("x").map(Number));
const GOAL_FIRST_RENDER_MS = 2000;
/** 30 frames a second while panning. */
const GOAL_PAN_FRAME_MS = 33;

/** A deterministic pseudo-random sequence (the same map every run). */
function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

function synthMap(SERVICES, EDGES) {
  const r = rng(42);
  const nodes = [];
  for (let i = 0; i < SERVICES; i++) {
    if (i < 50) {
      nodes.push({ id: `203.0.113.${i}`, kind: "external", members: [`203.0.113.${i}`] });
      continue;
    }
    const ns = `team-${String(i % 25).padStart(2, "0")}`;
    nodes.push({ id: `${ns}/app=svc-${i}`, kind: "workload", namespace: ns, members: [`${ns}/svc-${i}-0`], evidence: "labels app" });
  }
  const edges = [];
  const seen = new Set();
  const t = Date.now() * 1e6;
  while (edges.length < EDGES) {
    const s = 50 + Math.floor(r() * (SERVICES - 50));
    // Most calls stay in a namespace's neighbourhood, some cross, some leave for the outside.
    const d = r() < 0.05 ? Math.floor(r() * 50) : 50 + ((s - 50 + 25 * Math.floor(1 + r() * 8) + (r() < 0.3 ? Math.floor(r() * 900) : 0)) % (SERVICES - 50));
    const port = [80, 443, 5432, 6379, 8080, 9090][Math.floor(r() * 6)];
    const k = `${s}>${d}:${port}`;
    if (s === d || seen.has(k)) continue;
    seen.add(k);
    const v = r();
    edges.push({
      src: nodes[s].id, dst: nodes[d].id, protocol: "TCP", port,
      allowed: v < 0.85 ? 1 + Math.floor(r() * 500) : 0,
      denied: v >= 0.85 && v < 0.97 ? 1 + Math.floor(r() * 20) : 0,
      audit: v >= 0.97 ? 1 + Math.floor(r() * 20) : 0,
      first_ns: t - 3.6e12, last_ns: t, rules: [`Policy/${nodes[d].namespace ?? "x"}/allow-${d} ingress[0]`],
    });
  }
  return { map: { nodes, edges } };
}

const browser = await launch();
let failed = false;
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  let body = "";
  await page.route("**/v1/map?*", (route) => route.fulfill({ status: 200, contentType: "application/json", body }));
  await page.goto(`${a.server}/ui/`);
  await page.fill("#token", a.token);
  await page.click("#login");
  await page.waitForSelector("[data-testid=whoami]");
  for (const [SERVICES, EDGES] of SIZES) {
    body = JSON.stringify(synthMap(SERVICES, EDGES));
    // First render: from asking for the map page to its first drawn frame.
    await page.goto("about:blank");
    const t0 = Date.now();
    await page.goto(`${a.server}/ui/#/map`);
    await page.waitForFunction(() => document.body.dataset.mapRendered === "1", null, { timeout: 60_000 });
    const firstRenderMs = Date.now() - t0;
    const stats = await page.evaluate(() => window.cellwallMapStats);
    if (stats.nodes !== SERVICES || stats.edges !== EDGES) {
      throw new Error(`the map drew ${stats.nodes} nodes and ${stats.edges} edges, expected ${SERVICES} and ${EDGES}`);
    }
    // Pan: drag across the canvas and time the frames the page paints meanwhile.
    const box = await page.locator("canvas#map-canvas").boundingBox();
    await page.evaluate(() => {
      window.__frames = [];
      const tick = (t) => { window.__frames.push(t); if (window.__frames.length < 100000) requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
    });
    const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    for (let i = 1; i <= 60; i++) {
      await page.mouse.move(cx + Math.sin(i / 6) * 200, cy + Math.cos(i / 6) * 120);
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
    }
    await page.mouse.up();
    const frames = await page.evaluate(() => window.__frames);
    const gaps = frames.slice(1).map((t, i) => t - frames[i]).sort((x, y) => x - y);
    const meanFrameMs = gaps.reduce((s, g) => s + g, 0) / gaps.length;
    const p95FrameMs = gaps[Math.floor(gaps.length * 0.95)];
    const gated = SERVICES === 1000 && EDGES === 10000;
    console.log(JSON.stringify({
      services: SERVICES, edges: EDGES, first_render_ms: firstRenderMs,
      layout_ms: Math.round(stats.layoutMs), draw_ms: Math.round(stats.drawMs),
      pan_frames: gaps.length, pan_mean_frame_ms: Math.round(meanFrameMs * 10) / 10, pan_p95_frame_ms: Math.round(p95FrameMs * 10) / 10,
      goals: gated ? { first_render_ms: GOAL_FIRST_RENDER_MS, pan_mean_frame_ms: GOAL_PAN_FRAME_MS, noise } : "none (the goals are for 1000x10000)",
    }));
    if (gated && firstRenderMs > GOAL_FIRST_RENDER_MS * noise) {
      console.error(`first render ${firstRenderMs} ms: over the goal of ${GOAL_FIRST_RENDER_MS} ms x ${noise}`);
      failed = true;
    }
    if (gated && meanFrameMs > GOAL_PAN_FRAME_MS * noise) {
      console.error(`panning at ${meanFrameMs.toFixed(1)} ms a frame: over the goal of ${GOAL_PAN_FRAME_MS} ms x ${noise}`);
      failed = true;
    }
  }
  if (!SIZES.some(([s, e]) => s === 1000 && e === 10000)) throw new Error("--sizes must include 1000x10000 (the goal)");
} finally {
  await browser.close();
}
if (failed) process.exitCode = 1;
