/* corpus.c: the corpus reader (see corpus.h).
 *
 * Lines are read through one growable buffer (bounded by max_line_bytes),
 * so memory stays O(longest line) however large the file is. Each record's
 * strings point into that buffer, into the jansson tree of the current
 * line, or into small per-reader buffers, all of which are replaced by the
 * next jp_corpus_next() call.
 *
 * Thread-safety: a reader is used by one thread. Allocation: the reader's
 * buffers (jp_malloc) plus jansson's tree of the current JSONL line. */
#include "index/corpus.h"

#include "util/err.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 64 MiB: far above any real passage collection line (JSQuAD lines are
 * ~1 KB), low enough that a file without newlines cannot eat the machine. */
#define CORPUS_DEFAULT_MAX_LINE ((size_t)64 << 20)
/* Reads are done in 1 MiB chunks: large enough to amortise syscalls,
 * small enough to stay cache friendly when scanning for newlines. */
#define CORPUS_CHUNK ((size_t)1 << 20)
/* Bad lines are always counted; only the first ones are logged one by one
 * so a badly formatted file does not flood the log. */
#define CORPUS_LOG_BAD_LINES 20

struct jp_corpus {
  char *path;
  int fd;
  int skip_bad;
  int quiet;
  size_t max_line;
  uint64_t begin, end;          /* end: UINT64_MAX = to EOF */

  char *buf;                    /* read buffer: bytes [file_off, file_off + len) */
  size_t len, cap, pos;         /* pos: start of the next unread line in buf */
  uint64_t file_off;            /* file offset of buf[0] */
  int eof;

  uint64_t next_line_no;        /* 1-based number of the line at buf[pos] */
  uint64_t bad;
  uint64_t done_bytes;          /* bytes consumed since `begin` */

  json_t *json;                 /* tree of the current JSONL record */
  struct jp_buf text;           /* TSV title + " " + text */
  struct jp_buf meta;           /* compact metadata JSON */
  char id_num[32];              /* decimal form of an integer JSON id */
};

/* Index of the first invalid byte of s[0..n) as UTF-8, or n if valid.
 * Strict: rejects overlong forms, surrogates and code points > U+10FFFF
 * (what jansson and the tokenizer also reject). Shared with store*.c
 * (declared in store_int.h). */
size_t jp__utf8_invalid_at(const unsigned char *s, size_t n);
size_t jp__utf8_invalid_at(const unsigned char *s, size_t n)
{
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t k;
    uint32_t cp;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
    else return i;
    if (i + k >= n) return i;   /* truncated sequence */
    for (size_t j = 1; j <= k; j++) {
      if ((s[i + j] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + j] & 0x3F);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += k + 1;
  }
  return n;
}

static int read_more(jp_corpus *c)
{
  if (c->eof) return 0;
  if (c->pos > 0) {               /* drop consumed bytes */
    memmove(c->buf, c->buf + c->pos, c->len - c->pos);
    c->file_off += c->pos;
    c->len -= c->pos;
    c->pos = 0;
  }
  if (c->cap - c->len < CORPUS_CHUNK) {
    int rc = jp_grow((void **)&c->buf, &c->cap, c->len + CORPUS_CHUNK, 1, 0);
    if (rc) return rc;
  }
  for (;;) {
    ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (r < 0) {
      if (errno == EINTR) continue;
      return jp_err(JP_EIO, "cannot read %s: %s", c->path, strerror(errno));
    }
    if (r == 0) c->eof = 1;
    c->len += (size_t)r;
    return 0;
  }
}

/* Next raw line (without its '\n'). 1 = line, 0 = end of range, < 0 error.
 * *too_long: the line exceeded max_line and was consumed without being
 * buffered (*line is then NULL). */
