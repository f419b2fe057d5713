/* The main() of every unit test binary: runs the suite its test file builds and
 * exits non-zero when a test failed. CK_FORK and CK_DEFAULT_TIMEOUT in the
 * environment work as Check documents. */
#include <stdlib.h>

#include "check_main.h"

/* A test file that defines this as 1 runs its tests in this process. */
__attribute__((weak)) const int unit_no_fork = 0;

int main(void) {
  SRunner *sr = srunner_create(unit_suite());
  if (unit_no_fork) srunner_set_fork_status(sr, CK_NOFORK);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
