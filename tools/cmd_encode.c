/* cmd_encode.c: `japlaid encode` -- one text per stdin line to ColBERT
 * vectors (model.h), as JSON lines or one .npy file.
 *
 * Lines are read in chunks of CHUNK, each line tokenised on its own (so an
 * invalid line is reported with its number), then the chunk is encoded with
 * jp_encode_seqs, which sorts and batches it. Output order = input order.
 *
 * With --server HOST:PORT the coordinator encodes (japlaid.v1.Search/
 * Encode, with its model), one call per chunk, and the output is the same.
 * The server checks each text (a query must be 1..8192 bytes of UTF-8), and
 * its error names the text's index within the chunk; the chunk's line range
 * is printed after it. */
#include "cli.h"
#include "remote.h"
#include "model/model.h"
#include "util/err.h"
#include "util/json.h"
#include "util/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Lines tokenised and encoded together: enough for the encoder to build
 * full, length-sorted batches; the output buffer for one chunk of full
 * documents is CHUNK * doc_maxlen * dim floats (32 MB at 256 x 128). */
#define CHUNK 256
/* Bytes reserved for the .npy header (magic, version, length, dict): the
 * dict with a 3-d shape of 20-digit numbers fits; the shape is only known at
 * the end, so the header is rewritten in place then. */
#define NPY_HEADER 128
/* Text bytes per remote call: under the method's 16 MiB request cap with
 * room for framing (a chunk with more is sent in several calls). */
#define REMOTE_ENCODE_BYTES ((size_t)15 << 20)

static const char *const usage_text =
  "usage: japlaid encode --model DIR (--query | --doc) [--format json|npy --out FILE]\n"
  "                      [--dicdir D] [--no-lite-compat] [--threads N]\n"
  "                      [--batch-tokens N] [--device cpu|cuda] [--gpu N]\n"
  "       japlaid encode --server HOST:PORT [--deadline-ms MS] (--query | --doc)\n"
  "                      [--format json|npy --out FILE]\n"
  "\n"
  "Reads one text per line on stdin (a trailing \\n or \\r\\n is removed).\n"
  "  --format json (default): one line per input on stdout,\n"
  "      {\"embeddings\":[[...],...]}: all query_maxlen vectors of a query, or the\n"
  "      kept vectors of a document (punctuation and padding dropped).\n"
  "  --format npy --out FILE: one float32 array, [n, query_maxlen, dim] for queries\n"
  "      or [total_vectors, dim] for documents; stdout then gets one JSON line with\n"
  "      the shape (and \"doclens\", the vectors per document, for --doc).\n"
  "  --threads N (all cores), --batch-tokens N (tokens per forward call, 4096),\n"
  "  --device cpu|cuda, --gpu N: where the encoder runs.\n"
  "A line that is not valid UTF-8 is reported with its line number (exit 1).\n"
  "  --server HOST:PORT: encode with a coordinator's model (its gRPC address) instead\n"
  "      of loading one; same output. --deadline-ms MS: time allowed per call of up\n"
  "      to 256 lines.\n";

struct npy_out {
  FILE *f;
  const char *path;
  long long rows;      /* first dimension so far */
};

static int npy_begin(struct npy_out *n, const char *path)
{
  char zero[NPY_HEADER];
  memset(zero, ' ', sizeof zero);
  n->path = path;
  n->rows = 0;
  n->f = fopen(path, "wb");
  if (!n->f || fwrite(zero, 1, sizeof zero, n->f) != sizeof zero) {
    fprintf(stderr, "japlaid encode: cannot write %s\n", path);
    return CLI_ERR;
  }
  return 0;
}

/* Writes the final header over the reserved bytes: NPY format 1.0, the dict
 * padded with spaces and ended by '\n' so data starts at NPY_HEADER. */
static int npy_finish(struct npy_out *n, int qml, int dim)
{
  char dict[NPY_HEADER];
  unsigned char head[NPY_HEADER];
  int dl = qml ? snprintf(dict, sizeof dict,
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d, %d), }",
                          n->rows, qml, dim)
               : snprintf(dict, sizeof dict,
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d), }",
                          n->rows, dim);
  size_t hl = NPY_HEADER - 10;
  if (dl < 0 || (size_t)dl >= hl) return CLI_ERR;
  memcpy(head, "\x93NUMPY\x01\x00", 8);
  head[8] = (unsigned char)(hl & 0xff);
  head[9] = (unsigned char)(hl >> 8);
  memset(head + 10, ' ', hl);
  memcpy(head + 10, dict, (size_t)dl);
  head[NPY_HEADER - 1] = '\n';
  if (fseek(n->f, 0, SEEK_SET) != 0 || fwrite(head, 1, sizeof head, n->f) != sizeof head ||
      fclose(n->f) != 0) {
    n->f = NULL;
    fprintf(stderr, "japlaid encode: cannot write %s\n", n->path);
    return CLI_ERR;
  }
  n->f = NULL;
  return 0;
}

