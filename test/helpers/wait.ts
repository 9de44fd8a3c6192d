/** Polls `pred` until it holds; rejects naming `what` after `ms`. For conditions another process or timer brings about. */
export function waitFor(pred: () => boolean, what: string, ms = 10_000, everyMs = 10): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (pred()) resolve();
      else if (Date.now() > until) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, everyMs);
    };
    tick();
  });
}

/** As waitFor, for a condition that takes a call to check (a metric, an RPC). */
export async function waitForAsync(pred: () => Promise<boolean>, what: string, ms = 10_000, everyMs = 10): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
