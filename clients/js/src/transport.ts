import { decode, encode } from './msgpack.js';
import type { Position, TransportName } from './types.js';

/** What a transport reports to the client. Every callback runs at most once per event; onClose exactly once. */
export interface TransportHandlers {
  onOpen(): void;
  onMessage(msg: Record<string, unknown>): void;
  onClose(code: number, reason: string): void;
}

export interface Transport {
  readonly name: TransportName;
  /** Send one command (WebSocket only). */
  send(cmd: Record<string, unknown>): void;
  /** Start delivering a channel (SSE opens a stream; WebSocket sends `subscribe` through the client instead). */
  subscribe?(channel: string, since: Position | undefined): void;
  unsubscribe?(channel: string): void;
  /** Close from this side; onClose follows with the given code. */
  close(code: number, reason: string): void;
}

/** The subset of the WebSocket API the client uses (browsers, Node 22+, and the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

const ignore = (): void => {};

export function openWebSocket(
  Ctor: WebSocketCtor,
  url: string,
  protocol: 'json' | 'msgpack',
  connectTimeoutMs: number,
  h: TransportHandlers,
): Transport {
  const ws = new Ctor(url, 'shardcast.v1.' + protocol);
  ws.binaryType = 'arraybuffer';
  let done = false;
  const finish = (code: number, reason: string) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Keep an error handler: closing a socket still connecting makes the `ws`
    // package emit an error afterwards, which would be uncaught without one.
    ws.onerror = ignore;
    h.onClose(code, reason);
  };
  const timer = setTimeout(() => {
    try {
      ws.close();
    } catch {
      /* not open yet: the constructor's socket is dropped with the object */
    }
    finish(1006, 'connect timeout');
  }, connectTimeoutMs);
  ws.onopen = () => {
    clearTimeout(timer);
    h.onOpen();
  };
  ws.onmessage = (ev) => {
    if (done) return;
    let msg: unknown;
    try {
      const d = ev.data;
      msg = typeof d === 'string' ? JSON.parse(d) : decode(new Uint8Array(d as ArrayBuffer));
    } catch {
      return; // not a protocol message
    }
    if (msg && typeof msg === 'object') h.onMessage(msg as Record<string, unknown>);
  };
  ws.onclose = (ev) => finish(ev.code || 1006, ev.reason || '');
  ws.onerror = ignore; // onclose follows
  return {
    name: 'websocket',
    send(cmd) {
      if (done || ws.readyState !== 1) return;
      ws.send(protocol === 'msgpack' ? encode(cmd) : JSON.stringify(cmd));
    },
    close(code, reason) {
      if (done) return;
      try {
        ws.close(code >= 3000 && code < 5000 ? code : 1000, reason.slice(0, 120));
      } catch {
        /* already closing */
      }
      finish(code, reason);
    },
  };
}