struct chunk {
  int n;
  int32_t *ids;            /* [CHUNK][seq_cap] */
  uint8_t *mask;           /* [CHUNK][seq_cap] */
  struct jp_token_seq seqs[CHUNK];
  int32_t lens[CHUNK];     /* output vectors per input */
  float *out;              /* [CHUNK * seq_cap][dim] */
};

static int emit_json(struct jp_buf *b, const struct chunk *c, int dim)
{
  const float *v = c->out;
  for (int i = 0; i < c->n; i++) {
    int rc;
    jp_buf_reset(b);
    rc = jp_buf_puts(b, "{\"embeddings\":[");
    for (int r = 0; r < c->lens[i] && !rc; r++) {
      rc = jp_buf_puts(b, r ? ",[" : "[");
      for (int d = 0; d < dim && !rc; d++, v++) {
        if (d) rc = jp_buf_putc(b, ',');
        if (!rc) rc = jp_buf_json_float(b, *v);
      }
      if (!rc) rc = jp_buf_putc(b, ']');
    }
    if (!rc) rc = jp_buf_puts(b, "]}\n");
    if (rc) return cli_fail("encode", rc);
    if (fwrite(b->data, 1, b->len, stdout) != b->len) {
      fprintf(stderr, "japlaid encode: cannot write to stdout\n");
      return CLI_ERR;
    }
  }
  return 0;
}

/* ---- remote mode (--server) ---------------------------------------------------- */

struct remote_enc {
  remote *r;
  int mode;                    /* 1 query, 0 document */
  int dim, qml;                /* learnt from the answers */
  float *vec;                  /* rows of the current chunk */
  size_t vec_cap;              /* floats */
  size_t nvec;                 /* rows */
};

/* Encode texts[0..n) (one or more calls) into rs->vec and lens[]. 0 or
 * CLI_ERR (reported). */
static int remote_encode(struct remote_enc *rs, char **texts, const size_t *text_len, int n,
                         int32_t *lens, long first_line)
{
  rs->nvec = 0;
  for (int g = 0; g < n;) {
    Japlaid__V1__EncodeRequest req = JAPLAID__V1__ENCODE_REQUEST__INIT;
    ProtobufCMessage *m;
    size_t bytes = 0;
    int cnt = 0, rc;
    while (g + cnt < n && (cnt == 0 || bytes + text_len[g + cnt] <= REMOTE_ENCODE_BYTES))
      bytes += text_len[g + cnt++];
    req.texts = texts + g;
    req.n_texts = (size_t)cnt;
    req.kind = rs->mode ? JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_QUERY
                        : JAPLAID__V1__ENCODE_KIND__ENCODE_KIND_DOCUMENT;
    if ((rc = remote_call(rs->r, "Encode", &req.base, &japlaid__v1__encode_response__descriptor,
                          &m)) != 0) {
      fprintf(stderr, "japlaid encode: in lines %ld..%ld (texts[i] is line %ld + i)\n",
              first_line + g, first_line + g + cnt - 1, first_line + g);
      return rc;
    }
    const Japlaid__V1__EncodeResponse *resp = (const Japlaid__V1__EncodeResponse *)m;
    int bad = resp->n_embeddings != (size_t)cnt;
    for (size_t i = 0; i < resp->n_embeddings && !bad; i++) {
      const Japlaid__V1__Embedding *e = resp->embeddings[i];
      size_t fl = (size_t)e->n_tokens * e->dim;
      bad = e->dim == 0 || (rs->dim && e->dim != (uint32_t)rs->dim) ||
            e->data.len != fl * sizeof(float) ||
            (rs->mode && rs->qml && e->n_tokens != (uint32_t)rs->qml);
      if (bad) break;
      rs->dim = (int)e->dim;
      if (rs->mode) rs->qml = (int)e->n_tokens;
      if (jp_grow((void **)&rs->vec, &rs->vec_cap, (rs->nvec + e->n_tokens) * e->dim,
                  sizeof *rs->vec, 0) < 0) {
        remote_free(m);
        return cli_fail("encode", JP_ENOMEM);
      }
      /* Little-endian float32 on the wire, as in memory here (x86-64,
       * aarch64); memcpy because the bytes need not be aligned. */
      memcpy(rs->vec + rs->nvec * e->dim, e->data.data, e->data.len);
      rs->nvec += e->n_tokens;
      lens[g + (int)i] = (int32_t)e->n_tokens;
    }
    remote_free(m);
    if (bad) {
      fprintf(stderr, "japlaid encode: malformed answer from the server (embeddings of another "
              "count, width or length than asked)\n");
      return CLI_ERR;
    }
    g += cnt;
  }
  return 0;
}

