import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { apiKeySha256 } from '../shared/api-keys';
import { principal, type PrincipalEntry } from '../domain/principals';
import type { Logger } from './log';
import type { Metrics } from './metrics/metrics';
import { readPrincipalsFile } from './principals-file';
import type { Callers } from '../transport/callers';

/** How often the file's metadata is compared: a Kubernetes Secret update lands within a minute or so anyway. */
const WATCH_INTERVAL_MS = 1000;

export interface PrincipalsSettings {
  readonly principalsFile: string | undefined;
  readonly adminToken: string | undefined;
}

/**
 * Where the principals in force come from: the file, plus the admin token as
 * one admin principal. Reloaded on SIGHUP and when the file changes. A
 * Kubernetes Secret volume swaps a symlink to a new folder instead of writing
 * the file, so the file is watched by stat (fs.watchFile follows the symlink
 * and sees a new inode), not by inotify on the old inode. A reload that fails
 * keeps the principals in force, and says why in the log and a metric.
 */
export class PrincipalsSource {
  private watching = false;

  constructor(
    private readonly settings: PrincipalsSettings,
    private readonly callers: Callers,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    /** Called after a reload put a new set in force (open streams check their callers again). */
    private readonly onReload: () => void = () => undefined,
  ) {}

  /**
   * Loads the principals into the callers.
   * @throws Error listing the file's problems (at start-up nothing is in force to fall back on).
   */
  start(): void {
    const loaded = this.read();
    if ('problems' in loaded) throw new Error(`cannot use the principals file ${this.settings.principalsFile}:\n${loaded.problems.map((p) => `  - ${p}`).join('\n')}`);
    this.apply(loaded.entries, false);
    if (this.settings.principalsFile && !this.watching) {
      watchFile(this.settings.principalsFile, { interval: WATCH_INTERVAL_MS, persistent: false }, this.onChange);
      this.watching = true;
    }
  }

  /** Reads the file again; on any problem the principals in force stay. @returns whether the new set is in force. */
  reload(reason: string): boolean {
    const loaded = this.read();
    if ('problems' in loaded) {
      this.metrics.principals(undefined, true);
      this.log.error('principals reload failed; the previous principals stay in force', { reason, file: this.settings.principalsFile, problems: loaded.problems });
      return false;
    }
    this.apply(loaded.entries, true);
    this.log.info('principals reloaded', { reason, principals: loaded.entries.map((e) => e.principal.name) });
    this.onReload();
    return true;
  }

  stop(): void {
    if (this.watching && this.settings.principalsFile) unwatchFile(this.settings.principalsFile, this.onChange);
    this.watching = false;
  }

  private readonly onChange = (now: Stats, before: Stats) => {
    if (now.ino === before.ino && now.mtimeMs === before.mtimeMs && now.size === before.size && now.ctimeMs === before.ctimeMs) return;
    this.reload(now.nlink === 0 && now.ino === 0 ? 'file removed' : 'file changed');
  };

  private read(): { entries: PrincipalEntry[] } | { problems: string[] } {
    const entries: PrincipalEntry[] = [];
    if (this.settings.principalsFile) {
      const file = readPrincipalsFile(this.settings.principalsFile);
      if (file.problems.length > 0) return { problems: file.problems };
      entries.push(...file.entries);
    }
    if (this.settings.adminToken) {
      entries.push({ principal: principal('admin-token', ['admin'], ['*']), apiKeySha256: [apiKeySha256(this.settings.adminToken)], tlsIdentities: [] });
    }
    return { entries };
  }

  private apply(entries: PrincipalEntry[], reload: boolean): void {
    this.callers.use(entries);
    this.metrics.principals(entries.length, reload);
  }
}
