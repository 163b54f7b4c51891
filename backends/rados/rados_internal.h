/* rados_internal.h -- shared state of the rados: backend (rados_backend.c,
 * rados_names.c).  Layout and guarantees: docs/rados-backend.md. */
#ifndef FBK_RADOS_INTERNAL_H
#define FBK_RADOS_INTERNAL_H

#include "fbk_backend.h"

#include <pthread.h>
#include <rados/librados.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the backend's own objects in a location's namespace (never keys) */
#define RB_NAMES_OBJ "__fbk_names"
#define RB_STRIPE_PREFIX "__fbk_stripe."

/* One asynchronous write not yet accounted for by a sync. */
typedef struct rb_pending {
    rados_completion_t c;
    fbk_key key;
    size_t bytes;
    uint64_t seq;
} rb_pending;

typedef struct rados_backend {
    rados_t cluster;
    char *pool;
    unsigned timeout; /* seconds, rados_osd_op_timeout / rados_mon_op_timeout */
    size_t stripe;    /* objects longer than this are striped */
    const fbk_backend_ops *inner; /* the local spill area (lmdb: or file:) */
    void *inner_self;
} rados_backend;

typedef struct rados_loc {
    rados_backend *b;
    rados_ioctx_t io; /* namespace = the location's name */
    char *name;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rb_pending *pend; /* writes issued since the last sync, oldest first */
    size_t npend, cap;
    size_t inflight; /* bytes of pend[] */
    size_t taken;    /* writes a persist took out of pend[] to wait for */
    uint64_t seq;    /* numbers the writes */
    /* the first failure of the current sync window (0: none) */
    int err, err_os;
    char msg[400];
} rados_loc;

/* Reports a librados failure r (a negative errno) as an FBK_E* code with a
 * message "rados: <what> (pool P, namespace N): <cause>"; -ETIMEDOUT is
 * FBK_ETIMEDOUT and says the cluster did not answer within the timeout. */
int fbk__rados_fail(const rados_loc *l, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Waits for every write issued on l before the call; returns the first
 * failure of the window (left in place for sync to report again). */
int fbk__rados_settle(rados_loc *l, bool clear);

int fbk__rados_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                        uint64_t *size);
int fbk__rados_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg);
int fbk__rados_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n);

#endif
