// Starts and stops the real counter_server binary for the Node end-to-end tests: the binary comes
// from $LIBSYNC_COUNTER_SERVER, each server gets --port 0 and a fresh data directory, the port is
// read from its "listening on" line (bounded wait), and it is ended by its PID.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, accessSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function serverBinary() {
  const path = process.env.LIBSYNC_COUNTER_SERVER;
  if (!path) throw new Error('LIBSYNC_COUNTER_SERVER is not set: point it at the built counter_server');
  accessSync(path, constants.X_OK);
  return path;
}

export async function startServer({ args = [], dataDir, port = 0, timeoutMs = 20000, env } = {}) {
  const ownDir = dataDir ? null : mkdtempSync(join(tmpdir(), 'libsync-e2e-'));
  const dir = dataDir ?? join(ownDir, 'data');
  const child = spawn(serverBinary(),
    ['--port', String(port), '--data-dir', dir, '--heartbeat-ms', '0', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });

  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no 'listening on' line within ${timeoutMs} ms\n${stderr}`)), timeoutMs);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const line = out.split('\n')[0];
      if (out.includes('\n')) {
        clearTimeout(timer);
        const m = /^listening on (https?):\/\/([^:/\s]+):(\d+)(\/\S*)?$/.exec(line);
        if (m) resolve({ host: m[2], port: Number(m[3]), url: line.slice('listening on '.length) });
        else reject(new Error(`unexpected first line: ${JSON.stringify(line)}\n${stderr}`));
      }
    });
    exited.then(({ code }) => { clearTimeout(timer); reject(new Error(`exited (${code}) before listening\n${stderr}`)); });
  });

  let address;
  try {
    address = await listening;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    ...address,
    pid: child.pid,
    // Resolves with { code, signal } when the process has ended (for tests that kill it).
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    dataDir: dir,
    http: `http://${address.host}:${address.port}`,
    ws: (path = '/') => `ws://${address.host}:${address.port}${path}`,
    stderr: () => stderr,
    // Graceful stop by signal; resolves to the exit code, rejects when it hangs.
    async stop(signal = 'SIGTERM', stopTimeoutMs = 15000) {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, signal);
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => {
          process.kill(child.pid, 'SIGKILL');
          reject(new Error(`counter_server did not stop within ${stopTimeoutMs} ms\n${stderr}`));
        }, stopTimeoutMs);
      });
      try {
        const { code } = await Promise.race([exited, timeout]);
        return code;
      } finally {
        clearTimeout(timer);
        if (ownDir) rmSync(ownDir, { recursive: true, force: true });
      }
    },
  };
}
