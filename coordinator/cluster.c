/* cluster.c: cluster.json, and the state of every replica.
 *
 * A replica is routed to only while it is up (its last health answer was
 * SERVING and no real call has since failed with UNAVAILABLE) and verified
 * (its Stats, read when it (re)appeared, name the coordinator's model, the
 * partition cluster.json lists it under, the cluster's partition count, and
 * the majority codebook). A replica that fails verification is REFUSED:
 * never routed to, logged at error level, reported in stats and in the
 * coverage reason of its partition. Mixing an index built with another
 * model or codebook into an answer would silently return wrong scores, so
 * refusing is the only safe answer (distributed.md §0: report, never hide).
 *
 * The majority codebook: every replica that passed the other checks votes
 * with the codebook hash of its last Stats (kept while it is down, so an
 * outage does not change the vote); the hash with most votes wins, ties go
 * to the replica listed first in cluster.json. Replicas refused for their
 * codebook are re-judged whenever the vote changes.
 *
 * Thread-safety: everything under cl->mu (held briefly, never across a
 * call). Allocation: the partition and replica arrays, at load. */
#include "coord.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/build.h"
#include "util/err.h"
#include "util/log.h"
#include "util/mem.h"

/* cluster.json is a small file; 16 MiB keeps a wrong path from being read
 * whole. */
#define CLUSTER_JSON_MAX (16u << 20)

/* "host:port" with a non-empty host (a name, an IPv4 address or [IPv6])
 * and a port in 1..65535. */
static int addr_valid(const char *a, char *why, size_t cap)
{
  const char *colon = strrchr(a, ':');
  if (!colon || colon == a) {
    snprintf(why, cap, "expected \"host:port\"");
    return 0;
  }
  if (a[0] == '[' && colon[-1] != ']') {
    snprintf(why, cap, "an IPv6 host must be written [addr]:port");
    return 0;
  }
  for (const char *p = a; p < colon; p++)
    if (*p == ' ' || *p == '/' || (unsigned char)*p < 0x21) {
      snprintf(why, cap, "the host contains '%c'", *p);
      return 0;
    }
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (errno || end == colon + 1 || *end || port < 1 || port > 65535) {
    snprintf(why, cap, "the port must be 1..65535");
    return 0;
  }
  return 1;
}

