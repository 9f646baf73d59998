/* fs.h: file-system helpers with JaPLAID error codes and messages that name
 * the path. Thread-safety: reentrant. */
#ifndef JP_FS_H
#define JP_FS_H
#include <stddef.h>

/* Read a whole file into a NUL-terminated buffer (jp_free it). Files larger
 * than `limit` bytes (0 = 1 GiB) give JP_ETOOBIG. */
int jp_read_file(const char *path, size_t limit, char **out, size_t *out_len);

/* Write a file atomically: write path.tmp.<pid>, fsync, rename, fsync the
 * directory. Readers see the old or the new content, never a mix. */
int jp_write_file_atomic(const char *path, const void *data, size_t len);

int jp_mkdir_p(const char *path);           /* like mkdir -p, mode 0755 */
int jp_rm_rf(const char *path);             /* like rm -rf; absent is fine */
int jp_fsync_dir(const char *path);
int jp_path_exists(const char *path);       /* 1 or 0 */
int jp_is_dir(const char *path);            /* 1 or 0 */

/* Join two path parts into buf with one '/', JP_ETOOBIG if it does not fit. */
int jp_path_join(char *buf, size_t cap, const char *a, const char *b);

#endif /* JP_FS_H */
