/*
 * Protobuf varints for the hand-written codecs (session-wire.ts on the server,
 * client/validator-wire.ts), for non-negative safe integers only: each
 * caller checks that before it takes its fast path. Division rather than bit
 * shifts, since JavaScript's shifts cut numbers to 32 bits.
 */

export function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes n at pos; returns the position after it. */
export function writeVarint(buf: Buffer, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n % 128) | 128;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}
