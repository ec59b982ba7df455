// Types of the TickMesh client (`src/index.js`): the client protocol v1 of
// docs/protocol.md, seen from JavaScript. Checked against a usage file by
// `npm run typecheck` (test/types.ts), and against the sources' JSDoc by the same run.

export type Mode = 'ltp' | 'quote' | 'full';
export type Stream = 'ticks' | 'trades' | 'bars';
export type Timeframe = '1s' | '1m' | '5m' | '1h' | '1d';
export type TradingState = 'pre_open' | 'open' | 'halted' | 'closed';
export type Status = 'idle' | 'connecting' | 'open' | 'draining' | 'reconnecting' | 'closed';

/** One instrument's state: absent fields are omitted, never null. */
export interface Tick {
  symbol: string;
  /** per symbol, +1 per published tick within an epoch */
  seq: number;
  /** the first seq a live update stands for, when below `seq` */
  from_seq?: number;
  epoch?: number;
  /** ingest's stamp, µs since the Unix epoch */
  ts?: number;
  src_ts?: number;
  kind?: 'equity' | 'etf' | 'index' | 'option';
  last?: number;
  last_size?: number;
  bid?: number;
  ask?: number;
  bid_size?: number;
  ask_size?: number;
  volume?: number;
  open?: number;
  high?: number;
  low?: number;
  prev_close?: number;
  depth?: { bids: Array<[number, number]>; asks: Array<[number, number]> };
  underlying?: string;
  expiry?: string;
  strike?: number;
  right?: 'C' | 'P';
  iv?: number;
  delta?: number;
  gamma?: number;
  theta?: number;
  vega?: number;
  state?: TradingState;
  delayed_ms?: number;
}

export interface Trade {
  symbol: string;
  seq: number;
  trade_id: number;
  price: number;
  size: number;
  ts: number;
  src_ts?: number;
  conditions: string[];
}

export interface TradesEvent {
  symbol: string;
  /** from the history a tape starts with: never a reason to clear what is shown */
  snapshot: boolean;
  trades: Trade[];
}

export interface Bar {
  symbol: string;
  /** its start, µs: with the symbol and timeframe, what identifies the bar */
  t: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
  trades: number;
  final: boolean;
}

export interface BarsEvent {
  symbol: string;
  tf: Timeframe;
  snapshot: boolean;
  /** each replaces a bar passed on before with the same `t` */
  bars: Bar[];
}

export interface SymbolStatus {
  symbol: string;
  state?: TradingState;
  stale: boolean;
  reason: string;
  ts: number;
}

export type Side = 'buy' | 'sell';
export type OrderStatus = 'new' | 'partially_filled' | 'filled' | 'cancelled' | 'rejected';

/** An order's whole state after a change (placed, amended, filled, cancelled, rejected). */
export interface Order {
  order_id: string;
  symbol: string;
  side: Side;
  type: 'market' | 'limit';
  qty: number;
  /** limit orders */
  limit_price?: number;
  status: OrderStatus;
  filled_qty: number;
  /** when anything filled */
  avg_price?: number;
  /** when rejected or cancelled */
  reason?: string;
}

/** One execution of an order, at the price of a print of the market. */
export interface Fill {
  fill_id: string;
  order_id: string;
  symbol: string;
  side: Side;
  qty: number;
  price: number;
  /** the market print it filled against */
  trade_id?: number;
}

/** A position's whole state after a change. */
export interface Position {
  symbol: string;
  /** negative when short */
  qty: number;
  /** of the open quantity */
  avg_price: number;
  realized_pnl: number;
  /** the writer's mark when it wrote it: mark the position to the prices streamed instead */
  mark_price?: number;
  unrealized_pnl?: number;
}

/** A cash balance's whole state after a change. */
export interface Balance {
  currency: string;
  cash: number;
  realized_pnl: number;
}

export type AccountData =
  | { kind: 'order'; data: Order }
  | { kind: 'fill'; data: Fill }
  | { kind: 'position'; data: Position }
  | { kind: 'balance'; data: Balance };

/** One event of an account: `seq` +1 per event from 1, `ts` the writer's stamp, µs. */
export type AccountEvent = { account: string; seq: number; ts: number } & AccountData;

/** An account's state as of `seq` (0 before any event); lists in order of their keys. */
export interface AccountSnapshot {
  account: string;
  seq: number;
  positions: Position[];
  balances: Balance[];
  open_orders: Order[];
}

/** An account event that skips seqs: `had + 1` to `seq - 1` never came. */
export interface AccountContinuity {
  account: string;
  seq: number;
  had: number;
}