int cluster_load(const char *path, struct cluster *cl)
{
  json_t *root = NULL;
  int rc;
  memset(cl, 0, sizeof *cl);
  pthread_mutex_init(&cl->mu, NULL);
  if ((rc = jp_json_load_file(path, &root)) < 0) return rc;
  json_t *parts = json_object_get(root, "partitions");
  if (!json_is_object(root) || !json_is_array(parts)) {
    rc = jp_err(JP_EINVAL, "%s: expected {\"partitions\": [{\"id\": 0, \"replicas\": "
                "[\"host:port\", ...]}, ...]}", path);
    goto out;
  }
  size_t np = json_array_size(parts);
  if (np == 0 || np > COORD_MAX_PARTITIONS) {
    rc = jp_err(JP_EINVAL, "%s: \"partitions\" must list 1..%d partitions, not %zu", path,
                COORD_MAX_PARTITIONS, np);
    goto out;
  }
  cl->parts = jp_calloc(np, sizeof *cl->parts);
  if (!cl->parts) {
    rc = jp_err(JP_ENOMEM, "cluster config");
    goto out;
  }
  cl->n_partitions = (int)np;
  for (size_t i = 0; i < np; i++) cl->parts[i].id = -1;
  for (size_t i = 0; i < np; i++) {
    json_t *pj = json_array_get(parts, i);
    json_t *idj = json_object_get(pj, "id");
    json_t *rj = json_object_get(pj, "replicas");
    if (!json_is_object(pj) || !json_is_integer(idj) || !json_is_array(rj)) {
      rc = jp_err(JP_EINVAL, "%s: partitions[%zu] must be {\"id\": N, \"replicas\": [...]}",
                  path, i);
      goto out;
    }
    json_int_t id = json_integer_value(idj);
    if (id < 0 || id >= (json_int_t)np) {
      rc = jp_err(JP_EINVAL, "%s: partitions[%zu]: id %lld is outside 0..%zu (ids must be "
                  "0..P-1, P = %zu partitions listed)", path, i, (long long)id, np - 1, np);
      goto out;
    }
    struct partition *P = &cl->parts[id];
    if (P->id >= 0) {
      rc = jp_err(JP_EINVAL, "%s: partition id %lld is listed twice", path, (long long)id);
      goto out;
    }
    size_t nr = json_array_size(rj);
    if (nr == 0 || nr > COORD_MAX_REPLICAS) {
      rc = jp_err(JP_EINVAL, "%s: partition %lld must have 1..%d replicas, not %zu", path,
                  (long long)id, COORD_MAX_REPLICAS, nr);
      goto out;
    }
    P->id = (int)id;
    P->replicas = jp_calloc(nr, sizeof *P->replicas);
    if (!P->replicas) {
      rc = jp_err(JP_ENOMEM, "cluster config");
      goto out;
    }
    P->n_replicas = (int)nr;
    atomic_init(&P->rr, 0);
    for (size_t r = 0; r < nr; r++) {
      json_t *aj = json_array_get(rj, r);
      struct replica *R = &P->replicas[r];
      char why[96];
      const char *a = json_string_value(aj);
      if (!a) {
        rc = jp_err(JP_EINVAL, "%s: partition %lld replica %zu must be a \"host:port\" string",
                    path, (long long)id, r);
        goto out;
      }
      if (strlen(a) >= sizeof R->addr || !addr_valid(a, why, sizeof why)) {
        rc = jp_err(JP_EINVAL, "%s: partition %lld replica '%.300s': %s", path, (long long)id,
                    a, strlen(a) >= sizeof R->addr ? "address too long" : why);
        goto out;
      }
      snprintf(R->addr, sizeof R->addr, "%s", a);
      R->partition = (int)id;
      R->index = (int)r;
      snprintf(R->reason, sizeof R->reason, "not reached yet");
      atomic_init(&R->outstanding, 0);
      cl->n_replicas++;
    }
  }
  /* The same server twice would take writes twice and count as two
   * replicas of availability it does not have. */
  for (int p = 0; p < cl->n_partitions; p++)
    for (int r = 0; r < cl->parts[p].n_replicas; r++)
      for (int q = p; q < cl->n_partitions; q++)
        for (int s = q == p ? r + 1 : 0; s < cl->parts[q].n_replicas; s++)
          if (!strcmp(cl->parts[p].replicas[r].addr, cl->parts[q].replicas[s].addr)) {
            rc = jp_err(JP_EINVAL, "%s: address %s is listed twice (partition %d and %d)", path,
                        cl->parts[p].replicas[r].addr, p, q);
            goto out;
          }
  rc = 0;
out:
  json_decref(root);
  if (rc < 0) cluster_fini(cl);
  return rc;
}

void cluster_fini(struct cluster *cl)
{
  if (cl->parts)
    for (int p = 0; p < cl->n_partitions; p++) jp_free(cl->parts[p].replicas);
  jp_free(cl->parts);
  cl->parts = NULL;
  cl->n_partitions = 0;
  pthread_mutex_destroy(&cl->mu);
}

static int routable(const struct replica *R) { return R->up && R->check == CHECK_OK; }

int cluster_pick(struct cluster *cl, int p, uint32_t *tried, int *replica)
{
  struct partition *P = &cl->parts[p];
  int best = -1, best_load = 0;
  unsigned start = atomic_fetch_add(&P->rr, 1);
  pthread_mutex_lock(&cl->mu);
  for (int i = 0; i < P->n_replicas; i++) {
    int r = (int)((start + (unsigned)i) % (unsigned)P->n_replicas);
    struct replica *R = &P->replicas[r];
    if ((*tried >> r) & 1u || !routable(R)) continue;
    int load = atomic_load(&R->outstanding);
    if (best < 0 || load < best_load) {
      best = r;
      best_load = load;
    }
  }
  if (best >= 0) {
    *tried |= 1u << best;
    atomic_fetch_add(&P->replicas[best].outstanding, 1);
  }
  pthread_mutex_unlock(&cl->mu);
  if (best < 0) return JP_EUNAVAIL;
  *replica = best;
  return 0;
}

void cluster_release(struct cluster *cl, int p, int replica)
{
  atomic_fetch_sub(&cl->parts[p].replicas[replica].outstanding, 1);
}

static void set_down(struct replica *R, const char *why)
{
  if (R->up)
    JP_LOG_WARN("replica %s of partition %d is down: %s", R->addr, R->partition, why);
  R->up = 0;
  /* Whatever comes back on this address is checked again. */
  R->check = CHECK_NONE;
  R->cb_refused = 0;
  snprintf(R->reason, sizeof R->reason, "%s", why);
}

