/* main — the command line: run, test, check, init, enqueue, status, requeue, pause,
 * resume.
 * Exit codes: 0 clean end, 1 runtime failure, 2 usage, configuration or script
 * error, always with one line naming the flag, file or line at fault. */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "testrun.h"
#include "version.h"

static void usage(FILE *f) {
  fprintf(
      f, "usage: outboxd run SCRIPT.lua [options]     dispatch events to the handler script\n"
         "       outboxd test SCRIPT.lua FIXTURE.ndjson [--http-stub STUB.lua] [--json] [options]\n"
         "                                            run fixture events on a fake clock, no "
         "database\n"
         "       outboxd check SCRIPT.lua             load the script, report errors (exit 0/2)\n"
         "       outboxd init    [--db URL]           create the outbox table if missing\n"
         "       outboxd enqueue [--db URL] --topic T [--key K] [--payload JSON] [--headers JSON]\n"
         "                       [--delay MS | --at TIME]  (no --payload: NDJSON lines on stdin)\n"
         "       outboxd status  [--db URL] [--json]  counts by status, oldest pending, dead\n"
         "       outboxd requeue [--db URL] (--dead | --id N...)\n"
         "       outboxd pause|resume [--db URL] PATTERN   stop / restart a topic on every host\n"
         "       outboxd COMMAND --help | outboxd --help | --version\n"
         "\nrun options (flag > environment > outbox.configure{} > default):\n");
  config_usage(f);
}

#define TEST_USAGE                                                                                 \
  "usage: outboxd test SCRIPT.lua FIXTURE.ndjson [--http-stub STUB.lua] [--json] [run options]\n"  \
  "  runs each fixture event (NDJSON, as for ndjson: sources) through the script on a\n"           \
  "  fake clock (sleeps and retry delays take no time); outbox.http is answered by\n"              \
  "  STUB.lua (a file returning function(req) return {status=, headers=, body=} end).\n"           \
  "  Prints one line per attempt: `id topic done`, `id topic retry N: error`,\n"                   \
  "  `id topic dead: reason` (--json: one JSON object each). Exit 1 if any event ends\n"           \
  "  dead, 2 for a bad script, fixture or stub. Run options as for `outboxd run`.\n"

/* The extra options of `outboxd test`. */
typedef struct test_args {
  const char *stub;
  int json;
} test_args_t;

enum { OPT_HELP = 'h', OPT_STUB = 900, OPT_JSON = 901, OPT_CONFIG = 1000 };

/* Parses `run` or `test` arguments (test when t is not NULL): `npos` positional
 * arguments into pos, run options into cfg, anywhere on the line. Returns 0, -1
 * after printing --help, or 2 after printing why on one line. */
static int parse_run_args(int argc, char **argv, config_t *cfg, const char **pos, int npos,
                          test_args_t *t) {
  const char *cmd = t ? "test" : "run";
  char err[512];
  struct option longopts[72];
  int n = 0, got = 0, c;
  for (int i = 0; i < config_nopts && n < 66; i++) {
    int ty = config_opts[i].type;
    longopts[n++] = (struct option){config_opts[i].flag,
                                    (ty == CT_BOOL || ty == CT_NEGBOOL) ? no_argument
                                    : ty == CT_DURATION                 ? optional_argument
                                                                        : required_argument,
                                    NULL, OPT_CONFIG + i};
  }
  longopts[n++] = (struct option){"help", no_argument, NULL, OPT_HELP};
  if (t) {
    longopts[n++] = (struct option){"http-stub", required_argument, NULL, OPT_STUB};
    longopts[n++] = (struct option){"json", no_argument, NULL, OPT_JSON};
  }
  longopts[n] = (struct option){NULL, 0, NULL, 0};
  optind = 0; /* glibc: a full reset */
  opterr = 0;
  for (;;) {
    c = getopt_long(argc, argv, "+:h", longopts, NULL);
    if (c == -1) {
      if (optind >= argc) break;
      if (got == npos) {
        fprintf(stderr, "outboxd %s: unexpected argument '%s'\n", cmd, argv[optind]);
        return 2;
      }
      pos[got++] = argv[optind++]; /* options may follow positionals */
      continue;
    }
    if (c == OPT_HELP) {
      t ? fputs(TEST_USAGE, stdout) : usage(stdout);
      return -1;
    }
    if (c == OPT_STUB) {
      t->stub = optarg;
    } else if (c == OPT_JSON) {
      t->json = 1;
    } else if (c >= OPT_CONFIG) {
      int i = c - OPT_CONFIG, ty = config_opts[i].type;
      const char *v = (ty == CT_BOOL || ty == CT_NEGBOOL) ? "1" : optarg;
      int64_t ms;
      if (ty == CT_DURATION && !optarg) /* optional: the next word when it is a duration */
        v = optind < argc && config_parse_duration(argv[optind], &ms) == 0 ? argv[optind++]
                                                                           : "forever";
      if (config_set(cfg, i, v, CONFIG_FLAG, err, sizeof err)) {
        fprintf(stderr, "outboxd: %s\n", err);
        return 2;
      }
    } else if (c == ':') {
      fprintf(stderr, "outboxd %s: %s needs a value\n", cmd, argv[optind - 1]);
      return 2;
    } else {
      fprintf(stderr, "outboxd %s: unknown option '%s' (see outboxd %s --help)\n", cmd,
              argv[optind - 1], cmd);
      return 2;
    }
  }
  if (got < npos) {
    fprintf(stderr, "outboxd %s: missing %s (usage: outboxd %s)\n", cmd,
            got == 0 ? "SCRIPT.lua" : "FIXTURE.ndjson",
            t ? "test SCRIPT.lua FIXTURE.ndjson [options]" : "run SCRIPT.lua [options]");
    return 2;
  }
  return 0;
}

