// libsync's JavaScript client: ESM, no dependencies, browsers and Node >= 18.
export {
  SyncClient, connect, backoffDelay, resumeUrl, SUBPROTOCOL, REFUSED_CLOSE_CODES, CLOSE_RESYNC,
} from './client.js';
export { applyPatch, parsePointer, PatchError } from './patch.js';