void cluster_mark_down(struct cluster *cl, int p, int replica, const char *why)
{
  pthread_mutex_lock(&cl->mu);
  set_down(&cl->parts[p].replicas[replica], why);
  pthread_mutex_unlock(&cl->mu);
}

int cluster_health(struct cluster *cl, int p, int replica, int serving, const char *why)
{
  struct replica *R = &cl->parts[p].replicas[replica];
  int verify = 0;
  pthread_mutex_lock(&cl->mu);
  if (serving) {
    if (!R->up && R->ever_seen)
      JP_LOG_INFO("replica %s of partition %d answers SERVING again", R->addr, p);
    R->up = 1;
    R->ever_seen = 1;
    verify = R->check == CHECK_NONE;
  } else {
    set_down(R, why);
  }
  pthread_mutex_unlock(&cl->mu);
  return verify;
}

/* Re-count the codebook vote and re-judge codebook refusals (cl->mu held). */
static void codebook_vote(struct cluster *cl)
{
  const char *best = NULL;
  int best_n = 0, total = 0;
  for (int p = 0; p < cl->n_partitions; p++)
    for (int r = 0; r < cl->parts[p].n_replicas; r++) {
      const struct replica *R = &cl->parts[p].replicas[r];
      if (!R->codebook[0]) continue;
      total++;
      int n = 0;
      for (int q = 0; q < cl->n_partitions; q++)
        for (int s = 0; s < cl->parts[q].n_replicas; s++)
          n += !strcmp(cl->parts[q].replicas[s].codebook, R->codebook);
      if (n > best_n) {        /* strict: ties keep the earlier-listed replica's */
        best = R->codebook;
        best_n = n;
      }
    }
  if (!best) return;
  if (strcmp(cl->codebook_ref, best)) {
    if (cl->codebook_ref[0])
      JP_LOG_WARN("cluster codebook changes from %s to %s (%d of %d replicas)", cl->codebook_ref,
                  best, best_n, total);
    snprintf(cl->codebook_ref, sizeof cl->codebook_ref, "%s", best);
  }
  for (int p = 0; p < cl->n_partitions; p++)
    for (int r = 0; r < cl->parts[p].n_replicas; r++) {
      struct replica *R = &cl->parts[p].replicas[r];
      if (!R->codebook[0] || !R->up) continue;
      int same = !strcmp(R->codebook, cl->codebook_ref);
      if (R->check == CHECK_OK && !same) {
        R->check = CHECK_REFUSED;
        R->cb_refused = 1;
        snprintf(R->reason, sizeof R->reason,
                 "refused: codebook %s differs from the cluster's %s (%d of %d replicas)",
                 R->codebook, cl->codebook_ref, best_n, total);
        JP_LOG_ERROR("replica %s of partition %d %s; it will not be queried", R->addr, p,
                     R->reason);
      } else if (R->check == CHECK_REFUSED && R->cb_refused && same) {
        R->check = CHECK_OK;
        R->cb_refused = 0;
        R->reason[0] = '\0';
        JP_LOG_INFO("replica %s of partition %d now matches the cluster codebook", R->addr, p);
      }
    }
}

