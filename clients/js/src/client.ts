import { backoffDelay, type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import { openSse, probe } from './sse.js';
import { Subscription, type SubscribeOptions } from './subscription.js';
import { openWebSocket, type Transport, type WebSocketCtor } from './transport.js';
import type {
  ClientEvents,
  HistoryResult,
  Position,
  PresenceMember,
  ProtocolError,
  Publication,
  State,
  TransportName,
} from './types.js';

export interface ClientOptions {
  /** A fixed JWT. */
  token?: string;
  /** Fetches a JWT: at the first connect, before `exp` (then sent with `refresh`), and once after 4501/4503. */
  getToken?: () => string | Promise<string>;
  /** Subprotocol on the WebSocket (default 'json'). */
  protocol?: 'json' | 'msgpack';
  /** Tried in order; a transport that has never opened gives way to the next after a failed attempt (default ['websocket', 'sse']). */
  transports?: TransportName[];
  /** Reconnect backoff bounds (full jitter). */
  backoff?: BackoffOptions;
  /** An attempt that is not open within this is abandoned (default 10,000 ms). */
  connectTimeoutMs?: number;
  /** A command without a reply within this fails, and the connection is dropped as stalled (default 10,000 ms). */
  commandTimeoutMs?: number;
  /** Interval of the client's `ping` command on a WebSocket (default 20,000 ms; 0: off). */
  pingIntervalMs?: number;
  /** An SSE stream silent this long is dropped (default 60,000 ms; the server's heartbeat comes every 25 s). */
  sseStallMs?: number;
  /** Refresh the token this long before its `exp` (default 30,000 ms, at most a third of its lifetime); 0: never (the server then closes with 4503 at `exp`, and the client reconnects with a new token). */
  refreshBeforeMs?: number;
  /** URL of the SSE endpoint (default: the WebSocket URL with `/ws` replaced by `/sse`). */
  sseUrl?: string;
  /**
   * Publish over HTTP while on SSE: `POST <url>` with `{channel, data}` (default URL: `/api/publish` on the
   * same origin). Only where the server (or the application's router) accepts it; off by default.
   */
  httpPublish?: boolean | { url?: string; headers?: Record<string, string> };
  /** WebSocket implementation; default the global one, else the `ws` package. */
  WebSocket?: WebSocketCtor;
  fetch?: typeof fetch;
  /** Random source for the backoff jitter (tests). */
  random?: () => number;
}

interface Pending {
  resolve(v: Record<string, unknown>): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/** A refusal from the server; `code` is the protocol's error code. */
export class ShardcastError extends Error implements ProtocolError {
  constructor(readonly code: number, message: string, readonly temporary = false) {
    super(message);
    this.name = 'ShardcastError';
  }
}

/** The connection dropped before the reply came: the command may or may not have been applied. */
export class DisconnectedError extends Error {
  constructor(message = 'disconnected before the reply') {
    super(message);
    this.name = 'DisconnectedError';
  }
}

const AUTH_CODES = [4501, 4503];

function jwtExpMs(token: string | undefined): number | undefined {
  try {
    const part = token!.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4))).exp;
    return typeof exp === 'number' ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

function randomKey(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
}

export class Client extends Emitter<ClientEvents> {
  state: State = 'disconnected';
  /** The transport of the current (or last) connection. */
  transport: TransportName | undefined;
  private readonly opts: ClientOptions;
  private readonly backoffOpts: Required<BackoffOptions>;
  private readonly transports: TransportName[];
  private readonly everOpened = new Set<TransportName>();
  private readonly subs = new Map<string, Subscription>();
  private readonly pending = new Map<number, Pending>();
  private tIndex = 0;
  private t: Transport | undefined;
  private nextId = 1;
  private attempt = 0;
  private authRetried = false;
  /** The last WebSocket attempt failed before opening, and no WebSocket ever opened: see whether the server is up. */
  private checkFallback = false;
  private probing = false;
  /** WebSocket failures in a row while the server answered HTTP. */
  private blocked = 0;
  private token: string | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private waiters: { resolve(): void; reject(e: Error): void }[] = [];

  constructor(readonly url: string, options: ClientOptions = {}) {
    super();
    this.opts = options;
    this.token = options.token;
    const b = options.backoff || {};
    this.backoffOpts = { minMs: b.minMs ?? 500, maxMs: b.maxMs ?? 20000, factor: b.factor ?? 2 };
    this.transports = options.transports?.length ? options.transports : ['websocket', 'sse'];
  }

  /** Start connecting (and reconnecting until `close()` or a terminal close code). */
  connect(): void {
    if (this.state !== 'disconnected' || this.reconnectTimer || this.probing) return;
    void this.open();
  }

  /** Stop for good: no reconnect; pending commands fail. */
  close(): void {
    this.terminate({ code: 1000, reason: 'closed by the client' });
  }

  /** Resolves when connected; rejects if the client closes first. */
  ready(): Promise<void> {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'closed') return Promise.reject(new Error('client closed'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Subscribe to a channel; the subscription lives across reconnects until `unsubscribe()`. */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (this.subs.has(channel)) throw new Error('already subscribed to ' + channel);
    const sub = new Subscription(channel, options, (s) => this.detach(s));
    this.subs.set(channel, sub);
    if (this.state === 'connected') this.sendSubscribe(sub);
    return sub;
  }

  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /**
   * Publish. Each call carries a fresh `idempotency_key` (the server ignores it
   * until it deduplicates by it), so the client never resends a publish on its
   * own: a `DisconnectedError` means the outcome is unknown.
   */
  async publish(channel: string, data: unknown): Promise<{ offset: number; epoch?: string; idempotencyKey: string }> {
    const idempotencyKey = randomKey();
    await this.ready();
    if (this.transport === 'sse') return { ...(await this.httpPublish(channel, data)), idempotencyKey };
    const ok = await this.request({ op: 'publish', channel, data, idempotency_key: idempotencyKey });
    return { offset: ok.offset as number, idempotencyKey };
  }

  /** Publications kept by the server: the latest `limit`, or from `since` (follow `next` for more). */
  async history(channel: string, opts: { since?: Position; limit?: number } = {}): Promise<HistoryResult> {
    await this.ready();
    return (await this.request({ op: 'history', channel, since: opts.since, limit: opts.limit })) as unknown as HistoryResult;
  }

  async presence(channel: string): Promise<PresenceMember[]> {
    await this.ready();
    return (await this.request({ op: 'presence', channel })).members as PresenceMember[];
  }

  // ---- connection lifecycle ----

  private setState(s: State): void {
    this.state = s;
    if (s === 'connected') for (const w of this.waiters.splice(0)) w.resolve();
    if (s === 'closed') for (const w of this.waiters.splice(0)) w.reject(new Error('client closed'));
  }

  private async open(): Promise<void> {
    this.reconnectTimer = undefined;
    if (this.checkFallback) {
      // The server answers plain HTTP but no WebSocket opened, twice in a row (once
      // could be a server that came up between the two): something between (a
      // proxy that strips the upgrade) blocks it; take the next transport.
      this.checkFallback = false;
      this.probing = true;
      const up = await probe(this.fetchFn(), this.sseUrl(), this.opts.connectTimeoutMs ?? 10000);
      this.probing = false;
      if (this.state !== 'disconnected') return;
      this.blocked = up ? this.blocked + 1 : 0;
      if (this.blocked >= 2) (this.tIndex++, (this.blocked = 0));
    }
    const name = this.transports[this.tIndex % this.transports.length];
    this.setState('connecting');
    this.emit('connecting', { transport: name, attempt: this.attempt });
    let token: string | undefined;
    let Ctor: WebSocketCtor | undefined;
    try {
      token = await this.currentToken();
      if (name === 'websocket') Ctor = await this.webSocketCtor();
    } catch (e) {
      if (this.state !== 'connecting') return;
      this.emit('error', e as Error);
      return this.lost(1006, 'token or WebSocket unavailable: ' + (e as Error).message, false);
    }
    if (this.state !== 'connecting') return; // closed meanwhile
    this.transport = name;
    let opened = false;
    const handlers = {
      onOpen: () => {
        opened = true;
        this.everOpened.add(name);
        if (name === 'websocket') this.handshake();
        else this.connected(); // an SSE stream started (or, with no channel, /health answered)
      },
      onMessage: (m: Record<string, unknown>) => this.onMessage(m),
      onClose: (code: number, reason: string) => {
        if (this.t !== t) return;
        this.t = undefined;
        this.lost(code, reason, opened);
      },
    };
    const timeout = this.opts.connectTimeoutMs ?? 10000;
    const t: Transport =
      name === 'websocket'
        ? openWebSocket(Ctor!, this.wsUrl(token), this.opts.protocol || 'json', timeout, handlers)
        : openSse(
            {
              url: this.sseUrl(),
              token,
              fetch: this.fetchFn(),
              stallMs: this.opts.sseStallMs ?? 60000,
              connectTimeoutMs: timeout,
            },
            handlers,
          );
    this.t = t;
    if (name === 'sse') {
      if (this.subs.size === 0) {
        void probe(this.fetchFn(), this.sseUrl(), timeout).then((up) => {
          if (this.t !== t) return;
          if (up) handlers.onOpen();
          else t.close(1006, 'server unreachable');
        });
      }
      this.resubscribe();
    }
  }

  /** WebSocket open: a `ping` answered proves the server accepted us (a bad token gets 101, then 4501). */
  private handshake(): void {
    const t = this.t;
    this.request({ op: 'ping' }).then(
      () => {
        if (this.t !== t) return;
        this.connected();
        this.resubscribe();
        const every = this.opts.pingIntervalMs ?? 20000;
        if (every > 0) this.pingTimer = setInterval(() => this.request({ op: 'ping' }).catch(() => {}), every);
      },
      () => {},
    );
  }

  /** Send every subscription waiting for a connection (a refused one stays refused). */
  private resubscribe(): void {
    for (const sub of this.subs.values()) if (sub.state === 'pending') this.sendSubscribe(sub);
  }

  private connected(): void {
    this.attempt = 0;
    this.authRetried = false;
    this.setState('connected');
    this.emit('connected', { transport: this.transport! });
    this.scheduleRefresh();
  }

  /** The transport went away: decide between reconnecting and stopping. */
  private lost(code: number, reason: string, opened: boolean): void {
    clearInterval(this.pingTimer);
    clearTimeout(this.refreshTimer);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new DisconnectedError());
      this.pending.delete(id);
    }
    for (const sub of this.subs.values()) if (sub.state === 'subscribing' || sub.state === 'subscribed') sub.state = 'pending';
    if (this.state === 'closed') return;
    let delayMs: number;
    if (AUTH_CODES.includes(code) && this.opts.getToken && !this.authRetried) {
      this.authRetried = true; // one retry with a fresh token, then stop
      this.token = undefined;
      delayMs = 0;
    } else if (code >= 4500 && code < 5000) {
      this.emit('error', new ShardcastError(code, 'connection refused: ' + code + (reason ? ' ' + reason : '')));
      return this.terminate({ code, reason });
    } else if (code === 4001) {
      const m = /reconnect_after_ms=(\d+)/.exec(reason);
      delayMs = m ? Number(m[1]) : backoffDelay(this.backoffOpts, 0, this.random());
      this.attempt = 0;
    } else {
      const name = this.transports[this.tIndex % this.transports.length];
      const more = this.transports.length > 1;
      if (!opened && more && !this.everOpened.has(name)) {
        if (name === 'websocket') this.checkFallback = true;
        else this.tIndex++; // a fallback that never worked either: back to the first
      }
      delayMs = backoffDelay(this.backoffOpts, this.attempt++, this.random());
    }
    this.setState('disconnected');
    this.emit('disconnected', { code, reason, delayMs });
    if (this.state !== 'disconnected') return; // a listener closed the client
    this.reconnectTimer = setTimeout(() => void this.open(), delayMs);
  }

  private terminate(info: { code: number; reason: string }): void {
    if (this.state === 'closed') return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.setState('closed');
    const t = this.t;
    this.t = undefined;
    t?.close(info.code >= 4500 ? 1000 : info.code, info.reason);
    this.lost(info.code, info.reason, true);
    this.emit('closed', info);
  }

  // ---- tokens ----

  private async currentToken(): Promise<string | undefined> {
    const margin = 5000;
    const exp = jwtExpMs(this.token);
    if (this.opts.getToken && (!this.token || (exp !== undefined && exp - Date.now() < margin))) {
      this.token = await this.opts.getToken();
    }
    return this.token;
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = jwtExpMs(this.token);
    const ahead = this.opts.refreshBeforeMs ?? 30000;
    if (!this.opts.getToken || exp === undefined || this.transport !== 'websocket' || ahead <= 0) return;
    const left = exp - Date.now();
    const before = Math.min(ahead, left / 3);
    this.refreshTimer = setTimeout(() => void this.refresh(), Math.max(0, left - before));
  }

  private async refresh(): Promise<void> {
    const t = this.t;
    try {
      const token = await this.opts.getToken!();
      if (this.t !== t || this.state !== 'connected') return;
      await this.request({ op: 'refresh', token });
      this.token = token;
      this.scheduleRefresh();
    } catch (e) {
      // The server closes with 4503 at `exp`; the reconnect then fetches a token again.
      if (!(e instanceof DisconnectedError)) this.emit('error', e as Error);
    }
  }

  // ---- commands and messages ----

  private request(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => this.command(cmd, resolve, reject));
  }

  /**
   * Send a command; `ok` runs synchronously with the reply, before any message
   * behind it (a subscribe's replay follows its reply in the same read).
   */
  private command(cmd: Record<string, unknown>, ok: (v: Record<string, unknown>) => void, fail: (e: Error) => void): void {
    const t = this.t;
    if (!t) return fail(new DisconnectedError('not connected'));
    if (t.name !== 'websocket') return fail(new Error(String(cmd.op) + ' needs the WebSocket transport'));
    const id = this.nextId++;
    const timeout = this.opts.commandTimeoutMs ?? 10000;
    const timer = setTimeout(() => {
      this.pending.delete(id);
      fail(new DisconnectedError('no reply within ' + timeout + ' ms'));
      if (this.t === t) t.close(1006, 'stalled: no reply within ' + timeout + ' ms');
    }, timeout);
    this.pending.set(id, { resolve: ok, reject: fail, timer });
    t.send({ id, ...cmd });
  }

  private onMessage(m: Record<string, unknown>): void {
    if (typeof m.id === 'number') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      clearTimeout(p.timer);
      const err = m.error as ProtocolError | undefined;
      if (err) p.reject(new ShardcastError(err.code, err.message, err.temporary));
      else p.resolve((m.ok as Record<string, unknown>) || {});
      return;
    }
    const channel = (m.channel ?? (m.ok as { channel?: string } | undefined)?.channel) as string | undefined;
    const sub = channel === undefined ? undefined : this.subs.get(channel);
    if (!sub) return;
    if (m.ok) sub._subscribed(m.ok as { epoch: string; offset: number; recovered?: boolean });
    else if (m.error) this.subscribeRefused(sub, m.error as ProtocolError);
    else if (m.join) sub._presence('join', m.join as PresenceMember);
    else if (m.leave) sub._presence('leave', m.leave as PresenceMember);
    else if (typeof m.offset === 'number') sub._push(m as unknown as Publication);
  }

  private sendSubscribe(sub: Subscription): void {
    const t = this.t;
    if (!t) return;
    sub.state = 'subscribing';
    const since = sub.since();
    if (t.subscribe) return t.subscribe(sub.channel, since);
    this.command(
      { op: 'subscribe', channel: sub.channel, since },
      (ok) => {
        if (this.t === t && this.subs.get(sub.channel) === sub) sub._subscribed(ok as { epoch: string; offset: number });
      },
      (e) => {
        if (e instanceof ShardcastError && this.t === t && this.subs.get(sub.channel) === sub) this.subscribeRefused(sub, e);
      },
    );
  }

  private subscribeRefused(sub: Subscription, e: ProtocolError): void {
    if (e.temporary) {
      const t = this.t;
      setTimeout(() => {
        if (this.t === t && this.subs.get(sub.channel) === sub && sub.state === 'subscribing') this.sendSubscribe(sub);
      }, backoffDelay(this.backoffOpts, 1, this.random()));
      return;
    }
    sub._fail({ code: e.code, message: e.message, temporary: false });
  }

  private detach(sub: Subscription): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    const t = this.t;
    if (!t || this.state !== 'connected') return;
    if (t.unsubscribe) t.unsubscribe(sub.channel);
    else this.request({ op: 'unsubscribe', channel: sub.channel }).catch(() => {});
  }

  private async httpPublish(channel: string, data: unknown): Promise<{ offset: number; epoch?: string }> {
    const hp = this.opts.httpPublish;
    if (!hp) throw new Error('publish needs the WebSocket transport, or the httpPublish option on SSE');
    const cfg = typeof hp === 'object' ? hp : {};
    const url = cfg.url || new URL('/api/publish', this.sseUrl()).toString();
    const res = await this.fetchFn()(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(cfg.headers || {}) },
      body: JSON.stringify({ channel, data }),
    });
    const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) {
      const e = (body.error || {}) as ProtocolError;
      throw new ShardcastError(e.code ?? 100, e.message || 'HTTP ' + res.status, res.status >= 500);
    }
    return body as { offset: number; epoch?: string };
  }

  // ---- environment ----

  private random(): number {
    return (this.opts.random || Math.random)();
  }

  private fetchFn(): typeof fetch {
    return this.opts.fetch || fetch.bind(globalThis);
  }

  private async webSocketCtor(): Promise<WebSocketCtor> {
    if (this.opts.WebSocket) return this.opts.WebSocket;
    const g = (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (g) return g;
    const mod = 'ws'; // optional peer dependency in Node without a global WebSocket
    const ws = (await import(/* webpackIgnore: true */ mod)) as { WebSocket?: WebSocketCtor; default?: WebSocketCtor };
    return (ws.WebSocket || ws.default)!;
  }

  private base(): URL {
    const loc = (globalThis as { location?: { href: string } }).location;
    return new URL(this.url, loc?.href);
  }

  private wsUrl(token: string | undefined): string {
    const u = this.base();
    u.protocol = u.protocol.replace(/^http/, 'ws');
    if (token) u.searchParams.set('token', token);
    return u.toString();
  }

  private sseUrl(): string {
    if (this.opts.sseUrl) return new URL(this.opts.sseUrl, this.base()).toString();
    const u = this.base();
    u.protocol = u.protocol.replace(/^ws/, 'http');
    u.pathname = u.pathname.replace(/\/ws\/?$/, '') + '/sse';
    u.search = '';
    return u.toString();
  }
}