export interface AccountSubscribed {
  type: 'subscribed';
  id: number;
  account: string;
  from_seq?: number;
}

export interface Welcome {
  type: 'welcome';
  protocol: number;
  session: string;
  edge: string;
  heartbeat_ms: number;
  limits: { max_symbols: number; max_msgs_per_s: number; min_interval_ms: number; delay_ms?: number };
}

export interface ServerError {
  type: 'error';
  id?: number;
  code: string;
  message: string;
  symbol?: string;
  /** when about an account: `unavailable` (a fresh snapshot follows) or a refusal */
  account?: string;
  interval_ms?: number;
  retry_ms?: number;
  /** in a summary of refusals (no `symbol`): how many entries it stands for */
  count?: number;
}

export interface Gap {
  type: 'gap';
  symbol: string;
  epoch: number;
  from_seq: number;
  to_seq: number;
  reason: string;
}

export interface Continuity {
  symbol: string;
  seq: number;
  from_seq: number;
  had: number;
}

export interface CloseInfo {
  code: number;
  reason: string;
  wasClean: boolean;
  terminal: boolean;
  willReconnect: boolean;
}

export interface ReconnectInfo {
  attempt: number;
  delayMs: number;
  code: number;
}

/** What carries a session: a WebSocket, Server-Sent Events, or polling of snapshots. */
export type Transport = 'websocket' | 'sse' | 'poll';

export interface TransportInfo {
  transport: Transport;
  previous: Transport | null;
}

export interface StatusInfo {
  status: Status;
  code?: number;
  reason?: string;
  delayMs?: number;
  afterMs?: number;
}

export interface EventMap {
  open: { url: string; protocol: string };
  /** the session is carried by another transport than the last one (before its `welcome`) */
  transport: TransportInfo;
  welcome: Welcome;
  snapshot: Tick;
  tick: Tick;
  heartbeat: { type: 'hb'; ts: number; lag_ms: number };
  error: ServerError;
  gap: Gap;
  continuity: Continuity;
  reconnecting: ReconnectInfo;
  close: CloseInfo;
  status: StatusInfo;
  symbolstatus: SymbolStatus;
  trades: TradesEvent;
  bars: BarsEvent;
  /** an account's state: on subscribe (without `fromSeq`) and after `unavailable` about it */
  accountsnapshot: AccountSnapshot;
  /** each event of an account held, once, in seq order, across reconnects too */
  account: AccountEvent;
  accountcontinuity: AccountContinuity;
  message: Record<string, any>;
}

export interface Stats {
  reconnects: number;
  ticks: number;
  stale: number;
  conflated: number;
  lost: number;
  broken: number;
  prints: number;
  reprints: number;
  bars: number;
  rebars: number;
  /** account events passed on */
  accountEvents: number;
  /** account events dropped as passed on before */
  accountRepeats: number;
}

export type SubscribeRequest =
  | { stream?: 'ticks'; symbols?: string[]; chains?: string[]; mode?: Mode; interval_ms?: number }
  | { stream: 'trades'; symbols: string[]; history?: number }
  | { stream: 'bars'; symbols: string[]; tf: Timeframe; history?: number; interval_ms?: number };

export type UnsubscribeRequest =
  | { stream?: 'ticks'; symbols?: string[]; chains?: string[] }
  | { stream: 'trades'; symbols: string[] }
  | { stream: 'bars'; symbols: string[]; tf: Timeframe };

export interface Subscribed {
  type: 'subscribed';
  id: number;
  symbols: string[];
  chains?: string[];
  delayed?: string[];
  mode?: Mode;
  interval_ms?: number;
  stream?: Stream;
  tf?: Timeframe;
}

export interface Subscriptions {
  symbols: Record<string, { mode: Mode; interval_ms: number }>;
  chains: Record<string, { mode: Mode; interval_ms: number }>;
  trades: Record<string, { history: number }>;
  bars: Partial<Record<Timeframe, Record<string, { history: number; interval_ms: number }>>>;
  /** the accounts held, sorted */
  accounts: string[];
}

