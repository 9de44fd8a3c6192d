// The client library's public surface: what a TypeScript backend imports.
export {
  SessiondClient, StreamValidator, ServingStatus, tlsCredentials,
  type ClientOptions, type PerCall, type Session, type ServiceError, type StreamAnswer, type TlsFiles, type ValidateOptions,
} from './client';
export { SESSION_ID_PATTERN } from '../shared/ids';
