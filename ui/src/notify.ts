// The one error banner ([data-testid=error]): every failed API call lands here with the API's
// own message, so nothing fails silently. Dismissable; a new error replaces the old text.

import { ApiError } from "./api";
import { h, replace } from "./dom";

let host: HTMLElement | null = null;

/** Where the banner lives (set by the shell; the login page uses its own inline error). */
export function setErrorHost(el: HTMLElement | null): void {
  host = el;
}

export function showError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  if (!host) {
    // Signed out (the login page says why): a page's late answers have nowhere to go.
    if (!(e instanceof ApiError && e.status === 401)) console.error(msg);
    return;
  }
  // The × comes from CSS so the banner's text is exactly the API's message.
  const close = h("button", { type: "button", class: "dismiss", "aria-label": "Dismiss error", title: "Dismiss", onclick: () => clearError() });
  replace(host, h("div", { class: "error-banner", role: "alert", "data-testid": "error" }, h("span", { class: "msg" }, msg), close));
}

export function clearError(): void {
  if (host) replace(host);
}

/** Runs an async action, reporting its failure; returns undefined when it failed. */
export async function attempt<T>(f: () => Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    showError(e);
    return undefined;
  }
}