export interface ClientOptions {
  /** `ws(s)://host/v1/stream`; default: the page's host */
  url?: string;
  token?: string | null;
  /** called before each reconnect (and before the first connect when `token` is absent) */
  getToken?: () => Promise<string | null | undefined> | string | null | undefined;
  encoding?: 'json' | 'msgpack';
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  requestTimeoutMs?: number;
  maxQueued?: number;
  connectTimeoutMs?: number;
  idleHeartbeats?: number;
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** tried in this order at each connection until one welcomes; default all three */
  transports?: Transport[];
  EventSource?: any;
  fetch?: typeof fetch;
  /** `poll`: the least time between two snapshots, ms, default 1000 */
  pollIntervalMs?: number;
  /** failed attempts of the first transport in a row before the others are tried, default 2 */
  fallbackAfter?: number;
  /** `sse`, `poll`: after this long, ms, the connection ends and the first transport is tried again, default 60000 */
  retryWebSocketMs?: number;
  setTimeout?: (fn: () => void, ms: number) => any;
  clearTimeout?: (handle: any) => void;
  random?: () => number;
  now?: () => number;
}

/** What both clients offer: a tab of a shared connection behaves as a connection of its own. */
export interface TickMesh {
  readonly url: string;
  token: string | null;
  readonly encoding: 'json' | 'msgpack';
  status: Status;
  welcome: Welcome | null;
  /** what carries the session, once welcomed */
  transport: Transport | null;
  lagMs: number | null;
  stats: Stats;
  on<K extends keyof EventMap>(type: K, fn: (detail: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(type: K, fn: (detail: EventMap[K]) => void): void;
  connect(): this;
  close(code?: number, reason?: string): void;
  subscribe(req: SubscribeRequest): Promise<Subscribed>;
  unsubscribe(req: UnsubscribeRequest): Promise<{ type: 'unsubscribed' } & Record<string, any>>;
  list(): Promise<{ subscriptions: Array<{ symbol: string; mode: Mode; interval_ms: number; stream?: 'trades' | 'bars'; tf?: Timeframe }>; accounts?: string[] }>;
  /**
   * Follows an account (named in the token's `acct` claim): a snapshot (or, with `fromSeq`,
   * every event from that seq), then each event, once, in order, resumed with `from_seq`
   * after every reconnect.
   */
  subscribeAccount(account: string, opts?: { fromSeq?: number }): Promise<AccountSubscribed>;
  unsubscribeAccount(account: string): Promise<{ type: 'unsubscribed'; id: number; account: string }>;
  /** the seq of the last event (or snapshot) of the account passed on: it goes on after it */
  lastAccountSeq(account: string): number | undefined;
  chains(underlying: string): Promise<{ underlying: string; expiries: Array<{ expiry: string; strikes: number[] }> }>;
  ping(): Promise<{ type: 'pong' }>;
  auth(token: string): Promise<{ type: 'authed'; exp: number }>;
  subscriptions(): Subscriptions;
  lastSeq(symbol: string): number | undefined;
  lastTradeSeq(symbol: string): number | undefined;
  lastBar(symbol: string, tf: Timeframe): { t: number; final: boolean } | undefined;
}

/** One WebSocket of its own. */
export interface TickMeshClient extends TickMesh {}
export class TickMeshClient {
  constructor(options?: ClientOptions);
}

/** A tab of the connection that the SharedWorker holds for all of an origin's tabs. */
export interface SharedClient extends TickMesh {}
export class SharedClient {
  constructor(options?: ClientOptions & { worker?: { port: MessagePort }; port?: MessagePort; locks?: LockManager });
  /** always true */
  readonly shared: true;
}

export interface CreateOptions extends ClientOptions {
  /** false: a connection of the tab's own; default true (where the browser has SharedWorker) */
  shared?: boolean;
  /** the worker script, on the page's origin; default `worker.js` beside the module */
  workerUrl?: string | URL;
}

/** A SharedClient where the browser has SharedWorker (unless `shared: false`), else a TickMeshClient. */
export function createClient(options?: CreateOptions): TickMeshClient | SharedClient;

/** Why a request failed: the server's error code, or `disconnected`, `timeout`, `queue_full`, `closed`. */
export class TickMeshError extends Error {
  constructor(code: string, message: string, detail?: Record<string, any>);
  code: string;
  detail?: Record<string, any>;
}

export const SUBPROTOCOLS: Readonly<{ json: 'tickmesh.v1.json'; msgpack: 'tickmesh.v1.msgpack' }>;
export const DEFAULT_MODE: 'quote';
export const DEFAULT_INTERVAL_MS: 250;
export const DEFAULT_TRADES_HISTORY: 50;
export const DEFAULT_BARS_HISTORY: 100;
export const TIMEFRAMES: readonly Timeframe[];

export function streamUrl(loc: { protocol: string; host: string }): string;
export function isTerminalClose(code: number): boolean;
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, r: number): number;
