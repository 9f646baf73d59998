/* test_store_kill.c: acknowledged writes survive kill -9.
 *
 * A child process streams upserts and deletes into a store (sync WAL, the
 * default) and, before each call, writes its intent ("? id ver") to a pipe
 * and, after the call returned 0, the acknowledgement ("! id ver"; ver -1 =
 * deleted). The parent SIGKILLs it at a random moment, then reopens the
 * store, which must open cleanly, and checks every document: the state of
 * its last acknowledged write, except the one write in flight at the kill,
 * which may have landed or not (but never half). Several rounds run on the
 * same store, each continuing from the state the previous one verified. */
#include "test_helpers.h"
#include "store_fixture.h"
#include "index/store.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_IDS 40
#define ROUNDS 6
/* Versions are unique per (round, op): round * VER_ROUND + op. */
#define VER_ROUND 1000000

static char g_root[256];
static struct jp_codec g_codec;

static int setup(void **state)
{
  (void)state;
  fx_codec(&g_codec, 11);
  return jp_test_tmpdir(g_root, sizeof g_root) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  jp_codec_fini(&g_codec);
  jp_rm_rf(g_root);
  return 0;
}

static void write_line(int fd, char tag, int id, int ver)
{
  char line[64];
  int n = snprintf(line, sizeof line, "%c k%d %d\n", tag, id, ver);
  if (write(fd, line, (size_t)n) != n) _exit(3);
}

/* The writer: never returns. */
static void child(const char *dir, int fd, int round)
{
  struct jp_store_opts o;
  jp_store *s;
  uint64_t st = 0x9e3779b97f4a7c15ull * (uint64_t)(round + 1);
  jp_store_opts_default(&o);   /* sync = 1 */
  if (jp_store_open(dir, &o, &s) != 0) _exit(2);
  for (int op = 0; op < VER_ROUND; op++) {
    int id = (int)(jp_rand64(&st) % N_IDS), ver = round * VER_ROUND + op;
    char name[16];
    snprintf(name, sizeof name, "k%d", id);
    if (jp_rand64(&st) % 5 == 0) {
      const char *ids[1] = {name};
      write_line(fd, '?', id, -1);
      if (jp_store_delete(s, ids, NULL, 1, NULL) != 0) _exit(4);
      write_line(fd, '!', id, -1);
    } else {
      struct fx_doc d;
      fx_doc(&d, name, ver, 1, &g_codec);
      write_line(fd, '?', id, ver);
      if (jp_store_upsert(s, &d.in, 1, NULL) != 0) _exit(5);
      write_line(fd, '!', id, ver);
    }
  }
  _exit(0);
}

/* Version of document k<id> in the store: -1 if absent; asserts that the
 * passages found are exactly those of one version. */
static int stored_version(jp_store *s, int id, int candidate_a, int candidate_b)
{
  int cand[2] = {candidate_a, candidate_b};
  char name[16];
  snprintf(name, sizeof name, "k%d", id);
  if (candidate_a < 0 && candidate_b < 0) {   /* expected absent */
    struct fx_doc d;
    struct jp_arena a;
    struct jp_result *r;
    int n;
    jp_arena_init(&a, 0, 0);
    fx_doc(&d, name, 0, 1, &g_codec);
    n = fx_find_doc(s, &d, &a, &r);
    if (n != 0) fail_msg("k%d: expected absent, found %d passages ('%s')", id, n,
                         n > 0 ? r[0].content : "");
    jp_arena_fini(&a);
    return -1;
  }
  for (int c = 0; c < 2; c++) {
    struct fx_doc d;
    struct jp_arena a;
    struct jp_result *r;
    int n, ok = 1;
    char prefix[48];
    if (cand[c] < 0) continue;
    fx_doc(&d, name, cand[c], 1, &g_codec);
    jp_arena_init(&a, 0, 0);
    n = fx_find_doc(s, &d, &a, &r);
    assert_true(n >= 0);
    if (n == 0) {
      jp_arena_fini(&a);
      return -1;
    }
    snprintf(prefix, sizeof prefix, "%s#v%d:", name, cand[c]);
    for (int i = 0; i < n; i++) ok &= !strncmp(r[i].content, prefix, strlen(prefix));
    if (ok) {
      assert_int_equal(n, d.in.n_passages);     /* whole, never half */
      assert_string_equal(r[0].content, d.text[0]);
      jp_arena_fini(&a);
      return cand[c];
    }
    jp_arena_fini(&a);
  }
  /* Present but neither candidate: report what is there. */
  {
    struct fx_doc d;
    struct jp_arena a;
    struct jp_result *r;
    jp_arena_init(&a, 0, 0);
    fx_doc(&d, name, 0, 1, &g_codec);
    int n = fx_find_doc(s, &d, &a, &r);
    fail_msg("k%d: found %d passages ('%s'), expected version %d or %d", id, n,
             n > 0 ? r[0].content : "", candidate_a, candidate_b);
  }
  return -2;
}

