import { createFileRegistry, fromBinary, toJson, type FileRegistry, type JsonValue } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { readFileSync } from 'node:fs';
import { descriptorSetPath } from '../shared/descriptors';

/** A generated (ts-proto) message type: enough to serialize a reply. */
export interface Encoder<T> {
  encode(message: T): { finish(): Uint8Array };
}

let registry: FileRegistry | undefined;

/**
 * The canonical proto3 JSON of a reply, as grpcurl and buf curl print it
 * (Timestamps in RFC 3339, Durations as "1.5s", int64 as strings, enums by
 * name), with every field present, defaults included, so that scripts can
 * rely on each key. ts-proto's own toJSON differs (Durations as objects,
 * int64 as numbers); the descriptor set that reflection serves is the
 * reference instead.
 * @param typeName the full message name, e.g. "sessions.v1.GetSessionResponse".
 */
export function toProtoJson<T>(typeName: string, type: Encoder<T>, message: T): JsonValue {
  registry ??= createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSetPath())));
  const schema = registry.getMessage(typeName);
  if (!schema) throw new Error(`message type ${typeName} is not in the descriptor set`);
  return toJson(schema, fromBinary(schema, type.encode(message).finish()), { alwaysEmitImplicit: true });
}
