/**
 * A real local mesh for the browser tests: nats-server from `nats/local.conf`,
 * `tickmesh-ingest` and `tickmesh-edge` as child processes on free loopback ports.
 *
 * Binaries: `$TICKMESH_BIN_DIR` (default `target/debug`, built with
 * `cargo build -p tickmesh-ingest -p tickmesh-edge`) and `$TICKMESH_NATS_SERVER`
 * (default `.tools/venv/bin/nats-server`, installed by `cargo xtask test`). The services
 * run on their built-in defaults plus `TICKMESH_*` variables, as the Rust test kit does,
 * not on the demo's config files (which may need files that only the demo creates).
 * Each process logs to `tests/artifacts/browser-<name>.log`. Every process started here is
 * killed when the mesh stops, and, failing that, when this Node process exits.
 */

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ARTIFACTS = path.join(ROOT, 'tests', 'artifacts');

const BIN_DIR = process.env.TICKMESH_BIN_DIR || path.join(ROOT, 'target', 'debug');

function natsServerBin() {
  if (process.env.TICKMESH_NATS_SERVER) return process.env.TICKMESH_NATS_SERVER;
  const local = path.join(ROOT, '.tools', 'venv', 'bin', 'nats-server');
  return fs.existsSync(local) ? local : 'nats-server';
}

