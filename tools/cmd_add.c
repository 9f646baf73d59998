/* cmd_add.c: `japlaid add` -- add (or replace) documents in an index with
 * no rebuild (index/build.h jp_index_add): split as the index was built,
 * encode, compress against the index's codebook, one synced commit per
 * batch. Prints one JSON line with the counts.
 *
 * With --server HOST:PORT the documents go to a coordinator in batches
 * (japlaid.v1.Search/Upsert), which splits them with each partition's
 * build settings, encodes and writes them to every replica of the owning
 * partition; each batch is acknowledged (durable) before the next is read.
 * The output has the same fields; "embeddings" is null because Upsert does
 * not report it. A document id repeated within the file is a bad line, as
 * in the embedded mode. */
#include "cli.h"
#include "remote.h"
#include "index/build.h"
#include "index/corpus.h"
#include "util/err.h"
#include "util/hash.h"
#include "util/mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Documents per Upsert call: the coordinator encodes a batch within its
 * write deadline (60 s by default); 64 documents of up to a few passages
 * take seconds with a bert-base model on two CPU cores. */
#define REMOTE_ADD_DOCS 64
/* Text bytes per call, far under the 64 MiB message cap (the vectors the
 * coordinator makes of them are ~20x larger and go to the shards). */
#define REMOTE_ADD_BYTES ((size_t)4 << 20)

static const char *const usage_text =
  "usage: japlaid add --index DIR --corpus FILE [--model DIR] [--skip-bad-lines]\n"
  "                   [--threads N]\n"
  "       japlaid add --server HOST:PORT [--deadline-ms MS] --corpus FILE\n"
  "                   [--skip-bad-lines]\n"
  "\n"
  "Adds the documents of FILE (JSONL or TSV, as `japlaid index`) to the index;\n"
  "a document whose id is already indexed is replaced (all of its passages).\n"
  "Long documents are split as the index was built. Each batch is committed\n"
  "(fsync'ed) before the next is read. The model defaults to the one the index\n"
  "was built with; another model is refused.\n"
  "Prints {\"documents\",\"passages\",\"embeddings\",\"bad_lines\"} on stdout.\n"
  "With --server (a coordinator's gRPC address) the cluster takes the documents,\n"
  "64 per acknowledged call, split as each partition was built; \"embeddings\" is\n"
  "then null. --deadline-ms MS: time allowed per call.\n";

/* ---- remote mode (--server) ---------------------------------------------------- */

/* Ids seen so far (exact: the ids themselves, open addressing). */
struct idtab {
  char **id;
  uint64_t *line;
  size_t cap, n;
};

static void idtab_free(struct idtab *t)
{
  for (size_t i = 0; i < t->cap; i++) jp_free(t->id[i]);
  jp_free(t->id);
  jp_free(t->line);
}

/* 1 and *prev when id is already there, 0 when added, JP_ENOMEM. */
static int idtab_add(struct idtab *t, const char *id, size_t len, uint64_t line, uint64_t *prev)
{
  if (2 * (t->n + 1) > t->cap) {
    /* Keep the load under 1/2 so probes stay short. */
    struct idtab nt = {0};
    nt.cap = t->cap ? 2 * t->cap : 1024;
    nt.id = jp_calloc(nt.cap, sizeof *nt.id);
    nt.line = jp_calloc(nt.cap, sizeof *nt.line);
    if (!nt.id || !nt.line) {
      jp_free(nt.id);
      jp_free(nt.line);
      return JP_ENOMEM;
    }
    for (size_t i = 0; i < t->cap; i++) {
      if (!t->id[i]) continue;
      size_t h = (size_t)jp_hash64(t->id[i], strlen(t->id[i])) & (nt.cap - 1);
      while (nt.id[h]) h = (h + 1) & (nt.cap - 1);
      nt.id[h] = t->id[i];
      nt.line[h] = t->line[i];
    }
    nt.n = t->n;
    jp_free(t->id);
    jp_free(t->line);
    *t = nt;
  }
  size_t h = (size_t)jp_hash64(id, len) & (t->cap - 1);
  for (; t->id[h]; h = (h + 1) & (t->cap - 1))
    if (strlen(t->id[h]) == len && !memcmp(t->id[h], id, len)) {
      *prev = t->line[h];
      return 1;
    }
  if (!(t->id[h] = jp_strndup(id, len))) return JP_ENOMEM;
  t->line[h] = line;
  t->n++;
  return 0;
}

struct add_batch {
  Japlaid__V1__Document doc[REMOTE_ADD_DOCS];
  Japlaid__V1__Document *docp[REMOTE_ADD_DOCS];
  int n;
  size_t bytes;
};

static void batch_clear(struct add_batch *b)
{
  for (int i = 0; i < b->n; i++) {
    jp_free(b->doc[i].id);
    jp_free(b->doc[i].text);
    jp_free(b->doc[i].metadata);
  }
  b->n = 0;
  b->bytes = 0;
}

/* Upsert the batch; 0 or CLI_ERR (reported). */
static int batch_send(remote *r, struct add_batch *b, uint64_t *docs, uint64_t *passages)
{
  Japlaid__V1__UpsertRequest req = JAPLAID__V1__UPSERT_REQUEST__INIT;
  ProtobufCMessage *m;
  int rc;
  if (!b->n) return 0;
  req.documents = b->docp;
  req.n_documents = (size_t)b->n;
  if ((rc = remote_call(r, "Upsert", &req.base, &japlaid__v1__upsert_response__descriptor, &m)))
    return rc;
  const Japlaid__V1__UpsertResponse *resp = (const Japlaid__V1__UpsertResponse *)m;
  *docs += resp->n_documents;
  *passages += resp->n_passages;
  remote_free(m);
  batch_clear(b);
  return 0;
}

