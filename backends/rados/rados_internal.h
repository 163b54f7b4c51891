/* rados_internal.h -- shared state of the rados: backend (rados_backend.c,
 * rados_write.c, rados_read.c, rados_remove.c, rados_stripe.c,
 * rados_names.c, rados_refs.c).  Layout and guarantees:
 * docs/rados-backend.md. */
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

/* the omap of RB_NAMES_OBJ besides the bindings (32 hex digits of the
 * name's hash; docs/formats.md): the generation every write of the index
 * compares and bumps, the marker saying the references are complete, a
 * reference "r<object hex><name hash>" per binding and a tombstone
 * "x<object hex>" per object being removed as bound by no name */
#define RB_GEN_KEY "\x1fgen"
#define RB_GEN_KLEN (sizeof RB_GEN_KEY - 1)
#define RB_MARK_KEY "\x1frefs-v1"
#define RB_MARK_KLEN (sizeof RB_MARK_KEY - 1)
#define RB_REF_KLEN 65
/* a listing's last key read, where its next page starts (longer: not one
 * of libfbk's keys) */
#define RB_AFTER_MAX (RB_REF_KLEN + 8)
/* a tombstone is a removal's until it removes it; one older than this
 * (seconds; its value is when it was set) is taken to be a crashed
 * removal's, and another removal takes it over */
#define RB_TOMB_AGE 3600
/* attempts of a write of the index that other clients' writes overtake */
#define RB_RETRIES 100
/* remove_unbound_many's keys per read/write of the index */
#define RB_UNBOUND_CHUNK 256
/* stripes at most this long, and at most the cluster's osd_max_write_size
 * (also register's longest read of a plain object) */
#define RB_STRIPE_MAX ((size_t)64 << 20)

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
    bool readonly; /* FBK_STORE_READONLY: the index is never written */
} rados_backend;

/* A tombstone this store set: its omap key and the value it wrote. */
typedef struct rb_tomb {
    char key[34];
    char val[24];
    bool live; /* still this value in the index (name_apply's read) */
} rb_tomb;

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
    /* the generation of the name index this store's last write of it set
     * (gen_known): a write that finds it unchanged skips a read (guarded by
     * mu; rados_refs.c) */
    uint64_t gen;
    bool gen_known;
    /* tombstones of objects removed as bound by no name, removed from the
     * index by this store's next name_apply (or at close: one write less
     * per removal); guarded by mu */
    rb_tomb *tombs;
    size_t ntombs, captombs;
    /* the first failure of the current sync window (0: none) */
    int err, err_os;
    char msg[400];
} rados_loc;

static inline void fbk__rados_put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t fbk__rados_get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- rados_backend.c: errors, the table, locations ---- */

/* Reports a librados failure r (a negative errno) as an FBK_E* code with a
 * message "rados: <what> (pool P, namespace N): <cause>"; -ETIMEDOUT is
 * FBK_ETIMEDOUT and says the cluster did not answer within the timeout. */