void cluster_verify(struct cluster *cl, int p, int replica, const Japlaid__V1__PartitionStats *s,
                    const char *why)
{
  struct replica *R = &cl->parts[p].replicas[replica];
  char reason[sizeof R->reason] = "";
  pthread_mutex_lock(&cl->mu);
  if (!s) {
    /* Unverified stays unroutable; the next health round tries again. */
    snprintf(R->reason, sizeof R->reason, "not verified: %s", why);
    pthread_mutex_unlock(&cl->mu);
    JP_LOG_WARN("replica %s of partition %d: Stats failed: %s", R->addr, p, why);
    return;
  }
  if (strcmp(s->model_identity, cl->identity))
    snprintf(reason, sizeof reason, "refused: model identity %.32s (model '%.100s') differs from "
             "the coordinator's %s", s->model_identity, s->model_name, cl->identity);
  else if (s->partition_id != (uint32_t)p)
    snprintf(reason, sizeof reason, "refused: it serves partition %u, cluster.json lists it "
             "under partition %d", s->partition_id, p);
  else if (s->n_partitions != (uint32_t)cl->n_partitions)
    snprintf(reason, sizeof reason, "refused: it belongs to an index of %u partitions, "
             "cluster.json has %d", s->n_partitions, cl->n_partitions);
  else if (s->dim != (uint32_t)cl->dim)
    snprintf(reason, sizeof reason, "refused: its vectors have dim %u, the model's %d", s->dim,
             cl->dim);
  snprintf(R->identity, sizeof R->identity, "%s", s->model_identity);
  if (reason[0]) {
    R->check = CHECK_REFUSED;
    R->cb_refused = 0;
    R->codebook[0] = '\0';     /* no vote from a replica that is wrong anyway */
    snprintf(R->reason, sizeof R->reason, "%s", reason);
    JP_LOG_ERROR("replica %s of partition %d %s; it will not be queried", R->addr, p, reason);
  } else {
    snprintf(R->codebook, sizeof R->codebook, "%s", s->codebook_hash);
    R->check = CHECK_OK;
    R->cb_refused = 0;
    R->reason[0] = '\0';
    /* Split settings for upserts. A shard that predates the field sends
     * "", and unparseable text is ignored (the flags or defaults apply):
     * neither is a reason to refuse a replica that can answer reads. */
    struct jp_split_settings ss;
    R->split_known = 0;
    if (s->settings_json && s->settings_json[0]) {
      int prc = jp_split_settings_parse(s->settings_json, &ss);
      if (prc == 0) {
        R->split_known = 1;
        R->split_mdl = ss.max_document_length;
        R->split_on = ss.split;
      } else {
        JP_LOG_WARN("replica %s of partition %d: settings %.200s do not parse: %s", R->addr, p,
                    s->settings_json, jp_errmsg(prc));
      }
    }
  }
  codebook_vote(cl);
  if (R->check == CHECK_OK)
    JP_LOG_INFO("replica %s of partition %d verified (model %s, codebook %s, %llu passages)",
                R->addr, p, s->model_identity, s->codebook_hash,
                (unsigned long long)s->n_passages);
  pthread_mutex_unlock(&cl->mu);
}

int cluster_live(struct cluster *cl, int p)
{
  int n = 0;
  pthread_mutex_lock(&cl->mu);
  for (int r = 0; r < cl->parts[p].n_replicas; r++) n += routable(&cl->parts[p].replicas[r]);
  pthread_mutex_unlock(&cl->mu);
  return n;
}

int cluster_routable(struct cluster *cl, int p, int r)
{
  pthread_mutex_lock(&cl->mu);
  int ok = routable(&cl->parts[p].replicas[r]);
  pthread_mutex_unlock(&cl->mu);
  return ok;
}

int cluster_split_settings(struct cluster *cl, int p, int *mdl, int *split)
{
  int found = 0;
  pthread_mutex_lock(&cl->mu);
  for (int r = 0; r < cl->parts[p].n_replicas && !found; r++) {
    const struct replica *R = &cl->parts[p].replicas[r];
    if (R->check != CHECK_OK || !R->split_known) continue;
    *mdl = R->split_mdl;
    *split = R->split_on;
    found = 1;
  }
  pthread_mutex_unlock(&cl->mu);
  return found;
}

void cluster_why_unavailable(struct cluster *cl, int p, char *out, size_t cap)
{
  const struct partition *P = &cl->parts[p];
  size_t n = 0;
  n += (size_t)snprintf(out, cap, "no live replica");
  pthread_mutex_lock(&cl->mu);
  for (int r = 0; r < P->n_replicas && n < cap; r++) {
    const struct replica *R = &P->replicas[r];
    const char *st = routable(R) ? "live" : R->reason[0] ? R->reason : "down";
    n += (size_t)snprintf(out + n, cap - n, "%s%s: %s", r ? "; " : " (", R->addr, st);
  }
  if (n < cap) snprintf(out + n, cap - n, ")");
  pthread_mutex_unlock(&cl->mu);
}

void cluster_view(struct cluster *cl, int p, int r, struct replica_view *out)
{
  const struct replica *R = &cl->parts[p].replicas[r];
  pthread_mutex_lock(&cl->mu);
  out->up = R->up;
  out->check = R->check;
  out->outstanding = atomic_load(&((struct replica *)R)->outstanding);
  snprintf(out->reason, sizeof out->reason, "%s", R->reason);
  snprintf(out->codebook, sizeof out->codebook, "%s", R->codebook);
  pthread_mutex_unlock(&cl->mu);
}
