import test from 'ava';
import { MAX_WAIT_MS, WalPressure } from '../src/storage/sqlite/wal-pressure';

/** A WAL index and a clock the test moves by hand. */
function rig(limit = 100) {
  const state = { frames: 0, backfilled: 0, now: 0, running: true };
  const p = new WalPressure(limit, () => ({ frames: state.frames, backfilled: state.backfilled }), () => state.running, () => state.now);
  return { state, p };
}

test('no wait while the checkpointer keeps up', (t) => {
  const { state, p } = rig();
  state.frames = 100;
  t.false(p.shouldWait(), 'a lag at the limit is fine');
});

test('past the limit a write waits until every frame is copied back, then goes (and rewinds the WAL)', (t) => {
  const { state, p } = rig();
  state.frames = 500;
  state.backfilled = 100;
  t.true(p.shouldWait());
  state.now += 50;
  state.backfilled = 450;
  t.true(p.shouldWait(), 'under the limit is not enough once waiting: only a full copy lets the log rewind');
  state.backfilled = 500;
  t.false(p.shouldWait());
});

test('a wait is bounded, and a wait without progress (a pinned reader) stops further waits until the checkpointer moves', (t) => {
  const { state, p } = rig();
  state.frames = 500;
  state.backfilled = 10;
  t.true(p.shouldWait());
  state.now += MAX_WAIT_MS;
  t.false(p.shouldWait(), 'gives up after MAX_WAIT_MS');
  state.frames = 900;
  state.now += 1;
  t.false(p.shouldWait(), 'stuck: writes go on unhindered');
  state.backfilled = 20;
  t.true(p.shouldWait(), 'progress again: waiting helps again');
});

test('a bounded wait that saw progress waits again at the next batch', (t) => {
  const { state, p } = rig();
  state.frames = 5000;
  state.backfilled = 0;
  t.true(p.shouldWait());
  state.backfilled = 3000;
  state.now += MAX_WAIT_MS;
  t.false(p.shouldWait(), 'one batch goes after the bound');
  state.frames = 5200;
  t.true(p.shouldWait(), 'not stuck, so the next batch waits for the checkpointer again');
});

test('never waits without a running checkpointer', (t) => {
  const { state, p } = rig();
  state.frames = 10_000;
  state.running = false;
  t.false(p.shouldWait());
});
