/* walvfs — a transaction's write-ahead log written as one block (see walvfs.h). */
#include "walvfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

typedef struct wfile {
  sqlite3_file base; /* methods: ours */
  sqlite3_file *real; /* the default VFS's file, in the same allocation, after this */
  int wal;            /* a write-ahead log: appends are gathered */
  char *buf;          /* gathered bytes, for [off, off + len) of the file */
  size_t len, cap;
  sqlite3_int64 off;
  int commit_next;         /* the next write ends a transaction: write the block then */
  struct wfile *next_held; /* this thread's other files holding bytes */
} wfile_t;

static sqlite3_vfs vfs;         /* ours */
static sqlite3_vfs *under;      /* the default VFS it is built on */
static sqlite3_io_methods methods;
/* Files of this thread that hold gathered bytes: a barrier writes them all. */
static __thread wfile_t *held;

/* ---------------------------------------------------------------- blocks */

static void unhold(wfile_t *f) {
  for (wfile_t **p = &held; *p; p = &(*p)->next_held)
    if (*p == f) {
      *p = f->next_held;
      break;
    }
  f->next_held = NULL;
}

/* Writes what f gathered. On failure the bytes are dropped: the write that SQLite
 * made is reported failed (to this call's caller), and SQLite rolls the transaction
 * back, which never reads those frames. */
static int flush(wfile_t *f) {
  if (f->len == 0) return SQLITE_OK; /* holds nothing: not on the held list either */
  int rc = SQLITE_OK;
  for (size_t at = 0; at < f->len && rc == SQLITE_OK; at += WALVFS_WRITE) {
    size_t n = f->len - at < WALVFS_WRITE ? f->len - at : WALVFS_WRITE;
    rc = f->real->pMethods->xWrite(f->real, f->buf + at, (int)n, f->off + (sqlite3_int64)at);
  }
  f->len = 0;
  unhold(f);
  return rc;
}

static int flush_held(void) {
  int rc = SQLITE_OK;
  while (held) {
    int r = flush(held);
    if (rc == SQLITE_OK) rc = r;
  }
  return rc;
}

/* Gathers a write of n bytes at off, after what f holds when it follows on. */
static int gather(wfile_t *f, const void *p, size_t n, sqlite3_int64 off) {
  if (f->len > 0 && off != f->off + (sqlite3_int64)f->len) {
    int rc = flush(f);
    if (rc != SQLITE_OK) return rc;
  }
  if (f->len + n > f->cap) {
    size_t cap = f->cap ? f->cap : 64 << 10;
    while (cap < f->len + n) cap *= 2;
    char *b = realloc(f->buf, cap);
    if (!b) {
      int rc = flush(f);
      return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, p, (int)n, off);
    }
    f->buf = b, f->cap = cap;
  }
  if (f->len == 0) {
    f->off = off;
    f->next_held = held, held = f;
  }
  memcpy(f->buf + f->len, p, n);
  f->len += n;
  return f->len >= WALVFS_BLOCK ? flush(f) : SQLITE_OK;
}

/* ------------------------------------------------------------ file methods */

#define REAL(file) (((wfile_t *)(file))->real)
#define FLUSHED(file)                                                                              \
  do {                                                                                             \
    int rc_ = flush((wfile_t *)(file));                                                            \
    if (rc_ != SQLITE_OK) return rc_;                                                              \
  } while (0)

static int w_close(sqlite3_file *file) {
  wfile_t *f = (wfile_t *)file;
  int rc = flush(f);
  free(f->buf);
  f->buf = NULL, f->cap = 0;
  int r = f->real->pMethods ? f->real->pMethods->xClose(f->real) : SQLITE_OK;
  return rc != SQLITE_OK ? rc : r;
}

static int w_read(sqlite3_file *file, void *p, int n, sqlite3_int64 off) {
  FLUSHED(file);
  return REAL(file)->pMethods->xRead(REAL(file), p, n, off);
}

/* A frame's header: 24 bytes, the page number then, in bytes 4-7, the database's size
 * in pages after the transaction when the frame ends one (commit), else 0. */
#define FRAME_HEADER 24
static int ends_transaction(const void *p, int n) {
  const unsigned char *b = p;
  return n == FRAME_HEADER && (b[4] | b[5] | b[6] | b[7]) != 0;
}

/* The block is written once the page of a transaction's last frame is in it: a
 * failed write then fails the commit, before SQLite publishes anything. */
static int w_write(sqlite3_file *file, const void *p, int n, sqlite3_int64 off) {
  wfile_t *f = (wfile_t *)file;
  if (!f->wal || n <= 0) return f->real->pMethods->xWrite(f->real, p, n, off);
  int last = f->commit_next;
  f->commit_next = ends_transaction(p, n);
  int rc = gather(f, p, (size_t)n, off);
  return rc == SQLITE_OK && last ? flush(f) : rc;
}

static int w_truncate(sqlite3_file *file, sqlite3_int64 size) {
  FLUSHED(file);
  return REAL(file)->pMethods->xTruncate(REAL(file), size);
}

static int w_sync(sqlite3_file *file, int flags) {
  FLUSHED(file);
  return REAL(file)->pMethods->xSync(REAL(file), flags);
}

static int w_file_size(sqlite3_file *file, sqlite3_int64 *size) {
  FLUSHED(file);
  return REAL(file)->pMethods->xFileSize(REAL(file), size);
}

static int w_lock(sqlite3_file *file, int level) {
  return REAL(file)->pMethods->xLock(REAL(file), level);
}

static int w_unlock(sqlite3_file *file, int level) {
  FLUSHED(file);
  return REAL(file)->pMethods->xUnlock(REAL(file), level);
}

static int w_check_reserved(sqlite3_file *file, int *out) {
  return REAL(file)->pMethods->xCheckReservedLock(REAL(file), out);
}

