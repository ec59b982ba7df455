// Configuration of the k6 scenarios from the environment (-e NAME=value or exported
// variables), the symbol universe, tokens, and small helpers for scripts. A bad value stops
// the run at start with a message that names the variable.

import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import http from 'k6/http';

/** True when `SMOKE=1`: small defaults for a few-second run (the test suite uses it). */
export const SMOKE = (__ENV.SMOKE || '') === '1';

/** Reads an integer variable; a bad value stops the run with a message naming it. */
export function envInt(name, fallback, smokeFallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return SMOKE && smokeFallback !== undefined ? smokeFallback : fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`${name}=${raw}: expected a non-negative integer`);
  }
  return n;
}

/** Reads a k6 duration variable ("90s", "5m", "1h30m"). */
export function envDuration(name, fallback, smokeFallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return SMOKE && smokeFallback !== undefined ? smokeFallback : fallback;
  if (!/^(\d+(ms|s|m|h))+$/.test(raw)) {
    throw new Error(`${name}=${raw}: expected a duration such as 30s, 5m or 1h30m`);
  }
  return raw;
}

/** Reads one of a fixed set of values. */
export function envChoice(name, choices, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  if (!choices.includes(raw)) {
    throw new Error(`${name}=${raw}: expected one of ${choices.join(', ')}`);
  }
  return raw;
}

/** The simulator's default universe (config/ingest.toml runs it). */
const DEMO_SYMBOLS = [
  'AAPL', 'MSFT', 'NVDA', 'TSLA', 'AMZN', 'GOOGL', 'META', 'BRK-B', 'AVGO', 'JPM', 'LLY', 'V',
  'UNH', 'XOM', 'MA', 'JNJ', 'PG', 'HD', 'COST', 'ABBV', 'MRK', 'CVX', 'KO', 'PEP', 'ADBE',
  'CRM', 'NFLX', 'AMD', 'INTC', 'CSCO', 'ORCL', 'BAC', 'WMT', 'DIS', 'NKE', 'PFE', 'T', 'VZ',
  'BA', 'CAT', 'GS', 'IBM', 'QCOM', 'TXN', 'UBER', 'PLTR', 'COIN', 'SHOP', 'SPY', 'QQQ', 'IWM',
  'DIA', 'XLF', 'XLE', 'XLK', 'GLD', 'TLT', 'EEM', 'HYG', 'VTI',
];
/** Symbols that both the demo and the test kit's small universe publish. */
const SMOKE_SYMBOLS = ['AAPL', 'MSFT', 'SPY', 'NVDA', 'TSLA'];
const SYMBOL_RE = /^[A-Z0-9][A-Z0-9_-]{0,63}$/;

function envSymbols() {
  const raw = __ENV.SYMBOLS;
  if (raw === undefined || raw === '') return SMOKE ? SMOKE_SYMBOLS : DEMO_SYMBOLS;
  const list = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bad = list.filter((s) => !SYMBOL_RE.test(s));
  if (list.length === 0 || bad.length > 0) {
    throw new Error(`SYMBOLS=${raw}: expected a comma-separated list of symbols (bad: ${bad.join(' ')})`);
  }
  return list;
}

/** Faults that make the script's own checks see a violation (to prove the thresholds bite). */
export const FAULTS = ['reorder', 'tight_interval', 'drop', 'no_snapshot'];

export const config = {
  url: __ENV.TICKMESH_URL || 'ws://127.0.0.1:8080/v1/stream',
  encoding: envChoice('ENCODING', ['json', 'msgpack'], 'json'),
  symbols: envSymbols(),
  /** Allowed shortfall below interval_ms between two live updates (network and scheduling jitter). */
  slackMs: envInt('CONFLATION_SLACK_MS', 20),
  /** How long a subscribe may wait for all its snapshots. */
  snapshotTimeoutMs: envInt('SNAPSHOT_TIMEOUT_MS', 5000),
  fault: envChoice('FAULT', FAULTS, ''),
  /** A JWT for edges that require one, sent as `Authorization: Bearer`. */
  token: __ENV.TICKMESH_TOKEN || '',
  /**
   * Or an HS256 secret (the demo's `.tools/dev-hs256.secret`) to mint one token per VU with:
   * user `k6-<vu>` (so per-user session limits apply per VU), tier TICKMESH_TIER.
   */
  secret: __ENV.TICKMESH_HS256_SECRET_FILE ? open(__ENV.TICKMESH_HS256_SECRET_FILE).trim() : '',
  tier: __ENV.TICKMESH_TIER || 'realtime',
};

if (config.token && config.secret) {
  throw new Error('set TICKMESH_TOKEN or TICKMESH_HS256_SECRET_FILE, not both');
}
if (config.secret !== '' && config.secret.length < 32) {
  throw new Error(`${__ENV.TICKMESH_HS256_SECRET_FILE}: an HS256 secret needs at least 32 bytes`);
}

if (!/^wss?:\/\/[^/]+\/.*$/.test(config.url)) {
  throw new Error(`TICKMESH_URL=${config.url}: expected ws://HOST:PORT/v1/stream`);
}

/** `setup()` for every scenario: fail fast, with a clear message, when the edge is not up. */
export function requireReadyEdge() {
  const base = config.url.replace(/^ws/, 'http').replace(/^(https?:\/\/[^/]+).*$/, '$1');
  const res = http.get(`${base}/readyz`, { timeout: '5s', tags: { name: 'readyz' } });
  if (res.status !== 200) {
    const why = res.error ? res.error : `HTTP ${res.status}`;
    throw new Error(`the edge at ${base} is not ready (${why}); start it with \`cargo xtask demo\` or set TICKMESH_URL`);
  }
  return { edge: base };
}

let vuToken = '';

/** The bearer token of this VU: TICKMESH_TOKEN, one minted from the secret, or none. */
export function bearerToken() {
  if (config.token || !config.secret) return config.token;
  if (!vuToken) {
    const b64 = (o) => encoding.b64encode(JSON.stringify(o), 'rawurl');
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: `k6-${exec.vu.idInTest}`, iat: now, exp: now + 86400, ent: ['*'], tier: config.tier };
    const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
    vuToken = `${unsigned}.${crypto.hmac('sha256', config.secret, unsigned, 'base64rawurl')}`;
  }
  return vuToken;
}

/** `n` distinct symbols from the configured list, in random order. */
export function pickSymbols(n) {
  const pool = config.symbols.slice();
  for (let i = pool.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, Math.min(n, pool.length));
}

