/*
 * The one SWIG interface of libsync. Each language has its bridge file (callbacks from C into the
 * host language, host exceptions, the module name); the declarations every language shares are in
 * common.i, which each bridge includes after its %module line.
 *   swig -python -I<repo>/bindings -I<repo>/libsync/include bindings/syncengine.i
 *   swig -javascript -node -I<repo>/bindings -I<repo>/libsync/include bindings/syncengine.i
 */
#if defined(SWIGPYTHON)
%include "python/syncengine_python.i"
#elif defined(SWIGJAVASCRIPT)
%include "node/syncengine_node.i"
#else
#error "libsync's SWIG interface supports Python and JavaScript (Node)"
#endif
