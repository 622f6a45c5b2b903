// libsync's JavaScript client: everything is in libsync.js, one file a page can serve as it is.
export {
  SyncClient, connect, backoffDelay, resumeUrl, SUBPROTOCOL, REFUSED_CLOSE_CODES, CLOSE_RESYNC,
  CLOSE_PROBE,
  applyPatch, parsePointer, PatchError,
} from './libsync.js';
