/* A worker thread of the experiment server: StreamLookup on a read-only connection of its own. */
import { parentPort, workerData } from 'node:worker_threads';
import { StreamLookup, type LookupBatch } from './stream-lookup';

const lookup = new StreamLookup((workerData as { dbPath: string }).dbPath, true);
const port = parentPort!;
port.on('message', (b: LookupBatch) => {
  const bytes = lookup.answer(b.ids, b.tokens);
  // A small Buffer is a view of Node's shared pool: transferring that would
  // take the pool from under every other Buffer of this thread, so it is copied.
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : Uint8Array.prototype.slice.call(bytes);
  port.postMessage({ seq: b.seq, bytes: own }, [own.buffer as ArrayBuffer]);
});
