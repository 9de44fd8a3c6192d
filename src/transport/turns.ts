/**
 * Runs queued work a slice per event-loop turn, in the order it was queued,
 * instead of inside the socket read callback that brought it.
 *
 * Node's HTTP/2 layer sends what a stream wrote only in the check phase after
 * the poll phase (Http2Session::MaybeScheduleWrite schedules SendPendingData
 * as a native immediate), and libuv's poll phase runs the read callback of
 * every socket that is ready. Work done inside those callbacks therefore
 * finishes for every connection before the first answer leaves: the clients
 * wait for the slowest, then the server waits while they all work through
 * their answers at once, and each side sits idle half the time. A slice per
 * turn lets one slice's answers leave while the next slice is worked on.
 */
export class Turns {
  // A queue read from `head`, compacted now and then: shift() would copy the
  // array once it is too large for V8 to trim it in place (thousands of
  // streams, each with a few turns' worth waiting).
  private tasks: ({ weight: number; run: () => void } | undefined)[] = [];
  private head = 0;
  private scheduled = false;
  private readonly runSlice = () => {
    let spent = 0;
    try {
      do {
        const task = this.tasks[this.head]!;
        this.tasks[this.head++] = undefined;
        spent += task.weight;
        task.run();
      } while (this.head < this.tasks.length && spent + this.tasks[this.head]!.weight <= this.sliceWeight);
    } finally {
      if (this.head === this.tasks.length) {
        this.tasks = [];
        this.head = 0;
      } else if (this.head >= 1024 && this.head * 2 >= this.tasks.length) {
        this.tasks = this.tasks.slice(this.head);
        this.head = 0;
      }
      // Even after a task threw, the tasks behind it still get their turn.
      // An immediate set from inside one runs in the next turn, after a poll phase.
      if (this.head < this.tasks.length) setImmediate(this.runSlice);
      else this.scheduled = false;
    }
  };

  /**
   * @param sliceWeight how much work one turn takes on: a task heavier than
   * this still runs, alone in its turn.
   */
  constructor(private readonly sliceWeight: number) {}

  /** Queues `run`. A task that throws ends its slice, as an exception in any callback would; the next slice still runs. */
  push(weight: number, run: () => void): void {
    this.tasks.push({ weight, run });
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.runSlice);
  }

  get size(): number {
    return this.tasks.length - this.head;
  }
}