static int encode_remote(const struct remote_opts *ro, int mode, int is_npy, const char *out_path)
{
  struct remote_enc rs;
  struct npy_out npy = {0};
  struct chunk c;
  struct jp_buf b, doclens;
  char *texts[CHUNK] = {0};
  size_t tlen[CHUNK];
  char *line = NULL;
  size_t line_cap = 0;
  long lineno = 0;
  long long n_inputs = 0;
  int status = CLI_OK, rc;

  memset(&rs, 0, sizeof rs);
  memset(&c, 0, sizeof c);
  rs.mode = mode;
  jp_buf_init(&b, 0);
  jp_buf_init(&doclens, 0);
  if ((status = remote_open("encode", ro, REMOTE_READ_DEADLINE_MS, &rs.r)) != 0) goto out;
  if (is_npy && (status = npy_begin(&npy, out_path)) != 0) goto out;
  if (is_npy && !mode && (rc = jp_buf_puts(&doclens, "\"doclens\":[")) != 0) {
    status = cli_fail("encode", rc);
    goto out;
  }
  for (int eof = 0; !eof;) {
    long first = lineno + 1;
    c.n = 0;
    while (c.n < CHUNK) {
      ssize_t got = getline(&line, &line_cap, stdin);
      if (got < 0) { eof = 1; break; }
      lineno++;
      size_t len = (size_t)got;
      if (len && line[len - 1] == '\n') len--;
      if (len && line[len - 1] == '\r') len--;
      if (!(texts[c.n] = jp_strndup(line, len))) {
        status = cli_fail("encode", JP_ENOMEM);
        goto out;
      }
      tlen[c.n++] = len;
    }
    if (!c.n) break;
    status = remote_encode(&rs, texts, tlen, c.n, c.lens, first);
    for (int i = 0; i < c.n; i++) {
      jp_free(texts[i]);
      texts[i] = NULL;
    }
    if (status) goto out;
    c.out = rs.vec;
    if (!is_npy) {
      n_inputs += c.n;
      if ((status = emit_json(&b, &c, rs.dim)) != 0) goto out;
      continue;
    }
    for (int i = 0; i < c.n && !mode; i++)
      if ((rc = jp_buf_printf(&doclens, "%s%d", n_inputs + i ? "," : "", c.lens[i]))) {
        status = cli_fail("encode", rc);
        goto out;
      }
    if (rs.nvec && fwrite(rs.vec, sizeof(float) * (size_t)rs.dim, rs.nvec, npy.f) != rs.nvec) {
      fprintf(stderr, "japlaid encode: cannot write %s\n", out_path);
      status = CLI_ERR;
      goto out;
    }
    npy.rows += mode ? c.n : (long long)rs.nvec;
    n_inputs += c.n;
  }
  if (is_npy) {
    if (!rs.dim) {
      /* No input: the header still needs the model's shape, which only the
       * server knows; one throw-away text tells it. */
      char *probe = "a";
      size_t plen = 1;
      int32_t plens[1];
      if ((status = remote_encode(&rs, &probe, &plen, 1, plens, 0)) != 0) goto out;
    }
    if ((status = npy_finish(&npy, mode ? rs.qml : 0, rs.dim)) != 0) goto out;
    rc = jp_buf_puts(&b, "{\"file\":");
    if (!rc) rc = jp_buf_json_str(&b, out_path, strlen(out_path));
    if (!rc && mode)
      rc = jp_buf_printf(&b, ",\"n\":%lld,\"shape\":[%lld,%d,%d]}\n", n_inputs, npy.rows, rs.qml,
                         rs.dim);
    else if (!rc)
      rc = jp_buf_printf(&b, ",\"n\":%lld,\"shape\":[%lld,%d],%s]}\n", n_inputs, npy.rows,
                         rs.dim, doclens.data);
    if (rc) {
      status = cli_fail("encode", rc);
      goto out;
    }
    fputs(b.data, stdout);
  }
  if (fflush(stdout) != 0) {
    fprintf(stderr, "japlaid encode: cannot write to stdout\n");
    status = CLI_ERR;
  }
out:
  if (npy.f) fclose(npy.f);
  for (int i = 0; i < CHUNK; i++) jp_free(texts[i]);
  free(line);
  jp_free(rs.vec);
  remote_close(rs.r);
  jp_buf_fini(&b);
  jp_buf_fini(&doclens);
  return status;
}

