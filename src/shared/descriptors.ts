import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The FileDescriptorSet that `buf build` writes (descriptors/sessiond.binpb,
 * imports included): server reflection serves it, and the CLI reads it to
 * print answers as proto JSON. proto-loader's package definitions lose
 * imported files such as google/protobuf/timestamp.proto; the buf image has
 * them all.
 */
export const DESCRIPTOR_SET_FILE = 'sessiond.binpb';

export function descriptorSetPath(): string {
  // src/shared under tsx, dist/src/shared when compiled: both reach descriptors/.
  for (const up of ['../..', '../../..']) {
    const candidate = join(__dirname, up, 'descriptors', DESCRIPTOR_SET_FILE);
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`descriptors/${DESCRIPTOR_SET_FILE} not found: run make generate`);
}
