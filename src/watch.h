/* watch — hot-reload trigger: watches the script's folder (the script and the Lua
 * files beside it) and calls back once per burst of changes (debounced). Survives
 * editors that save by rename, by truncate and write, or by delete and create,
 * because it watches the folder, not the file's inode. */
#ifndef OUTBOXD_WATCH_H
#define OUTBOXD_WATCH_H

#include <uv.h>

typedef struct watch watch_t;

/* Starts watching the folder of `script`; `cb(arg)` runs `debounce_ms` after the
 * last change to a *.lua file there. Returns 0 or a negative libuv code. */
int watch_start(watch_t **out, uv_loop_t *loop, const char *script, unsigned debounce_ms,
                void (*cb)(void *arg), void *arg);

/* Stops watching and frees the watcher once its handles are closed. */
void watch_stop(watch_t *w);

#endif
