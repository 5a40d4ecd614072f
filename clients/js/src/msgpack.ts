/** MessagePack for the values JSON can also say (the `shardcast.v1.msgpack` subprotocol). */

const te = new TextEncoder();
const td = new TextDecoder();

export function encode(value: unknown): Uint8Array {
  const out: number[] = [];
  write(out, value);
  return Uint8Array.from(out);
}

function be(out: number[], v: number, bytes: number): void {
  for (let i = bytes - 1; i >= 0; i--) out.push(Math.floor(v / Math.pow(2, 8 * i)) & 0xff);
}

function write(out: number[], v: unknown): void {
  if (v === null || v === undefined) out.push(0xc0);
  else if (v === false) out.push(0xc2);
  else if (v === true) out.push(0xc3);
  else if (typeof v === 'number') writeNumber(out, v);
  else if (typeof v === 'string') {
    const b = te.encode(v);
    const n = b.length;
    if (n < 32) out.push(0xa0 | n);
    else if (n < 0x100) out.push(0xd9, n);
    else if (n < 0x10000) out.push(0xda), be(out, n, 2);
    else out.push(0xdb), be(out, n, 4);
    for (let i = 0; i < n; i++) out.push(b[i]);
  } else if (Array.isArray(v)) {
    header(out, v.length, 0x90, 0xdc);
    for (const x of v) write(out, x);
  } else if (typeof v === 'object') {
    const keys = Object.keys(v as object).filter((k) => (v as Record<string, unknown>)[k] !== undefined);
    header(out, keys.length, 0x80, 0xde);
    for (const k of keys) {
      write(out, k);
      write(out, (v as Record<string, unknown>)[k]);
    }
  } else throw new TypeError('cannot encode ' + typeof v + ' as MessagePack');
}

function header(out: number[], n: number, fix: number, tag16: number): void {
  if (n < 16) out.push(fix | n);
  else if (n < 0x10000) out.push(tag16), be(out, n, 2);
  else out.push(tag16 + 1), be(out, n, 4);
}

function writeNumber(out: number[], v: number): void {
  if (Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER) {
    if (v >= 0) {
      if (v < 0x80) return void out.push(v);
      if (v < 0x100) return void out.push(0xcc, v);
      if (v < 0x10000) return out.push(0xcd), be(out, v, 2);
      if (v < 0x100000000) return out.push(0xce), be(out, v, 4);
      return out.push(0xcf), be(out, v, 8);
    }
    if (v >= -32) return void out.push(v & 0xff);
    if (v >= -0x80000000) {
      out.push(0xd2);
      const u = v >>> 0;
      return be(out, u, 4);
    }
  }
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, v);
  out.push(0xcb);
  for (let i = 0; i < 8; i++) out.push(dv.getUint8(i));
}

export function decode(buf: Uint8Array): unknown {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let p = 0;
  const u = (n: number): number => {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + buf[p++];
    return v;
  };
  const str = (n: number): string => {
    const s = td.decode(buf.subarray(p, p + n));
    p += n;
    return s;
  };
  const arr = (n: number): unknown[] => {
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = read();
    return a;
  };
  const map = (n: number): Record<string, unknown> => {
    const o: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const k = String(read());
      o[k] = read();
    }
    return o;
  };
  const signed = (n: number): number => {
    const v = u(n);
    const top = Math.pow(2, 8 * n);
    return v >= top / 2 ? v - top : v;
  };
  function read(): unknown {
    if (p >= buf.length) throw new RangeError('truncated MessagePack');
    const t = buf[p++];
    if (t < 0x80) return t;
    if (t < 0x90) return map(t & 0x0f);
    if (t < 0xa0) return arr(t & 0x0f);
    if (t < 0xc0) return str(t & 0x1f);
    if (t >= 0xe0) return t - 0x100;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: case 0xc5: case 0xc6: {
        const n = u(1 << (t - 0xc4));
        const b = buf.slice(p, p + n);
        p += n;
        return b;
      }
      case 0xca: p += 4; return dv.getFloat32(p - 4);
      case 0xcb: p += 8; return dv.getFloat64(p - 8);
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return u(8);
      case 0xd0: return signed(1);
      case 0xd1: return signed(2);
      case 0xd2: return signed(4);
      case 0xd3: return signed(8);
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      case 0xde: return map(u(2));
      case 0xdf: return map(u(4));
    }
    throw new RangeError('unsupported MessagePack type 0x' + t.toString(16));
  }
  return read();
}
