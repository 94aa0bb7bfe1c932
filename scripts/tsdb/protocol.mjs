// The pure part of the TimescaleDB test server: PostgreSQL v3 message framing and the
// rewrites that keep PGlite's defects away (see server.mjs). Values in, values out.

export const PGLITE_CHUNK = 8192; // PGlite drops the rest of a call after a message ending here
export const COPY_CHUNK = 256 * 1024; // CopyData payload size we re-frame a COPY's data into
export const MAX_MESSAGE = 1024 * 1024 * 1024; // PostgreSQL's own limit on a frontend message
// Parameters a client may set in its startup packet that we apply with SET.
const STARTUP_SETTABLE = new Set(['application_name', 'client_encoding', 'DateStyle', 'TimeZone',
  'IntervalStyle', 'extra_float_digits', 'search_path']);
export const COPY_FROM_STDIN = /^\s*copy\b[\s\S]*\bfrom\s+stdin\b/i;
export const COPY_BINARY = /\(\s*format\s+'?binary'?|\bbinary\b/i;

// --- protocol messages -----------------------------------------------------------------

export function message(type, body = Buffer.alloc(0)) {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

export function cstring(text) {
  return Buffer.from(`${text}\0`, 'utf8');
}

export function errorResponse(severity, code, text) {
  const fields = [['S', severity], ['V', severity], ['C', code], ['M', text]];
  const body = fields.map(([k, v]) => Buffer.concat([Buffer.from(k, 'latin1'), cstring(v)]));
  return message('E', Buffer.concat([...body, Buffer.alloc(1)]));
}

export function int32(value) {
  const b = Buffer.alloc(4);
  b.writeInt32BE(value);
  return b;
}

export function copyInResponse(binary) {
  // Zero columns: libpq and psycopg only read the overall format.
  return message('G', Buffer.from([binary ? 1 : 0, 0, 0]));
}

/** Split `buf` into whole messages [{type, data}] and the remaining partial bytes. */
export function splitMessages(buf) {
  const messages = [];
  let at = 0;
  while (buf.length - at >= 5) {
    const length = buf.readInt32BE(at + 1);
    if (length < 4 || length > MAX_MESSAGE) throw new Error(`invalid message length ${length}`);
    if (buf.length - at < 1 + length) break;
    messages.push({ type: String.fromCharCode(buf[at]), data: buf.subarray(at, at + 1 + length) });
    at += 1 + length;
  }
  return { messages, rest: buf.subarray(at) };
}

/** Backend output without its CopyInResponse (the client had ours already). */
export function withoutCopyIn(out) {
  const parts = [];
  let at = 0;
  while (at < out.length) {
    const end = at + 1 + out.readInt32BE(at + 1);
    if (out[at] !== 0x47) parts.push(out.subarray(at, end));
    at = end;
  }
  return Buffer.concat(parts);
}

/**
 * One PGlite call for a COPY: `first` (the Query), the data re-framed into CopyData
 * messages none of which ends on a multiple of PGLITE_CHUNK, then `last` (CopyDone).
 */
export function copyCall(first, data, last) {
  const parts = [];
  let offset = 0;
  if (first.length % PGLITE_CHUNK === 0) {
    parts.push(message('H')); // a Flush shifts the Query off the boundary; it answers nothing
    offset = 5;
  }
  parts.push(first);
  offset += first.length;
  for (let at = 0; at < data.length;) {
    let size = Math.min(COPY_CHUNK, data.length - at);
    if ((offset + 5 + size) % PGLITE_CHUNK === 0) {
      if (size > 1) {
        size -= 1;
      } else {
        parts.push(message('H')); // ignored during COPY IN, as by PostgreSQL
        offset += 5;
      }
    }
    parts.push(message('d', data.subarray(at, at + size)));
    offset += 5 + size;
    at += size;
  }
  parts.push(last);
  return Buffer.concat(parts);
}

/** [name, value] pairs to SET from a startup packet: known parameters and `options` -c. */
export function startupSettings(params) {
  const pairs = Object.entries(params).filter(([name]) => STARTUP_SETTABLE.has(name));
  const words = (params.options ?? '').split(/\s+/).filter(Boolean);
  for (let i = 0; i < words.length; i++) {
    let setting = words[i];
    if (setting === '-c') setting = words[++i] ?? '';
    else if (setting.startsWith('-c')) setting = setting.slice(2);
    else if (setting.startsWith('--')) setting = setting.slice(2);
    const eq = setting.indexOf('=');
    if (eq > 0 && /^[A-Za-z_][\w.]*$/.test(setting.slice(0, eq))) {
      pairs.push([setting.slice(0, eq), setting.slice(eq + 1)]);
    }
  }
  return pairs;
}

// PGlite would get such a COPY's data in later calls and crash: it raises instead, in
// PGlite, so that the transaction and the skip-to-Sync state stay PostgreSQL's own.
export const EXTENDED_COPY_ERROR = "DO $tsdb$ BEGIN RAISE EXCEPTION 'COPY FROM STDIN through the "
  + "extended query protocol is not supported by the TimescaleDB test server (use the simple "
  + "protocol, as psycopg does)' USING ERRCODE = 'feature_not_supported'; END $tsdb$";

/** A Parse message, its query replaced by EXTENDED_COPY_ERROR when it is a COPY FROM STDIN. */
export function withoutExtendedCopy(data) {
  const nameEnd = data.indexOf(0, 5);
  const queryEnd = data.indexOf(0, nameEnd + 1);
  if (nameEnd < 0 || queryEnd < 0) return data;
  const query = data.subarray(nameEnd + 1, queryEnd).toString('utf8');
  if (!COPY_FROM_STDIN.test(query)) return data;
  const body = Buffer.concat([data.subarray(5, nameEnd + 1), cstring(EXTENDED_COPY_ERROR),
    data.subarray(queryEnd + 1)]);
  return message('P', body);
}

export function queryText(data) {
  return data.subarray(5, data.length - 1).toString('utf8');
}
