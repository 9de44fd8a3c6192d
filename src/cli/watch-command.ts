import type { Command } from 'commander';
import { SessionEvent, SessionEventType } from '../../generated/sessions/v1/session_service';
import { withGlobalOptions } from './connect';
import { toProtoJson } from './proto-json';
import { clientAction, UsageError } from './run';

/** A non-negative integer option value. */
function parseSequence(text: string): number {
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(Number(text))) throw new UsageError(`--after ${JSON.stringify(text)} is not a sequence (a whole number)`);
  return Number(text);
}

function line(e: SessionEvent): string {
  const type = SessionEventType[e.type]?.replace('SESSION_EVENT_TYPE_', '') ?? String(e.type);
  return [String(e.sequence), type, e.sessionId || '-', e.serverId || '-', e.subject || '-', e.time?.toISOString() ?? '-', e.cause || '-'].join('\t');
}

/** `sessiond sessions watch`: WatchSessionEvents, one line per event, resumed by itself after a disconnect. */
export function addWatchCommand(sessions: Command): void {
  withGlobalOptions(sessions.command('watch'))
    .description('print session events as they commit (one line each; --json: one proto JSON object per line), resuming by itself after a disconnect')
    .option('--subject <subject>', 'only events of this subject', '')
    .option('--server-id <id>', 'only events of sessions owned by this server', '')
    .option('--after <sequence>', 'start after this sequence (a ListSessions sequence, or the last one handled); default: from now on')
    .option('--until-now', 'stop once every event committed when the command started has been considered')
    .action(
      clientAction<{ subject: string; serverId: string; after?: string; untilNow?: boolean }>(async ({ client, options }) => {
        const afterSequence = options.after === undefined ? undefined : parseSequence(options.after);
        let head: number | undefined;
        if (options.untilNow) {
          // A watch from now starts at the head, and says so in its first header.
          const probe = client.watch({ serverId: options.serverId, subject: options.subject });
          try {
            head = await probe.started();
          } finally {
            probe.close();
          }
          if (afterSequence === undefined || afterSequence >= head) return;
        }
        const watcher = client.watch({ serverId: options.serverId, subject: options.subject, afterSequence, progressEvents: head !== undefined });
        const stop = () => watcher.close();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        try {
          for await (const e of watcher) {
            if (head !== undefined && e.sequence > head) break;
            if (e.type !== SessionEventType.SESSION_EVENT_TYPE_PROGRESS) {
              process.stdout.write(`${options.json ? JSON.stringify(toProtoJson('sessions.v1.SessionEvent', SessionEvent, e)) : line(e)}\n`);
            }
            if (head !== undefined && e.sequence >= head) break;
          }
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
      }),
    );
}