static int add_remote(const struct remote_opts *ro, const char *path, int skip_bad)
{
  struct jp_corpus_opts co = {0};
  struct jp_corpus_doc cd;
  struct idtab ids = {0};
  struct add_batch *b = jp_calloc(1, sizeof *b);
  jp_corpus *c = NULL;
  remote *r = NULL;
  uint64_t n_docs = 0, n_passages = 0, n_bad = 0, prev;
  int rc = 0, ret = CLI_OK;

  if (!b) return cli_fail("add", JP_ENOMEM);
  for (int i = 0; i < REMOTE_ADD_DOCS; i++) {
    japlaid__v1__document__init(&b->doc[i]);
    b->docp[i] = &b->doc[i];
  }
  co.skip_bad = skip_bad;
  if ((rc = jp_corpus_open(path, &co, &c)) < 0) {
    ret = cli_fail("add", rc);
    goto out;
  }
  if ((ret = remote_open("add", ro, REMOTE_WRITE_DEADLINE_MS, &r)) != 0) goto out;
  while ((rc = jp_corpus_next(c, &cd)) > 0) {
    if ((rc = idtab_add(&ids, cd.id, cd.id_len, cd.line, &prev)) < 0) break;
    if (rc == 1) {
      rc = 0;
      if (!skip_bad) {
        rc = jp_err(JP_EEXISTS, "%s:%" PRIu64 ": document id '%.*s' was already used on line %"
                    PRIu64, path, cd.line, (int)(cd.id_len > 200 ? 200 : cd.id_len), cd.id, prev);
        break;
      }
      n_bad++;
      continue;
    }
    if (b->n == REMOTE_ADD_DOCS || (b->n && b->bytes + cd.text_len > REMOTE_ADD_BYTES)) {
      if ((ret = batch_send(r, b, &n_docs, &n_passages)) != 0) goto report;
    }
    Japlaid__V1__Document *d = &b->doc[b->n];
    d->id = jp_strndup(cd.id, cd.id_len);
    d->text = jp_strndup(cd.text, cd.text_len);
    d->metadata = jp_strdup(cd.metadata_json ? cd.metadata_json : "");
    b->n++;
    if (!d->id || !d->text || !d->metadata) {
      rc = JP_ENOMEM;
      break;
    }
    b->bytes += cd.text_len + cd.id_len;
  }
  if (rc < 0) {
    ret = cli_fail("add", rc);
    goto report;
  }
  if ((ret = batch_send(r, b, &n_docs, &n_passages)) != 0) goto report;
  printf("{\"documents\":%" PRIu64 ",\"passages\":%" PRIu64 ",\"embeddings\":null"
         ",\"bad_lines\":%" PRIu64 "}\n", n_docs, n_passages, n_bad + jp_corpus_bad_lines(c));
  goto out;
report:
  fprintf(stderr, "japlaid add: %" PRIu64 " documents were committed before the error\n", n_docs);
out:
  batch_clear(b);
  jp_free(b);
  idtab_free(&ids);
  jp_corpus_close(c);
  remote_close(r);
  return ret;
}

int cmd_add(int argc, char **argv)
{
  struct jp_index_add_opts ao = {0};
  struct jp_index_add_report rep;
  struct jp_store_opts so;
  struct jp_model_opts mo;
  struct remote_opts ro = {0};
  const char *index_dir = NULL, *model_dir = NULL;
  jp_store *s = NULL;
  jp_model *m = NULL;
  long v;
  int rc;

  jp_store_opts_default(&so);
  jp_model_opts_default(&mo);
  ao.progress = stderr;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    } else if ((rc = remote_opt("add", argc, argv, &i, &ro)) != 0) {
      if (rc == CLI_USAGE) return CLI_USAGE;
    } else if (!strcmp(a, "--index") && val) {
      index_dir = argv[++i];
    } else if (!strcmp(a, "--corpus") && val) {
      ao.corpus_path = argv[++i];
    } else if (!strcmp(a, "--model") && val) {
      model_dir = argv[++i];
    } else if (!strcmp(a, "--skip-bad-lines")) {
      ao.skip_bad = 1;
    } else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("add", a, val, 1, 1024, &v)) return CLI_USAGE;
      mo.n_threads = ao.n_threads = (int)v;
      i++;
    } else {
      return cli_usage_error("add", "unknown option %s (or it needs a value)", a);
    }
  }
  if (ro.server) {
    if (index_dir || model_dir)
      return cli_usage_error("add", "--server writes through the coordinator with its model: "
                             "--index and --model do not go with it");
    if (!ao.corpus_path) return cli_usage_error("add", "--corpus is required");
    return add_remote(&ro, ao.corpus_path, ao.skip_bad);
  }
  if (ro.deadline_ms) return cli_usage_error("add", "--deadline-ms needs --server");
  if (!index_dir || !ao.corpus_path)
    return cli_usage_error("add", "--index and --corpus are required");
  if ((rc = jp_index_open_with_model(index_dir, model_dir, &so, &mo, &s, &m)) < 0)
    return cli_fail("add", rc);
  rc = jp_index_add(s, m, &ao, &rep);
  if (rc == 0)
    printf("{\"documents\":%" PRIu64 ",\"passages\":%" PRIu64 ",\"embeddings\":%" PRIu64
           ",\"bad_lines\":%" PRIu64 "}\n", rep.n_docs, rep.n_passages, rep.n_embeddings,
           rep.n_bad_lines);
  else
    fprintf(stderr, "japlaid add: %" PRIu64 " documents were committed before the error\n",
            rep.n_docs);
  jp_model_close(m);
  jp_store_close(s);
  return rc < 0 ? cli_fail("add", rc) : CLI_OK;
}
