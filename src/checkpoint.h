/* checkpoint — copies a SQLite write-ahead log back into its database file on a
 * thread of the libuv pool, over a connection of its own, so the loop thread does not
 * wait for a checkpoint's page copies and syncs (a tenth to a quarter of a second
 * each, on a busy disk, every few seconds under load).
 * Invariant: at most one checkpoint runs at a time. The loop's connection checkpoints
 * by itself only to finish a log that its writes never let start over: when the log
 * holds one and a half times the threshold, the pages written since the last
 * background run are copied on the loop, so the next write starts the log from its
 * beginning. */
#ifndef OUTBOXD_CHECKPOINT_H
#define OUTBOXD_CHECKPOINT_H

#include <sqlite3.h>
#include <stdint.h>
#include <uv.h>

typedef struct checkpoint {
  uv_loop_t *loop;
  sqlite3 *db;  /* the loop's connection (not owned) */
  sqlite3 *own; /* the pool thread's connection, opened at the first run */
  char *path;
  int pages;   /* a background run starts when this many new pages are in the log */
  int frames;  /* pages in the log after the last commit */
  int done;    /* pages of the log already copied into the database */
  int running; /* a background run is under way */
  int closing;
  int rc;                 /* the last background run: an SQLite code */
  int run_log, run_done;  /* ...and the pages it found in the log and copied */
  int64_t runs, finishes; /* background runs; logs finished on the loop */
  int64_t copied;         /* background runs that found pages copied */
  uv_work_t work;
  void (*closed)(void *arg);
  void *closed_arg;
} checkpoint_t;

/* 1 when a commit that left `frames` pages in the log, `done` of them copied, should
 * start a background run (none `running`): the log holds `pages`, half of them new
 * since the last run (so one ends past one and a half times `pages`, where the
 * loop finishes the log, before the log outgrows what SQLite keeps of its file). */
int checkpoint_wanted(int frames, int done, int pages, int running);

/* 1 when, after a background run copied `done` of `frames` pages, the loop should copy
 * the rest itself: the log holds at least one and a half times `pages`, and writes
 * that never pause would keep it from starting over. */
int checkpoint_finish(int frames, int done, int pages);

/* Takes over checkpoints of `db` (a connection in WAL mode, used on `loop`'s thread;
 * its automatic checkpoints stop) for the database at `path`, every `pages` pages.
 * Returns 0 or -ENOMEM (the connection then keeps its automatic checkpoints). */
int checkpoint_attach(checkpoint_t *c, uv_loop_t *loop, sqlite3 *db, const char *path, int pages);

/* Stops: no new run starts; `cb` runs once a run under way has ended (at once when
 * none is) and the pool thread's connection is closed. Call before closing `db`. */
void checkpoint_close(checkpoint_t *c, void (*cb)(void *arg), void *arg);

#endif
