/* cmd — the operations commands: init, enqueue, status, requeue, pause, resume.
 * Each takes the arguments after `outboxd` (argv[0] is the command name) and
 * returns the exit code: 0 ok, 1 runtime failure, 2 usage error. Every failure
 * prints one line on stderr naming the flag, file or line at fault. */
#ifndef OUTBOXD_CMD_H
#define OUTBOXD_CMD_H

/* `outboxd init [--db URL]`: creates the outbox table if missing. */
int cmd_init(int argc, char **argv);

/* `outboxd enqueue [--db URL] --topic T [--key K] [--payload TEXT] [--headers JSON]
 * [--delay MS | --at TIME]`; without --payload, one NDJSON event per line on stdin
 * (bad lines are reported as `line N: error` and skipped; the exit code is then 1).
 * --delay/--at make the events claimable only from then (TIME: epoch ms or ISO 8601
 * with a zone). Every command but init exits 2 on a SQLite path that does not exist. */
int cmd_enqueue(int argc, char **argv);

/* `outboxd status [--db URL] [--json]`: counts by status, oldest pending age and
 * the last dead events; --json prints one object with the counts. */
int cmd_status(int argc, char **argv);

/* `outboxd requeue [--db URL] (--dead | --id N...)`: moves events back to pending
 * with attempts reset and prints how many moved. */
int cmd_requeue(int argc, char **argv);

/* `outboxd pause [--db URL] PATTERN` / `outboxd resume [--db URL] PATTERN`: adds or
 * removes a paused topic pattern (exact, or a prefix ending in '*') in the database;
 * no host starts an event of a paused topic (within about 1 s). */
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);

#endif
