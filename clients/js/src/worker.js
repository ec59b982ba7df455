// @ts-check
/**
 * The SharedWorker that holds the connection for every tab of an origin: each tab's
 * `SharedClient` connects a port to it (`servePort`); tabs with the same stream URL,
 * encoding and token share one `Hub`, that is one WebSocket.
 *
 * @module tickmesh/worker
 */

import { servePort } from './hub.js';

/** @type {Map<string, import('./hub.js').Hub>} */
const hubs = new Map();
const scope = /** @type {any} */ (globalThis);
const env = { locks: scope.navigator?.locks };

scope.addEventListener?.('connect', (/** @type {MessageEvent} */ ev) => servePort(ev.ports[0], hubs, env));
