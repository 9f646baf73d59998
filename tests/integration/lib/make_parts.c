/* make_parts.c: jp_make_parts - cut a corpus into P index partitions that
 * share one codebook, for the cluster integration tests.
 *
 *   jp_make_parts --model M --index ALL --corpus C --partitions P --out DIR
 *
 * ALL is an index of the corpus built with `japlaid index` (one process);
 * its codebook (centroids, buckets) and build settings are reused. Each
 * document goes to partition jp_route_partition(id, P) (the function the
 * coordinator routes writes with), and partition p is created as
 * DIR/p<p> (meta: partition p of P, the model's identity, ALL's settings)
 * and filled with jp_index_add (split and encoded exactly as `japlaid add`
 * does). This is what `japlaid-index build --partitions P` produces, by a
 * route the tests can run without MPI; the tests only need partitions that
 * a coordinator accepts and that the embedded CLI can search.
 *
 * Prints one JSON line: {"partitions": P, "documents": [n0, n1, ...]}.
 * Exit 0 on success, 1 on failure (message on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/build.h"
#include "index/corpus.h"
#include "index/store.h"
#include "model/model.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"

#define MAX_PARTS 64

static int die(const char *what, int rc)
{
  fprintf(stderr, "jp_make_parts: %s: %s\n", what, jp_errmsg(rc));
  return 1;
}

int main(int argc, char **argv)
{
  const char *model = NULL, *all = NULL, *corpus = NULL, *out = NULL;
  int P = 0, rc;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--model")) model = argv[i + 1];
    else if (!strcmp(argv[i], "--index")) all = argv[i + 1];
    else if (!strcmp(argv[i], "--corpus")) corpus = argv[i + 1];
    else if (!strcmp(argv[i], "--partitions")) P = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
    else {
      fprintf(stderr, "jp_make_parts: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (!model || !all || !corpus || !out || P < 1 || P > MAX_PARTS) {
    fprintf(stderr, "usage: jp_make_parts --model M --index ALL --corpus C --partitions P "
            "--out DIR\n");
    return 2;
  }

  /* The shared codebook and settings. */
  struct jp_store_opts so;
  jp_store_opts_default(&so);
  so.read_only = 1;
  jp_store *src;
  if ((rc = jp_store_open(all, &so, &src)) < 0) return die(all, rc);
  struct jp_codec codec;
  if ((rc = jp_codec_copy(&codec, jp_store_codec(src))) < 0) return die("codec", rc);
  struct jp_store_meta meta = *jp_store_get_meta(src);
  jp_store_close(src);

  /* Route the corpus (JSONL lines rewritten, one file per partition). */
  if ((rc = jp_mkdir_p(out)) < 0) return die(out, rc);
  char path[MAX_PARTS][1200];
  FILE *f[MAX_PARTS];
  long n_docs[MAX_PARTS] = {0};
  for (int p = 0; p < P; p++) {
    snprintf(path[p], sizeof path[p], "%s/corpus.p%d.jsonl", out, p);
    if (!(f[p] = fopen(path[p], "w"))) return die(path[p], JP_EIO);
  }
  jp_corpus *c;
  struct jp_corpus_opts co = {0};
  if ((rc = jp_corpus_open(corpus, &co, &c)) < 0) return die(corpus, rc);
  struct jp_corpus_doc d;
  struct jp_buf line;
  jp_buf_init(&line, 0);
  while ((rc = jp_corpus_next(c, &d)) > 0) {
    int p = (int)jp_route_partition(d.id, d.id_len, (uint32_t)P);
    jp_buf_reset(&line);
    if ((rc = jp_buf_puts(&line, "{\"id\":")) < 0 ||
        (rc = jp_buf_json_str(&line, d.id, d.id_len)) < 0 ||
        (rc = jp_buf_puts(&line, ",\"text\":")) < 0 ||
        (rc = jp_buf_json_str(&line, d.text, d.text_len)) < 0 ||
        (d.metadata_json && ((rc = jp_buf_puts(&line, ",\"metadata\":")) < 0 ||
                             (rc = jp_buf_puts(&line, d.metadata_json)) < 0)) ||
        (rc = jp_buf_puts(&line, "}\n")) < 0)
      return die("corpus line", rc);
    fwrite(line.data, 1, line.len, f[p]);
    n_docs[p]++;
  }
  if (rc < 0) return die(corpus, rc);
  jp_corpus_close(c);
  jp_buf_fini(&line);
  for (int p = 0; p < P; p++) fclose(f[p]);

  struct jp_model_opts mo;
  jp_model_opts_default(&mo);
  jp_model *m;
  if ((rc = jp_model_open(model, &mo, &m)) < 0) return die(model, rc);
  printf("{\"partitions\":%d,\"documents\":[", P);
  for (int p = 0; p < P; p++) {
    char dir[1200];
    snprintf(dir, sizeof dir, "%s/p%d", out, p);
    struct jp_store_meta pm = meta;
    pm.partition_id = (uint32_t)p;
    pm.n_partitions = (uint32_t)P;
    struct jp_store_opts wo;
    jp_store_opts_default(&wo);
    wo.sync = 0;   /* test data: no fsync per batch */
    jp_store *st;
    if ((rc = jp_store_create(dir, &pm, &codec, &wo, &st)) < 0) return die(dir, rc);
    struct jp_index_add_opts ao = {path[p], 0, 2, NULL};
    struct jp_index_add_report rep;
    if ((rc = jp_index_add(st, m, &ao, &rep)) < 0) return die(path[p], rc);
    jp_store_close(st);
    printf("%s%ld", p ? "," : "", n_docs[p]);
  }
  printf("]}\n");
  jp_model_close(m);
  jp_codec_fini(&codec);
  return 0;
}
