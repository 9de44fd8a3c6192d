import type { Server } from '@grpc/grpc-js';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import { ReflectionService } from '@grpc/reflection';
import { readFileSync } from 'node:fs';
import { descriptorSetPath } from '../shared/descriptors';

/**
 * Server reflection fed with the descriptor set `buf build` writes
 * (shared/descriptors.ts): grpcurl and buf curl resolve every message,
 * imported ones included, from it.
 */
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
