// What both baselines share: the command line, the initial state, the listening line.
//   bun <server>.ts [PORT] [PAD_BYTES]     (or env PORT, PAD_BYTES; HEARTBEAT_MS, default 30000,
//                                           0 = off). Loopback only.

export type Settings = { port: number; padBytes: number; heartbeatMs: number };

function numberArg(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`${name} must be a whole number >= 0, not '${value}'`);
    process.exit(2);
  }
  return n;
}

export function settings(): Settings {
  const [portArg, padArg] = process.argv.slice(2);
  return {
    port: numberArg(portArg ?? process.env.PORT, 3000, "PORT"),
    padBytes: numberArg(padArg ?? process.env.PAD_BYTES, 0, "PAD_BYTES"),
    heartbeatMs: numberArg(process.env.HEARTBEAT_MS, 30000, "HEARTBEAT_MS"),
  };
}

// {"counter":0}, plus the benchmarks' "blob" of padding when asked for.
export function initialState(padBytes: number): { counter: number; blob?: string } {
  return padBytes > 0 ? { counter: 0, blob: "x".repeat(padBytes) } : { counter: 0 };
}

// An increment without a numeric amount counts as 1, as in the seed's quick start.
export function amountOf(message: unknown): number {
  const amount = (message as { amount?: unknown } | null)?.amount;
  return typeof amount === "number" ? amount : 1;
}

export function announce(name: string, port: number, s: Settings): void {
  console.log(`${name} listening on 127.0.0.1:${port} pad=${s.padBytes} heartbeat=${s.heartbeatMs}ms`);
}
