/*
 * Preloaded into a server process by the handler-fault test
 * (`node --import tsx --import ./test/helpers/fault-injector.ts src/main.ts`):
 * on SIGUSR2 it makes the process fail the way a bug would, so that the
 * process-level safety nets in src/server/serve.ts are tested for real.
 * TEST_FAULT_INJECTION picks the fault: "rejection" (a promise rejected with
 * no handler) or "exception" (a throw from a callback, uncaught).
 */
const fault = process.env['TEST_FAULT_INJECTION'];

process.on('SIGUSR2', () => {
  if (fault === 'rejection') {
    void Promise.reject(new Error('injected: a promise that nobody handles'));
  } else if (fault === 'exception') {
    setImmediate(() => {
      throw new Error('injected: a throw from a callback');
    });
  }
});