static void acknowledged_writes_survive_kill9(void **state)
{
  (void)state;
  char dir[512];
  int expect[N_IDS];
  struct jp_store_meta m;
  jp_store *s;
  uint64_t rng = (uint64_t)time(NULL);
  long total_acks = 0;

  snprintf(dir, sizeof dir, "%s/kill", g_root);
  fx_meta(&m, FX_IDENTITY, 0, 1);
  assert_int_equal(jp_store_create(dir, &m, &g_codec, NULL, &s), 0);
  jp_store_close(s);
  for (int i = 0; i < N_IDS; i++) expect[i] = -1;

  for (int round = 0; round < ROUNDS; round++) {
    int fds[2], status, inflight_id = -1, inflight_ver = -1, acks = 0;
    char buf[1 << 16], *line;
    size_t have = 0;
    pid_t pid;
    FILE *f;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      child(dir, fds[1], round);
    }
    close(fds[1]);
    /* 50..450 ms: long enough for a few dozen synced writes. */
    jp_sleep_ms((unsigned)(50 + jp_rand64(&rng) % 400));
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
      fail_msg("round %d: writer ended by itself (status %d) before the kill", round, status);

    f = fdopen(fds[0], "r");
    assert_non_null(f);
    have = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[have] = '\0';
    for (line = buf; *line;) {
      char *nl = strchr(line, '\n'), tag;
      int id, ver;
      if (!nl) break;   /* a torn last line: the write was not acknowledged */
      *nl = '\0';
      assert_int_equal(sscanf(line, "%c k%d %d", &tag, &id, &ver), 3);
      assert_true(id >= 0 && id < N_IDS);
      if (tag == '?') {
        inflight_id = id;
        inflight_ver = ver;
      } else {
        assert_int_equal(id, inflight_id);
        expect[id] = ver;
        inflight_id = -1;
        acks++;
      }
      line = nl + 1;
    }
    total_acks += acks;

    /* Reopen: clean, and every acknowledged state is there. */
    {
      struct jp_store_opts o;
      int rc;
      jp_store_opts_default(&o);
      o.expect_identity = FX_IDENTITY;
      rc = jp_store_open(dir, &o, &s);
      if (rc) fail_msg("round %d: reopen after kill -9: %s", round, jp_errmsg(rc));
    }
    for (int id = 0; id < N_IDS; id++) {
      int got;
      if (id == inflight_id) {
        /* Either outcome of the unacknowledged write, but one of them. */
        got = stored_version(s, id, expect[id] >= 0 ? expect[id] : inflight_ver,
                             inflight_ver >= 0 ? inflight_ver : expect[id]);
        if (got != expect[id] && got != inflight_ver)
          fail_msg("round %d: in-flight k%d is at %d, neither %d nor %d", round, id, got,
                   expect[id], inflight_ver);
        expect[id] = got;
      } else {
        got = stored_version(s, id, expect[id], -1);
        if (got != expect[id])
          fail_msg("round %d: k%d acknowledged at version %d, store has %d", round, id,
                   expect[id], got);
      }
    }
    jp_store_close(s);
  }
  /* The rounds did write (else the test proves nothing). */
  assert_true(total_acks >= ROUNDS);
  print_message("kill -9: %d rounds, %ld acknowledged writes verified\n", ROUNDS, total_acks);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(acknowledged_writes_survive_kill9),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
