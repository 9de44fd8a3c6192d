import { removeAllPostgres, startPostgres, type PostgresCluster } from './postgres';

/**
 * One PostgreSQL cluster for a test file, and a fresh database in it for each
 * test server, so that tests running at once never see each other's
 * sessions. Started on first use; stopped with the worker (test.after.always).
 */
export function databasesForTests(test: { after: { always(fn: () => Promise<void>): void } }): () => Promise<string> {
  let cluster: Promise<PostgresCluster> | undefined;
  let n = 0;
  test.after.always(removeAllPostgres);
  // Every test server of the file may be open at once, each with its pool (sized down by the caller).
  const start = () => (cluster ??= startPostgres({ name: 'e2e', fsync: false, settings: { max_connections: 500 } }));
  return async () => {
    const c = await start();
    const db = `t${++n}`;
    await c.admin((sql) => sql.unsafe(`CREATE DATABASE ${db} OWNER sessiond`));
    return c.url(db);
  };
}
