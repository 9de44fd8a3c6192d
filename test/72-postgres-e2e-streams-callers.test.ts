import test from 'ava';
import { databasesForTests } from './helpers/postgres-databases';
import { serveTestServersFromPostgres } from './helpers/server';

/* As 71-postgres-e2e: the streaming, idempotency and caller suites on PostgreSQL. */

const newDatabase = databasesForTests(test);
serveTestServersFromPostgres(newDatabase, { SESSIOND_DATABASE_POOL_SIZE: '3' });

require('./15-idempotency-stream.test');
require('./16-validate-stream-batches.test');
require('./16-validate-stream-client.test');
require('./24-callers.test');
require('./26-request-id-replays.test');
require('./38-session-events.test');
