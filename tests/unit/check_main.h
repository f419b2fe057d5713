/* check_main — the one main() of every unit test binary (check_main.c). A test file
 * defines unit_suite(), which builds its Check suite; one that must run in the
 * runner's own process (no fork per test) also defines `const int unit_no_fork = 1`. */
#ifndef OUTBOXD_CHECK_MAIN_H
#define OUTBOXD_CHECK_MAIN_H

#include <check.h>

Suite *unit_suite(void);

#endif
