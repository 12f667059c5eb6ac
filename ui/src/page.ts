// What every page gets from the shell, and what it gives back.

import type { Whoami } from "./api";

export interface PageCtx {
  me: Whoami;
  /** Write controls (data-write) are only built when this is true. */
  admin: boolean;
  /** The query part of the hash route (`#/explain?from=…`). */
  params: URLSearchParams;
  /** Navigate to another route (updates the hash). */
  go(hash: string): void;
}

/** Renders into `root`; returns a cleanup that stops timers / listeners when the page is left. */
export type Page = (root: HTMLElement, ctx: PageCtx) => (() => void) | void;
