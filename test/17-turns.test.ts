/*
 * The scheduler that ValidateSessionStream validates its messages with
 * (src/transport/turns.ts): what the streaming throughput rests on is that
 * the sockets get a poll phase between two slices of work, so that one
 * slice's answers can leave, and the next requests arrive, before the next
 * slice runs.
 */
import test from 'ava';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { Turns } from '../src/transport/turns';

test('tasks run in the order queued, each once, a slice of at most the weight per turn', async (t) => {
  const turns = new Turns(16);
  const ran: string[] = [];
  const turnOf = new Map<string, number>();
  let turn = 0;
  // Counts event-loop turns: an immediate that re-arms itself runs once a turn.
  let counting = true;
  const tick = () => {
    turn++;
    if (counting) setImmediate(tick);
  };
  setImmediate(tick);
  const task = (name: string) => () => {
    ran.push(name);
    turnOf.set(name, turn);
  };
  turns.push(1, task('a1'));
  turns.push(15, task('b15'));
  turns.push(1, task('c1'));
  turns.push(40, task('d40'));
  turns.push(8, task('e8'));
  turns.push(8, task('f8'));
  const last = new Promise<void>((resolve) => {
    turns.push(1, () => {
      ran.push('g1');
      turnOf.set('g1', turn);
      // Queued from inside a slice: after everything queued before it (in
      // the same slice here, which has room for it).
      turns.push(1, () => {
        task('h1')();
        resolve();
      });
    });
  });
  await last;
  counting = false;
  t.deepEqual(ran, ['a1', 'b15', 'c1', 'd40', 'e8', 'f8', 'g1', 'h1']);
  const sameTurn = (x: string, y: string) => turnOf.get(x) === turnOf.get(y);
  t.true(sameTurn('a1', 'b15'), 'a1 and b15 fit one slice of 16');
  t.false(sameTurn('b15', 'c1'), 'c1 would make 17');
  t.false(sameTurn('c1', 'd40'), 'a task heavier than a slice runs alone');
  t.false(sameTurn('d40', 'e8'));
  t.true(sameTurn('e8', 'f8'));
  t.false(sameTurn('f8', 'g1'));
  t.is(turns.size, 0);
});

test('thousands of tasks waiting: each runs once, in order, however the queue is kept', async (t) => {
  const turns = new Turns(16);
  const ran: number[] = [];
  const N = 5000;
  const done = new Promise<void>((resolve) => {
    for (let i = 0; i < N; i++) {
      // Mostly one task a turn, and now and then several, with more queued on the way.
      turns.push(i % 7 === 0 ? 1 : 16, () => {
        ran.push(i);
        if (i === N / 2) {
          for (let j = 0; j < 10; j++) turns.push(1, () => ran.push(N + j));
          turns.push(1, resolve);
        }
      });
    }
  });
  await done;
  const expected = [...Array.from({ length: N }, (_, i) => i), ...Array.from({ length: 10 }, (_, j) => N + j)];
  t.deepEqual(ran, expected);
  t.is(turns.size, 0);
});

test('between two slices the sockets are read: what one slice wrote has arrived before the next slice runs', async (t) => {
  // Two ends of a loopback connection: a write goes to the kernel at once
  // (libuv tries the write before queueing it), so the other end is readable
  // at the very next poll phase.
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const writer = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await once(writer, 'connect');
  const [reader] = await accepted;
  t.teardown(() => {
    writer.destroy();
    reader.destroy();
    server.close();
  });
  const order: string[] = [];
  let bytesRead = 0;
  reader.on('data', (b: Buffer) => {
    bytesRead += b.length;
    order.push(`read ${b.toString()}`);
  });

  const turns = new Turns(1);
  const done = new Promise<void>((resolve) => {
    for (const name of ['a', 'b', 'c']) {
      turns.push(1, () => {
        order.push(`slice ${name}`);
        writer.write(name);
        if (name === 'c') resolve();
      });
    }
  });
  await done;
  while (bytesRead < 3) await once(reader, 'data');
  // Run in one turn, the slices would all be done before the first read.
  t.deepEqual(order, ['slice a', 'read a', 'slice b', 'read b', 'slice c', 'read c']);
});
