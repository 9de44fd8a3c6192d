import { extname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { MaintenanceJob, MaintenanceReply } from './maintenance-worker';

/**
 * Runs one maintenance job in a worker thread of its own, which exits when
 * the job is done.
 * @throws Error with SQLite's message (and code) when the job failed.
 */
export function runMaintenance(job: MaintenanceJob): Promise<Extract<MaintenanceReply, { ok: true }>> {
  // As the checkpoint worker (checkpointer.ts): under tsx the worker registers tsx itself.
  const file = join(__dirname, `maintenance-worker${extname(__filename)}`);
  const worker = file.endsWith('.ts')
    ? new Worker(`require('tsx/cjs/api').register(); require(${JSON.stringify(file)});`, { eval: true, workerData: job })
    : new Worker(file, { workerData: job });
  return new Promise((resolve, reject) => {
    let replied = false;
    worker.once('message', (reply: MaintenanceReply) => {
      replied = true;
      if (reply.ok) resolve(reply);
      else reject(Object.assign(new Error(reply.message), { code: reply.code }));
    });
    worker.once('error', (err) => {
      replied = true;
      reject(err);
    });
    worker.once('exit', (code) => {
      if (!replied) reject(new Error(`maintenance worker exited (${code}) without an answer`));
    });
  });
}
