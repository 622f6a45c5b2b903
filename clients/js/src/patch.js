// RFC 6902 JSON Patch apply (add, remove, replace, move, copy, test) on plain JSON values.
//
// The input document is never modified: every container on the path of a write is copied first
// (structural sharing), so a state handed to listeners earlier stays as it was, and a patch that
// fails half-way leaves nothing behind. Containers created during one apply are written in place.
// Object members keep their order: a replaced member stays where it was, an added one goes to the
// end, and a `move` onto the same path is a remove then an add (the member moves to the end), as
// the server computes it.

export class PatchError extends Error {
  constructor(message, index) {
    super(index === undefined ? message : `operation ${index}: ${message}`);
    this.name = 'PatchError';
    this.index = index;
  }
}

const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
const isContainer = (value) => value !== null && typeof value === 'object';
const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;

// Own data properties only: a key named "__proto__" is a member like any other, never the
// prototype (JSON.parse makes it an own property; plain assignment would not).
function setMember(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}

/** The reference tokens of a JSON Pointer (RFC 6901): "" is the whole document. */
export function parsePointer(pointer) {
  if (typeof pointer !== 'string') throw new PatchError(`pointer is not a string: ${JSON.stringify(pointer)}`);
  if (pointer === '') return [];
  if (pointer[0] !== '/') throw new PatchError(`pointer does not start with "/": ${JSON.stringify(pointer)}`);
  return pointer.slice(1).split('/').map((token) => {
    if (/~[^01]|~$/.test(token)) throw new PatchError(`bad escape in pointer ${JSON.stringify(pointer)}`);
    return token.replace(/~1/g, '/').replace(/~0/g, '~');
  });
}

function cloneJson(value) {
  if (!isContainer(value)) return value;
  if (Array.isArray(value)) return value.map(cloneJson);
  const copy = {};
  for (const key of Object.keys(value)) setMember(copy, key, cloneJson(value[key]));
  return copy;
}

function equalJson(a, b) {
  if (a === b) return true;
  if (!isContainer(a) || !isContainer(b) || Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((item, i) => equalJson(item, b[i]));
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((key) => hasOwn(b, key) && equalJson(a[key], b[key]));
}

function arrayIndex(array, token, { allowEnd }) {
  if (allowEnd && token === '-') return array.length;
  if (!ARRAY_INDEX.test(token)) throw new PatchError(`bad array index ${JSON.stringify(token)}`);
  const index = Number(token);
  if (index > array.length || (!allowEnd && index === array.length)) {
    throw new PatchError(`array index ${index} out of range (length ${array.length})`);
  }
  return index;
}

/**
 * Applies `ops` to `document` and returns the result; throws PatchError (document untouched)
 * when an operation is malformed, a path does not exist, or a `test` fails.
 */
export function applyPatch(document, ops) {
  if (!Array.isArray(ops)) throw new PatchError('a patch is an array of operations');
  const owned = new WeakSet();
  let root = document;

  const writable = (container) => {
    if (owned.has(container)) return container;
    let copy;
    if (Array.isArray(container)) {
      copy = container.slice();
    } else {
      copy = {};
      for (const key of Object.keys(container)) setMember(copy, key, container[key]);
    }
    owned.add(copy);
    return copy;
  };

  const get = (tokens) => {
    let node = root;
    for (const token of tokens) {
      if (Array.isArray(node)) node = node[arrayIndex(node, token, { allowEnd: false })];
      else if (isContainer(node) && hasOwn(node, token)) node = node[token];
      else throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
    }
    return node;
  };

  // The container that holds the last token, copied (with every container above it) if needed.
  const parentOf = (tokens) => {
    if (!isContainer(root)) throw new PatchError('path does not exist: the document is not a container');
    root = writable(root);
    let node = root;
    for (const token of tokens.slice(0, -1)) {
      let key = token;
      if (Array.isArray(node)) key = arrayIndex(node, token, { allowEnd: false });
      else if (!hasOwn(node, token)) throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
      const child = node[key];
      if (!isContainer(child)) throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
      const copy = writable(child);
      if (copy !== child) {
        if (Array.isArray(node)) node[key] = copy;
        else setMember(node, key, copy);
      }
      node = copy;
    }
    return node;
  };

  const add = (tokens, value) => {
    if (tokens.length === 0) {
      root = value;
      return;
    }
    const parent = parentOf(tokens);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, { allowEnd: true }), 0, value);
    else setMember(parent, last, value);
  };

  const remove = (tokens) => {
    if (tokens.length === 0) throw new PatchError('cannot remove the whole document');
    const parent = parentOf(tokens);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) {
      const [removed] = parent.splice(arrayIndex(parent, last, { allowEnd: false }), 1);
      return removed;
    }
    if (!hasOwn(parent, last)) throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
    const removed = parent[last];
    delete parent[last];
    return removed;
  };

  const replace = (tokens, value) => {
    if (tokens.length === 0) {
      root = value;
      return;
    }
    const parent = parentOf(tokens);
    const last = tokens[tokens.length - 1];
    if (Array.isArray(parent)) parent[arrayIndex(parent, last, { allowEnd: false })] = value;
    else if (hasOwn(parent, last)) setMember(parent, last, value);
    else throw new PatchError(`path ${JSON.stringify(tokens)} does not exist`);
  };

  ops.forEach((op, index) => {
    try {
      if (!isContainer(op) || Array.isArray(op)) throw new PatchError('an operation is an object');
      const path = parsePointer(op.path);
      const needValue = () => {
        if (!hasOwn(op, 'value')) throw new PatchError(`"${op.op}" needs a value`);
        return op.value;
      };
      switch (op.op) {
        case 'add': add(path, needValue()); break;
        case 'remove': remove(path); break;
        case 'replace': replace(path, needValue()); break;
        case 'move': {
          const from = parsePointer(op.from);
          const inside = from.length < path.length && from.every((token, i) => token === path[i]);
          if (inside) throw new PatchError('cannot move a value into one of its own children');
          const value = from.length === 0 ? root : get(from);
          if (from.length === 0) root = undefined;
          else remove(from);
          add(path, value);
          break;
        }
        case 'copy': add(path, cloneJson(get(parsePointer(op.from)))); break;
        case 'test':
          if (!equalJson(get(path), needValue())) throw new PatchError(`test failed at ${op.path}`);
          break;
        default: throw new PatchError(`unknown op ${JSON.stringify(op.op)}`);
      }
    } catch (err) {
      if (err instanceof PatchError && err.index === undefined) throw new PatchError(err.message, index);
      throw err;
    }
  });
  return root;
}
