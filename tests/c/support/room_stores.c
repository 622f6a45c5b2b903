#include "room_stores.h"

#include <stdlib.h>

#include "adapter_fs.h"

sync_room_store *rs_open_sqlite(const char *dir)
{
    char *path = afs_join(dir, "rooms.sqlite");
    sync_sqlite_options opts = SYNC_SQLITE_OPTIONS_INIT;
    opts.path = path;
    sync_room_store *store = NULL;
    int rc = sync_room_store_sqlite_new(&store, &opts);
    free(path);
    return rc == SYNC_OK ? store : NULL;
}

sync_room_store *rs_open_file(const char *dir)
{
    char *path = afs_join(dir, "rooms");
    sync_file_rooms_options opts = SYNC_FILE_ROOMS_OPTIONS_INIT;
    opts.dir = path;
    opts.fsync = 0;
    sync_room_store *store = NULL;
    int rc = sync_room_store_file_new(&store, &opts);
    free(path);
    return rc == SYNC_OK ? store : NULL;
}
