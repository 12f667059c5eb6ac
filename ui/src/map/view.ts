// The canvas: draws the laid-out graph, pans (drag / arrow keys) and zooms (wheel / + -) with
// one redraw per animation frame, and hit-tests clicks against nodes and links. Drawing is
// batched per colour and width bucket so 10,000 links are a handful of stroke() calls.

import type { EdgeVerdict, GLink, GNode, Graph } from "./graph";

export const VERDICT_COLOURS: Record<EdgeVerdict, string> = {
  allowed: "#2e8b57",
  denied: "#c62828",
  audit: "#d48806",
  mixed: "#b23a8e",
};

const NS_PALETTE = ["#3b6fb6", "#6a4fb3", "#2a8c8c", "#8a6d1f", "#a04a6a", "#4f7d2f", "#7a5230", "#3f5f7f", "#9b4d2e", "#5a5a9a"];
const EXTERNAL = "#7a7f87";

export type Hit = { node: GNode } | { link: GLink } | null;

export class MapView {
  private ctx: CanvasRenderingContext2D;
  private tx = 0;
  private ty = 0;
  private k = 1;
  private frame = 0;
  private nsColour = new Map<string, string>();
  private nsCentres: [string, number, number][] = [];
  selectedLink: GLink | null = null;
  selectedNode: GNode | null = null;
  /** Time of the last full draw (ms), for the stats the tests and the harness read. */
  lastDrawMs = 0;
  private onFirstDraw: ((ms: number) => void) | null;
  private resize: ResizeObserver;
  /** The last full drawing and the transform it was drawn with: big graphs pan/zoom by
   * blitting it (cheap) and redraw fully once the interaction pauses. */
  private snapshot = document.createElement("canvas");
  private snapT = { tx: 0, ty: 0, k: 1 };
  private settle = 0;
  /** Removes every listener bind() added, so a replaced view neither draws nor picks. */
  private listeners = new AbortController();
  private dead = false;

  constructor(private canvas: HTMLCanvasElement, private g: Graph, private onPick: (hit: Hit) => void, onFirstDraw: (ms: number) => void) {
    this.ctx = canvas.getContext("2d")!;
    this.onFirstDraw = onFirstDraw;
    g.namespaces.forEach((ns, i) => this.nsColour.set(ns, ns === "(external)" ? EXTERNAL : NS_PALETTE[i % NS_PALETTE.length]));
    const acc = new Map<string, [number, number, number]>();
    for (const n of g.nodes) {
      const a = acc.get(n.ns) ?? [0, 0, 0];
      a[0] += n.x; a[1] += n.y; a[2] += 1;
      acc.set(n.ns, a);
    }
    this.nsCentres = [...acc].map(([ns, [x, y, c]]) => [ns, x / c, y / c]);
    this.bind();
    this.resize = new ResizeObserver(() => this.request());
    this.resize.observe(canvas);
    this.fit();
    // Draw now rather than on the next frame, so the map shows before the edge table is built.
    if (this.frame) { cancelAnimationFrame(this.frame); this.frame = 0; }
    this.draw();
  }

  destroy(): void {
    this.dead = true;
    this.listeners.abort();
    this.canvas.classList.remove("dragging");
    this.resize.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    window.clearTimeout(this.settle);
  }

  colourOf(n: GNode): string {
    return n.node.kind === "external" ? EXTERNAL : this.nsColour.get(n.ns) ?? NS_PALETTE[0];
  }

