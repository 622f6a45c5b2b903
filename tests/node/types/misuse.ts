// Must NOT type-check (types.test.js expects these exact errors): the declarations catch misuse.
import { SyncEngine, Server } from 'syncengine';

interface State {
  counter: number;
}
const engine = new SyncEngine<State>({ initialState: { counter: 0 } });
engine.setState({ count: 1 });
new Server({ port: '0' });
engine.getVersion().toUpperCase();
new SyncEngine<State>({ persistMode: 'sometimes' });
new Server().rooms<State>('/r/', (room) => room.setInitialState({ count: 1 }));
new Server().rooms<State>('/r/', null, { store: { load: () => null } });
new Server().joinCluster({ url: 'redis://127.0.0.1:6379', leaseMs: '1500' });
