// Compiled by tsc --strict --noEmit (ctest js.client_types): the .d.ts describes the API as used.
import { connect, applyPatch, SyncClient } from '../src/index.js';
const c: SyncClient<{ counter: number }> = connect<{ counter: number }>('ws://x', { queueLimit: 3, onState: (s, v, i) => { const n: number = s.counter; void v; void i.frame; } });
c.send('increment', { amount: 1 });
const d = applyPatch({ a: 1 }, [{ op: 'replace', path: '/a', value: 2 }]);
void d.a;
void c.close();
