/* walvfs — a SQLite VFS, over the default one, that writes a transaction's
 * write-ahead log with one system call instead of two per page.
 *
 * SQLite appends a frame to the log as two writes: its 24-byte header, then the page.
 * A claim of 1000 rows and its acks write some 180 frames, and on a virtual machine
 * the 360 system calls cost more than the pages they copy. Here appends to a -wal file
 * are gathered in memory, in order, and written as one block:
 *   - before the transaction is published to other connections: SQLite calls
 *     xShmBarrier between writing the log and writing the header of the shared
 *     log index that makes the new frames visible, and that barrier writes every
 *     block this thread holds (a connection is used by one thread at a time);
 *   - before anything that reads, syncs, truncates or sizes the log, or writes it
 *     anywhere but right after the gathered bytes;
 *   - when the block reaches WALVFS_BLOCK bytes, and at close.
 * So what other connections and processes read of the log, and what a crash can
 * leave in it, is what SQLite wrote: frames of a transaction not yet published may be
 * missing, as they may be after any crash, and SQLite ignores them. Writes to every
 * other file pass straight through. Nothing is held between transactions (the end of
 * each releases the log's write lock, which writes the block), so a connection may
 * move between threads as SQLite allows, but a transaction must end on the thread
 * that wrote it. */
#ifndef OUTBOXD_WALVFS_H
#define OUTBOXD_WALVFS_H

#define WALVFS_NAME "outboxd-wal"
#define WALVFS_BLOCK (1 << 20) /* bytes gathered at most before they are written */
/* bytes per write: the default Unix VFS takes writes under 128 KiB only */
#define WALVFS_WRITE (64 << 10)

/* Registers the VFS (once per process; not as the default). Returns SQLITE_OK, or a
 * SQLite error code when there is no default VFS to build on or no memory. Open a
 * database on it with sqlite3_open_v2(path, &db, flags, WALVFS_NAME). */
int walvfs_register(void);

#endif