static int w_file_control(sqlite3_file *file, int op, void *arg) {
  FLUSHED(file);
  return REAL(file)->pMethods->xFileControl(REAL(file), op, arg);
}

static int w_sector_size(sqlite3_file *file) {
  return REAL(file)->pMethods->xSectorSize(REAL(file));
}

static int w_device(sqlite3_file *file) {
  return REAL(file)->pMethods->xDeviceCharacteristics(REAL(file));
}

static int w_shm_map(sqlite3_file *file, int region, int size, int extend, void volatile **p) {
  return REAL(file)->pMethods->xShmMap(REAL(file), region, size, extend, p);
}

static int w_shm_lock(sqlite3_file *file, int offset, int n, int flags) {
  int rc = flush_held();
  if (rc != SQLITE_OK) return rc;
  return REAL(file)->pMethods->xShmLock(REAL(file), offset, n, flags);
}

/* Called between writing the log and publishing it in the shared index. Nothing is
 * held here when the log was written as SQLite writes it (the last frame's write
 * wrote the block); this covers any other order. A barrier returns nothing. */
static void w_shm_barrier(sqlite3_file *file) {
  (void)flush_held();
  REAL(file)->pMethods->xShmBarrier(REAL(file));
}

static int w_shm_unmap(sqlite3_file *file, int del) {
  int rc = flush_held();
  if (rc != SQLITE_OK) return rc;
  return REAL(file)->pMethods->xShmUnmap(REAL(file), del);
}

static int w_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **p) {
  FLUSHED(file);
  if (REAL(file)->pMethods->iVersion < 3) {
    *p = NULL; /* no mapping: SQLite reads instead */
    return SQLITE_OK;
  }
  return REAL(file)->pMethods->xFetch(REAL(file), off, n, p);
}

static int w_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p) {
  if (REAL(file)->pMethods->iVersion < 3) return SQLITE_OK;
  return REAL(file)->pMethods->xUnfetch(REAL(file), off, p);
}

/* ------------------------------------------------------------ VFS methods */

static int v_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *file, int flags,
                  int *out_flags) {
  (void)v;
  wfile_t *f = (wfile_t *)file;
  memset(f, 0, sizeof *f);
  f->real = (sqlite3_file *)(f + 1);
  f->wal = (flags & SQLITE_OPEN_WAL) != 0;
  int rc = under->xOpen(under, name, f->real, flags, out_flags);
  /* SQLite closes a file whose methods are set, even when the open failed */
  f->base.pMethods = f->real->pMethods ? &methods : NULL;
  return rc;
}

static int v_delete(sqlite3_vfs *v, const char *name, int sync) {
  (void)v;
  return under->xDelete(under, name, sync);
}

static int v_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return under->xAccess(under, name, flags, out);
}

static int v_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
  (void)v;
  return under->xFullPathname(under, name, n, out);
}

static void *v_dlopen(sqlite3_vfs *v, const char *name) {
  (void)v;
  return under->xDlOpen(under, name);
}

static void v_dlerror(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  under->xDlError(under, n, out);
}

static void (*v_dlsym(sqlite3_vfs *v, void *lib, const char *sym))(void) {
  (void)v;
  return under->xDlSym(under, lib, sym);
}

static void v_dlclose(sqlite3_vfs *v, void *lib) {
  (void)v;
  under->xDlClose(under, lib);
}

static int v_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return under->xRandomness(under, n, out);
}

static int v_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return under->xSleep(under, us);
}

static int v_current_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return under->xCurrentTime(under, out);
}

static int v_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return under->xGetLastError ? under->xGetLastError(under, n, out) : 0;
}

static int v_current_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  if (under->iVersion >= 2 && under->xCurrentTimeInt64)
    return under->xCurrentTimeInt64(under, out);
  double t;
  int rc = under->xCurrentTime(under, &t);
  *out = (sqlite3_int64)(t * 86400000.0);
  return rc;
}

/* ---------------------------------------------------------------- setup */

static int registered = SQLITE_ERROR;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void setup(void) {
  if (sqlite3_initialize() != SQLITE_OK || !(under = sqlite3_vfs_find(NULL))) return;
  methods = (sqlite3_io_methods){
      .iVersion = 3,
      .xClose = w_close,
      .xRead = w_read,
      .xWrite = w_write,
      .xTruncate = w_truncate,
      .xSync = w_sync,
      .xFileSize = w_file_size,
      .xLock = w_lock,
      .xUnlock = w_unlock,
      .xCheckReservedLock = w_check_reserved,
      .xFileControl = w_file_control,
      .xSectorSize = w_sector_size,
      .xDeviceCharacteristics = w_device,
      .xShmMap = w_shm_map,
      .xShmLock = w_shm_lock,
      .xShmBarrier = w_shm_barrier,
      .xShmUnmap = w_shm_unmap,
      .xFetch = w_fetch,
      .xUnfetch = w_unfetch,
  };
  vfs = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(wfile_t) + under->szOsFile,
      .mxPathname = under->mxPathname,
      .zName = WALVFS_NAME,
      .xOpen = v_open,
      .xDelete = v_delete,
      .xAccess = v_access,
      .xFullPathname = v_full_pathname,
      .xDlOpen = v_dlopen,
      .xDlError = v_dlerror,
      .xDlSym = v_dlsym,
      .xDlClose = v_dlclose,
      .xRandomness = v_randomness,
      .xSleep = v_sleep,
      .xCurrentTime = v_current_time,
      .xGetLastError = v_last_error,
      .xCurrentTimeInt64 = v_current_time64,
  };
  registered = sqlite3_vfs_register(&vfs, 0);
}

int walvfs_register(void) {
  pthread_once(&once, setup);
  return registered;
}
