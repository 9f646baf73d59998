/* bench_tokenizer.c: single-thread speed of the tokenizer (NFKC + MeCab +
 * WordPiece + ColBERT framing) on the JSQuAD validation corpus.
 *
 *   bench_tokenizer [--data DIR] [--dict DICDIR]... [--lite -1|0|1] [--seconds S]
 *
 * For each dictionary (default: Debian's UniDic if installed, and IPAdic) it
 * runs jp_tok_doc over every paragraph (column 3 of
 * jsquad/valid.corpus.tsv) and jp_tok_ids without truncation, repeating
 * whole passes for at least S seconds (default 3), and jp_tok_query over the
 * questions. Prints paragraphs/s, sentences/s (sentence ends 。！？!? counted
 * in the input), tokens/s and MB/s. No peer: there is no C reference, and
 * the Python one (HF BertJapaneseTokenizer) is not installable here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jp_config.h"
#include "text/tokenizer.h"
#include "util/clock.h"
#include "util/err.h"

#define MAX_TEXTS 8192

/* CPU seconds of this process: on a shared machine (2 cores, many jobs) the
 * wall clock includes time spent waiting for a core, CPU time does not. */
static double cpu_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct corpus {
  char *data;
  const char *text[MAX_TEXTS];
  size_t len[MAX_TEXTS];
  int n;
  size_t bytes;
  long sentences;
};

static int load_tsv(const char *path, int col, struct corpus *c)
{
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  c->data = malloc((size_t)size + 1);
  if (!c->data || fread(c->data, 1, (size_t)size, f) != (size_t)size) {
    fclose(f);
    return -1;
  }
  fclose(f);
  c->data[size] = '\0';
  c->n = 0;
  c->bytes = 0;
  c->sentences = 0;
  for (char *line = c->data; *line && c->n < MAX_TEXTS;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    char *t = line;
    for (int k = 0; k < col && t; k++) {
      t = strchr(t, '\t');
      if (t) t++;
    }
    if (t) {
      c->text[c->n] = t;
      c->len[c->n] = strlen(t);
      c->bytes += c->len[c->n];
      for (const char *p = t; *p; p++)
        c->sentences += *p == '!' || *p == '?' ||
                        (!strncmp(p, "。", 3) || !strncmp(p, "！", 3) || !strncmp(p, "？", 3));
      c->n++;
    }
    if (!nl) break;
    line = nl + 1;
  }
  return 0;
}

