// Layout: seed every node near its namespace's centre (namespaces on a grid, members on a
// sunflower spiral), then refine with d3-force for a bounded number of ticks, synchronously.
// The seeding is what makes it converge fast; the time budget keeps big graphs well under 1 s.

import { forceCollide, forceLink, forceManyBody, forceSimulation, forceX, forceY, type SimulationNodeDatum } from "d3-force";
import type { Graph } from "./graph";

interface SimNode extends SimulationNodeDatum { i: number; cx: number; cy: number; r: number }

/** Deterministic PRNG so the same map always lays out the same way. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
}

export interface LayoutStats { ticks: number; ms: number }

export function layout(g: Graph, budgetMs = 450): LayoutStats {
  const t0 = performance.now();
  const byNs = new Map<string, number[]>();
  for (const n of g.nodes) {
    const l = byNs.get(n.ns);
    if (l) l.push(n.i);
    else byNs.set(n.ns, [n.i]);
  }
  // Namespaces on a grid, each cell sized by its member count.
  const cols = Math.ceil(Math.sqrt(byNs.size));
  const spacing = 26;
  const cellR = Math.max(...[...byNs.values()].map((l) => Math.sqrt(l.length) * spacing), 60);
  const golden = Math.PI * (3 - Math.sqrt(5));
  const centres = new Map<string, [number, number]>();
  let k = 0;
  for (const ns of g.namespaces) {
    const list = byNs.get(ns)!;
    const cx = (k % cols) * cellR * 2.6;
    const cy = Math.floor(k / cols) * cellR * 2.6;
    centres.set(ns, [cx, cy]);
    list.forEach((ni, j) => {
      const rr = spacing * Math.sqrt(j + 0.5);
      g.nodes[ni].x = cx + rr * Math.cos(j * golden);
      g.nodes[ni].y = cy + rr * Math.sin(j * golden);
    });
    k++;
  }
  const sim: SimNode[] = g.nodes.map((n) => {
    const [cx, cy] = centres.get(n.ns)!;
    return { i: n.i, x: n.x, y: n.y, cx, cy, r: n.r };
  });
  const n = sim.length;
  const simulation = forceSimulation<SimNode>(sim)
    .randomSource(lcg(42))
    .force("link", forceLink<SimNode, { source: number; target: number }>(g.links.map((l) => ({ source: l.s, target: l.t })))
      .id((d) => d.i)
      .distance(60)
      .strength(n > 300 ? 0.02 : 0.1))
    .force("charge", forceManyBody<SimNode>().strength(-60).theta(0.9).distanceMax(400))
    .force("x", forceX<SimNode>((d) => d.cx).strength(0.12))
    .force("y", forceY<SimNode>((d) => d.cy).strength(0.12))
    .force("collide", forceCollide<SimNode>((d) => d.r + 6).iterations(1))
    .stop();
  // Small graphs get a full settle; big ones as many ticks as the budget allows.
  const maxTicks = n <= 300 ? 300 : 150;
  simulation.alpha(n <= 300 ? 1 : 0.6).alphaDecay(1 - Math.pow(0.001, 1 / maxTicks));
  let ticks = 0;
  while (ticks < maxTicks) {
    simulation.tick();
    ticks++;
    if ((ticks & 3) === 0 && performance.now() - t0 > budgetMs) break;
  }
  for (const s of sim) {
    g.nodes[s.i].x = s.x ?? 0;
    g.nodes[s.i].y = s.y ?? 0;
  }
  return { ticks, ms: performance.now() - t0 };
}
