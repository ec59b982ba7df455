// Shared protocol v1 client for the k6 scenarios: one `Session` per WebSocket, which
// speaks JSON or MessagePack, tracks every subscription (mode, effective interval, last
// seq, last live update time) and checks, message by message, what docs/protocol.md
// guarantees. Violations go to custom metrics that each scenario puts thresholds on:
//
//   tickmesh_seq_regressions        a seq not above the last one seen for that symbol
//   tickmesh_tick_before_snapshot   a live tick of a newly subscribed symbol before its snapshot
//   tickmesh_conflation_violations  two live updates of a symbol closer than interval_ms - slack
//                                   (or twice in one frame)
//   tickmesh_seq_gaps               a seq step > 1 between live ticks of an every-tick
//                                   subscription, within one epoch, with no slow_consumer,
//                                   that no `gap` message owned up to
//   tickmesh_continuity_errors      a live update whose `from_seq` (its seq when absent) is
//                                   not the seq after what the session had, or after the
//                                   last `gap` told since (docs/protocol.md, Continuity)
//   tickmesh_lost_told              (no threshold) seqs `gap` messages said never reached
//                                   the edge
//   tickmesh_unrequested_updates    data for a symbol that is not subscribed (or after
//                                   `unsubscribed`)
//   tickmesh_malformed              undecodable frames, unknown types, ticks missing the
//                                   fields of their mode, nulls, unsafe integers
//   tickmesh_server_errors{code}    `error` messages nobody asked for
//   tickmesh_unexpected_closes      the server closed the session without `reconnect`
//
// Time: the receive time of a frame is the reader's timestamp (MessageEvent.timestamp, taken
// when the frame came off the socket, before it waits for the JavaScript event loop). The
// end-to-end latency is that time minus the tick's `ts` (stamped by ingest, µs since the Unix
// epoch): run k6 on the ingest host or one whose clock agrees with it.
//
// A load generator that falls behind reads frames late and then in a burst, which makes two
// updates sent interval_ms apart look closer. The frame of the earlier update left the edge
// after its freshest tick was stamped, so it was read at most `age` = (receive time - that
// tick's ts) after the edge decided to send it. Two updates count as a violation only when
// they were received less than interval_ms - (CONFLATION_SLACK_MS + age) apart: the slack
// covers the edge's own scheduling (it stamps a flush a little before it picks the values),
// the age covers k6 being late. When k6 keeps up, age is a few ms.
// tickmesh_conflation_pairs{checked:yes} counts the pairs judged with a tolerance of at most
// half the interval; {checked:no} the ones where k6 had fallen too far behind to tell.

