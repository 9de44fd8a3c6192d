import type { Server } from '@grpc/grpc-js';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { ReflectionService } from '@grpc/reflection';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Server reflection fed with the FileDescriptorSet that `buf build` writes
 * (descriptors/sessiond.binpb, imports included). proto-loader's package
 * definitions lose imported files such as google/protobuf/timestamp.proto,
 * and grpcurl then cannot resolve the messages; the buf image has them all.
 */
export const DESCRIPTOR_SET_FILE = 'sessiond.binpb';

export function descriptorSetPath(): string {
  // src/transport under tsx, dist/src/transport when compiled: both reach descriptors/.
  for (const up of ['../..', '../../..']) {
    const candidate = join(__dirname, up, 'descriptors', DESCRIPTOR_SET_FILE);
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`descriptors/${DESCRIPTOR_SET_FILE} not found: run make generate`);
}

/** Splits a serialized FileDescriptorSet into its serialized FileDescriptorProtos (field 1). */
export function splitDescriptorSet(bytes: Uint8Array): Uint8Array[] {
  const reader = new BinaryReader(bytes);
  const files: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) files.push(reader.bytes());
    else reader.skip(wireType);
  }
  return files;
}

export function addReflection(server: Server, descriptorSet: Uint8Array = readFileSync(descriptorSetPath())): void {
  const fileDescriptorProtos = splitDescriptorSet(descriptorSet).map((b) => Buffer.from(b));
  // ReflectionService indexes every `fileDescriptorProtos` array it finds in
  // the package-definition object; this one entry carries the whole image.
  const definition = { image: { fileDescriptorProtos } };
  new ReflectionService(definition as unknown as ConstructorParameters<typeof ReflectionService>[0]).addToServer(server);
}