static int bench_dict(const char *vocab_path, const char *dicdir, int lite, double min_s,
                      const struct corpus *paras, const struct corpus *queries)
{
  jp_vocab *v = NULL;
  int rc = jp_vocab_load(vocab_path, &v);
  if (rc < 0) {
    fprintf(stderr, "vocab: %s\n", jp_errmsg(rc));
    return 1;
  }
  struct jp_tok_opts o;
  jp_tok_opts_default(&o);
  o.mecab_dicdir = dicdir;
  o.lite_compat = lite;
  jp_tok *t = NULL;
  jp_tok_ctx *c = NULL;
  double t0 = jp_now_s();
  rc = jp_tok_create(v, &o, &t);
  if (rc == 0) rc = jp_tok_ctx_create(t, &c);
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", dicdir, jp_errmsg(rc));
    jp_tok_destroy(t);
    return 1;
  }
  double t_create = jp_now_s() - t0;
  printf("dictionary %s (%s, lite_compat %d), create %.1f ms\n", jp_tok_dicdir(t),
         jp_tok_dict_kind(t) == JP_DICT_UNIDIC   ? "UniDic"
         : jp_tok_dict_kind(t) == JP_DICT_IPADIC ? "IPAdic"
                                                 : "other",
         jp_tok_lite_compat(t), t_create * 1e3);

  /* jp_tok_doc: what indexing runs per passage. */
  int32_t ids[256];
  uint8_t keep[256];
  static int32_t all[65536];
  long passes = 0, docs = 0, doc_tokens = 0;
  double el = 0, c0 = cpu_s();
  t0 = jp_now_s();
  do {
    for (int i = 0; i < paras->n; i++) {
      int n = 0;
      if (jp_tok_doc(c, paras->text[i], paras->len[i], ids, keep, &n, NULL) < 0) return 1;
      doc_tokens += n;
      docs++;
    }
    passes++;
    el = jp_now_s() - t0;
  } while (el < min_s);
  double cpu = cpu_s() - c0;
  printf("  jp_tok_doc   : %8.0f paragraphs/s %9.0f sentences/s %10.0f tokens/s %6.2f MB/s"
         " (%ld passes, %.2f s wall; per CPU second: %.0f tokens/s, %.0f sentences/s)\n",
         docs / el, passes * paras->sentences / el, doc_tokens / el, passes * paras->bytes / el / 1e6,
         passes, el, doc_tokens / cpu, passes * paras->sentences / cpu);

  /* jp_tok_ids: every token, no truncation. */
  long id_tokens = 0;
  passes = 0;
  c0 = cpu_s();
  t0 = jp_now_s();
  do {
    for (int i = 0; i < paras->n; i++) {
      size_t n = 0;
      if (jp_tok_ids(c, paras->text[i], paras->len[i], all, 65536, &n, NULL) < 0) return 1;
      id_tokens += (long)n;
    }
    passes++;
    el = jp_now_s() - t0;
  } while (el < min_s);
  cpu = cpu_s() - c0;
  printf("  jp_tok_ids   : %8.0f paragraphs/s %9.0f sentences/s %10.0f tokens/s %6.2f MB/s"
         " (per CPU second: %.0f tokens/s)\n",
         passes * paras->n / el, passes * paras->sentences / el, id_tokens / el,
         passes * paras->bytes / el / 1e6, id_tokens / cpu);

  /* jp_tok_query: what the coordinator runs per request. */
  long nq = 0;
  c0 = cpu_s();
  t0 = jp_now_s();
  do {
    for (int i = 0; i < queries->n; i++) {
      int32_t q[256];
      uint8_t a[256];
      if (jp_tok_query(c, queries->text[i], queries->len[i], q, a, NULL) < 0) return 1;
      nq++;
    }
    el = jp_now_s() - t0;
  } while (el < min_s / 2);
  cpu = cpu_s() - c0;
  printf("  jp_tok_query : %8.0f queries/s (%.1f us each; %.1f us CPU)\n", nq / el, el / nq * 1e6,
         cpu / nq * 1e6);
  jp_tok_ctx_destroy(c);
  jp_tok_destroy(t);
  return 0;
}

int main(int argc, char **argv)
{
  const char *data = getenv("JP_DATA_DIR");
  if (!data) data = JP_DATA_DIR;
  const char *dicts[8];
  int nd = 0, lite = -1;
  double secs = 3.0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
    else if (!strcmp(argv[i], "--dict") && i + 1 < argc && nd < 8) dicts[nd++] = argv[++i];
    else if (!strcmp(argv[i], "--lite") && i + 1 < argc) lite = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) secs = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--data DIR] [--dict DICDIR]... [--lite -1|0|1] [--seconds S]\n",
              argv[0]);
      return 2;
    }
  }
  if (nd == 0) {
    dicts[nd++] = "/var/lib/mecab/dic/unidic";
    dicts[nd++] = "/var/lib/mecab/dic/ipadic-utf8";
  }
  char vocab[4096], corpus[4096], qpath[4096];
  snprintf(vocab, sizeof vocab, "%s/bert-base-japanese-v3/vocab.txt", data);
  snprintf(corpus, sizeof corpus, "%s/jsquad/valid.corpus.tsv", data);
  snprintf(qpath, sizeof qpath, "%s/jsquad/valid.queries.tsv", data);
  static struct corpus paras, queries;
  if (load_tsv(corpus, 2, &paras) < 0 || load_tsv(qpath, 1, &queries) < 0) {
    fprintf(stderr, "cannot read %s or %s\n", corpus, qpath);
    return 1;
  }
  printf("JSQuAD valid: %d paragraphs, %ld sentences, %.2f MB; %d questions; single thread\n",
         paras.n, paras.sentences, paras.bytes / 1e6, queries.n);
  int rc = 0;
  for (int i = 0; i < nd; i++) rc |= bench_dict(vocab, dicts[i], lite, secs, &paras, &queries);
  free(paras.data);
  free(queries.data);
  return rc;
}
