// The client library's public surface: what a TypeScript backend imports.
export {
  SessiondClient, StreamValidator, EventWatcher, ServingStatus, tlsCredentials,
  type ClientOptions, type PerCall, type Session, type ServiceError, type StreamAnswer, type TlsFiles, type ValidateOptions, type WatchOptions,
} from './client';
export { SessionEventType, type SessionEvent } from '../../generated/sessions/v1/session_service';
export { SESSION_ID_PATTERN } from '../shared/ids';
