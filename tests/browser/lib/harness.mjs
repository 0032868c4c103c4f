// Browser-test harness: a private redis-server and tandemd on free ports, a tiny RESP client,
// chromium launched through playwright-core, and a local demo helpdesk for the extension.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..', '..');
export const SCREENSHOTS = path.join(REPO, process.env.BUILD || 'build', 'screenshots');
export const EXTENSION_DIR = path.join(REPO, 'deploy', 'extension');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch (e) { /* gone */ }
  }
});

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => (port === 6379 || port === 8787 ? resolve(freePort()) : resolve(port)));
    });
  });
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor(pred, { timeout = 10000, interval = 50, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await pred();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ': ' + last.message : ''}`);
    await sleep(interval);
  }
}

// ---- Redis ----------------------------------------------------------------------------------------

class Resp {
  constructor(port) {
    this.port = port;
    this.sock = null;
    this.buf = Buffer.alloc(0);
    this.waiters = [];
  }

  connect() {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host: '127.0.0.1', port: this.port }, () => resolve());
      s.on('error', (e) => {
        reject(e);
        for (const w of this.waiters.splice(0)) w.reject(e);
      });
      s.on('data', (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        this.drain();
      });
      this.sock = s;
    });
  }

  // parses one reply at offset; returns [value, next offset] or null when incomplete
  parse(off) {
    const nl = this.buf.indexOf('\r\n', off);
    if (nl < 0) return null;
    const kind = String.fromCharCode(this.buf[off]);
    const line = this.buf.toString('utf8', off + 1, nl);
    let next = nl + 2;
    if (kind === '+') return [line, next];
    if (kind === '-') return [new Error(line), next];
    if (kind === ':') return [Number(line), next];
    if (kind === '$') {
      const n = Number(line);
      if (n < 0) return [null, next];
      if (this.buf.length < next + n + 2) return null;
      return [this.buf.toString('utf8', next, next + n), next + n + 2];
    }
    if (kind === '*') {
      const n = Number(line);
      if (n < 0) return [null, next];
      const out = [];
      for (let i = 0; i < n; i++) {
        const r = this.parse(next);
        if (!r) return null;
        out.push(r[0]);
        next = r[1];
      }
      return [out, next];
    }
    throw new Error('bad RESP reply ' + kind);
  }

  drain() {
    while (this.waiters.length) {
      const r = this.parse(0);
      if (!r) return;
      this.buf = this.buf.subarray(r[1]);
      const w = this.waiters.shift();
      if (r[0] instanceof Error) w.reject(r[0]);
      else w.resolve(r[0]);
    }
  }

  cmd(...args) {
    const parts = [`*${args.length}\r\n`];
    for (const a of args) {
      const b = Buffer.from(String(a), 'utf8');
      parts.push(`$${b.length}\r\n`, b, '\r\n');
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.sock.write(Buffer.concat(parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p)))));
    });
  }

  close() {
    if (this.sock) this.sock.destroy();
  }
}

export async function startRedis() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-browser-redis-'));
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--protected-mode', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
  live.add(proc);
  const client = new Resp(port);
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error('redis-server exited');
    const c = new Resp(port);
    try {
      await c.connect();
      return (await c.cmd('PING')) === 'PONG';
    } finally {
      c.close();
    }
  }, { what: 'redis-server' });
  await client.connect();
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    cmd: (...a) => client.cmd(...a),
    // stream entries as [{id, fields: {k: v}}]
    async xrange(key) {
      const rows = await client.cmd('XRANGE', key, '-', '+');
      return rows.map(([id, kv]) => {
        const fields = {};
        for (let i = 0; i + 1 < kv.length; i += 2) fields[kv[i]] = kv[i + 1];
        return { id, fields };
      });
    },
    async close() {
      client.close();
      proc.kill('SIGKILL');
      live.delete(proc);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- tandemd ----------------------------------------------------------------------------------------

export async function startTandemd(redis, env = {}) {
  const bin = path.resolve(REPO, process.env.TANDEMD || 'build/tandemd');
  if (!fs.existsSync(bin)) throw new Error(`tandemd not found at ${bin}: build it (make) or set TANDEMD`);
  const port = await freePort();
  const token = crypto.randomBytes(16).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-browser-'));
  const childEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TANDEM_')) childEnv[k] = v;
  Object.assign(childEnv, {
    TANDEM_LISTEN: `127.0.0.1:${port}`,
    TANDEM_REDIS_URL: redis.url,
    TANDEM_TOKEN: token,
    TANDEM_KB: path.join(REPO, 'deploy', 'demo', 'kb.jsonl'),
    TANDEM_LOG_FORMAT: 'json',
    XDG_RUNTIME_DIR: dir,
    HOME: dir,
  }, env);
  const logPath = path.join(dir, 'stderr.log');
  const log = fs.openSync(logPath, 'a');
  const proc = spawn(bin, [], { env: childEnv, stdio: ['ignore', log, log] });
  fs.closeSync(log);
  live.add(proc);
  const base = `http://127.0.0.1:${port}`;
  const srv = {
    port,
    base,
    token,
    proc,
    log: () => fs.readFileSync(logPath, 'utf8'),
    async api(method, p, body, opts = {}) {
      const headers = { Authorization: 'Bearer ' + (opts.token || token) };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const r = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      let json = null;
      try { json = JSON.parse(text); } catch (e) { json = null; }
      return { status: r.status, json, text, headers: r.headers };
    },
    async close() {
      proc.kill('SIGTERM');
      await Promise.race([new Promise((r) => proc.once('exit', r)), sleep(5000)]);
      if (proc.exitCode === null) proc.kill('SIGKILL');
      live.delete(proc);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error('tandemd exited: ' + srv.log().slice(-2000));
    const r = await fetch(base + '/healthz');
    return r.status === 200;
  }, { what: 'tandemd /healthz' });
  const panel = await fetch(base + '/panel/');
  if (panel.status !== 200) {
    await srv.close();
    throw new Error('tandemd does not serve /panel/ (HTTP ' + panel.status + '): build it with panel/* in EMBED_SRCS');
  }
  return srv;
}

