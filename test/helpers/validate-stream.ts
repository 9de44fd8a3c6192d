import { type ExecutionContext } from 'ava';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { SessionServiceClient, type ValidateSessionStreamAnswer, type ValidateSessionStreamItem, ValidateSessionStreamRequest, ValidateSessionStreamResponse } from '../../generated/sessions/v1/session_service';
import { startTestServer, type TestServer } from './server';

export const S = '/sessions.v1.SessionService/';

export interface StreamResult {
  responses: ValidateSessionStreamResponse[];
  headers: Metadata | undefined;
  error: ServiceError | undefined;
}

/** Writes `messages` on one stream through the generated client, half-closes, and collects everything. */
export async function exchange(address: string, messages: Partial<ValidateSessionStreamRequest>[]): Promise<StreamResult> {
  const raw = new SessionServiceClient(address, credentials.createInsecure());
  try {
    const call = raw.validateSessionStream(new Metadata());
    const out: StreamResult = { responses: [], headers: undefined, error: undefined };
    const done = new Promise<void>((resolve) => {
      call.on('metadata', (md: Metadata) => (out.headers = md));
      call.on('data', (r: ValidateSessionStreamResponse) => out.responses.push(r));
      call.on('error', (err: ServiceError) => {
        out.error = err;
        resolve();
      });
      call.on('end', resolve);
    });
    for (const m of messages) call.write({ correlationId: 0, token: '', touch: false, items: [], ...m });
    call.end();
    await done;
    return out;
  } finally {
    raw.close();
  }
}

export const item = (correlationId: number, token: string, touch = false): ValidateSessionStreamItem => ({ correlationId, token, touch });

/** Every batched answer, by correlation id; fails on an id answered twice. */
export function answersById(t: ExecutionContext, responses: ValidateSessionStreamResponse[]): Map<number, ValidateSessionStreamAnswer> {
  const byId = new Map<number, ValidateSessionStreamAnswer>();
  for (const r of responses) {
    for (const a of r.answers) {
      t.false(byId.has(a.correlationId), `correlation id ${a.correlationId} answered twice`);
      byId.set(a.correlationId, a);
    }
  }
  return byId;
}

export async function server(t: ExecutionContext, env: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ env });
  t.teardown(() => s.close());
  return s;
}
