// Headless Debian Chromium driven by playwright-core (no browser download). The flags keep
// Chromium from calling home: this machine's network is closed and those calls only fail.
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** `--name value` pairs of the command line. */
export function args() {
  const a = {};
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) {
    if (!v[i].startsWith("--") || v[i + 1] === undefined) {
      throw new Error(`expected --name value pairs, got ${v.slice(i).join(" ")}`);
    }
    a[v[i].slice(2)] = v[i + 1];
  }
  return a;
}

/** Fails the run with a message naming what was expected. */
export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}