int cmd_encode(int argc, char **argv)
{
  struct jp_model_opts o;
  struct remote_opts ro = {0};
  const char *dir = NULL, *fmt = "json", *out_path = NULL;
  int mode = -1, rc, status = CLI_OK, local_only = 0;
  jp_model *m = NULL;
  jp_encoder *e = NULL;
  struct chunk *c = NULL;
  char *line = NULL;
  size_t line_cap = 0;
  struct jp_buf b, doclens;
  struct npy_out npy = {0};
  long lineno = 0;
  long long n_inputs = 0;

  jp_model_opts_default(&o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    long v;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    }
    if (!strcmp(a, "--query")) { mode = 1; continue; }
    if (!strcmp(a, "--doc")) { mode = 0; continue; }
    if (!strcmp(a, "--no-lite-compat")) { o.lite_compat = 0; local_only = 1; continue; }
    if ((rc = remote_opt("encode", argc, argv, &i, &ro)) != 0) {
      if (rc == CLI_USAGE) return CLI_USAGE;
      continue;
    }
    if (i + 1 >= argc) return cli_usage_error("encode", "unknown option or missing value: %s", a);
    const char *val = argv[++i];
    /* Options of the local encoder (everything but the output and
     * --threads, which only sizes work and is ignored with --server). */
    local_only |= strcmp(a, "--format") && strcmp(a, "--out") && strcmp(a, "--threads");
    if (!strcmp(a, "--model")) dir = val;
    else if (!strcmp(a, "--format")) fmt = val;
    else if (!strcmp(a, "--out")) out_path = val;
    else if (!strcmp(a, "--dicdir")) o.mecab_dicdir = val;
    else if (!strcmp(a, "--threads")) {
      if (cli_parse_int("encode", a, val, 0, 4096, &v)) return CLI_USAGE;
      o.n_threads = (int)v;
    } else if (!strcmp(a, "--batch-tokens")) {
      if (cli_parse_int("encode", a, val, 1, 1 << 24, &v)) return CLI_USAGE;
      o.max_batch_tokens = (int)v;
    } else if (!strcmp(a, "--gpu")) {
      if (cli_parse_int("encode", a, val, 0, 1024, &v)) return CLI_USAGE;
      o.gpu = (int)v;
    } else if (!strcmp(a, "--device")) {
      if (!strcmp(val, "cpu")) o.device = JP_DEVICE_CPU;
      else if (!strcmp(val, "cuda")) o.device = JP_DEVICE_CUDA;
      else return cli_usage_error("encode", "--device must be cpu or cuda");
    } else return cli_usage_error("encode", "unknown option %s", a);
  }
  if (ro.server && local_only)
    return cli_usage_error("encode", "--server encodes with the coordinator's model: --model, "
                           "--dicdir, --no-lite-compat, --batch-tokens, --device and --gpu do "
                           "not go with it");
  if (!ro.server && ro.deadline_ms)
    return cli_usage_error("encode", "--deadline-ms needs --server");
  if (!ro.server && (!dir || mode < 0))
    return cli_usage_error("encode", "--model and --query or --doc are required");
  if (ro.server && mode < 0) return cli_usage_error("encode", "--query or --doc is required");
  int is_npy = !strcmp(fmt, "npy");
  if (!is_npy && strcmp(fmt, "json") != 0)
    return cli_usage_error("encode", "--format must be json or npy");
  if (is_npy && !out_path) return cli_usage_error("encode", "--format npy needs --out FILE");
  if (ro.server) return encode_remote(&ro, mode, is_npy, out_path);

  jp_buf_init(&b, 0);
  jp_buf_init(&doclens, 0);
  rc = jp_model_open(dir, &o, &m);
  if (!rc) rc = jp_encoder_create(m, &e);
  if (rc) {
    status = cli_fail("encode", rc);
    goto out;
  }
  const struct jp_colbert_cfg *cb = &jp_model_get_info(m)->colbert;
  int seq_cap = mode ? cb->query_maxlen : cb->doc_maxlen, dim = cb->dim;
  c = jp_calloc(1, sizeof *c);
  if (c) {
    c->ids = jp_malloc((size_t)CHUNK * seq_cap * sizeof *c->ids);
    c->mask = jp_malloc((size_t)CHUNK * seq_cap);
    c->out = jp_malloc((size_t)CHUNK * seq_cap * dim * sizeof *c->out);
  }
  if (!c || !c->ids || !c->mask || !c->out) {
    status = cli_fail("encode", JP_ENOMEM);
    goto out;
  }
  if (is_npy && (status = npy_begin(&npy, out_path)) != 0) goto out;
  if (is_npy && !mode && (rc = jp_buf_puts(&doclens, "\"doclens\":[")) != 0) {
    status = cli_fail("encode", rc);
    goto out;
  }

  jp_tok_ctx *tc = jp_encoder_tok(e);
  for (int eof = 0; !eof;) {
    c->n = 0;
    while (c->n < CHUNK) {
      ssize_t got = getline(&line, &line_cap, stdin);
      if (got < 0) { eof = 1; break; }
      lineno++;
      size_t len = (size_t)got;
      if (len && line[len - 1] == '\n') len--;
      if (len && line[len - 1] == '\r') len--;
      int32_t *ids = c->ids + (size_t)c->n * seq_cap;
      uint8_t *mask = c->mask + (size_t)c->n * seq_cap;
      int n = seq_cap;
      rc = mode ? jp_tok_query(tc, line, len, ids, mask, NULL)
                : jp_tok_doc(tc, line, len, ids, mask, &n, NULL);
      if (rc) {
        fprintf(stderr, "japlaid encode: line %ld: %s\n", lineno, jp_errmsg(rc));
        status = CLI_ERR;
        goto out;
      }
      c->seqs[c->n] = (struct jp_token_seq){ids, mask, n};
      c->n++;
    }
    if (!c->n) break;
    rc = jp_encode_seqs(e, mode, c->seqs, c->n, c->out, (size_t)CHUNK * seq_cap, c->lens);
    if (rc) {
      status = cli_fail("encode", rc);
      goto out;
    }
    if (!is_npy) {
      n_inputs += c->n;
      if ((status = emit_json(&b, c, dim)) != 0) goto out;
      continue;
    }
    size_t nvec = 0;
    for (int i = 0; i < c->n; i++) {
      nvec += (size_t)c->lens[i];
      if (!mode && (rc = jp_buf_printf(&doclens, "%s%d", n_inputs + i ? "," : "", c->lens[i]))) {
        status = cli_fail("encode", rc);
        goto out;
      }
    }
    if (fwrite(c->out, sizeof(float) * (size_t)dim, nvec, npy.f) != nvec) {
      fprintf(stderr, "japlaid encode: cannot write %s\n", out_path);
      status = CLI_ERR;
      goto out;
    }
    npy.rows += mode ? c->n : (long long)nvec;
    n_inputs += c->n;
  }
  if (is_npy) {
    if ((status = npy_finish(&npy, mode ? cb->query_maxlen : 0, dim)) != 0) goto out;
    jp_buf_reset(&b);
    rc = jp_buf_puts(&b, "{\"file\":");
    if (!rc) rc = jp_buf_json_str(&b, out_path, strlen(out_path));
    if (!rc && mode)
      rc = jp_buf_printf(&b, ",\"n\":%lld,\"shape\":[%lld,%d,%d]}\n", n_inputs, npy.rows,
                         cb->query_maxlen, dim);
    else if (!rc)
      rc = jp_buf_printf(&b, ",\"n\":%lld,\"shape\":[%lld,%d],%s]}\n", n_inputs, npy.rows,
                         dim, doclens.data);
    if (rc) {
      status = cli_fail("encode", rc);
      goto out;
    }
    fputs(b.data, stdout);
  }
  if (fflush(stdout) != 0) {
    fprintf(stderr, "japlaid encode: cannot write to stdout\n");
    status = CLI_ERR;
  }
out:
  if (npy.f) fclose(npy.f);
  free(line);   /* getline allocates with malloc */
  if (c) {
    jp_free(c->ids);
    jp_free(c->mask);
    jp_free(c->out);
    jp_free(c);
  }
  jp_buf_fini(&b);
  jp_buf_fini(&doclens);
  jp_encoder_destroy(e);
  jp_model_close(m);
  return status;
}
