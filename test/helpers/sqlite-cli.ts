import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';

/** The sqlite3 command-line shell (CI installs it; /usr/bin/sqlite3 on Debian and Ubuntu). */
export const SQLITE3 = ['/usr/bin/sqlite3', 'sqlite3'].find((bin) => spawnSync(bin, ['-version']).status === 0);

/**
 * The sqlite3 shell as a separate process on a database file, fed statements
 * through its stdin, which stays open between them: another process holding
 * locks on the file, as an operator's shell or a backup job would.
 */
export class SqliteShell {
  private out = '';
  private readonly exited: Promise<number | null>;

  private constructor(private readonly proc: ChildProcessWithoutNullStreams) {
    proc.stdout.on('data', (c: Buffer) => (this.out += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (this.out += c.toString()));
    proc.stdin.on('error', () => undefined); // the shell may be gone already
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  }

  static open(dbPath: string): SqliteShell {
    if (!SQLITE3) throw new Error('the sqlite3 shell is not installed (apt-get install sqlite3)');
    const shell = new SqliteShell(spawn(SQLITE3, [dbPath]));
    // The shell's own wait for locks the server may hold for a moment.
    shell.proc.stdin.write('.timeout 5000\n');
    return shell;
  }

  /** Runs `sql` and resolves once the shell has printed `marker` after it (so the statements have run). */
  async run(sql: string, timeoutMs = 10_000): Promise<string> {
    const marker = `done-${Math.random().toString(36).slice(2)}`;
    const from = this.out.length;
    this.proc.stdin.write(`${sql}\nSELECT '${marker}';\n`);
    const deadline = Date.now() + timeoutMs;
    while (!this.out.slice(from).includes(marker)) {
      if (Date.now() > deadline) throw new Error(`sqlite3 did not finish ${JSON.stringify(sql)}: ${this.out.slice(from)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const printed = this.out.slice(from, this.out.indexOf(marker, from));
    if (/error/i.test(printed)) throw new Error(`sqlite3 failed on ${JSON.stringify(sql)}: ${printed}`);
    return printed;
  }

  /** Takes the write lock (BEGIN IMMEDIATE plus a write) and keeps it until commit() or quit(). */
  async holdWriteLock(): Promise<void> {
    await this.run("BEGIN IMMEDIATE; INSERT INTO meta (key, value) VALUES ('sqlite3-shell', 'held') ON CONFLICT (key) DO UPDATE SET value = excluded.value;");
  }

  /** Opens a read transaction and reads, so that the snapshot stays pinned until commit() or quit(). */
  async holdReadSnapshot(): Promise<void> {
    await this.run('BEGIN; SELECT count(*) FROM sessions;');
  }

  async commit(): Promise<void> {
    await this.run('COMMIT;');
  }

  /** Ends the shell (an open transaction is rolled back) and resolves with its exit code. */
  quit(): Promise<number | null> {
    if (!this.proc.stdin.writableEnded) this.proc.stdin.end('.quit\n');
    return this.exited;
  }

  /** Everything the shell printed (errors included). */
  output(): string {
    return this.out;
  }
}
