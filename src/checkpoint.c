/* checkpoint — a SQLite write-ahead log copied back into its database off the loop
 * thread (see checkpoint.h). The loop thread owns every field; the pool thread reads
 * `path` and writes `own`, `rc`, `run_log` and `run_done` only while `running`. */
#include "checkpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int checkpoint_wanted(int frames, int done, int pages, int running) {
  return !running && frames >= pages && frames - done >= pages / 2;
}

int checkpoint_finish(int frames, int done, int pages) {
  return frames >= pages + pages / 2 && done < frames;
}

/* Pool thread: a passive checkpoint never takes the write lock, so the loop's
 * transactions go on meanwhile. */
static void run(uv_work_t *w) {
  checkpoint_t *c = w->data;
  c->run_log = c->run_done = 0;
  if (!c->own) {
    /* NOMUTEX: used by one thread at a time (a run, then the loop at close). */
    c->rc = sqlite3_open_v2(c->path, &c->own, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    /* a read first: until then the connection does not know the file is in WAL mode,
     * and a checkpoint does nothing */
    if (c->rc == SQLITE_OK) c->rc = sqlite3_exec(c->own, "PRAGMA journal_mode", NULL, NULL, NULL);
    if (c->rc != SQLITE_OK) {
      sqlite3_close(c->own);
      c->own = NULL;
      return;
    }
  }
  c->rc =
      sqlite3_wal_checkpoint_v2(c->own, NULL, SQLITE_CHECKPOINT_PASSIVE, &c->run_log, &c->run_done);
}

static void finish_close(checkpoint_t *c) {
  sqlite3_close(c->own);
  c->own = NULL;
  free(c->path);
  c->path = NULL;
  if (c->closed) c->closed(c->closed_arg);
}

/* Copies the rest of the log on the loop's connection: pages written during the
 * background run, so a few. */
static void finish_on_loop(checkpoint_t *c) {
  int log = 0, done = 0;
  if (sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done) != SQLITE_OK)
    return; /* another process checkpoints: the next run tries again */
  c->finishes++;
  c->done = done;
}

static int on_commit(void *arg, sqlite3 *db, const char *name, int frames);

static void after_run(uv_work_t *w, int status) {
  checkpoint_t *c = w->data;
  c->running = 0;
  if (c->closing) {
    finish_close(c);
    return;
  }
  if (!c->own) { /* no connection of its own: SQLite checkpoints as it would alone */
    log_at(LOG_WARN, "checkpoints stay on the loop thread", KS("db", c->path),
           KS("error", sqlite3_errstr(c->rc)));
    sqlite3_wal_autocheckpoint(c->db, c->pages);
    return;
  }
  c->runs++;
  /* a failed run (another process checkpoints) waits for as many new pages again */
  if (c->rc == SQLITE_OK && c->run_done < 0) c->rc = SQLITE_ERROR; /* not in WAL mode */
  c->done = c->rc == SQLITE_OK ? c->run_done : c->frames;
  if (c->rc == SQLITE_OK && c->run_done > 0) c->copied++;
  if (c->rc == SQLITE_OK && checkpoint_finish(c->frames, c->done, c->pages)) finish_on_loop(c);
}

/* After each commit of the loop's connection, with the pages now in the log. */
static int on_commit(void *arg, sqlite3 *db, const char *name, int frames) {
  checkpoint_t *c = arg;
  if (frames < c->done) c->done = 0; /* the log started over */
  c->frames = frames;
  if (c->closing || !checkpoint_wanted(frames, c->done, c->pages, c->running)) return SQLITE_OK;
  c->work.data = c;
  if (uv_queue_work(c->loop, &c->work, run, after_run) == 0) c->running = 1;
  return SQLITE_OK;
}

int checkpoint_attach(checkpoint_t *c, uv_loop_t *loop, sqlite3 *db, const char *path, int pages) {
  memset(c, 0, sizeof *c);
  c->loop = loop;
  c->db = db;
  c->pages = pages > 0 ? pages : 1;
  if (!(c->path = strdup(path))) return -ENOMEM;
  sqlite3_wal_hook(db, on_commit, c); /* in place of the automatic checkpoints */
  return 0;
}

void checkpoint_close(checkpoint_t *c, void (*cb)(void *arg), void *arg) {
  c->closing = 1;
  c->closed = cb;
  c->closed_arg = arg;
  if (c->db) sqlite3_wal_hook(c->db, NULL, NULL);
  if (!c->running) finish_close(c);
}
