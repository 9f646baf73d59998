/* ops_tool.c: the JSON work of the ops tests, so the shell scripts need
 * neither jq nor python (CI installs neither by default):
 *
 *   ops_tool get PATH [DEFAULT]   < json
 *       the value at PATH ("coverage.partitions_answered", "replicas.0.state",
 *       "errors_by_kind.UNAVAILABLE") of the first JSON document on stdin:
 *       strings raw, anything else as compact JSON. Missing: DEFAULT if
 *       given, else exit 1.
 *   ops_tool count PATH VALUE     < json lines
 *       how many lines have VALUE (as `get` prints it) at PATH.
 *   ops_tool merge K FILE...
 *       `japlaid search` outputs of the partitions of one index (same queries
 *       in the same order) merged into the top K per query by score (ties:
 *       smaller passage id, the coordinator's rule), ranks renumbered, and
 *       printed exactly as `japlaid search` prints (same fields, order and
 *       number formatting), so a cluster's answer can be compared byte for
 *       byte with `cmp`.
 *
 * Exit status: 0 ok, 1 not found / check failed, 2 usage or I/O error. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"

#define MAX_FILES 64

static int usage(void)
{
  fprintf(stderr, "usage: ops_tool get PATH [DEFAULT] < json | count PATH VALUE < lines | "
                  "merge K FILE...\n");
  return 2;
}

/* The value at a dotted path; numeric parts index arrays. */
static json_t *at(json_t *j, const char *path)
{
  char part[256];
  while (j && *path) {
    const char *dot = strchr(path, '.');
    size_t n = dot ? (size_t)(dot - path) : strlen(path);
    if (n >= sizeof part) return NULL;
    memcpy(part, path, n);
    part[n] = '\0';
    if (json_is_array(j)) {
      char *end;
      long i = strtol(part, &end, 10);
      j = *end || i < 0 ? NULL : json_array_get(j, (size_t)i);
    } else {
      j = json_object_get(j, part);
    }
    path += n + (dot != NULL);
  }
  return j;
}

/* Print j as `get` does into buf (malloc'd). */
static char *show(json_t *j)
{
  if (json_is_string(j)) return strdup(json_string_value(j));
  return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}

static int cmd_get(int argc, char **argv)
{
  json_error_t e;
  if (argc < 3) return usage();
  json_t *doc = json_loadf(stdin, JSON_DISABLE_EOF_CHECK, &e);
  if (!doc) {
    fprintf(stderr, "ops_tool get: not JSON: %s\n", e.text);
    return 2;
  }
  json_t *v = at(doc, argv[2]);
  int rc = 0;
  if (v) {
    char *s = show(v);
    puts(s ? s : "");
    free(s);
  } else if (argc > 3) {
    puts(argv[3]);
  } else {
    fprintf(stderr, "ops_tool get: no %s\n", argv[2]);
    rc = 1;
  }
  json_decref(doc);
  return rc;
}

static int cmd_count(int argc, char **argv)
{
  char *line = NULL;
  size_t cap = 0;
  long n = 0;
  if (argc != 4) return usage();
  while (getline(&line, &cap, stdin) >= 0) {
    json_error_t e;
    json_t *doc = json_loads(line, 0, &e);
    if (!doc) continue;
    json_t *v = at(doc, argv[2]);
    char *s = v ? show(v) : NULL;
    n += s && !strcmp(s, argv[3]);
    free(s);
    json_decref(doc);
  }
  free(line);
  printf("%ld\n", n);
  return 0;
}

struct hit {
  json_t *h;                      /* borrowed from its line's document */
  float score;
  uint64_t pid;
};

static int hit_cmp(const void *a, const void *b)
{
  const struct hit *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return (x->pid > y->pid) - (x->pid < y->pid);
}