// ---- data -------------------------------------------------------------------------------------------

// A conversation in the schema of CONTRACT.md. messages: [[role, text], ...].
export async function addConversation(redis, id, { messages = [], meta = {}, customer = null } = {}) {
  const key = `tandem:conv:{${id}}:msgs`;
  for (const [role, text] of messages) await redis.cmd('XADD', key, '*', 'role', role, 'text', text);
  const m = Object.assign({ lang: 'en', brand: 'lumenpay', channel: 'chat' }, meta);
  if (customer) m.customer_id = customer.id;
  const flat = Object.entries(m).flat();
  if (flat.length) await redis.cmd('HSET', `tandem:conv:{${id}}:meta`, ...flat);
  if (customer) {
    const pflat = Object.entries(customer.profile || {}).flat();
    if (pflat.length) await redis.cmd('HSET', `tandem:cust:{${customer.id}}:profile`, ...pflat);
    for (const h of customer.history || []) {
      await redis.cmd('XADD', `tandem:cust:{${customer.id}}:history`, '*', ...Object.entries(h).flat());
    }
  }
}

export async function addMessage(redis, id, role, text) {
  return redis.cmd('XADD', `tandem:conv:{${id}}:msgs`, '*', 'role', role, 'text', text);
}

// ---- browser ---------------------------------------------------------------------------------------

export const CHROME_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];

export async function launchBrowser({ extension = false, viewport = { width: 360, height: 800 } } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-chromium-'));
  const args = CHROME_ARGS.slice();
  if (extension) args.push(`--disable-extensions-except=${EXTENSION_DIR}`, `--load-extension=${EXTENSION_DIR}`);
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: process.env.HEADED ? false : true,
    args,
    viewport,
  });
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return context;
}

export async function screenshot(page, name, opts = {}) {
  fs.mkdirSync(SCREENSHOTS, { recursive: true });
  // from the top: a full-page capture of a scrolled page paints the sticky header mid-page
  await page.evaluate(() => window.scrollTo(0, 0));
  // a fixed toast lands mid-page in a full-page capture; it fades by itself anyway
  await page.evaluate(() => { const t = document.getElementById('toast'); if (t) t.hidden = true; });
  return page.screenshot(Object.assign({ path: path.join(SCREENSHOTS, name), fullPage: true }, opts));
}

// The id Chrome gives an extension whose manifest has a "key": the first 128 bits of the
// SHA-256 of the public key, hex digits 0-f written as a-p.
export function extensionIdFromManifest() {
  const m = JSON.parse(fs.readFileSync(path.join(EXTENSION_DIR, 'manifest.json'), 'utf8'));
  const h = crypto.createHash('sha256').update(Buffer.from(m.key, 'base64')).digest('hex').slice(0, 32);
  return [...h].map((c) => String.fromCharCode(97 + parseInt(c, 16))).join('');
}

// ---- the demo helpdesk -------------------------------------------------------------------------------

export async function startHelpdesk() {
  const page = fs.readFileSync(path.join(here, '..', 'helpdesk', 'index.html'));
  const js = fs.readFileSync(path.join(here, '..', 'helpdesk', 'helpdesk.js'));
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/helpdesk.js') {
      res.writeHead(200, { 'Content-Type': 'text/javascript; charset=utf-8' });
      res.end(js);
    } else if (u.pathname === '/' || u.pathname.startsWith('/tickets/')) {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(page);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    port,
    // "localhost", not 127.0.0.1: the extension's helpdesk pattern must not match tandem itself
    base: `http://localhost:${port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}
