import { serve } from './server/serve';

/** The server entry point (`node --import tsx src/main.ts`, `make run`); the CLI's `sessiond serve` runs the same. */
void serve(process.argv.slice(2), process.env);