static int next_raw_line(jp_corpus *c, const char **line, size_t *len, uint64_t *start_off,
                         int *too_long)
{
  size_t scanned = 0;
  int rc;

  *too_long = 0;
  *line = NULL;
  *len = 0;
  *start_off = c->file_off + c->pos;
  if (*start_off >= c->end) return 0;
  for (;;) {
    char *nl = c->len > c->pos + scanned
                 ? memchr(c->buf + c->pos + scanned, '\n', c->len - c->pos - scanned)
                 : NULL;
    if (nl) {
      size_t n = (size_t)(nl - (c->buf + c->pos));
      if (*too_long || n > c->max_line) {
        *too_long = 1;
        *line = NULL;
      } else {
        *line = c->buf + c->pos;
        *len = n;
      }
      c->done_bytes += n + 1;
      c->pos += n + 1;
      return 1;
    }
    scanned = c->len - c->pos;
    if (c->eof) {
      if (scanned == 0 && !*too_long) return 0;
      if (!*too_long && scanned <= c->max_line) {
        *line = c->buf + c->pos;
        *len = scanned;
      } else {
        *too_long = 1;
      }
      c->done_bytes += scanned;
      c->pos += scanned;
      return 1;
    }
    if (scanned > c->max_line) {
      /* Too long: forget what was buffered and keep scanning for the end. */
      *too_long = 1;
      c->done_bytes += scanned;
      c->pos += scanned;
      scanned = 0;
    }
    if ((rc = read_more(c)) < 0) return rc;
  }
}