/** Every child still running, killed on exit whatever happened to the tests. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of running) child.kill('SIGKILL');
    process.exit(128 + os.constants.signals[signal]);
  });
}

/** @param {number} port */
function canBind(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

const FIRST_PORT = 20000;
const PORT_COUNT = 12000;
let nextPort = (process.pid * 977) % PORT_COUNT;

/**
 * A TCP port on 127.0.0.1 that was free a moment ago.
 *
 * Taken below the kernel's ephemeral range (32768–60999), as the Rust test kit does: a
 * port the kernel hands out for `listen(0)` may be handed out again a moment later as the
 * source port of an outgoing connection (ingest dialling NATS, Chromium's own sockets),
 * and the edge then cannot bind it (seen as an edge that exits at start with
 * "Address already in use").
 */
export async function freePort() {
  for (let i = 0; i < PORT_COUNT; i++) {
    const port = FIRST_PORT + (nextPort++ % PORT_COUNT);
    if (await canBind(port)) return port;
  }
  throw new Error(`no free loopback port in ${FIRST_PORT}..${FIRST_PORT + PORT_COUNT}`);
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A child process whose output goes to a log file; `exited` settles when it ends.
 * @param {string} name @param {string} bin @param {string[]} args @param {Record<string, string>} env
 */
function launch(name, bin, args, env) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const logPath = path.join(ARTIFACTS, `browser-${name}.log`);
  const log = fs.openSync(logPath, 'a');
  fs.writeSync(log, `\n=== ${new Date().toISOString()} ${bin} ${args.join(' ')}\n`);
  const child = spawn(bin, args, {
    cwd: ROOT,
    // RUST_LIB_BACKTRACE=0: an error that ends a process is its last lines, not a
    // backtrace that pushes it out of the tail shown in failure messages.
    env: { ...process.env, NO_COLOR: '1', RUST_LIB_BACKTRACE: '0', ...env },
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  running.add(child);
  /** @type {{code: number | null, signal: string | null} | null} */
  let status = null;
  const exited = new Promise((resolve) => {
    child.once('error', (err) => {
      status = { code: null, signal: String(err.message) };
      running.delete(child);
      resolve(status);
    });
    child.once('exit', (code, signal) => {
      status = { code, signal };
      running.delete(child);
      resolve(status);
    });
  });
  return {
    name,
    child,
    logPath,
    exited,
    get status() {
      return status;
    },
    /**
     * The last lines of its log, for failure messages; a panic's message first when a
     * backtrace pushed it out of those lines.
     */
    tail(lines = 15) {
      const text = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n');
      const last = text.slice(-lines);
      const panic = text.findLastIndex((l) => l.includes('panicked at'));
      if (panic >= 0 && panic < text.length - lines) last.unshift(...text.slice(panic, panic + 3), '[…]');
      return last.join('\n');
    },
  };
}

/** @typedef {ReturnType<typeof launch>} Proc */

/**
 * Polls `check` until it returns a truthy value; fails with `what` (and the logs of
 * `procs` if one of them died) once `timeoutMs` has passed.
 * @template T
 * @param {string} what @param {() => Promise<T> | T} check @param {number} timeoutMs
 * @param {Proc[]} [procs]
 * @returns {Promise<T>}
 */
export async function waitFor(what, check, timeoutMs, procs = []) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const p of procs) {
      if (p.status) throw new Error(`${p.name} exited (${JSON.stringify(p.status)}) while waiting for ${what}:\n${p.tail()}`);
    }
    let value;
    try {
      value = await check();
    } catch {
      value = undefined;
    }
    if (value) return value;
    if (Date.now() > deadline) {
      const logs = procs.map((p) => `--- ${p.name} (${p.logPath})\n${p.tail()}`).join('\n');
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${logs}`);
    }
    await sleep(50);
  }
}

/** @param {string} url */
async function httpStatus(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.status;
}

/** @param {Proc} proc @param {NodeJS.Signals} signal @param {number} graceMs */
async function stopProc(proc, signal, graceMs) {
  if (proc.status) return proc.status;
  proc.child.kill(signal);
  const timer = sleep(graceMs).then(() => null);
  if ((await Promise.race([proc.exited, timer])) === null) proc.child.kill('SIGKILL');
  return proc.exited;
}

/**
 * Starts nats-server, ingest and one edge; resolves once the edge answers `/readyz`.
 * `edgeEnv`: more `TICKMESH_EDGE_*` variables for every edge started (an HS256 secret, say).
 * @param {{ticksPerSec?: number, edgeEnv?: Record<string, string>}} [options]
 */
export async function startMesh({ ticksPerSec = 2000, edgeEnv = {} } = {}) {
  for (const bin of ['tickmesh-ingest', 'tickmesh-edge']) {
    if (!fs.existsSync(path.join(BIN_DIR, bin))) {
      throw new Error(`${path.join(BIN_DIR, bin)} is missing: run \`cargo build -p tickmesh-ingest -p tickmesh-edge\` (or set TICKMESH_BIN_DIR)`);
    }
  }
  const store = fs.mkdtempSync(path.join(os.tmpdir(), 'tickmesh-browser-js-'));
  const natsPort = await freePort();
  const natsHttpPort = await freePort();
  const edgePort = await freePort();
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  /** @type {Proc[]} */
  const procs = [];
  let edgeCount = 0;
  /** @type {Proc | null} */
  let edge = null;
  /** @type {Proc | null} */
  let nats = null;
  /** @type {Proc | null} */
  let ingest = null;

  const mesh = {
    natsUrl,
    edgePort,
    httpUrl: `http://127.0.0.1:${edgePort}`,
    wsUrl: `ws://127.0.0.1:${edgePort}/v1/stream`,
    /** Name of the edge now running (each start gets a new one). */
    edgeName: '',

    /** The processes that should be running, for `waitFor` to fail fast when one dies. */
    procs() {
      return /** @type {Proc[]} */ ([nats, ingest, edge].filter(Boolean));
    },

    /** Starts an edge on the mesh's port; resolves when it is ready. */
    async startEdge() {
      if (edge && !edge.status) throw new Error('an edge is already running');
      edgeCount++;
      mesh.edgeName = `edge-browser-${edgeCount}`;
      edge = launch('edge', path.join(BIN_DIR, 'tickmesh-edge'), [], {
        TICKMESH_EDGE_NAME: mesh.edgeName,
        TICKMESH_EDGE_LISTEN: `127.0.0.1:${edgePort}`,
        TICKMESH_EDGE_NATS__URLS: JSON.stringify([natsUrl]),
        TICKMESH_EDGE_SHUTDOWN__RECONNECT_WINDOW_MS: '300',
        TICKMESH_EDGE_SHUTDOWN__GRACE_MS: '2000',
        // The page connects without a token: anonymous access to every symbol at every
        // tick, which the edge refuses unless asked for by name.
        TICKMESH_EDGE_AUTH__ANONYMOUS: 'true',
        TICKMESH_EDGE_AUTH__ALLOW_OPEN_ANONYMOUS: 'true',
        TICKMESH_EDGE_AUTH__ANONYMOUS_ENT: '["*"]',
        TICKMESH_EDGE_AUTH__ANONYMOUS_TIER: 'realtime',
        ...edgeEnv,
      });
      procs.push(edge);
      await waitFor(`${mesh.edgeName} /readyz`, async () => (await httpStatus(`${mesh.httpUrl}/readyz`)) === 200, 15000, [edge]);
      return edge;
    },

    /**
     * Stops the running edge: SIGKILL (no notice to clients) or SIGTERM (drain: clients are
     * told to reconnect); resolves when the process has exited.
     * @param {'SIGKILL' | 'SIGTERM'} signal
     */
    async stopEdge(signal) {
      if (!edge) return null;
      const status = await stopProc(edge, signal, 5000);
      edge = null;
      return status;
    },

    /**
     * Starts an ingest (the simulator) publishing into the mesh, with `env` on top (config
     * keys as `TICKMESH_INGEST_...` variables).
     * @param {Record<string, string>} [env]
     */
    startIngest(env = {}) {
      if (ingest && !ingest.status) throw new Error('an ingest is already running');
      ingest = launch('ingest', path.join(BIN_DIR, 'tickmesh-ingest'), [], {
        TICKMESH_INGEST_NATS__URLS: JSON.stringify([natsUrl]),
        TICKMESH_INGEST_SIM__TICKS_PER_SEC: String(ticksPerSec),
        ...env,
      });
      procs.push(ingest);
      return ingest;
    },

    /** Stops the running ingest (SIGTERM: it releases the feed); resolves when it exited. */
    async stopIngest() {
      if (!ingest) return null;
      const status = await stopProc(ingest, 'SIGTERM', 5000);
      ingest = null;
      return status;
    },

    /**
     * Appends `count` events to `account`, one every `everyMs`, as its single writer does
     * (`tickmesh-test-account-writer`, built with the tests crate: it creates the stream
     * `acct` and the bucket `acct_snap`, and goes on from the account's last seq). Returns
     * the process: `exited` settles when it is done; the mesh stops it if it is not.
     * @param {{account: string, count: number, everyMs: number}} args
     */
    accountWriter({ account, count, everyMs }) {
      const bin = path.join(BIN_DIR, 'tickmesh-test-account-writer');
      if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`cargo build -p tickmesh-tests --bins\` (or set TICKMESH_BIN_DIR)`);
      const args = ['--url', natsUrl, '--account', account, '--count', String(count), '--every-ms', String(everyMs)];
      const writer = launch('account-writer', bin, args, {});
      procs.push(writer);
      return writer;
    },

    /** The running edge's Prometheus text. */
    async metrics() {
      const res = await fetch(`${mesh.httpUrl}/metrics`, { signal: AbortSignal.timeout(2000) });
      return res.text();
    },

    /** Stops everything, newest first (nats-server last, so the others drain into it). */
    async stop() {
      for (const p of procs.slice().reverse()) await stopProc(p, 'SIGTERM', 3000);
      fs.rmSync(store, { recursive: true, force: true });
    },
  };

  try {
    nats = launch('nats', natsServerBin(), ['-c', 'nats/local.conf'], {
      TICKMESH_NATS_PORT: String(natsPort),
      TICKMESH_NATS_HTTP_PORT: String(natsHttpPort),
      TICKMESH_NATS_STORE: store,
    });
    procs.push(nats);
    await waitFor(
      'nats-server /healthz',
      async () => (await httpStatus(`http://127.0.0.1:${natsHttpPort}/healthz`)) === 200,
      15000,
      [nats],
    );
    mesh.startIngest();
    await mesh.startEdge();
  } catch (err) {
    await mesh.stop();
    throw err;
  }
  return mesh;
}
