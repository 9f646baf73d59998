/* test_helpers.h: small things every test uses. Header-only on purpose. */
#ifndef JP_TEST_HELPERS_H
#define JP_TEST_HELPERS_H
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define JP_TEST_SKIP 77

/* Path under the shared data dir ($JP_DATA_DIR), or NULL if absent. */
static inline const char *jp_test_data(char *buf, size_t cap, const char *rel)
{
  const char *d = getenv("JP_DATA_DIR");
  if (!d) return NULL;
  snprintf(buf, cap, "%s/%s", d, rel);
  return access(buf, R_OK) == 0 ? buf : NULL;
}

/* A fresh temporary directory (mkdtemp); caller removes it (jp_rm_rf). */
static inline char *jp_test_tmpdir(char *buf, size_t cap)
{
  const char *t = getenv("TMPDIR");
  snprintf(buf, cap, "%s/japlaid-test-XXXXXX", t && *t ? t : "/tmp");
  return mkdtemp(buf);
}

#endif
