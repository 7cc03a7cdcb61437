// A small MessagePack codec for the daemon's WebSocket envelopes (docs/PROTOCOL.md section 3).
// encode: null, booleans, numbers (integers as int, others as float64), strings, Uint8Array
// (bin), arrays and plain objects (maps). decode: every msgpack type; ext values become
// {type, data}. Strings are UTF-8; binary data comes back as Uint8Array.

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }
  room(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v) { this.room(1); this.view.setUint8(this.pos, v); this.pos += 1; }
  u16(v) { this.room(2); this.view.setUint16(this.pos, v); this.pos += 2; }
  u32(v) { this.room(4); this.view.setUint32(this.pos, v); this.pos += 4; }
  bytes(b) { this.room(b.length); this.buf.set(b, this.pos); this.pos += b.length; }
  result() { return this.buf.slice(0, this.pos); }
}

function writeValue(w, v) {
  if (v === null || v === undefined) { w.u8(0xc0); return; }
  if (v === false) { w.u8(0xc2); return; }
  if (v === true) { w.u8(0xc3); return; }
  if (typeof v === "number") {
    if (Number.isInteger(v) && Math.abs(v) <= 0xffffffff) {
      if (v >= 0) {
        if (v < 0x80) w.u8(v);
        else if (v < 0x100) { w.u8(0xcc); w.u8(v); }
        else if (v < 0x10000) { w.u8(0xcd); w.u16(v); }
        else { w.u8(0xce); w.u32(v); }
      } else if (v >= -32) w.u8(v & 0xff);
      else if (v >= -0x80000000) { w.u8(0xd2); w.room(4); w.view.setInt32(w.pos, v); w.pos += 4; }
      else { w.u8(0xcb); w.room(8); w.view.setFloat64(w.pos, v); w.pos += 8; }
      return;
    }
    w.u8(0xcb); w.room(8); w.view.setFloat64(w.pos, v); w.pos += 8;
    return;
  }
  if (typeof v === "string") {
    const b = utf8.encode(v);
    if (b.length < 32) w.u8(0xa0 | b.length);
    else if (b.length < 0x100) { w.u8(0xd9); w.u8(b.length); }
    else if (b.length < 0x10000) { w.u8(0xda); w.u16(b.length); }
    else { w.u8(0xdb); w.u32(b.length); }
    w.bytes(b);
    return;
  }
  if (v instanceof Uint8Array) {
    if (v.length < 0x100) { w.u8(0xc4); w.u8(v.length); }
    else if (v.length < 0x10000) { w.u8(0xc5); w.u16(v.length); }
    else { w.u8(0xc6); w.u32(v.length); }
    w.bytes(v);
    return;
  }
  if (Array.isArray(v)) {
    if (v.length < 16) w.u8(0x90 | v.length);
    else if (v.length < 0x10000) { w.u8(0xdc); w.u16(v.length); }
    else { w.u8(0xdd); w.u32(v.length); }
    for (const item of v) writeValue(w, item);
    return;
  }
  if (typeof v === "object") {
    const keys = Object.keys(v);
    if (keys.length < 16) w.u8(0x80 | keys.length);
    else if (keys.length < 0x10000) { w.u8(0xde); w.u16(keys.length); }
    else { w.u8(0xdf); w.u32(keys.length); }
    for (const k of keys) { writeValue(w, k); writeValue(w, v[k]); }
    return;
  }
  throw new TypeError(`msgpack cannot encode a ${typeof v}`);
}

/** Encode a value as MessagePack bytes. */
export function encode(value) {
  const w = new Writer();
  writeValue(w, value);
  return w.result();
}

class Reader {
  constructor(bytes) {
    this.buf = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  need(n) { if (this.pos + n > this.buf.length) throw new RangeError("msgpack data ends early"); }
  u8() { this.need(1); return this.view.getUint8(this.pos++); }
  u16() { this.need(2); const v = this.view.getUint16(this.pos); this.pos += 2; return v; }
  u32() { this.need(4); const v = this.view.getUint32(this.pos); this.pos += 4; return v; }
  take(n) { this.need(n); const b = this.buf.subarray(this.pos, this.pos + n); this.pos += n; return b; }
  str(n) { return utf8d.decode(this.take(n)); }
  arr(n) { const out = new Array(n); for (let i = 0; i < n; i++) out[i] = this.value(); return out; }
  map(n) { const out = {}; for (let i = 0; i < n; i++) { const k = this.value(); out[String(k)] = this.value(); } return out; }
  ext(n) { const type = this.view.getInt8(this.pos++); return { type, data: this.take(n) }; }
  value() {
    const t = this.u8();
    if (t < 0x80) return t;
    if (t < 0x90) return this.map(t & 0x0f);
    if (t < 0xa0) return this.arr(t & 0x0f);
    if (t < 0xc0) return this.str(t & 0x1f);
    if (t >= 0xe0) return t - 0x100;
    const v = this.view;
    let x;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return this.take(this.u8()).slice();
      case 0xc5: return this.take(this.u16()).slice();
      case 0xc6: return this.take(this.u32()).slice();
      case 0xc7: return this.ext(this.u8());
      case 0xc8: return this.ext(this.u16());
      case 0xc9: return this.ext(this.u32());
      case 0xca: this.need(4); x = v.getFloat32(this.pos); this.pos += 4; return x;
      case 0xcb: this.need(8); x = v.getFloat64(this.pos); this.pos += 8; return x;
      case 0xcc: return this.u8();
      case 0xcd: return this.u16();
      case 0xce: return this.u32();
      case 0xcf: this.need(8); x = Number(v.getBigUint64(this.pos)); this.pos += 8; return x;
      case 0xd0: this.need(1); x = v.getInt8(this.pos); this.pos += 1; return x;
      case 0xd1: this.need(2); x = v.getInt16(this.pos); this.pos += 2; return x;
      case 0xd2: this.need(4); x = v.getInt32(this.pos); this.pos += 4; return x;
      case 0xd3: this.need(8); x = Number(v.getBigInt64(this.pos)); this.pos += 8; return x;
      case 0xd4: return this.ext(1);
      case 0xd5: return this.ext(2);
      case 0xd6: return this.ext(4);
      case 0xd7: return this.ext(8);
      case 0xd8: return this.ext(16);
      case 0xd9: return this.str(this.u8());
      case 0xda: return this.str(this.u16());
      case 0xdb: return this.str(this.u32());
      case 0xdc: return this.arr(this.u16());
      case 0xdd: return this.arr(this.u32());
      case 0xde: return this.map(this.u16());
      case 0xdf: return this.map(this.u32());
      default: throw new RangeError(`msgpack type byte 0x${t.toString(16)} is not valid`);
    }
  }
}

/** Decode MessagePack bytes (a Uint8Array or ArrayBuffer) into a value. */
export function decode(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const r = new Reader(buf);
  const value = r.value();
  if (r.pos !== buf.length) throw new RangeError("msgpack data has trailing bytes");
  return value;
}
