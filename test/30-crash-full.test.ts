import { crashTest } from './helpers/crash-test';

/* The crash test of 30-crash.test.ts under synchronous=FULL. */
crashTest('full');
