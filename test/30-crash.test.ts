import { crashTest } from './helpers/crash-test';

/*
 * SIGKILL during writes under synchronous=NORMAL loses nothing acknowledged.
 * The workload and its checks are in helpers/crash-workload.ts; `make soak`
 * runs the same code for longer.
 */
crashTest('normal');