int fbk__rados_fail(const rados_loc *l, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- rados_write.c: persist, the pending writes of a location, sync ---- */

int fbk__rados_persist(void *self, void *loc, const fbk_key *key);
int fbk__rados_persist_many(void *self, void *loc, const fbk_key *keys, size_t n);
int fbk__rados_sync(void *self, void *loc);
/* Waits for every write issued on l before the call; returns the first
 * failure of the window (cleared when clear, else left in place for sync
 * to report again). */
int fbk__rados_settle(rados_loc *l, bool clear);
/* Closing l: waits for its pending writes and releases them (their
 * outcome unrecorded). */
void fbk__rados_pending_close(rados_loc *l);

/* ---- rados_read.c: register, contains, scan ---- */

int fbk__rados_register_key(void *self, void *loc, const fbk_key *key);
int fbk__rados_register_many(void *self, void *loc, const fbk_key *keys, size_t n);
int fbk__rados_contains(void *self, void *loc, const fbk_key *key);
int fbk__rados_scan(void *self, void *loc, fbk_key_fn each, void *arg);

/* ---- rados_stripe.c: striped values (a head naming the stripes) ---- */

/* a head's size (its layout: rados_stripe.c, docs/rados-backend.md) */
#define RB_HEAD_SIZE 48
/* A decoded head: stripe count, value length, stripe size, token. */
typedef struct rb_head {
    uint32_t n;
    uint64_t total, stripe, token;
} rb_head;
/* The first bytes p[0..len) of the object oid: 1 (and *h) when they are a
 * stripe head, 0 when not (a plain object), FBK_ECORRUPT when a damaged
 * head (with its message). */
int fbk__rados_head_parse(const rados_loc *l, const char *oid, const void *p, size_t len,
                          rb_head *h);
/* Reads the head of the object oid when it is one: 1 (and *h), 0 for a
 * plain object, or an FBK_E* code (FBK_ENOTFOUND: no object). */
int fbk__rados_read_head(rados_loc *l, const char *oid, rb_head *h);
/* Removes the stripes of h (best effort: an error leaves junk for scan). */
void fbk__rados_remove_stripes(rados_loc *l, const char *hex, const rb_head *h);
/* Writes src[0..len), longer than a stripe, as the object hex: the stripes
 * under a fresh token, then (once all are acknowledged) the head, then
 * removes the stripes of a head it replaced.  A reader sees the old value
 * or the new one, whole. */
int fbk__rados_persist_striped(rados_loc *l, const char *hex, const char *src, size_t len);
/* Stores the value h (the head of the object hex) into the spill area under
 * key, its stripes read 4 at a time (one missing or short: FBK_ECORRUPT). */
int fbk__rados_register_striped(rados_loc *l, const fbk_key *key, const char *hex,
                                const rb_head *h);
/* A stripe no head names (its head is gone or names another token) and
 * older than RB_ORPHAN_AGE: removes it; returns 1 if it did. */
int fbk__rados_drop_orphan_stripe(rados_loc *l, const char *oid);

/* ---- rados_names.c: the bindings ---- */

int fbk__rados_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                        uint64_t *size);
int fbk__rados_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg);
int fbk__rados_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n);
/* A binding of a listing: its omap key (32 hex digits) and its contents. */
typedef int (*rb_binding_fn)(const char *okey, const void *name, size_t len, const fbk_key *key,
                             uint64_t size, void *arg);
/* Gives each binding of one page of a listing of the names object (it) to
 * each, in order; after becomes each key read (where the next page
 * starts), *past is set when the page went beyond the bindings (the rest:
 * references, tombstones).  A damaged binding is skipped (skip_damaged) or
 * its FBK_ECORRUPT returned; a key libfbk never writes is FBK_ECORRUPT.
 * Returns FBK_OK or the first failure (each's included). */
int fbk__rados_bindings_page(const rados_loc *l, rados_omap_iter_t it, char after[RB_AFTER_MAX],
                             bool *past, bool skip_damaged, rb_binding_fn each, void *arg);

/* ---- rados_refs.c: the generation guard, tombstones, references, removal
 * of objects bound by no name (docs/rados-backend.md, "Orphans") ---- */

/* The generation of the index as a read op found it (old: its bytes, ""
 * when absent) and the value the next write sets. */
typedef struct rb_gen {
    char old[24];
    size_t oldlen;
    char next[24];
    size_t nextlen;
} rb_gen;
/* A read's value of the generation (v, len: its bytes). */
void fbk__rados_gen_from(rb_gen *g, const char *v, size_t len);
/* After a read: a generation it did not find is absent (0). */
void fbk__rados_gen_done(rb_gen *g);
/* An entry k (kl), v (vl) of a read of the index: the generation (read
 * into g) or the marker (*marker set) -- true -- or another key, false. */
bool fbk__rados_gen_entry(rb_gen *g, bool *marker, const char *k, size_t kl, const char *v,
                          size_t vl);
bool fbk__rados_gen_same(const rb_gen *a, const rb_gen *b);
/* After a write of the index that set g->next: remembered, unless a later
 * one of this store's threads set a greater one already. */
void fbk__rados_gen_note(rados_loc *l, const rb_gen *g);
/* The generation this store last wrote or read, if known (g as a read
 * would have found it). */
