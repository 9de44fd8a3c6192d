import test from 'ava';
import { DEFAULT_POSTGRES_OPTIONS } from '../src/storage/options';
import { PostgresStorage } from '../src/storage/postgres/postgres-storage';
import { eventLogContract } from './helpers/event-log-contract';
import { databasesForTests } from './helpers/postgres-databases';
import { repositoryContract } from './helpers/repository-contract';

/*
 * The one SessionRepository contract suite, unchanged, on PostgreSQL: each
 * test gets a fresh database in a real cluster this file starts. No skip:
 * without PostgreSQL these fail.
 */

const newDatabase = databasesForTests(test);

async function openPostgres(sessionEvents = true) {
  const storage = await PostgresStorage.open({ ...DEFAULT_POSTGRES_OPTIONS, poolSize: 3, sessionEvents, url: await newDatabase() });
  return { repo: storage.repository, close: () => storage.close() };
}

repositoryContract('postgres', () => openPostgres());
eventLogContract('postgres', openPostgres);
