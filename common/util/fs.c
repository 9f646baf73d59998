/* fs.c: see fs.h. */
#include "util/fs.h"
#include "util/err.h"
#include "util/mem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int jp_read_file(const char *path, size_t limit, char **out, size_t *out_len)
{
  struct stat st;
  char *buf = NULL;
  size_t len = 0, cap;
  int fd, rc = 0;

  *out = NULL;
  if (out_len) *out_len = 0;
  if (!limit) limit = (size_t)1 << 30;
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return jp_err(errno == ENOENT ? JP_ENOTFOUND : JP_EIO, "cannot open %s: %s", path,
                  strerror(errno));
  if (fstat(fd, &st) != 0) {
    rc = jp_err(JP_EIO, "cannot stat %s: %s", path, strerror(errno));
    goto out;
  }
  if (S_ISDIR(st.st_mode)) {
    rc = jp_err(JP_EINVAL, "%s is a directory, not a file", path);
    goto out;
  }
  if ((size_t)st.st_size > limit) {
    rc = jp_err(JP_ETOOBIG, "%s is %lld bytes, over the limit of %zu", path,
                (long long)st.st_size, limit);
    goto out;
  }
  cap = (size_t)st.st_size + 1;
  buf = jp_malloc(cap);
  if (!buf) { rc = JP_ENOMEM; goto out; }
  for (;;) {
    ssize_t r;
    if (len + 1 >= cap) {   /* the file grew while reading, or is a pipe */
      if (cap > limit) { rc = jp_err(JP_ETOOBIG, "%s exceeds %zu bytes", path, limit); goto out; }
      void *nb = jp_realloc(buf, cap * 2);
      if (!nb) { rc = JP_ENOMEM; goto out; }
      buf = nb;
      cap *= 2;
    }
    r = read(fd, buf + len, cap - 1 - len);
    if (r < 0) {
      if (errno == EINTR) continue;
      rc = jp_err(JP_EIO, "cannot read %s: %s", path, strerror(errno));
      goto out;
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  buf[len] = '\0';
  *out = buf;
  buf = NULL;
  if (out_len) *out_len = len;
out:
  jp_free(buf);
  close(fd);
  return rc;
}

int jp_fsync_dir(const char *path)
{
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return jp_err(JP_EIO, "cannot open directory %s: %s", path, strerror(errno));
  int r = fsync(fd);
  close(fd);
  if (r != 0 && errno != EINVAL) return jp_err(JP_EIO, "fsync %s: %s", path, strerror(errno));
  return 0;
}

int jp_write_file_atomic(const char *path, const void *data, size_t len)
{
  char tmp[PATH_MAX], dir[PATH_MAX];
  const char *p = data;
  int fd, rc = 0;

  if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
    return jp_err(JP_ETOOBIG, "path too long: %s", path);
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return jp_err(JP_EIO, "cannot create %s: %s", tmp, strerror(errno));
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = jp_err(JP_EIO, "cannot write %s: %s", tmp, strerror(errno));
      break;
    }
    p += w;
    len -= (size_t)w;
  }
  if (!rc && fsync(fd) != 0) rc = jp_err(JP_EIO, "fsync %s: %s", tmp, strerror(errno));
  close(fd);
  if (!rc && rename(tmp, path) != 0)
    rc = jp_err(JP_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  if (rc) {
    unlink(tmp);
    return rc;
  }
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = '\0';
  else if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  return jp_fsync_dir(dir);
}

int jp_mkdir_p(const char *path)
{
  char buf[PATH_MAX];
  size_t n = strlen(path);
  if (n == 0) return jp_err(JP_EINVAL, "empty directory path");
  if (n >= sizeof buf) return jp_err(JP_ETOOBIG, "path too long: %s", path);
  memcpy(buf, path, n + 1);
  for (char *s = buf + 1; ; s++) {
    if (*s == '/' || *s == '\0') {
      char c = *s;
      *s = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return jp_err(JP_EIO, "cannot create directory %s: %s", buf, strerror(errno));
      *s = c;
      if (c == '\0') break;
    }
  }
  if (!jp_is_dir(path)) return jp_err(JP_EIO, "%s exists and is not a directory", path);
  return 0;
}

int jp_rm_rf(const char *path)
{
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? 0 : jp_err(JP_EIO, "cannot stat %s: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d) return jp_err(JP_EIO, "cannot open %s: %s", path, strerror(errno));
    while ((e = readdir(d))) {
      char sub[PATH_MAX];
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      if (jp_path_join(sub, sizeof sub, path, e->d_name) != 0) { closedir(d); return JP_ETOOBIG; }
      int rc = jp_rm_rf(sub);
      if (rc) { closedir(d); return rc; }
    }
    closedir(d);
    if (rmdir(path) != 0) return jp_err(JP_EIO, "cannot remove %s: %s", path, strerror(errno));
    return 0;
  }
  if (unlink(path) != 0) return jp_err(JP_EIO, "cannot remove %s: %s", path, strerror(errno));
  return 0;
}

int jp_path_exists(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0;
}

int jp_is_dir(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int jp_path_join(char *buf, size_t cap, const char *a, const char *b)
{
  size_t la = strlen(a);
  int n = (la && a[la - 1] == '/') ? snprintf(buf, cap, "%s%s", a, b)
                                   : snprintf(buf, cap, "%s/%s", a, b);
  if (n < 0 || (size_t)n >= cap) return jp_err(JP_ETOOBIG, "path too long: %s/%s", a, b);
  return 0;
}