  /** Frames the whole graph in the canvas. */
  fit(): void {
    const { width, height } = this.size();
    if (!this.g.nodes.length) { this.request(); return; }
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of this.g.nodes) {
      x0 = Math.min(x0, n.x); y0 = Math.min(y0, n.y); x1 = Math.max(x1, n.x); y1 = Math.max(y1, n.y);
    }
    const pad = 60;
    this.k = Math.min(2.5, (width - pad * 2) / Math.max(1, x1 - x0), (height - pad * 2) / Math.max(1, y1 - y0));
    this.tx = width / 2 - ((x0 + x1) / 2) * this.k;
    this.ty = height / 2 - ((y0 + y1) / 2) * this.k;
    this.request();
  }

  /** Pan/zoom feedback: a blit of the last full drawing for big graphs, a full redraw after. */
  private interact(): void {
    if (this.dead) return;
    if (this.g.links.length + this.g.nodes.length < 2500 || !this.snapshot.width) { this.request(); return; }
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.blit(); });
    window.clearTimeout(this.settle);
    this.settle = window.setTimeout(() => this.request(), 140);
  }

  private blit(): void {
    const dpr = window.devicePixelRatio || 1;
    const c = this.ctx;
    const r = this.k / this.snapT.k;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.fillStyle = "#fbfcfd";
    c.fillRect(0, 0, this.canvas.width, this.canvas.height);
    c.setTransform(r, 0, 0, r, dpr * (this.tx - this.snapT.tx * r), dpr * (this.ty - this.snapT.ty * r));
    c.drawImage(this.snapshot, 0, 0);
  }

  zoom(factor: number, cx?: number, cy?: number): void {
    const { width, height } = this.size();
    const px = cx ?? width / 2, py = cy ?? height / 2;
    const k = Math.max(0.02, Math.min(20, this.k * factor));
    this.tx = px - ((px - this.tx) * k) / this.k;
    this.ty = py - ((py - this.ty) * k) / this.k;
    this.k = k;
    this.interact();
  }

  pan(dx: number, dy: number): void {
    this.tx += dx;
    this.ty += dy;
    this.interact();
  }

  /** Schedules one redraw on the next animation frame (coalescing many requests). */
  request(): void {
    if (this.dead) return;
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  private size(): { width: number; height: number } {
    return { width: this.canvas.clientWidth || 800, height: this.canvas.clientHeight || 500 };
  }

  draw(): void {
    window.clearTimeout(this.settle);
    const t0 = performance.now();
    const { width, height } = this.size();
    const dpr = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(width * dpr) || this.canvas.height !== Math.round(height * dpr)) {
      this.canvas.width = Math.round(width * dpr);
      this.canvas.height = Math.round(height * dpr);
    }
    const c = this.ctx;
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.fillStyle = "#fbfcfd";
    c.fillRect(0, 0, width, height);
    c.setTransform(dpr * this.k, 0, 0, dpr * this.k, dpr * this.tx, dpr * this.ty);
    const g = this.g;
    const focus = this.selectedNode;

    // Namespace names, faint, behind everything.
    c.textAlign = "center";
    c.textBaseline = "middle";
    c.font = `600 ${Math.max(14, 16 / this.k)}px system-ui, sans-serif`;
    c.fillStyle = "rgba(40,50,70,0.16)";
    for (const [ns, x, y] of this.nsCentres) c.fillText(ns, x, y);

    // Links: bucket by colour x width so each bucket is one path.
    const buckets = new Map<string, GLink[]>();
    for (const l of g.links) {
      const w = Math.min(6, 1 + Math.round(Math.log10(1 + l.connections) * 1.5));
      const dim = focus && l.s !== focus.i && l.t !== focus.i ? "d" : "";
      const key = `${l.verdict}|${w}|${dim}`;
      const b = buckets.get(key);
      if (b) b.push(l);
      else buckets.set(key, [l]);
    }
    const arrows = g.links.length <= 3000 || this.k > 1.5;
    const px = 1 / this.k; // one screen pixel in graph units
    for (const [key, list] of buckets) {
      const [verdict, w, dim] = key.split("|");
      c.strokeStyle = VERDICT_COLOURS[verdict as EdgeVerdict];
      c.fillStyle = c.strokeStyle;
      c.globalAlpha = dim ? 0.08 : g.links.length > 2000 ? 0.45 : 0.75;
      c.lineWidth = Number(w) * px;
      c.beginPath();
      for (const l of list) {
        const a = g.nodes[l.s], b = g.nodes[l.t];
        c.moveTo(a.x, a.y);
        c.lineTo(b.x, b.y);
      }
      c.stroke();
      if (arrows) {
        c.beginPath();
        for (const l of list) this.arrow(g.nodes[l.s], g.nodes[l.t], (5 + Number(w)) * px);
        c.fill();
      }
    }
    c.globalAlpha = 1;
    if (this.selectedLink) {
      const a = g.nodes[this.selectedLink.s], b = g.nodes[this.selectedLink.t];
      c.strokeStyle = "#111827";
      c.lineWidth = 4 * px;
      c.beginPath();
      c.moveTo(a.x, a.y);
      c.lineTo(b.x, b.y);
      c.stroke();
    }

    // Nodes, batched per colour; externals as squares.
    const byColour = new Map<string, GNode[]>();
    for (const n of g.nodes) {
      const col = this.colourOf(n);
      const l = byColour.get(col);
      if (l) l.push(n);
      else byColour.set(col, [n]);
    }
    c.lineWidth = 1.5 * px;
    c.strokeStyle = "#ffffff";
    for (const [col, list] of byColour) {
      c.fillStyle = col;
      c.beginPath();
      for (const n of list) {
        if (n.node.kind === "external") c.rect(n.x - n.r, n.y - n.r, n.r * 2, n.r * 2);
        else {
          c.moveTo(n.x + n.r, n.y);
          c.arc(n.x, n.y, n.r, 0, Math.PI * 2);
        }
      }
      c.fill();
      c.stroke();
    }
    if (focus) {
      c.strokeStyle = "#111827";
      c.lineWidth = 3 * px;
      c.beginPath();
      c.arc(focus.x, focus.y, focus.r + 3 * px, 0, Math.PI * 2);
      c.stroke();
    }

    // Labels once few enough nodes are on screen (always for small graphs): readable, and cheap.
    const x0 = -this.tx / this.k, y0 = -this.ty / this.k;
    const x1 = x0 + width / this.k, y1 = y0 + height / this.k;
    let visible = 0;
    for (const n of g.nodes) if (n.x >= x0 && n.x <= x1 && n.y >= y0 && n.y <= y1 && ++visible > 150) break;
    if (visible <= 150) {
      c.font = `${12 * px}px system-ui, sans-serif`;
      c.textAlign = "center";
      c.textBaseline = "top";
      c.lineWidth = 3 * px;
      c.strokeStyle = "rgba(251,252,253,0.9)";
      c.fillStyle = "#1f2937";
      for (const n of g.nodes) {
        if (n.x < x0 || n.x > x1 || n.y < y0 || n.y > y1) continue;
        c.strokeText(n.label, n.x, n.y + n.r + 2 * px);
        c.fillText(n.label, n.x, n.y + n.r + 2 * px);
      }
    }
    if (this.g.links.length + this.g.nodes.length >= 2500) {
      this.snapshot.width = this.canvas.width;
      this.snapshot.height = this.canvas.height;
      this.snapshot.getContext("2d")!.drawImage(this.canvas, 0, 0);
      this.snapT = { tx: this.tx, ty: this.ty, k: this.k };
    }
    this.lastDrawMs = performance.now() - t0;
    if (this.onFirstDraw) {
      const f = this.onFirstDraw;
      this.onFirstDraw = null;
      f(this.lastDrawMs);
    }
  }

  private arrow(a: GNode, b: GNode, size: number): void {
    const dx = b.x - a.x, dy = b.y - a.y;
    const len = Math.hypot(dx, dy);
    if (len < b.r * 2 + size) return;
    const ux = dx / len, uy = dy / len;
    const tipX = b.x - ux * (b.r + 1), tipY = b.y - uy * (b.r + 1);
    const bx = tipX - ux * size, by = tipY - uy * size;
    this.ctx.moveTo(tipX, tipY);
    this.ctx.lineTo(bx - uy * size * 0.45, by + ux * size * 0.45);
    this.ctx.lineTo(bx + uy * size * 0.45, by - ux * size * 0.45);
    this.ctx.closePath();
  }

  /** What is under a canvas point: a node first, else the nearest link within a few pixels. */
  hitTest(sx: number, sy: number): Hit {
    const x = (sx - this.tx) / this.k, y = (sy - this.ty) / this.k;
    const tol = 6 / this.k;
    let best: GNode | null = null, bd = Infinity;
    for (const n of this.g.nodes) {
      const d = Math.hypot(n.x - x, n.y - y) - n.r;
      if (d < tol && d < bd) { bd = d; best = n; }
    }
    if (best) return { node: best };
    let bl: GLink | null = null, ld = tol;
    for (const l of this.g.links) {
      const d = segDist(x, y, this.g.nodes[l.s], this.g.nodes[l.t]);
      if (d < ld) { ld = d; bl = l; }
    }
    return bl ? { link: bl } : null;
  }

  private bind(): void {
    const cv = this.canvas;
    const signal = this.listeners.signal;
    let drag: { x: number; y: number; moved: boolean; id: number } | null = null;
    cv.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, moved: false, id: e.pointerId };
      cv.setPointerCapture(e.pointerId);
    }, { signal });
    cv.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 4) return;
      drag.moved = true;
      cv.classList.add("dragging");
      this.pan(dx, dy);
      drag.x = e.clientX;
      drag.y = e.clientY;
    }, { signal });
    cv.addEventListener("pointerup", (e) => {
      if (!drag) return;
      const click = !drag.moved;
      cv.releasePointerCapture(drag.id);
      cv.classList.remove("dragging");
      drag = null;
      if (click) {
        const r = cv.getBoundingClientRect();
        this.onPick(this.hitTest(e.clientX - r.left, e.clientY - r.top));
      }
    }, { signal });
    cv.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = cv.getBoundingClientRect();
      this.zoom(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015)), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false, signal });
    cv.addEventListener("keydown", (e) => {
      const step = 60;
      const keys: Record<string, () => void> = {
        ArrowLeft: () => this.pan(step, 0),
        ArrowRight: () => this.pan(-step, 0),
        ArrowUp: () => this.pan(0, step),
        ArrowDown: () => this.pan(0, -step),
        "+": () => this.zoom(1.25),
        "=": () => this.zoom(1.25),
        "-": () => this.zoom(0.8),
        "0": () => this.fit(),
      };
      const f = keys[e.key];
      if (f) { e.preventDefault(); f(); }
    }, { signal });
  }
}

function segDist(px: number, py: number, a: GNode, b: GNode): number {
  const dx = b.x - a.x, dy = b.y - a.y;
  const len2 = dx * dx + dy * dy;
  let t = len2 ? ((px - a.x) * dx + (py - a.y) * dy) / len2 : 0;
  t = Math.max(0, Math.min(1, t));
  return Math.hypot(px - (a.x + t * dx), py - (a.y + t * dy));
}
