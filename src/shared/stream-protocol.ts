/*
 * What the server and the TypeScript client of the streams agree on
 * beyond the proto: kept apart so that the client does not load the server.
 */

/** Response header by which the server says it reads batches, and how many items a message may carry. */
export const BATCH_MAX_HEADER = 'x-sessiond-validate-batch-max';

/**
 * Items per request message. Enough that a message's fixed cost (an HTTP/2
 * frame, a write, an event on both sides) is noise; few enough that one
 * message cannot hold the event loop for long (each item is a SHA-256 and an
 * index lookup, a few microseconds).
 */
export const MAX_BATCH_ITEMS = 1000;

/**
 * WatchSessionEvents response header: the sequence the watch starts after.
 * A consumer that opened it without after_sequence resumes from there if the
 * stream breaks before its first event.
 */
export const WATCH_START_HEADER = 'x-sessiond-watch-start';