bool fbk__rados_gen_cached(rados_loc *l, rb_gen *g);
/* Adds to op: the generation is still g->old, and becomes g->next. */
void fbk__rados_gen_guard(rados_write_op_t op, const rb_gen *g, int *prval);
/* Before attempt number attempt (0, 1, ...) of a guarded write: a short
 * randomized wait, but before the first; at attempt RB_RETRIES, FBK_EBUSY
 * instead ("other clients changed the name index ...", what: the
 * operation it names; nothing was changed). */
int fbk__rados_attempt(const rados_loc *l, unsigned attempt, const char *what);
/* One read op of the keys k[0..n) (lengths kl) of the names object: the
 * librados result (-ENOENT: no names object); *it the entries found, or
 * NULL when the read failed. */
int fbk__rados_read_keys(const rados_loc *l, const char *const *k, const size_t *kl, size_t n,
                         rados_omap_iter_t *it);
/* rados_omap_get_end of it, unless NULL. */
void fbk__rados_end_iter(rados_omap_iter_t it);
/* "r" + the object key's hex + the name's omap key: one reference */
void fbk__rados_ref_key(char out[RB_REF_KLEN + 1], const char *hex, const char *nk);
/* "x" + the object key's hex: its tombstone */
void fbk__rados_tomb_key(char out[34], const char *hex);
/* Moves the deferred tombstones out of l, sorted by key (*n of them; NULL
 * when none). */
rb_tomb *fbk__rados_tombs_take(rados_loc *l, size_t *n);
/* Gives back (and frees) tombstones taken by a write that failed (one that
 * cannot be kept for lack of memory stays in the index: it only refuses
 * bindings of an object that is gone). */
void fbk__rados_tombs_return(rados_loc *l, rb_tomb *t, size_t n);
/* Marks t[] live whose omap key k (klen 33) holds v (vlen): this store's
 * value still.  t sorted by key. */
void fbk__rados_tomb_seen(rb_tomb *t, size_t n, const char *k, const char *v, size_t vlen);
/* Makes the references of a name index written without them (by a libfbk
 * before them); nothing to do when the marker is there.  Without a names
 * object: nothing (create false) or the marker alone (create true). */
int fbk__rados_build_refs(rados_loc *l, bool create);
int fbk__rados_remove_unbound(void *self, void *loc, const fbk_key *key);
int fbk__rados_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                   int *removed);
/* Closing l: removes the tombstones still deferred (best effort: one
 * left behind only refuses bindings of an object that is gone). */
void fbk__rados_names_close(rados_loc *l);
/* A writer's open of l: builds the references of a name index written
 * without them (by a libfbk before them). */
int fbk__rados_names_open(rados_loc *l);

/* ---- rados_remove.c: removing objects ---- */

int fbk__rados_remove_persisted(void *self, void *loc, const fbk_key *key);
/* The first bytes of objects about to be removed (is it a stripe head?),
 * read in parallel: start issues the reads, wait collects them (r: the
 * bytes read or -errno). */
typedef struct rb_headread {
    rados_completion_t c;
    unsigned char buf[RB_HEAD_SIZE + 1];
    int r;
    bool issued;
} rb_headread;
void fbk__rados_heads_start(rados_loc *l, const char (*hex)[33], size_t n, rb_headread *hr);
void fbk__rados_heads_wait(rb_headread *hr, size_t n);
/* Removes the objects hex[which[0..m)] in parallel (64 at a time), then
 * the stripes of those hr[] found to be heads: res[j] is FBK_OK,
 * FBK_ENOTFOUND (absent) or an FBK_E* code; returns the first failure
 * (with its message) or FBK_OK. */
int fbk__rados_remove_heads(rados_loc *l, const char (*hex)[33], const rb_headread *hr,
                            const size_t *which, size_t m, int *res);
/* Removes the object hex names (and its stripes): FBK_OK, FBK_ENOTFOUND
 * when absent, or an FBK_E* code. */
int fbk__rados_remove_object(rados_loc *l, const char *hex);

#endif
