/* Small blocks mapped apart from the heap (server/server_alloc.c): size-class slabs in 64 KiB
 * chunks whose pages go back to the system once every slot of a chunk is free. For memory that
 * comes and goes in waves between long-lived heap blocks (connections, the frames and texts a
 * room caches while it has clients): freed on the heap, it would leave holes whose pages stay
 * resident. malloc/free semantics; sync__slab_free also takes heap pointers (blocks over 8 KiB,
 * and every block under AddressSanitizer, are malloc()'d). Any thread. */
#ifndef LIBSYNC_SRC_SLAB_H
#define LIBSYNC_SRC_SLAB_H

#include <stddef.h>

void *sync__slab_malloc(size_t size);
void sync__slab_free(void *ptr);

#endif