import { check } from 'k6';
import { clearTimeout, setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/experimental/websockets';

import { bearerToken, config } from './config.js';
import { metrics } from './metrics.js';
import * as msgpack from './msgpack.js';

// Scripts import everything from here.
export {
  FAULTS, SMOKE, config, envChoice, envDuration, envInt, pickSymbols, requireReadyEdge,
} from './config.js';
export { baseThresholds, guaranteeThresholds, metrics } from './metrics.js';

// ---------------------------------------------------------------------------------------
// Checking messages.

/** Logs at most `limit` lines per VU for each kind, so a broken run stays readable. */
const logged = {};
function report(kind, text, limit = 3) {
  logged[kind] = (logged[kind] || 0) + 1;
  if (logged[kind] <= limit) console.warn(`${kind}: ${text}`);
}

const MODE_FIELDS = {
  ltp: ['symbol', 'seq', 'epoch', 'ts', 'last'],
  quote: ['symbol', 'seq', 'epoch', 'ts', 'last', 'kind', 'bid', 'ask'],
  // `depth` only when the feed has book levels for the instrument (absent fields are omitted).
  full: ['symbol', 'seq', 'epoch', 'ts', 'last', 'kind', 'bid', 'ask'],
};

/** Why a tick object breaks the contract for its mode, or null. */
function tickProblem(t, mode) {
  for (const f of MODE_FIELDS[mode] || MODE_FIELDS.quote) {
    if (t[f] === undefined) return `missing ${f}`;
  }
  for (const k of Object.keys(t)) {
    if (t[k] === null) return `${k} is null`;
  }
  for (const f of ['seq', 'epoch', 'ts']) {
    if (!Number.isSafeInteger(t[f]) || t[f] < 0) return `${f}=${t[f]} is not a safe integer`;
  }
  if (mode === 'ltp' && (t.bid !== undefined || t.depth !== undefined)) return 'ltp tick carries quote fields';
  if (mode === 'quote' && t.depth !== undefined) return 'quote tick carries depth';
  if (t.depth !== undefined && !(Array.isArray(t.depth.bids) && Array.isArray(t.depth.asks))) return 'depth without bids/asks';
  return null;
}

// ---------------------------------------------------------------------------------------
// The session.

const SUBPROTOCOL = { json: 'tickmesh.v1.json', msgpack: 'tickmesh.v1.msgpack' };

/**
 * One protocol v1 session. Callbacks (all optional): `onWelcome(session, msg)`,
 * `onSubscribed(session, reply, request)`, `onSnapshots(session, request, complete)` (once
 * per subscribe: all its new symbols have their snapshot, or SNAPSHOT_TIMEOUT_MS passed),
 * `onUnsubscribed(session, reply, request)`, `onReply(session, msg, request)`,
 * `onClose(session)`.
 */
export class Session {
  constructor(callbacks = {}) {
    this.cb = callbacks;
    this.subs = {};
    this.pending = {};
    this.nextId = 1;
    this.timers = [];
    this.welcomed = false;
    this.failed = null;
    this.closing = false;
    this.draining = false;
    this.closed = false;
    this.startedAt = Date.now();
    const token = bearerToken();
    const params = token ? { headers: { Authorization: `Bearer ${token}` } } : {};
    this.ws = new WebSocket(config.url, SUBPROTOCOL[config.encoding], params);
    this.ws.binaryType = 'arraybuffer';
    this.ws.onmessage = (e) => this.onFrame(e);
    this.ws.onerror = (e) => this.onError(e);
    this.ws.onclose = () => this.onClosed();
  }

  /** Marks the session as failed (it still runs until closed). */
  fail(reason) {
    if (this.failed === null) {
      this.failed = reason;
      report('session failed', reason);
    }
  }

  /** Runs `fn` after `ms`; every timer is cancelled when the session closes. */
  after(ms, fn) {
    const t = setTimeout(() => {
      this.timers = this.timers.filter((x) => x !== t);
      if (!this.closed) fn();
    }, ms);
    this.timers.push(t);
  }

  /** Closes the session from our side after `ms` (a planned, expected close). */
  closeAfter(ms) {
    this.after(ms, () => this.close());
  }

  close() {
    if (this.closing || this.closed) return;
    this.closing = true;
    this.ws.close();
    // A server that never answers our close must not hold the iteration forever.
    this.after(5000, () => this.onClosed());
  }

  send(msg) {
    if (this.closed || this.closing) return;
    this.ws.send(config.encoding === 'msgpack' ? msgpack.encode(msg) : JSON.stringify(msg));
  }

  request(op, fields) {
    const id = this.nextId++;
    const req = Object.assign({ op, id }, fields);
    this.pending[id] = { req, sentAt: Date.now() };
    this.send(req);
    return id;
  }

  /** Subscribes; `opts` = { mode, interval_ms }. */
  subscribe(symbols, opts = {}) {
    const fields = { symbols };
    if (opts.mode) fields.mode = opts.mode;
    if (opts.interval_ms !== undefined) fields.interval_ms = opts.interval_ms;
    return this.request('subscribe', fields);
  }

  unsubscribe(symbols) {
    const activeAtSend = this.activeSymbols();
    const id = this.request('unsubscribe', { symbols });
    if (this.pending[id]) this.pending[id].activeAtSend = activeAtSend;
    return id;
  }

  list() {
    return this.request('list', {});
  }

  ping() {
    return this.request('ping', {});
  }

  /** The symbols this session is subscribed to, as the server confirmed them. */
  activeSymbols() {
    return Object.keys(this.subs).filter((s) => this.subs[s].active).sort();
  }

  // -- incoming --------------------------------------------------------------------------

  onFrame(e) {
    const at = typeof e.timestamp === 'number' ? e.timestamp : Date.now();
    let msg;
    try {
      msg = typeof e.data === 'string' ? JSON.parse(e.data) : msgpack.decode(e.data);
    } catch (err) {
      metrics.malformed.add(1);
      report('undecodable frame', String(err));
      return;
    }
    if (msg === null || typeof msg !== 'object' || typeof msg.type !== 'string') {
      metrics.malformed.add(1);
      report('message without type', JSON.stringify(msg).slice(0, 200));
      return;
    }
    switch (msg.type) {
      case 'welcome': return this.onWelcome(msg, at);
      case 'subscribed': return this.onSubscribed(msg, at);
      case 'unsubscribed': return this.onUnsubscribed(msg);
      case 'snapshot': return this.onSnapshot(msg, at);
      case 'ticks': return this.onTicks(msg, at);
      case 'hb': return this.onHeartbeat(msg);
      case 'error': return this.onServerError(msg);
      case 'gap': return this.onGap(msg);
      case 'reconnect':
        metrics.reconnects.add(1);
        this.draining = true;
        this.reconnectAfterMs = Number.isInteger(msg.after_ms) ? msg.after_ms : 1000;
        return undefined;
      case 'pong':
      case 'subscriptions':
      case 'chains':
      case 'authed':
        return this.onReply(msg);
      default:
        metrics.malformed.add(1);
        report('unknown message type', msg.type);
        return undefined;
    }
  }

  onWelcome(msg, at) {
    const ok = check(msg, {
      'welcome speaks protocol 1': (m) => m.protocol === 1,
      'welcome names the session': (m) => typeof m.session === 'string' && m.session !== '',
    });
    if (!ok) this.fail(`bad welcome ${JSON.stringify(msg)}`);
    this.welcomed = true;
    metrics.handshake.add(at - this.startedAt);
    if (this.cb.onWelcome) this.cb.onWelcome(this, msg);
  }

  takePending(msg, op) {
    const p = this.pending[msg.id];
    if (!p || p.req.op !== op) {
      metrics.malformed.add(1);
      report('reply to nothing', JSON.stringify(msg).slice(0, 200));
      return null;
    }
    delete this.pending[msg.id];
    return p;
  }

  onSubscribed(msg, at) {
    const p = this.takePending(msg, 'subscribe');
    if (!p) return;
    metrics.subscribeRtt.add(at - p.sentAt);
    const accepted = Array.isArray(msg.symbols) ? msg.symbols : [];
    const asked = p.req.symbols;
    const ok = check(msg, {
      'subscribed accepts every symbol asked for': () =>
        accepted.length === asked.length && asked.every((s) => accepted.includes(s)),
      'subscribed echoes the mode': (m) => m.mode === (p.req.mode || 'quote'),
      'subscribed carries interval_ms': (m) => Number.isInteger(m.interval_ms) && m.interval_ms >= 0,
    });
    if (!ok) this.fail(`subscribe ${JSON.stringify(p.req)} got ${JSON.stringify(msg)}`);
    if (p.req.interval_ms !== undefined && msg.interval_ms !== p.req.interval_ms) {
      report('interval raised', `asked ${p.req.interval_ms} ms, got ${msg.interval_ms} ms (the token's tier sets a minimum)`, 1);
    }
    let interval = msg.interval_ms;
    // FAULT=tight_interval: believe the interval is 4x what the server confirmed.
    if (config.fault === 'tight_interval' && interval > 0) interval *= 4;
    const fresh = [];
    for (const s of accepted) {
      const prev = this.subs[s];
      const isNew = !prev || !prev.active;
      this.subs[s] = {
        active: true,
        mode: msg.mode,
        interval,
        // A symbol new to this session must get its snapshot before any live tick. One it
        // held before and subscribes to again may instead go on with a live tick, as long
        // as its seq is above everything the session saw (checkSeq).
        awaitingData: isNew ? true : prev.awaitingData,
        needsSnapshot: !prev || prev.lastSeq === 0,
        // Seq history survives re-subscription: the client never sees a lower seq.
        lastSeq: prev ? prev.lastSeq : 0,
        lastEpoch: prev ? prev.lastEpoch : 0,
        lastLiveSeq: isNew ? 0 : prev.lastLiveSeq,
        lastLiveAt: null,
        slowed: false,
        held: null,
        live: isNew ? 0 : prev.live,
      };
      if (isNew) fresh.push(s);
    }
    this.waitForSnapshots(p, fresh);
    if (this.cb.onSubscribed) this.cb.onSubscribed(this, msg, p.req);
  }

  /** Records how long the newly subscribed symbols take to all have their snapshot. */
  waitForSnapshots(p, symbols) {
    const waiting = { req: p.req, sentAt: p.sentAt, left: new Set(symbols), done: false };
    this.snapshotWaits = (this.snapshotWaits || []).filter((w) => !w.done).concat([waiting]);
    if (symbols.length === 0) return this.snapshotsDone(waiting, Date.now());
    this.after(config.snapshotTimeoutMs, () => {
      if (waiting.done) return;
      waiting.done = true;
      metrics.snapshotComplete.add(false);
      report('snapshots missing', `${[...waiting.left].join(' ')} after ${config.snapshotTimeoutMs} ms`);
      if (this.cb.onSnapshots) this.cb.onSnapshots(this, waiting.req, false);
    });
    return undefined;
  }

  snapshotsDone(waiting, at) {
    waiting.done = true;
    metrics.snapshotComplete.add(true);
    metrics.timeToSnapshot.add(at - waiting.sentAt);
    if (this.cb.onSnapshots) this.cb.onSnapshots(this, waiting.req, true);
  }

  noteFirstData(symbol, at, isSnapshot) {
    const sub = this.subs[symbol];
    for (const w of this.snapshotWaits || []) {
      if (w.done || !w.left.has(symbol)) continue;
      if (!isSnapshot && sub.needsSnapshot) continue;
      w.left.delete(symbol);
      if (w.left.size === 0) this.snapshotsDone(w, at);
    }
  }

  onUnsubscribed(msg) {
    const p = this.takePending(msg, 'unsubscribe');
    if (!p) return;
    const gone = Array.isArray(msg.symbols) ? msg.symbols : [];
    const expected = p.req.symbols.filter((s) => p.activeAtSend.includes(s));
    check(msg, {
      'unsubscribed lists the symbols that were subscribed': () =>
        gone.length === expected.length && expected.every((s) => gone.includes(s)),
    });
    for (const s of gone) {
      if (this.subs[s]) this.subs[s].active = false;
    }
    if (this.cb.onUnsubscribed) this.cb.onUnsubscribed(this, msg, p.req);
  }

  onReply(msg) {
    const op = { pong: 'ping', subscriptions: 'list', chains: 'chains', authed: 'auth' }[msg.type];
    const p = this.takePending(msg, op);
    if (!p) return;
    if (msg.type === 'pong') check(msg, { 'pong answers its ping': (m) => m.id === p.req.id });
    if (msg.type === 'subscriptions') {
      const mine = this.activeSymbols();
      const theirs = (msg.subscriptions || []).map((x) => x.symbol).sort();
      check(msg, {
        'list matches the confirmed subscriptions': () => JSON.stringify(mine) === JSON.stringify(theirs),
      });
    }
    if (this.cb.onReply) this.cb.onReply(this, msg, p.req);
  }

  onSnapshot(msg, at) {
    if (config.fault === 'no_snapshot') return;
    metrics.snapshots.add(1);
    const sub = this.subs[msg.symbol];
    if (!sub || !sub.active) {
      metrics.unrequested.add(1);
      report('snapshot of a symbol not subscribed', msg.symbol);
      return;
    }
    const problem = tickProblem(msg, sub.mode);
    if (problem) {
      metrics.malformed.add(1);
      report('bad snapshot', `${msg.symbol}: ${problem}`);
    }
    this.checkSeq(msg, sub, 'snapshot');
    sub.told = 0;
    sub.toldTo = 0;
    sub.awaitingData = false;
    sub.needsSnapshot = false;
    // The first live update may follow a snapshot sooner than interval_ms (protocol.md).
    sub.lastLiveAt = null;
    this.noteFirstData(msg.symbol, at, true);
  }

  onTicks(msg, at) {
    if (!Array.isArray(msg.ticks) || msg.ticks.length === 0) {
      metrics.malformed.add(1);
      report('ticks frame without ticks', JSON.stringify(msg).slice(0, 200));
      return;
    }
    // How late this frame can have been read at most (see the top of this file).
    let readDelay = Infinity;
    for (const t of msg.ticks) {
      if (t && typeof t.ts === 'number') readDelay = Math.min(readDelay, at - t.ts / 1000);
    }
    const tolerance = config.slackMs + Math.max(0, readDelay);
    const seenInFrame = {};
    for (const t of msg.ticks) {
      const sub = t && this.subs[t.symbol];
      if (!sub || !sub.active) {
        metrics.unrequested.add(1);
        report('tick of a symbol not subscribed', t && t.symbol);
        continue;
      }
      if (sub.interval > 0 && seenInFrame[t.symbol]) {
        metrics.conflationViolations.add(1);
        report('conflation', `${t.symbol} twice in one frame at interval ${sub.interval} ms`);
      }
      seenInFrame[t.symbol] = true;
      if (config.fault === 'reorder' && sub.held === null && sub.live % 10 === 5) {
        sub.held = t; // FAULT=reorder: handle this tick after the next one of its symbol
        sub.live += 1;
        continue;
      }
      this.onLive(t, sub, at, tolerance);
      if (sub.held !== null && sub.held !== t) {
        const held = sub.held;
        sub.held = null;
        this.onLive(held, sub, at, tolerance);
      }
    }
  }

  onGap(msg) {
    const sub = this.subs[msg.symbol];
    const n = msg.to_seq - msg.from_seq + 1;
    if (!sub || !Number.isSafeInteger(msg.from_seq) || !Number.isSafeInteger(msg.to_seq) || n < 1) {
      metrics.malformed.add(1);
      report('bad gap', JSON.stringify(msg).slice(0, 200));
      return;
    }
    metrics.lostTold.add(n);
    sub.toldTo = Math.max(sub.toldTo || 0, msg.to_seq);
    sub.told = (sub.told || 0) + n;
  }

  onLive(t, sub, at, tolerance) {
    sub.live += 1;
    if (config.fault === 'drop' && sub.interval === 0 && sub.live % 10 === 0) return;
    metrics.updates.add(1, { path: sub.interval === 0 ? 'every_tick' : 'conflated' });
    const problem = tickProblem(t, sub.mode);
    if (problem) {
      metrics.malformed.add(1);
      report('bad tick', `${t.symbol}: ${problem}`);
    }
    if (sub.awaitingData) {
      if (sub.needsSnapshot) {
        metrics.tickBeforeSnapshot.add(1);
        report('tick before snapshot', `${t.symbol} seq ${t.seq}`);
      }
      this.noteFirstData(t.symbol, at, false);
      sub.awaitingData = false;
      sub.needsSnapshot = false;
    }
    if (sub.lastSeq > 0 && t.epoch === sub.lastEpoch && t.seq > sub.lastSeq) {
      const from = Number.isSafeInteger(t.from_seq) ? t.from_seq : t.seq;
      const expected = Math.max(sub.lastSeq, sub.toldTo || 0) + 1;
      if (from !== expected) {
        metrics.continuityErrors.add(1);
        report('continuity', `${t.symbol}: seq ${t.seq} from_seq ${from} after ${sub.lastSeq} (gaps told up to ${sub.toldTo || 0})`);
      }
    }
    const told = sub.told || 0;
    sub.told = 0;
    sub.toldTo = 0;
    this.checkSeq(t, sub, 'tick');
    if (sub.interval === 0 && !sub.slowed && sub.lastLiveSeq > 0 && t.epoch === sub.lastEpochLive) {
      if (t.seq - sub.lastLiveSeq - 1 > told) {
        metrics.seqGaps.add(1);
        report('gap', `${t.symbol}: seq ${sub.lastLiveSeq} then ${t.seq} at interval 0`);
      }
    }
    if (sub.interval > 0 && sub.lastLiveAt !== null) {
      const allowed = sub.lastLiveTolerance;
      metrics.conflationPairs.add(1, { checked: allowed <= sub.interval / 2 ? 'yes' : 'no' });
      const spacing = at - sub.lastLiveAt;
      if (spacing < sub.interval - allowed) {
        metrics.conflationViolations.add(1);
        report('conflation', `${t.symbol}: live updates ${spacing.toFixed(1)} ms apart at interval ${sub.interval} ms (tolerance ${allowed.toFixed(1)} ms)`);
      }
    }
    sub.lastLiveSeq = Math.max(sub.lastLiveSeq, t.seq);
    sub.lastEpochLive = t.epoch;
    sub.lastLiveAt = at;
    sub.lastLiveTolerance = tolerance;
    if (typeof t.ts === 'number') {
      metrics.latency.add(at - t.ts / 1000, { path: sub.interval === 0 ? 'every_tick' : 'conflated' });
    }
  }

  checkSeq(t, sub, what) {
    if (t.seq <= sub.lastSeq || t.epoch < sub.lastEpoch) {
      metrics.seqRegressions.add(1);
      report('seq regression', `${t.symbol}: ${what} seq ${t.seq} (epoch ${t.epoch}) after ${sub.lastSeq} (epoch ${sub.lastEpoch})`);
    }
    sub.lastSeq = Math.max(sub.lastSeq, t.seq);
    sub.lastEpoch = Math.max(sub.lastEpoch, t.epoch);
  }

  onHeartbeat(msg) {
    if (!Number.isSafeInteger(msg.ts)) {
      metrics.malformed.add(1);
      report('bad hb', JSON.stringify(msg));
    }
    if (typeof msg.lag_ms === 'number') metrics.hbLag.add(msg.lag_ms);
  }

  onServerError(msg) {
    if (msg.code === 'slow_consumer') {
      // Every-tick subscriptions were moved to conflation: from here on they are checked
      // against the new interval, and seq steps above 1 are expected.
      metrics.slowConsumer.add(1);
      for (const s of Object.keys(this.subs)) {
        const sub = this.subs[s];
        if (sub.interval === 0) {
          sub.interval = msg.interval_ms || 0;
          sub.slowed = true;
          sub.lastLiveAt = null;
        }
      }
      return;
    }
    if (msg.id !== undefined && this.pending[msg.id] && this.pending[msg.id].expectErrors) return;
    metrics.serverErrors.add(1, { code: String(msg.code) });
    report('server error', JSON.stringify(msg));
  }

  onError(e) {
    const text = String(e && e.error);
    if (!this.welcomed && !this.closing) {
      metrics.connectErrors.add(1);
      report('connect failed', text);
    } else if (!this.closing && !this.draining) {
      const m = /close (\d+)/.exec(text);
      this.closeCode = m ? Number(m[1]) : undefined;
    }
  }

  onClosed() {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    const expected = this.closing || this.draining;
    if (!expected && this.welcomed) {
      metrics.unexpectedCloses.add(1, { code: String(this.closeCode || 'none') });
      // Also seen when k6 interrupts a VU at the end of a stage; metrics pushed then are
      // dropped, so only real server closes are counted.
      report('closed without our asking', `code ${this.closeCode || 'unknown'} after ${Date.now() - this.startedAt} ms`);
    }
    for (const w of this.snapshotWaits || []) {
      if (!w.done) {
        w.done = true;
        metrics.snapshotComplete.add(false);
        report('snapshots missing', `${[...w.left].join(' ')} when the session closed`);
      }
    }
    const ok = this.welcomed && this.failed === null && expected;
    metrics.sessionsOk.add(ok);
    if (ok) metrics.sessionsCompleted.add(1);
    if (this.cb.onClose) this.cb.onClose(this);
    // A draining edge said when to come back: the iteration (and so the reconnect of the
    // next one) waits that long, capped at 30 s.
    if (this.draining) setTimeout(() => {}, Math.min(this.reconnectAfterMs, 30000));
  }
}

