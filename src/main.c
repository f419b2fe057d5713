/* main — the command line: run, check, init, enqueue, status, requeue.
 * Exit codes: 0 clean end, 1 runtime failure, 2 usage, configuration or script
 * error, always with one line naming the flag, file or line at fault. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd.h"
#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "version.h"


static void usage(FILE *f) {
  fprintf(
      f, "usage: outboxd run SCRIPT.lua [options]     dispatch events to the handler script\n"
         "       outboxd check SCRIPT.lua             load the script, report errors (exit 0/2)\n"
         "       outboxd init    [--db URL]           create the outbox table if missing\n"
         "       outboxd enqueue [--db URL] --topic T [--key K] [--payload JSON] [--headers JSON]\n"
         "                                            (no --payload: NDJSON lines on stdin)\n"
         "       outboxd status  [--db URL] [--json]  counts by status, oldest pending, dead\n"
         "       outboxd requeue [--db URL] (--dead | --id N...)\n"
         "       outboxd --help | --version\n"
         "\nrun options (flag > environment > outbox.configure{} > default):\n");
  config_usage(f);
}

static int cmd_run(int argc, char **argv) {
  config_t cfg;
  char err[512];
  struct option longopts[64];
  int n = 0;
  config_defaults(&cfg);
  if (config_from_env(&cfg, err, sizeof err)) {
    fprintf(stderr, "outboxd: %s\n", err);
    return 2;
  }
  for (int i = 0; i < config_nopts && n < 62; i++) {
    int t = config_opts[i].type;
    longopts[n++] = (struct option){
        config_opts[i].flag, (t == CT_BOOL || t == CT_NEGBOOL) ? no_argument : required_argument,
        NULL, 1000 + i};
  }
  longopts[n++] = (struct option){"help", no_argument, NULL, 'h'};
  longopts[n] = (struct option){NULL, 0, NULL, 0};
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
    if (c == 'h') {
      usage(stdout);
      return 0;
    }
    if (c < 1000) {
      fprintf(stderr, "outboxd run: unknown or incomplete option '%s' (see outboxd --help)\n",
              argv[optind - 1]);
      return 2;
    }
    int i = c - 1000;
    int t = config_opts[i].type;
    const char *v = (t == CT_BOOL || t == CT_NEGBOOL) ? "1" : optarg;
    if (config_set(&cfg, i, v, CONFIG_FLAG, err, sizeof err)) {
      fprintf(stderr, "outboxd: %s\n", err);
      return 2;
    }
    /* options may follow the script: let getopt continue past it */
    if (optind < argc && argv[optind][0] != '-' && argv[optind][0]) {
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "outboxd run: missing SCRIPT.lua (usage: outboxd run SCRIPT.lua [options])\n");
    return 2;
  }
  const char *script = argv[optind];
  /* options after the script */
  if (optind + 1 < argc) {
    char **rest = argv + optind;
    int nrest = argc - optind;
    optind = 1;
    while ((c = getopt_long(nrest, rest, "+h", longopts, NULL)) != -1) {
      if (c < 1000) {
        fprintf(stderr, "outboxd run: unknown or incomplete option '%s'\n", rest[optind - 1]);
        return 2;
      }
      int i = c - 1000;
      int t = config_opts[i].type;
      if (config_set(&cfg, i, (t == CT_BOOL || t == CT_NEGBOOL) ? "1" : optarg, CONFIG_FLAG, err,
                     sizeof err)) {
        fprintf(stderr, "outboxd: %s\n", err);
        return 2;
      }
    }
    if (optind < nrest) {
      fprintf(stderr, "outboxd run: unexpected argument '%s'\n", rest[optind]);
      return 2;
    }
  }
  if (access(script, R_OK) != 0) {
    fprintf(stderr, "outboxd: %s: cannot read the script\n", script);
    return 2;
  }
  int json = cfg.log_json < 0 ? !isatty(STDERR_FILENO) : cfg.log_json;
  log_setup(json ? LOG_JSON : LOG_TEXT, cfg.log_level);
  return dispatch_run(&cfg, script);
}

int main(int argc, char **argv) {
  dispatch_set_argv(argv);
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
  if (!strcmp(cmd, "check")) {
    if (argc != 3) {
      fprintf(stderr, "usage: outboxd check SCRIPT.lua\n");
      return 2;
    }
    log_setup(LOG_TEXT, LOG_WARN);
    return dispatch_check(argv[2]);
  }
  log_setup(LOG_TEXT, LOG_WARN);
  if (!strcmp(cmd, "init")) return cmd_init(argc - 1, argv + 1);
  if (!strcmp(cmd, "enqueue")) return cmd_enqueue(argc - 1, argv + 1);
  if (!strcmp(cmd, "status")) return cmd_status(argc - 1, argv + 1);
  if (!strcmp(cmd, "requeue")) return cmd_requeue(argc - 1, argv + 1);
  fprintf(stderr, "outboxd: unknown command '%s' (see outboxd --help)\n", cmd);
  return 2;
}