static int bad_line(jp_corpus *c, uint64_t line_no, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* Report a bad line: JP_EINVAL naming file:line, or (skip_bad) log + count
 * and return 0 so the caller moves on. */
static int bad_line(jp_corpus *c, uint64_t line_no, const char *fmt, ...)
{
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (!c->skip_bad)
    return jp_err(JP_EINVAL, "%s:%" PRIu64 ": %s", c->path, line_no, msg);
  c->bad++;
  if (c->quiet) return 0;
  if (c->bad <= CORPUS_LOG_BAD_LINES)
    JP_LOG_WARN("%s:%" PRIu64 ": %s (line skipped)", c->path, line_no, msg);
  if (c->bad == CORPUS_LOG_BAD_LINES)
    JP_LOG_WARN("%s: further bad lines are skipped and counted without a message", c->path);
  return 0;
}

/* Parse one JSONL record. 1 = doc filled, 0 = bad line (skipped), < 0 error. */
static int parse_json(jp_corpus *c, const char *line, size_t len, uint64_t no,
                      struct jp_corpus_doc *doc)
{
  json_error_t e;
  json_t *id, *text, *meta;
  int rc;

  c->json = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
  if (!c->json) {
    rc = bad_line(c, no, "invalid JSON at column %d: %s", e.column, e.text);
    return rc < 0 ? rc : 0;
  }
  if (!json_is_object(c->json)) {
    rc = bad_line(c, no, "a JSONL line must be an object");
    return rc < 0 ? rc : 0;
  }
  id = json_object_get(c->json, "id");
  text = json_object_get(c->json, "text");
  meta = json_object_get(c->json, "metadata");
  if (!id || json_is_null(id)) {
    rc = bad_line(c, no, "missing \"id\"");
    return rc < 0 ? rc : 0;
  }
  if (json_is_string(id)) {
    doc->id = json_string_value(id);
    doc->id_len = json_string_length(id);
  } else if (json_is_integer(id)) {
    snprintf(c->id_num, sizeof c->id_num, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    doc->id = c->id_num;
    doc->id_len = strlen(c->id_num);
  } else {
    rc = bad_line(c, no, "\"id\" must be a string or an integer");
    return rc < 0 ? rc : 0;
  }
  if (doc->id_len == 0) {
    rc = bad_line(c, no, "\"id\" is empty");
    return rc < 0 ? rc : 0;
  }
  if (!text || !json_is_string(text)) {
    rc = bad_line(c, no, text ? "\"text\" must be a string" : "missing \"text\"");
    return rc < 0 ? rc : 0;
  }
  doc->text = json_string_value(text);
  doc->text_len = json_string_length(text);
  doc->metadata_json = NULL;
  if (meta && !json_is_null(meta)) {
    size_t need;
    if (!json_is_object(meta)) {
      rc = bad_line(c, no, "\"metadata\" must be an object");
      return rc < 0 ? rc : 0;
    }
    need = json_dumpb(meta, NULL, 0, JSON_COMPACT);
    jp_buf_reset(&c->meta);
    if (need == 0) return jp_err(JP_EINTERNAL, "%s:%" PRIu64 ": cannot serialise metadata",
                                 c->path, no);
    if ((rc = jp_grow((void **)&c->meta.data, &c->meta.cap, need + 1, 1, 0)) < 0) return rc;
    json_dumpb(meta, c->meta.data, need, JSON_COMPACT);
    c->meta.data[need] = '\0';
    c->meta.len = need;
    doc->metadata_json = c->meta.data;
  }
  return 1;
}

/* Parse one TSV record. Same returns as parse_json. */
static int parse_tsv(jp_corpus *c, const char *line, size_t len, uint64_t no,
                     struct jp_corpus_doc *doc)
{
  const char *col[4];
  size_t col_len[4];
  int ncol = 0, rc;
  size_t start = 0, bad;
  const char *nul;

  if ((nul = memchr(line, '\0', len))) {
    rc = bad_line(c, no, "NUL byte at column %zu", (size_t)(nul - line) + 1);
    return rc < 0 ? rc : 0;
  }
  if ((bad = jp__utf8_invalid_at((const unsigned char *)line, len)) < len) {
    rc = bad_line(c, no, "invalid UTF-8 at byte %zu of the line", bad + 1);
    return rc < 0 ? rc : 0;
  }
  for (size_t i = 0; i <= len; i++) {
    if (i == len || line[i] == '\t') {
      if (ncol == 4) { ncol++; break; }
      col[ncol] = line + start;
      col_len[ncol] = i - start;
      ncol++;
      start = i + 1;
    }
  }
  if (ncol < 2 || ncol > 3) {
    rc = bad_line(c, no, "expected id<TAB>text or id<TAB>title<TAB>text, got %s%d column%s",
                  ncol > 3 ? "at least " : "", ncol > 4 ? 4 : ncol, ncol == 1 ? "" : "s");
    return rc < 0 ? rc : 0;
  }
  if (col_len[0] == 0) {
    rc = bad_line(c, no, "empty document id");
    return rc < 0 ? rc : 0;
  }
  doc->id = col[0];
  doc->id_len = col_len[0];
  doc->metadata_json = NULL;
  if (ncol == 2) {
    doc->text = col[1];
    doc->text_len = col_len[1];
  } else {
    jp_buf_reset(&c->text);
    if ((rc = jp_buf_append(&c->text, col[1], col_len[1])) < 0 ||
        (rc = jp_buf_putc(&c->text, ' ')) < 0 ||
        (rc = jp_buf_append(&c->text, col[2], col_len[2])) < 0)
      return rc;
    doc->text = c->text.data;
    doc->text_len = c->text.len;
  }
  return 1;
}

/* Skip to `begin`: count the newlines before it (true line numbers), and
 * if `begin` falls inside a line, skip the rest of that line (it belongs to
 * the previous range). */
static int seek_begin(jp_corpus *c)
{
  uint64_t off = 0;
  char last = '\n';
  int rc;

  c->next_line_no = 1;
  if (c->begin == 0) return 0;
  while (off < c->begin) {
    size_t want, n;
    if ((rc = read_more(c)) < 0) return rc;
    n = c->len - c->pos;
    if (n == 0) break;   /* begin is past EOF: the range is empty */
    want = (size_t)((c->begin - off) < n ? (c->begin - off) : n);
    for (const char *p = c->buf + c->pos, *e = p + want; (p = memchr(p, '\n', (size_t)(e - p)));
         p++)
      c->next_line_no++;
    last = c->buf[c->pos + want - 1];
    c->pos += want;
    off += want;
  }
  if (off < c->begin) return 0;
  if (last != '\n') {
    /* Consume the straddling line's tail without buffering it. */
    for (;;) {
      char *nl = memchr(c->buf + c->pos, '\n', c->len - c->pos);
      if (nl) {
        c->pos = (size_t)(nl - c->buf) + 1;
        c->next_line_no++;
        break;
      }
      c->pos = c->len;
      if (c->eof) break;
      if ((rc = read_more(c)) < 0) return rc;
    }
  }
  /* done_bytes counts from begin, including the skipped tail. */
  c->done_bytes = c->file_off + c->pos - c->begin;
  return 0;
}

int jp_corpus_open(const char *path, const struct jp_corpus_opts *o, jp_corpus **out)
{
  struct jp_corpus_opts def = {0};
  struct stat st;
  jp_corpus *c;
  int rc;

  *out = NULL;
  if (!path) return jp_err(JP_EINVAL, "corpus path is NULL");
  if (!o) o = &def;
  if (o->end && o->end < o->begin)
    return jp_err(JP_EINVAL, "corpus byte range [%" PRIu64 ", %" PRIu64 ") is reversed",
                  o->begin, o->end);
  c = jp_calloc(1, sizeof *c);
  if (!c) return JP_ENOMEM;
  c->fd = -1;
  jp_buf_init(&c->text, 0);
  jp_buf_init(&c->meta, 0);
  c->path = jp_strdup(path);
  if (!c->path) { rc = JP_ENOMEM; goto fail; }
  c->skip_bad = o->skip_bad;
  c->quiet = o->quiet;
  c->max_line = o->max_line_bytes ? o->max_line_bytes : CORPUS_DEFAULT_MAX_LINE;
  c->begin = o->begin;
  c->end = o->end ? o->end : UINT64_MAX;
  c->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (c->fd < 0) {
    rc = jp_err(errno == ENOENT ? JP_ENOTFOUND : JP_EIO, "cannot open corpus %s: %s", path,
                strerror(errno));
    goto fail;
  }
  if (fstat(c->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    rc = jp_err(JP_EINVAL, "corpus %s is a directory, not a file", path);
    goto fail;
  }
  if ((rc = seek_begin(c)) < 0) goto fail;
  *out = c;
  return 0;
fail:
  jp_corpus_close(c);
  return rc;
}

int jp_corpus_next(jp_corpus *c, struct jp_corpus_doc *doc)
{
  int rc;

  if (!c || !doc) return jp_err(JP_EINVAL, "jp_corpus_next: NULL argument");
  if (c->json) { json_decref(c->json); c->json = NULL; }
  for (;;) {
    const char *line;
    size_t len;
    uint64_t start, no;
    int too_long;

    rc = next_raw_line(c, &line, &len, &start, &too_long);
    if (rc <= 0) return rc;
    no = c->next_line_no++;
    if (too_long) {
      if ((rc = bad_line(c, no, "line longer than %zu bytes", c->max_line)) < 0) return rc;
      continue;
    }
    if (start == 0 && len >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {   /* UTF-8 BOM */
      line += 3;
      len -= 3;
    }
    if (len && line[len - 1] == '\r') len--;   /* CRLF files */
    if (len == 0) continue;
    memset(doc, 0, sizeof *doc);
    doc->line = no;
    rc = line[0] == '{' ? parse_json(c, line, len, no, doc) : parse_tsv(c, line, len, no, doc);
    if (rc < 0) return rc;
    if (rc == 1) return 1;
    if (c->json) { json_decref(c->json); c->json = NULL; }
  }
}

uint64_t jp_corpus_bad_lines(const jp_corpus *c) { return c ? c->bad : 0; }

uint64_t jp_corpus_bytes_read(const jp_corpus *c) { return c ? c->done_bytes : 0; }

void jp_corpus_close(jp_corpus *c)
{
  if (!c) return;
  if (c->json) json_decref(c->json);
  if (c->fd >= 0) close(c->fd);
  jp_buf_fini(&c->text);
  jp_buf_fini(&c->meta);
  jp_free(c->buf);
  jp_free(c->path);
  jp_free(c);
}
