// RFC 6902 apply: the examples of RFC 6902 appendix A, member order, and that the input is
// never modified (a failed patch leaves nothing behind).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyPatch, parsePointer, PatchError } from '../src/index.js';

// The result and its member order: deepEqual ignores key order, the JSON text does not.
function same(actual, expected) {
  assert.equal(JSON.stringify(actual), JSON.stringify(expected));
}

const appendixA = [
  ['A.1 adding an object member', { foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux' }],
    { foo: 'bar', baz: 'qux' }],
  ['A.2 adding an array element', { foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }],
    { foo: ['bar', 'qux', 'baz'] }],
  ['A.3 removing an object member', { baz: 'qux', foo: 'bar' }, [{ op: 'remove', path: '/baz' }],
    { foo: 'bar' }],
  ['A.4 removing an array element', { foo: ['bar', 'qux', 'baz'] }, [{ op: 'remove', path: '/foo/1' }],
    { foo: ['bar', 'baz'] }],
  ['A.5 replacing a value', { baz: 'qux', foo: 'bar' }, [{ op: 'replace', path: '/baz', value: 'boo' }],
    { baz: 'boo', foo: 'bar' }],
  ['A.6 moving a value', { foo: { bar: 'baz', waldo: 'fred' }, qux: { corge: 'grault' } },
    [{ op: 'move', from: '/foo/waldo', path: '/qux/thud' }],
    { foo: { bar: 'baz' }, qux: { corge: 'grault', thud: 'fred' } }],
  ['A.7 moving an array element', { foo: ['all', 'grass', 'cows', 'eat'] },
    [{ op: 'move', from: '/foo/1', path: '/foo/3' }], { foo: ['all', 'cows', 'eat', 'grass'] }],
  ['A.8 testing a value: success', { baz: 'qux', foo: ['a', 2, 'c'] },
    [{ op: 'test', path: '/baz', value: 'qux' }, { op: 'test', path: '/foo/1', value: 2 }],
    { baz: 'qux', foo: ['a', 2, 'c'] }],
  ['A.10 adding a nested member object', { foo: 'bar' }, [{ op: 'add', path: '/child', value: { grandchild: {} } }],
    { foo: 'bar', child: { grandchild: {} } }],
  ['A.11 ignoring unrecognized elements', { foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux', xyz: 123 }],
    { foo: 'bar', baz: 'qux' }],
  ['A.14 ~ escape ordering', { '/': 9, '~1': 10 }, [{ op: 'test', path: '/~01', value: 10 }],
    { '/': 9, '~1': 10 }],
  ['A.16 adding an array value', { foo: ['bar'] }, [{ op: 'add', path: '/foo/-', value: ['abc', 'def'] }],
    { foo: ['bar', ['abc', 'def']] }],
];

for (const [name, doc, ops, expected] of appendixA) {
  test(`RFC 6902 ${name}`, () => {
    const before = JSON.stringify(doc);
    same(applyPatch(doc, ops), expected);
    assert.equal(JSON.stringify(doc), before, 'the input document was modified');
  });
}

const appendixErrors = [
  ['A.9 testing a value: error', { baz: 'qux' }, [{ op: 'test', path: '/baz', value: 'bar' }]],
  ['A.12 adding to a nonexistent target', { foo: 'bar' }, [{ op: 'add', path: '/baz/bat', value: 'qux' }]],
  ['A.15 comparing strings and numbers', { '/': 9, '~1': 10 }, [{ op: 'test', path: '/~01', value: '10' }]],
];
for (const [name, doc, ops] of appendixErrors) {
  test(`RFC 6902 ${name}`, () => {
    assert.throws(() => applyPatch(doc, ops), PatchError);
  });
}

test('member order: replace keeps the place, add appends, move onto itself moves to the end', () => {
  const doc = { a: 1, b: 2, c: 3 };
  same(applyPatch(doc, [{ op: 'replace', path: '/a', value: 10 }]), { a: 10, b: 2, c: 3 });
  same(applyPatch(doc, [{ op: 'add', path: '/a', value: 10 }]), { a: 10, b: 2, c: 3 });
  same(applyPatch(doc, [{ op: 'add', path: '/d', value: 4 }]), { a: 1, b: 2, c: 3, d: 4 });
  same(applyPatch(doc, [{ op: 'move', from: '/a', path: '/a' }]), { b: 2, c: 3, a: 1 });
  same(applyPatch(doc, [{ op: 'remove', path: '/b' }, { op: 'add', path: '/b', value: 5 }]), { a: 1, c: 3, b: 5 });
  same(applyPatch([1, 2, 3], [{ op: 'move', from: '/1', path: '/1' }]), [1, 2, 3]);
});

test('copy, root operations and nested arrays', () => {
  const doc = { list: [{ n: 1 }], m: {} };
  const copied = applyPatch(doc, [{ op: 'copy', from: '/list/0', path: '/m/first' },
    { op: 'replace', path: '/list/0/n', value: 2 }]);
  same(copied, { list: [{ n: 2 }], m: { first: { n: 1 } } });
  same(doc, { list: [{ n: 1 }], m: {} });
  same(applyPatch(doc, [{ op: 'replace', path: '', value: [1] }]), [1]);
  same(applyPatch(doc, [{ op: 'add', path: '', value: 7 }]), 7);
  same(applyPatch({ a: { b: 1 } }, [{ op: 'move', from: '/a', path: '' }]), { b: 1 });
  same(applyPatch({ x: [[0, 1], [2]] }, [{ op: 'add', path: '/x/0/2', value: 9 },
    { op: 'remove', path: '/x/1/0' }, { op: 'add', path: '/x/-', value: [] }]), { x: [[0, 1, 9], [], []] });
  same(applyPatch(doc, []), doc);
});

test('untouched branches are shared, touched ones are copies', () => {
  const doc = { big: { items: [1, 2, 3] }, counter: 1 };
  const next = applyPatch(doc, [{ op: 'replace', path: '/counter', value: 2 }]);
  assert.notEqual(next, doc);
  assert.equal(next.big, doc.big);
  assert.equal(doc.counter, 1);
});

test('a patch that fails half-way leaves the input untouched', () => {
  const doc = { a: { b: [1, 2] }, c: 1 };
  const before = JSON.stringify(doc);
  assert.throws(() => applyPatch(doc, [{ op: 'add', path: '/a/b/0', value: 0 },
    { op: 'remove', path: '/c' }, { op: 'remove', path: '/nope' }]), (err) => err instanceof PatchError && err.index === 2);
  assert.equal(JSON.stringify(doc), before);
});

test('malformed operations and paths are PatchErrors', () => {
  const doc = { a: [1, 2], o: { k: 1 } };
  const bad = [
    'not an array',
    [null], [[]], [{ op: 'frob', path: '/a' }], [{ op: 'add', path: 'a', value: 1 }],
    [{ op: 'add', path: '/a/01', value: 1 }], [{ op: 'add', path: '/a/3', value: 1 }],
    [{ op: 'add', path: '/a/-1', value: 1 }], [{ op: 'replace', path: '/a/2', value: 1 }],
    [{ op: 'replace', path: '/a/-', value: 1 }], [{ op: 'remove', path: '/a/2' }],
    [{ op: 'remove', path: '' }], [{ op: 'replace', path: '/missing', value: 1 }],
    [{ op: 'add', path: '/o' }], [{ op: 'move', from: '/o', path: '/o/k2' }],
    [{ op: 'copy', from: '/nothing', path: '/x' }], [{ op: 'add', path: '/o/k/deeper', value: 1 }],
    [{ op: 'add', path: '/a/~2', value: 1 }], [{ op: 'add', path: 5, value: 1 }],
  ];
  for (const ops of bad) assert.throws(() => applyPatch(doc, ops), PatchError, JSON.stringify(ops));
});

test('a member named __proto__ is data, never the prototype', () => {
  const doc = JSON.parse('{"a":{}}');
  const next = applyPatch(doc, [{ op: 'add', path: '/a/__proto__', value: { polluted: true } }]);
  assert.equal(({}).polluted, undefined);
  assert.equal(Object.getPrototypeOf(next.a), Object.prototype);
  assert.deepEqual(Object.keys(next.a), ['__proto__']);
  assert.throws(() => applyPatch({}, [{ op: 'replace', path: '/__proto__', value: 1 }]), PatchError);
  assert.throws(() => applyPatch({}, [{ op: 'copy', from: '/constructor', path: '/x' }]), PatchError);
});

test('JSON Pointer tokens', () => {
  assert.deepEqual(parsePointer(''), []);
  assert.deepEqual(parsePointer('/'), ['']);
  assert.deepEqual(parsePointer('/a~1b/m~0n/~01'), ['a/b', 'm~n', '~1']);
});