/* Defaults, then the environment. Returns 0 or 2 after printing why. */
static int run_config(config_t *cfg) {
  char err[512];
  config_defaults(cfg);
  if (config_from_env(cfg, err, sizeof err)) {
    fprintf(stderr, "outboxd: %s\n", err);
    return 2;
  }
  return 0;
}

static void setup_log(const config_t *cfg) {
  int json = cfg->log_json < 0 ? !isatty(STDERR_FILENO) : cfg->log_json;
  log_setup(json ? LOG_JSON : LOG_TEXT, cfg->log_level);
}

static int cmd_run(int argc, char **argv) {
  config_t cfg;
  const char *script;
  int rc = run_config(&cfg);
  if (!rc) rc = parse_run_args(argc, argv, &cfg, &script, 1, NULL);
  if (rc) return rc < 0 ? 0 : rc;
  if (access(script, R_OK) != 0) {
    fprintf(stderr, "outboxd: %s: cannot read the script\n", script);
    return 2;
  }
  setup_log(&cfg);
  return dispatch_run(&cfg, script);
}

static int cmd_test(int argc, char **argv) {
  config_t cfg;
  const char *pos[2];
  test_args_t t = {NULL, 0};
  int rc = run_config(&cfg);
  if (rc) return rc;
  /* test defaults: events one at a time (lines in fixture order), text logs of
   * warnings and errors only, no reload, no metrics */
  if (cfg.source[config_find("concurrency", 0)] < CONFIG_ENV) cfg.concurrency = 1;
  if (cfg.source[config_find("log-level", 0)] < CONFIG_ENV) cfg.log_level = LOG_WARN;
  if (cfg.source[config_find("log", 0)] < CONFIG_ENV) cfg.log_json = 0;
  rc = parse_run_args(argc, argv, &cfg, pos, 2, &t);
  if (rc) return rc < 0 ? 0 : rc;
  setup_log(&cfg);
  return testrun(&cfg, pos[0], pos[1], t.stub, t.json);
}

/* `outboxd check SCRIPT.lua`. */
static int cmd_check(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    puts("usage: outboxd check SCRIPT.lua\n  loads the script as `run` would, reports the first "
         "error with file and line; exit 0 (ok) or 2");
    return 0;
  }
  for (int i = 1; i < argc; i++)
    if (argv[i][0] == '-') {
      fprintf(stderr, "outboxd check: unknown option '%s' (usage: outboxd check SCRIPT.lua)\n",
              argv[i]);
      return 2;
    }
  if (argc != 2) {
    fprintf(stderr, "outboxd check: %s (usage: outboxd check SCRIPT.lua)\n",
            argc < 2 ? "missing SCRIPT.lua" : "one script at a time");
    return 2;
  }
  log_setup(LOG_TEXT, LOG_WARN);
  return dispatch_check(argv[1]);
}

static void on_sigpipe(int sig) { (void)sig; }

/* A reader that went away (stderr piped to `head`, a metrics client, a peer) must
 * not kill the process: writes to it fail with EPIPE instead. A handler rather
 * than SIG_IGN, so the programs a script starts (io.popen, os.execute) get the
 * default disposition back at exec, as they expect. */
static void survive_sigpipe(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigpipe;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGPIPE, &sa, NULL);
}

/* glibc gives the top of the heap back when 128 KiB are free there and moves its mmap
 * threshold as it sees big frees: a claim-and-settle cycle then shrinks and regrows the
 * heap every batch (a page fault per page each time). Fixed thresholds keep up to
 * TRIM_KEEP of free heap and send only big blocks (large payloads) to mmap, which go
 * back to the system as soon as they are freed. */
#define TRIM_KEEP (8 << 20)
#define MMAP_FROM (1 << 20)

int main(int argc, char **argv) {
  survive_sigpipe();
  dispatch_set_argv(argv);
#ifdef M_TRIM_THRESHOLD
  mallopt(M_TRIM_THRESHOLD, TRIM_KEEP);
  mallopt(M_MMAP_THRESHOLD, MMAP_FROM);
#endif
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    printf("outboxd %s\n", OUTBOXD_VERSION);
    return 0;
  }
  if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
  if (!strcmp(cmd, "test")) return cmd_test(argc - 1, argv + 1);
  if (!strcmp(cmd, "check")) return cmd_check(argc - 1, argv + 1);
  log_setup(LOG_TEXT, LOG_WARN);
  if (!strcmp(cmd, "init")) return cmd_init(argc - 1, argv + 1);
  if (!strcmp(cmd, "enqueue")) return cmd_enqueue(argc - 1, argv + 1);
  if (!strcmp(cmd, "status")) return cmd_status(argc - 1, argv + 1);
  if (!strcmp(cmd, "requeue")) return cmd_requeue(argc - 1, argv + 1);
  if (!strcmp(cmd, "pause")) return cmd_pause(argc - 1, argv + 1);
  if (!strcmp(cmd, "resume")) return cmd_resume(argc - 1, argv + 1);
  fprintf(stderr, "outboxd: unknown command '%s' (see outboxd --help)\n", cmd);
  return 2;
}
