// @ts-check
/**
 * The TickMesh client for browsers and Node: `createClient` (one connection for all the
 * tabs of an origin, in a SharedWorker, where the browser has one), `TickMeshClient` (a
 * connection of its own) and `SharedClient` (a tab of a shared connection).
 *
 * Modules: `tickmesh.js` the connection (WebSocket, reconnects, seq, epoch and gap checks),
 * `msgpack.js` its codec; `ledger.js` what a client holds and passed on (the replay list
 * and the per-symbol guarantees), `api.js` and `events.js` the methods and events both
 * clients offer; `shared.js` a tab's side of a shared connection, which talks over a
 * MessagePort to `worker.js`, the SharedWorker, where a `Hub` (`hub.js`) holds the
 * connection for the tabs: `holders.js` counts what they hold, `replay.js` keeps what a
 * joining tab is owed, `pace.js` gives each tab its own interval.
 *
 * @module tickmesh
 */

export * from './tickmesh.js';
export { SharedClient, createClient } from './shared.js';
