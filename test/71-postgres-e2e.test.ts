import test from 'ava';
import { databasesForTests } from './helpers/postgres-databases';
import { serveTestServersFromPostgres } from './helpers/server';

/*
 * The end-to-end suites of the SQLite backend, unchanged, against PostgreSQL:
 * every test server of this file stores its sessions in a database of its
 * own on a real cluster that this file starts. Same semantics, no
 * exceptions: the tests below are the SQLite ones, required here.
 */

const newDatabase = databasesForTests(test);
serveTestServersFromPostgres(newDatabase, { SESSIOND_DATABASE_POOL_SIZE: '3' });

require('./10-sessions-e2e.test');
require('./10-sessions-invalid-argument.test');
require('./10-sessions-not-found-precondition.test');
require('./11-expiry.test');
require('./12-pagination.test');
require('./13-rotation-etag.test');
require('./27-session-limits.test');
require('./28-list-bounds.test');