static int cmd_merge(int argc, char **argv)
{
  FILE *f[MAX_FILES];
  int nf = argc - 3, rc = 0;
  long k;
  if (nf < 1 || nf > MAX_FILES || (k = atol(argv[2])) < 1) return usage();
  for (int i = 0; i < nf; i++)
    if (!(f[i] = fopen(argv[3 + i], "r"))) {
      fprintf(stderr, "ops_tool merge: cannot read %s\n", argv[3 + i]);
      return 2;
    }
  char *line = NULL;
  size_t cap = 0;
  struct jp_buf b;
  jp_buf_init(&b, 0);
  for (long q = 0; !rc; q++) {
    json_t *docs[MAX_FILES] = {0};
    struct hit *hits = NULL;
    size_t nh = 0, hcap = 0;
    int got = 0;
    for (int i = 0; i < nf; i++) {
      json_error_t e;
      if (getline(&line, &cap, f[i]) < 0) continue;
      got++;
      if (!(docs[i] = json_loads(line, 0, &e))) {
        fprintf(stderr, "ops_tool merge: %s line %ld: %s\n", argv[3 + i], q + 1, e.text);
        rc = 2;
        break;
      }
      json_t *res = json_object_get(docs[i], "results"), *h;
      size_t idx;
      json_array_foreach(res, idx, h) {
        if (nh == hcap) {
          hcap = hcap ? 2 * hcap : 64;
          hits = realloc(hits, hcap * sizeof *hits);
          if (!hits) return 2;
        }
        hits[nh].h = h;
        hits[nh].score = (float)json_number_value(json_object_get(h, "score"));
        hits[nh].pid = (uint64_t)json_integer_value(json_object_get(h, "passage_id"));
        nh++;
      }
    }
    if (rc || got == 0) {
      for (int i = 0; i < nf; i++) json_decref(docs[i]);
      free(hits);
      if (!rc && got == 0) break;
      continue;
    }
    if (got != nf) {
      fprintf(stderr, "ops_tool merge: the files have different numbers of lines\n");
      rc = 2;
    }
    qsort(hits, nh, sizeof *hits, hit_cmp);
    /* As cmd_search.c's write_results prints a line. */
    jp_buf_reset(&b);
    json_t *qid = json_object_get(docs[0], "qid");
    jp_buf_putc(&b, '{');
    if (json_is_string(qid)) {
      jp_buf_puts(&b, "\"qid\":");
      jp_buf_json_str(&b, json_string_value(qid), json_string_length(qid));
      jp_buf_putc(&b, ',');
    }
    jp_buf_puts(&b, "\"results\":[");
    for (size_t i = 0; i < nh && (long)i < k; i++) {
      json_t *h = hits[i].h, *c = json_object_get(h, "content"), *d = json_object_get(h,
                                                                                 "document_id");
      json_t *m = json_object_get(h, "document_metadata");
      if (i) jp_buf_putc(&b, ',');
      jp_buf_puts(&b, "{\"content\":");
      jp_buf_json_str(&b, json_string_value(c), json_string_length(c));
      jp_buf_puts(&b, ",\"score\":");
      jp_buf_json_float(&b, hits[i].score);
      jp_buf_printf(&b, ",\"rank\":%zu,\"document_id\":", i + 1);
      jp_buf_json_str(&b, json_string_value(d), json_string_length(d));
      jp_buf_printf(&b, ",\"passage_id\":%" PRIu64, hits[i].pid);
      if (m) {
        jp_buf_puts(&b, ",\"document_metadata\":");
        char *ms = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
        jp_buf_puts(&b, ms ? ms : "null");
        free(ms);
      }
      jp_buf_putc(&b, '}');
    }
    jp_buf_puts(&b, "]}\n");
    fwrite(b.data, 1, b.len, stdout);
    for (int i = 0; i < nf; i++) json_decref(docs[i]);
    free(hits);
  }
  free(line);
  jp_buf_fini(&b);
  for (int i = 0; i < nf; i++) fclose(f[i]);
  return rc;
}

int main(int argc, char **argv)
{
  if (argc < 2) return usage();
  if (!strcmp(argv[1], "get")) return cmd_get(argc, argv);
  if (!strcmp(argv[1], "count")) return cmd_count(argc, argv);
  if (!strcmp(argv[1], "merge")) return cmd_merge(argc, argv);
  return usage();
}
