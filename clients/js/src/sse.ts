import type { Transport, TransportHandlers } from './transport.js';
import type { Position } from './types.js';

export interface SseConfig {
  /** Absolute URL of `/sse`. */
  url: string;
  token: string | undefined;
  fetch: typeof fetch;
  /** A stream silent this long (no event, no `:` heartbeat) counts as dead. */
  stallMs: number;
  connectTimeoutMs: number;
}

/** Map an HTTP refusal of `/sse` to the close code a WebSocket would have got. */
function statusToClose(status: number, text: string): { code: number; reason: string; channelError?: number } {
  if (status === 401) return { code: /expired/i.test(text) ? 4503 : 4501, reason: text };
  if (status === 429) return { code: 4504, reason: text };
  if (status === 403) return { code: 0, reason: text, channelError: 103 };
  if (status === 400) return { code: 0, reason: text, channelError: /limit/i.test(text) ? 113 : 104 };
  return { code: status === 503 ? 1013 : 1006, reason: 'HTTP ' + status + (text ? ': ' + text : '') };
}

/**
 * Server-Sent Events over `fetch`, one stream per channel, so that every
 * channel resumes with its own `Last-Event-ID`. A stream that ends takes the
 * transport down with it: the client reconnects every channel from its position.
 */
export function openSse(cfg: SseConfig, h: TransportHandlers): Transport {
  const streams = new Map<string, AbortController>();
  let done = false;
  let opened = false;

  const finish = (code: number, reason: string) => {
    if (done) return;
    done = true;
    for (const a of streams.values()) a.abort();
    streams.clear();
    h.onClose(code, reason);
  };
  const open = () => {
    if (!opened && !done) {
      opened = true;
      h.onOpen();
    }
  };

  async function run(channel: string, since: Position | undefined, ac: AbortController): Promise<void> {
    const u = new URL(cfg.url);
    u.searchParams.set('channels', channel);
    if (cfg.token) u.searchParams.set('token', cfg.token);
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (since) headers['last-event-id'] = channel + ':' + since.epoch + ':' + since.offset;
    let stall: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms: number) => {
      clearTimeout(stall);
      stall = setTimeout(() => {
        ac.abort();
        finish(1006, 'stalled: no byte within ' + ms + ' ms');
      }, ms);
    };
    arm(cfg.connectTimeoutMs);
    try {
      const res = await cfg.fetch(u.toString(), { headers, signal: ac.signal, cache: 'no-store' });
      if (res.status !== 200 || !res.body) {
        const text = (await res.text().catch(() => '')).trim();
        const c = statusToClose(res.status, text);
        if (c.channelError) {
          streams.delete(channel);
          open();
          h.onMessage({ channel, error: { code: c.channelError, message: text, temporary: false } });
          return;
        }
        return finish(c.code, c.reason);
      }
      open();
      arm(cfg.stallMs);
      const reader = res.body.getReader();
      const td = new TextDecoder();
      let buf = '';
      let ev = { event: '', data: [] as string[] };
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) break;
        arm(cfg.stallMs);
        buf += td.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          if (buf[nl] === '\r' && nl + 1 === buf.length) break; // a CR whose LF may follow
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
          if (line === '') {
            if (ev.data.length) dispatch(channel, ev.event || 'message', ev.data.join('\n'));
            ev = { event: '', data: [] };
            if (done) return;
            continue;
          }
          if (line[0] === ':') continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value[0] === ' ') value = value.slice(1);
          if (field === 'event') ev.event = value;
          else if (field === 'data') ev.data.push(value);
        }
      }
      if (streams.get(channel) === ac) finish(1006, 'stream ended');
    } catch (e) {
      // A stream aborted by unsubscribe or by the transport's own close is not a failure.
      if (streams.get(channel) === ac) finish(1006, String((e as Error)?.message || e));
    } finally {
      clearTimeout(stall);
    }
  }

  function dispatch(channel: string, event: string, data: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (event === 'close') {
      finish(Number(msg.code) || 1006, String(msg.reason || ''));
    } else if (event === 'reply') {
      const ok = msg.ok as Record<string, unknown> | undefined;
      h.onMessage(ok ? { ok: { channel, ...ok } } : { channel, error: msg.error });
    } else {
      h.onMessage(msg);
    }
  }

  return {
    name: 'sse',
    send() {
      /* SSE carries no commands */
    },
    subscribe(channel, since) {
      if (done || streams.has(channel)) return;
      const ac = new AbortController();
      streams.set(channel, ac);
      void run(channel, since, ac);
    },
    unsubscribe(channel) {
      const ac = streams.get(channel);
      streams.delete(channel);
      ac?.abort();
    },
    close(code, reason) {
      finish(code, reason);
    },
  };
}

/** Check that the server answers at all (an SSE transport with no channel yet). */
export async function probe(f: typeof fetch, url: string, timeoutMs: number): Promise<boolean> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const res = await f(new URL('/health', url).toString(), { signal: ac.signal });
    return res.ok;
  } catch {
    return false;
  } finally {
    clearTimeout(t);
  }
}
