/* fbk_internal.h -- declarations shared by the core's files (not installed).
 *
 * Lock order (see docs/design.md): map->mu  ->  pool->mu  ->  {workers->mu,
 * store->tok_mu}; an item stripe's mutex (item.c) is a leaf.  map->mu
 * (map.c) is taken before any of the
 * core's other mutexes and never while one of them is held.  Every other
 * mutex (location->mu, task->mu, store->err_mu, store->bp_mu,
 * store->loc_mu) is a leaf: nothing else is locked while it is held
 * (store->loc_mu's one exception: fbk_location_drop holds it across the
 * backend's drop_location).  No mutex is held across a backend call, a codec
 * call or a condition wait on another object (that exception aside).  Debug
 * builds check the pool and stripe parts (FBK__ASSERT_*, below).
 */
#ifndef FBK_INTERNAL_H
#define FBK_INTERNAL_H

#include "fbk.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h"
#include "keymap.h"

/* ------------------------------------------------------------- error.c */
int fbk__errno_code(int os_errno);
/* Makes sure fbk_errmsg() describes `code` (keeps a message a callee set). */
int fbk__error_keep(int code);
void fbk__error_clear(void);

/* Misuse checks.  The header calls some misuse undefined behaviour (a handle
 * used after its last release, an unload without a load, a task waited for
 * twice...).  Debug builds (no NDEBUG) check the cheap cases with
 * FBK__DEBUG_ASSERT, which reports through fbk__misuse: a message on stderr,
 * then abort() -- the one abort() of the library, never reached in a
 * correct program.  Release builds compile the checks away: the condition is
 * not evaluated (sizeof only keeps its variables "used").  These are not
 * run-time failures: those return FBK_E* codes. */
_Noreturn void fbk__misuse(const char *fn, const char *what);
/* true when this library was built with the misuse checks (no NDEBUG) */
bool fbk__debug_checks(void);
#ifdef NDEBUG
#define FBK__DEBUG_ASSERT(cond, fn, what) ((void)sizeof((cond) ? (fn) : (what)))
#else
#define FBK__DEBUG_ASSERT(cond, fn, what) ((cond) ? (void)0 : fbk__misuse((fn), (what)))
#endif
/* The `magic` of a live fbk_handle / fbk_task; freeing one overwrites it
 * with FBK__MAGIC_DEAD, so that a debug build recognises a freed object as
 * long as its memory has not been reused (AddressSanitizer sees the rest). */
#define FBK__MAGIC_HANDLE 0x6662686bu /* "fbhk" */
#define FBK__MAGIC_TASK 0x6662746bu   /* "fbtk" */
#define FBK__MAGIC_DEAD 0xdeadfbfbu

/* --------------------------------------------------------------- key.c */
/* 0..15 for a hex digit (either case), -1 otherwise. */
int fbk__hexval(char c);

/* --------------------------------------------------------------- uri.c */
#define FBK__SCHEME_MAX 15
/* "lmdb:DIR" -> "lmdb", "DIR"; a bare path -> "lmdb", path. */
int fbk__uri_split(const char *uri, char scheme[FBK__SCHEME_MAX + 1], const char **arg);
/* A parsed URI: scheme, the argument before '?' and the key=value
 * parameters after it (percent-decoded). */
typedef struct fbk__uri_param {
    char *key, *value;
} fbk__uri_param;
typedef struct fbk__uri {
    char scheme[FBK__SCHEME_MAX + 1];
    char *arg;
    fbk__uri_param *params;
    size_t n;
} fbk__uri;
int fbk__uri_parse(const char *uri, fbk__uri *u);
void fbk__uri_free(fbk__uri *u);
/* registry.c: constructs the backend of URI u (text `uri`, for messages)
 * with scheme sc (NULL: the one registered for u->scheme), after checking
 * u's parameters and applying the core's to *o (the caller's options). */
int fbk__backend_create(const fbk_backend_scheme *sc, const fbk__uri *u, const char *uri,
                        fbk_store_options *o, const fbk_backend_ops **ops, void **self);
/* The built-in schemes, defined next to their constructors. */
extern const fbk_backend_scheme fbk__lmdb_scheme;
extern const fbk_backend_scheme fbk__file_scheme;
extern const fbk_backend_scheme fbk__mem_scheme;
#ifdef FBK_WITH_RADOS
extern const fbk_backend_scheme fbk__rados_scheme;
#endif
/* "64", "1g", "512KiB" -> bytes (powers of 1024); FBK_EINVAL naming `what`. */
int fbk__parse_size(const char *text, const char *what, uint64_t *out);

/* ------------------------------------------------------------- frame.c */
/* Blob frame: 24-byte header + payload (docs/formats.md). */
#define FBK__FRAME_MAGIC "FBKB"
#define FBK__FRAME_VERSION 1
#define FBK__FRAME_HDR 24
/* Encodes obj with codec straight into dst (a backend buffer). */
typedef struct fbk__fill_ctx {
    const fbk_codec *codec;
    const void *obj;
    size_t payload;
} fbk__fill_ctx;
int fbk__frame_fill(void *dst, size_t len, void *arg); /* fbk_fill_fn, arg = fbk__fill_ctx */
/* The header of a frame around payload[0..len). */
void fbk__frame_header(unsigned char hdr[FBK__FRAME_HDR], const void *payload, size_t len);
/* Checks everything but the checksum of a frame of len bytes whose header is
 * hdr; *plen gets the payload length.  0 or FBK_ECORRUPT. */
int fbk__frame_check_header(const unsigned char *hdr, size_t len, size_t *plen);
/* Checks payload[0..plen) against the checksum in hdr.  0 or FBK_ECORRUPT. */
int fbk__frame_check_sum(const unsigned char *hdr, const void *payload, size_t plen);
/* A codec callback's non-zero result as an FBK_E* code (ENOMEM stays ENOMEM,
 * anything else is ECODEC), with a message naming `what`. */
int fbk__codec_error(int rc, const char *what);
/* Checks a frame; on success *payload and *plen describe the codec bytes. */
int fbk__frame_check(const void *src, size_t len, const unsigned char **payload, size_t *plen);
typedef struct fbk__read_ctx {
    const fbk_codec *codec;
    void *obj; /* out */
} fbk__read_ctx;
int fbk__frame_read(const void *src, size_t len, void *arg); /* fbk_read_fn */
/* Copies src[0..len) to dst and writes the frame header of those bytes to
 * hdr: the checksum is taken over dst piece by piece right after each piece
 * is copied (while it is in the cache).  0 or FBK_ENOMEM. */
int fbk__frame_copy(unsigned char hdr[FBK__FRAME_HDR], void *dst, const void *src, size_t len);
/* Copies a frame's payload[0..plen) to dst, checking it against the
 * checksum of the frame header hdr the same way.  0, FBK_ECORRUPT (dst then
 * holds the damaged bytes) or FBK_ENOMEM. */
int fbk__frame_copy_check(const unsigned char *hdr, void *dst, const void *payload, size_t plen);
/* A copy of obj through codec->clone, or encode+decode. */
int fbk__codec_clone(const fbk_codec *codec, const void *obj, void **out);

/* ------------------------------------------------------------ worker.c */
/* An intrusive job: embedded in the object it works on, so queueing never
 * allocates and cannot fail. */
typedef struct fbk__job {
    void (*run)(struct fbk__job *job);
    /* Optional: runs n jobs of the same kind at once (they are linked through
     * `next`, the last one's next is NULL).  A worker that pops a job with
     * run_many also takes the jobs queued right behind it that have the same
     * run_many, up to the batch limit. */
    void (*run_many)(struct fbk__job *first, size_t n);
    struct fbk__job *next;
} fbk__job;

typedef struct fbk__workers {
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* jobs queued or stop */
    pthread_cond_t idle_cv; /* pending reached 0 */
    pthread_cond_t exit_cv; /* a worker exited */
    fbk__job *head, *tail;
    size_t pending;   /* queued + running */
    size_t batch_max; /* most jobs one run_many call gets (>= 1) */
    unsigned alive;
    unsigned started; /* threads that reached their loop (fbk__workers_start waits) */
    bool stop;
    bool free_on_exit; /* last worker out calls finalize(arg) */
    void (*finalize)(void *arg);
    void *arg;
} fbk__workers;

int fbk__workers_start(fbk__workers *w, unsigned n, void (*finalize)(void *), void *arg);
void fbk__workers_submit(fbk__workers *w, fbk__job *job);
void fbk__workers_drain(fbk__workers *w);
/* Most jobs one run_many call gets (default 1: no batching). */
void fbk__workers_set_batch(fbk__workers *w, size_t batch_max);
/* Stops the workers once the queue is empty.  From a non-worker thread it
 * waits for them and returns true: the caller finalizes.  From one of w's own
 * workers it returns false: the last worker to exit calls finalize. */
bool fbk__workers_shutdown(fbk__workers *w);
void fbk__workers_destroy(fbk__workers *w);
/* true when the calling thread is one of w's workers. */
bool fbk__workers_on_worker(const fbk__workers *w);

/* ------------------------------------------------------------- store.c */
struct fbk_store {
    atomic_long refs; /* the user's + one per pool, location, token job */
    const fbk_backend_ops *ops;
    void *self;
    unsigned threads;
    fbk__workers workers;
    fbk_error_fn on_error;
    void *on_error_arg;

    /* token.c: key -> fbk__token, the spill area's use counts */
    pthread_mutex_t tok_mu;
    pthread_cond_t tok_cv;
    fbk__keymap tokens;

    pthread_mutex_t err_mu; /* leaf */
    int drain_err;          /* first background error since the last drain */
    int drain_errno;        /* ... its errno and message */
    char drain_msg[256];

    atomic_uint_fast64_t n_stores, n_loads, n_removes, n_evictions, n_evict_fail, n_bg_errors,
        n_store_batches, n_batched_stores;

    /* backpressure: eviction writes queued or running (and the bytes of
     * their objects), and callers waiting for them to fall to half their
     * limits */
    atomic_long evict_inflight;
    long evict_limit;
    atomic_llong evict_bytes;
    long long evict_bytes_limit;
    pthread_mutex_t bp_mu; /* leaf */
    pthread_cond_t bp_cv;
    int bp_waiters;

    unsigned flags; /* FBK_STORE_READONLY */
    /* location.c: the open locations, one shared object per name.  A leaf,
     * except that fbk_location_drop holds it across the backend's
     * drop_location (so no open of that name starts meanwhile); the
     * backend never calls back into the core. */
    pthread_mutex_t loc_mu;
    fbk_location *locs;
};

void fbk__store_retain(fbk_store *s);
bool fbk__store_readonly(const fbk_store *s);
/* 0, or FBK_EREADONLY with a message naming `what`. */
int fbk__store_check_writable(const fbk_store *s, const char *what);
void fbk__store_release(fbk_store *s);
/* Reports a background failure: counted, kept for drain, passed to on_error
 * with fbk_errmsg() of this thread. */
void fbk__store_report(fbk_store *s, int err);
/* Called by blocking calls (insert, load, load_mut) that queued an eviction
 * write: when more than evict_limit are in flight, waits (on a caller's
 * thread only, never on a worker) for the workers to catch up.  The try_
 * calls and unloads never call it. */
void fbk__store_backpressure(fbk_store *s);
/* Counts an eviction write of `bytes` (0 when unknown) as queued. */
void fbk__store_evict_queued(fbk_store *s, size_t bytes);
/* Called by the eviction job when it ends, with the bytes it was queued with. */
void fbk__store_evict_done(fbk_store *s, size_t bytes);

/* ------------------------------------------------------------- token.c */
/* One spill copy: the key's use count, so that a key shared by several
 * items (registered twice) is stored/registered once and removed once. */
typedef enum { FBK__TOK_BUSY, FBK__TOK_PRESENT, FBK__TOK_REMOVING } fbk__tok_state;
typedef struct fbk__token {
    fbk_key key;
    long uses;
    fbk__tok_state state;
    fbk_store *store;
    fbk__job job; /* the background remove */
    size_t len;   /* framed length stored under key (0: registered, unknown) */
    /* A lazy register (backend with load_persisted): no spill copy yet, the
     * bytes are read from this location (a reference of the token's), until
     * fbk__token_materialize copies them.  lazy_readers: loads reading from
     * it right now (materialize waits for them).  Both under store->tok_mu. */
    fbk_location *lazy;
    unsigned lazy_readers;
} fbk__token;

/* Writes obj under key (a key unknown to the store); *out has one use. */
int fbk__token_store(fbk_store *s, const fbk_key *key, const fbk_codec *codec, const void *obj,
                     fbk__token **out);
/* Most eviction writes one worker hands to store_many at once. */
#define FBK__EVICT_BATCH 64
/* One value of fbk__token_store_many. */
typedef struct fbk__store_item {
    fbk_key key;
    const fbk_codec *codec;
    const void *obj;
    fbk__token *tok; /* out: set when rc == 0 */
    int rc;          /* out */
} fbk__store_item;
/* fbk__token_store for n (<= FBK__EVICT_BATCH) values, through the
 * backend's store_many (in calls of bounded size) when it has one.  Each item gets its own outcome;
 * a failed item's message is reported by the caller. */
void fbk__token_store_many(fbk_store *s, fbk__store_item *items, size_t n);
/* The backend's version-2 members, or NULL (a version-1 table has none). */
#define FBK__STORE_MANY(s) ((s)->ops->version >= 2 ? (s)->ops->store_many : NULL)
#define FBK__STORE_IOV(s) ((s)->ops->version >= 2 ? (s)->ops->store_iov : NULL)
#define FBK__LOAD_INTO(s) ((s)->ops->version >= 2 ? (s)->ops->load_into : NULL)
/* Registers key from loc (one register_key however many callers -- none
 * when the backend has load_persisted: the token is lazy); *out has one use. */
int fbk__token_register(fbk_store *s, fbk_location *loc, const fbk_key *key, fbk__token **out);
/* If key's token is lazy, copies its bytes into the spill area now (before
 * the key leaves its location, or is persisted from the spill area).  0 when
 * there is no lazy token. */
int fbk__token_materialize(fbk_store *s, const fbk_key *key);
#define FBK__LOAD_PERSISTED(s) ((s)->ops->version >= 4 ? (s)->ops->load_persisted : NULL)
/* fbk__token_register for keys[0..n): toks[i] gets a use of keys[i]'s token.
 * Keys not in the spill area yet go to the backend together (register_many
 * when the table has it).  On failure nothing is kept. */
int fbk__token_register_many(fbk_store *s, void *bloc, const fbk_key *keys, size_t n,
                             fbk__token **toks);
int fbk__token_load(fbk_store *s, const fbk__token *t, const fbk_codec *codec, void **obj);
void fbk__token_retain(fbk__token *t);
/* Drops one use; the last queues the backend remove on a worker. */
void fbk__token_release(fbk__token *t);

/* ---------------------------------------------------------- location.c */
struct fbk_location {
    atomic_long refs; /* one per fbk_location_open + one per running task and map */
    fbk_store *store;
    char *name;         /* as opened: one shared object per name in a store */
    fbk_location *next; /* store->locs, under store->loc_mu */
    void *bloc;
    pthread_mutex_t mu; /* leaf */
    pthread_cond_t cv;
    /* key -> state: >= 1 present (value-1 = registers in progress),
     * FBK__LOC_PERSISTING, FBK__LOC_REMOVING */
    fbk__keymap keys;
    size_t count; /* present keys */
    size_t junk;
    size_t foreign;  /* entries the scan left alone: not the backend's */
    int sync_err;    /* sticky: a failed sync is final */
    atomic_int maps; /* maps open on it (map.c): fbk_save refuses it then */
};
#define FBK__LOC_PERSISTING ((intptr_t)-1)
#define FBK__LOC_REMOVING ((intptr_t)-2)

void fbk__location_retain(fbk_location *loc);
void fbk__location_release(fbk_location *loc);
/* Copies the token's key into loc unless loc holds it already. */
int fbk__location_persist(fbk_location *loc, const fbk_key *key);
/* Persists keys (each with a spill copy the caller holds a use of) with the
 * backend's persist_many when it has one: one call (one LMDB transaction)
 * for every key loc lacks. */
int fbk__location_persist_many(fbk_location *loc, const fbk_key *keys, size_t n);
/* fbk__location_persist_many that also applies the name changes ops[0..nops)
 * in the same backend call when the backend has persist_names (version 5)
 * and every bound key is either among those this call persists or held by
 * loc already; *bound (may be NULL) tells whether it did.  When it did not,
 * the caller applies them (name_apply) after this returns. */
/* fbk_location_remove of an object a map's change orphaned: with the
 * backend's remove_unbound (version 5) the object stays when a binding of
 * the name index refers to it -- one another process made -- (*kept, may be
 * NULL); without it, removed as fbk_location_remove does. */
int fbk__location_remove_unbound(fbk_location *loc, const fbk_key *key, bool *kept);
int fbk__location_remove_unbound_many(fbk_location *loc, const fbk_key *keys, size_t n);
int fbk__location_persist_bind(fbk_location *loc, const fbk_key *keys, size_t n,
                               const fbk_name_op *ops, size_t nops, bool *bound);
/* The backend's version-6 write_names, or NULL. */
#define FBK__WRITE_NAMES(s) ((s)->ops->version >= 6 ? (s)->ops->write_names : NULL)
/* Writes the framed values reqs[0..n) (keys new to loc) straight from memory
 * into loc, then applies ops[0..nops), through write_names (which the
 * caller checked the backend has): one commit on lmdb:.  The keys count as
 * held by loc when it returns 0, as absent otherwise. */
int fbk__location_write_bind(fbk_location *loc, const fbk_frame_req *reqs, size_t n,
                             const fbk_name_op *ops, size_t nops);
/* Bracket a register_key from loc: FBK_ENOTFOUND if loc lacks key; while
 * bracketed, the key cannot be removed from loc. */
int fbk__location_register_begin(fbk_location *loc, const fbk_key *key);
void fbk__location_register_end(fbk_location *loc, const fbk_key *key);
/* Asks the backend (version 4 `contains`) whether loc holds key and brings
 * the key set in line: a key another store removed is dropped, one it added
 * is added.  0 when the backend cannot tell. */
int fbk__location_recheck(fbk_location *loc, const fbk_key *key);

/* --------------------------------------------------------------- map.c */
/* 1 if loc holds names (a map is open on it, or the backend's index has a
 * binding), 0 if not, or an FBK_E* code. */
int fbk__location_named(fbk_location *loc);

/* ------------------------------------------- policy.c, lru.c, policy_*.c */
/* Where an item stands in its pool's eviction policy (fbk__node.seg).
 * Written under the pool mutex; read without it by the hit path, which only
 * acts on the resident segments (FRONT for SLRU, SMALL/MAIN, QUEUE). */
enum {
    FBK__SEG_FRONT = 0, /* SLRU: front half (a hit moves nothing) */
    FBK__SEG_BACK = 1,  /* SLRU: back half (a hit moves the item to the front) */
    FBK__SEG_OUT = 2,   /* not to be kept in memory: SLRU beyond mem_items,
                           SIEVE/S3-FIFO in no queue */
    FBK__SEG_GHOST = 3, /* S3-FIFO: out, remembered as recently evicted from SMALL */
    FBK__SEG_SMALL = 4, /* S3-FIFO small FIFO (new values) */
    FBK__SEG_MAIN = 5,  /* S3-FIFO main FIFO */
    FBK__SEG_QUEUE = 6, /* SIEVE: the one FIFO */
};

typedef struct fbk__node {
    struct fbk__node *prev, *next; /* pool mutex */
    size_t weight;                 /* the value's size() when the pool tracks bytes, else 0:
                                      the item's `bytes` too (docs/design.md); pool mutex */
    _Atomic unsigned char seg;     /* FBK__SEG_* */
    _Atomic unsigned char mark;    /* SIEVE: visited bit; S3-FIFO: frequency 0..3.  Set by
                                      hits without the pool mutex, cleared under it. */
    unsigned char fresh;           /* SLRU: pushed into OUT by the change in progress */
    unsigned char in_retry;        /* FBK__RETRY_*: on the pool's retry list or deferred
                                      evictions (pool.c); pool mutex */
    atomic_uint aux;               /* not the policy's: the item's (item.c keeps the
                                      fbk_load_mut holder here, in what would be padding) */
} fbk__node;

static inline unsigned fbk__node_seg(const fbk__node *n)
{
    return atomic_load_explicit(&n->seg, memory_order_relaxed);
}
/* true when the policy does not want n's value in memory (an unpinned value
 * there is evicted) */
static inline bool fbk__node_out(const fbk__node *n)
{
    unsigned s = fbk__node_seg(n);
    return s == FBK__SEG_OUT || s == FBK__SEG_GHOST;
}

/* A doubly linked list with a sentinel: head.next is the newest node, head.prev
 * the oldest; count and bytes (sum of weights) of its nodes. */
typedef struct fbk__list {
    fbk__node head;
    size_t count, bytes;
} fbk__list;
void fbk__list_init(fbk__list *l);
void fbk__list_push_front(fbk__list *l, fbk__node *n);
void fbk__list_remove(fbk__list *l, fbk__node *n);
static inline fbk__node *fbk__list_oldest(fbk__list *l) { return l->count ? l->head.prev : NULL; }

/* lru.c: the segmented LRU.  One list of every item cut at positions (or
 * byte sums) mem/2 (FRONT | BACK) and mem (BACK | OUT).  Segments are
 * contiguous and fill in order: segment k+1 is non-empty only when the next
 * node would not fit in segment k. */
typedef struct fbk__lru {
    fbk__node head;      /* sentinel of a circular list, head.next = front */
    size_t cap_items[2]; /* bounds of FRONT and BACK (SIZE_MAX: none) */
    size_t cap_bytes[2];
    size_t count[3], bytes[3];
    fbk__node *first[3]; /* first node of each segment, NULL if empty */
    size_t fresh;        /* nodes the change in progress pushed into OUT
                            (they are the first `fresh` nodes of OUT) */
    fbk__node *cursor;   /* the next of them fbk__lru_victim returns */
} fbk__lru;

void fbk__lru_init(fbk__lru *l, size_t mem_items, size_t mem_bytes);
/* Each change below starts a new set of victims (nodes it pushed into OUT). */
void fbk__lru_push_front(fbk__lru *l, fbk__node *n);
void fbk__lru_push_back(fbk__lru *l, fbk__node *n);
void fbk__lru_remove(fbk__lru *l, fbk__node *n);
/* fbk__lru_remove + fbk__lru_push_front of a node in BACK, in one step,
 * when that cannot push anything out (no byte bound, OUT empty); false:
 * not that case, nothing done. */
bool fbk__lru_promote(fbk__lru *l, fbk__node *n);
void fbk__lru_reweight(fbk__lru *l, fbk__node *n, size_t w);
fbk__node *fbk__lru_victim(fbk__lru *l);

/* policy_sieve.c */
typedef struct fbk__sieve {
    fbk__list q;
    fbk__node *hand; /* next node to look at, moving towards the newest; NULL: the oldest */
} fbk__sieve;
/* policy_s3fifo.c */
typedef struct fbk__s3fifo {
    fbk__list small, main, ghost;
    size_t small_items, small_bytes; /* SMALL's share: 10% of the bounds */
    size_t ghost_items, ghost_bytes; /* GHOST remembers as many as MAIN holds */
    fbk__node *newest;               /* the last node inserted, until a victim
                                        search passed over it once, or NULL */
} fbk__s3fifo;

/* The policies' parts (under the pool mutex; policy.c dispatches). */
struct fbk__policy;
void fbk__sieve_init(struct fbk__policy *pol);
void fbk__sieve_insert(struct fbk__policy *pol, fbk__node *n);
void fbk__sieve_remove(struct fbk__policy *pol, fbk__node *n);
fbk__node *fbk__sieve_victim(struct fbk__policy *pol);
void fbk__s3fifo_init(struct fbk__policy *pol);
void fbk__s3fifo_insert(struct fbk__policy *pol, fbk__node *n);
void fbk__s3fifo_remove(struct fbk__policy *pol, fbk__node *n);
fbk__node *fbk__s3fifo_victim(struct fbk__policy *pol);

/* policy.c: one pool's policy.  All functions but fbk__policy_hit need the
 * pool mutex. */
typedef struct fbk__policy {
    fbk_policy kind;
    size_t max_items, max_bytes; /* SIZE_MAX: no bound */
    union {
        fbk__lru slru;
        fbk__sieve sieve;
        fbk__s3fifo s3;
    } u;
} fbk__policy;

void fbk__policy_init(fbk__policy *pol, fbk_policy kind, size_t mem_items, size_t mem_bytes);
/* Without the pool mutex: records a hit on n when that needs no list change
 * (SLRU: n in FRONT; SIEVE: sets the visited bit; S3-FIFO: counts the
 * frequency).  false: the caller must take the mutex and call
 * fbk__policy_access. */
static inline bool fbk__policy_hit(const fbk__policy *pol, fbk__node *n)
{
    unsigned s = fbk__node_seg(n);
    switch (pol->kind) {
    case FBK_POLICY_SIEVE:
        if (s != FBK__SEG_QUEUE)
            return false;
        if (!atomic_load_explicit(&n->mark, memory_order_relaxed))
            atomic_store_explicit(&n->mark, 1, memory_order_relaxed);
        return true;
    case FBK_POLICY_S3FIFO: {
        if (s != FBK__SEG_SMALL && s != FBK__SEG_MAIN)
            return false;
        unsigned f = atomic_load_explicit(&n->mark, memory_order_relaxed);
        if (f < 3)
            atomic_store_explicit(&n->mark, (unsigned char)(f + 1), memory_order_relaxed);
        return true;
    }
    default:
        return s == FBK__SEG_FRONT;
    }
}
/* A new item: in memory (`resident`, fbk_insert) or only in the spill area
 * (fbk_register).  Its weight is set. */
void fbk__policy_insert(fbk__policy *pol, fbk__node *n, bool resident);
/* A successful access that fbk__policy_hit could not record: `loaded` when
 * the value was just read back from the spill area.  Returns true when the
 * lists changed (victims may follow). */
bool fbk__policy_access(fbk__policy *pol, fbk__node *n, bool loaded);
void fbk__policy_remove(fbk__policy *pol, fbk__node *n);
/* The value's size changed (fbk_unload_mut under a byte bound). */
void fbk__policy_reweight(fbk__policy *pol, fbk__node *n, size_t w);
/* After a change: the next node whose value should leave memory (now
 * out), or NULL when the policy is within its bounds. */
fbk__node *fbk__policy_victim(fbk__policy *pol);

/* -------------------------------------------------------------- pool.c */
/* The pool owns its policy (under `mu`), the retry list, the buffer of
 * segmented-LRU promotions that hits recorded without the lock, and the
 * lifetime of its items' memory accounting.  It never looks at an item's
 * state: item.c does (one-way: handle.c -> item.c -> pool.c -> policy). */

/* Promotions (SLRU hits in the back segment) recorded without the pool
 * mutex, applied in order under it before the next list change.  A bounded
 * multi-producer ring (one sequence number per slot); the consumer is
 * whoever holds the pool mutex. */
#define FBK__PROMO_SLOTS 64
typedef struct fbk__promo_slot {
    atomic_size_t seq;
    fbk_handle *item;
} fbk__promo_slot;

/* The hit counter, striped over cache lines: the first FBK__HIT_OWNED
 * threads that count a hit each own one stripe for good (the only writer:
 * a plain load + store, no locked instruction); later threads share the
 * last FBK__HIT_SHARED stripes with atomic adds. */
#define FBK__HIT_OWNED 32
#define FBK__HIT_SHARED 8
#define FBK__HIT_STRIPES (FBK__HIT_OWNED + FBK__HIT_SHARED)
typedef struct fbk__stripe_count {
    _Alignas(64) atomic_uint_fast64_t n;
} fbk__stripe_count;

/* fbk__node.in_retry: the item's eviction is to be tried again -- its write
 * failed (on the retry list, with its record), or it found no record (out
 * of memory: in the pool's `deferred` slots). */
#define FBK__RETRY_LIST 1
#define FBK__RETRY_DEFERRED 2
#define FBK__DEFER_SLOTS 16

/* An eviction write in flight (on a worker's queue), or one that failed and
 * waits on the pool's retry list (linked through job.next).  The item holds
 * none: the pool hands records out when an eviction starts (docs/design.md,
 * "Item memory"). */
typedef struct fbk__evict_rec {
    fbk__job job; /* first: a job is its record */
    fbk_handle *item;
} fbk__evict_rec;

/* Memory handed out in equal pieces (items, eviction records): blocks from
 * the allocator table, carved in order, freed pieces kept on a free list;
 * the blocks go back to the allocator when the pool is freed.  Pool mutex. */
typedef struct fbk__slab {
    void *blocks;     /* linked through their first word */
    char *bump, *end; /* the unused rest of the newest block */
    void *free;       /* freed pieces, linked through their first word */
    size_t size;      /* of a piece */
    size_t per_block; /* pieces per block */
} fbk__slab;

struct fbk_pool {
    atomic_long refs; /* the user's + one while it has items (+ a map's) */
    fbk_store *store;
    fbk_codec codec;
    bool track_bytes;   /* size() is taken of every value entering memory */
    pthread_mutex_t mu; /* guards pol, retry list, promo_head */
#ifndef NDEBUG
    _Atomic unsigned long mu_owner; /* lock checks: the holder's pthread_self(), or 0 */
#endif
    fbk__policy pol;
    atomic_size_t size;
    fbk__evict_rec *retry; /* eviction writes that failed (linked through job.next) */
    fbk__slab items;       /* the items' memory */
    fbk__slab recs;        /* eviction records ... */
    unsigned ndeferred;    /* evictions that found no record (FBK__RETRY_DEFERRED) */
    fbk_handle *deferred[FBK__DEFER_SLOTS];
    _Atomic(fbk__evict_rec *) recs_back; /* ... given back by workers without the mutex */
    size_t promo_head; /* next promotion to apply (pool mutex) */
    /* fbk_pool_stats */
    atomic_uint_fast64_t n_misses, n_evictions, n_mem_items, n_mem_bytes;
    _Alignas(64) atomic_size_t promo_tail; /* next slot to fill (no lock) */
    fbk__promo_slot promo[FBK__PROMO_SLOTS];
    fbk__stripe_count n_hits[FBK__HIT_STRIPES];
};

void fbk__pool_retain(fbk_pool *p);
void fbk__pool_release_ref(fbk_pool *p);
/* The size() of obj when p tracks bytes, else 0.  No lock held. */
size_t fbk__pool_weigh(fbk_pool *p, const void *obj);
/* Counts a hit on this thread's stripe.  fbk__hit_stripe: 0 until the
 * thread's first hit, then its stripe + 1, with FBK__HIT_MINE set when the
 * thread owns it. */
#define FBK__HIT_MINE 0x100u
extern _Thread_local unsigned fbk__hit_stripe __attribute__((tls_model("initial-exec")));
unsigned fbk__hit_stripe_init(void);
static inline void fbk__pool_count_hit(fbk_pool *p)
{
    unsigned v = fbk__hit_stripe;
    if (v == 0)
        v = fbk__hit_stripe_init();
    atomic_uint_fast64_t *c = &p->n_hits[(v & 0xffu) - 1].n;
    if (v & FBK__HIT_MINE)
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}
/* The value of an item (weighing `bytes`) entered (+1) or left (-1) memory. */
static inline void fbk__pool_count_mem(fbk_pool *p, int dir, size_t bytes)
{
    if (dir > 0) {
        atomic_fetch_add_explicit(&p->n_mem_items, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->n_mem_bytes, bytes, memory_order_relaxed);
    } else {
        atomic_fetch_sub_explicit(&p->n_mem_items, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&p->n_mem_bytes, bytes, memory_order_relaxed);
    }
}
/* Without the pool mutex: records a promotion of the item whose node is n.
 * false when the buffer is full (the caller takes the mutex, drains, and
 * applies its own). */
bool fbk__pool_promo_push(fbk_pool *p, fbk_handle *h);
/* Pool mutex held: the oldest recorded promotion (NULL: none ready).  An
 * entry whose item was unlinked meanwhile is skipped. */
fbk_handle *fbk__pool_promo_pop(fbk_pool *p);
/* Pool mutex held, the policy's node of h: insert/remove with the size and
 * retry-list bookkeeping.  true when h is the pool's first (link) or last
 * (unlink) item: the pool's items together hold one pool reference, taken
 * by the first and released by the last (after the mutex). */
bool fbk__pool_link_locked(fbk_pool *p, fbk_handle *h, bool resident, size_t w);
bool fbk__pool_unlink_locked(fbk_pool *p, fbk_handle *h);
/* Pool mutex held: the next victim of the change just made (NULL: none);
 * items on the retry list are skipped (their write failed a moment ago). */
fbk_handle *fbk__pool_victim_locked(fbk_pool *p);
/* Pool mutex held: the next item on the retry list (taken off it), or NULL. */
fbk_handle *fbk__pool_retry_pop_locked(fbk_pool *p);
/* r's eviction write failed: its item goes on the retry list with r --
 * unless it is there already: then r is given back.  Takes the mutex. */
void fbk__pool_evict_failed(fbk_pool *p, fbk__evict_rec *r);
/* Pool mutex held: an eviction of h found no record (out of memory): h is
 * kept in one of the pool's FBK__DEFER_SLOTS for a later change to try
 * again (all taken: h stays in memory until the policy next pushes it out). */
void fbk__pool_defer_locked(fbk_pool *p, fbk_handle *h);
fbk_handle *fbk__pool_deferred_pop_locked(fbk_pool *p);
/* Pool mutex held: a record for an eviction of h, or NULL (out of memory). */
fbk__evict_rec *fbk__pool_rec_get_locked(fbk_pool *p, fbk_handle *h);
/* Gives a record back, without the mutex (a worker, when its write ended). */
void fbk__pool_rec_put(fbk_pool *p, fbk__evict_rec *r);
/* Pool mutex held: memory for one item (not zeroed), or NULL; and back. */
fbk_handle *fbk__pool_item_alloc_locked(fbk_pool *p);
void fbk__pool_item_free_locked(fbk_pool *p, fbk_handle *h);

/* ------------------------------------------------------------- item.c */
/* The item's state word (docs/design.md, "The item"): pins in the low 32
 * bits, flags above.  Every transition is in item.c. */
#define FBK__ST_PINS ((uint64_t)0xffffffffu) /* pins: fbk_load, tasks */
#define FBK__ST_PIN ((uint64_t)1)
#define FBK__ST_MEM ((uint64_t)1 << 32)     /* obj != NULL */
#define FBK__ST_LOAD ((uint64_t)1 << 33)    /* a thread reads the value back */
#define FBK__ST_EVICT ((uint64_t)1 << 34)   /* the value is written out / dropped */
#define FBK__ST_MUT ((uint64_t)1 << 35)     /* fbk_load_mut holds the item */
#define FBK__ST_STORING ((uint64_t)1 << 36) /* a pinned thread writes the value out */
#define FBK__ST_WAITERS ((uint64_t)1 << 37) /* someone sleeps on the item's stripe */
#define FBK__ST_NOREFS ((uint64_t)1 << 38)  /* refs reached 0: the last unpin frees */
#define FBK__ST_WANTED                                                                             \
    ((uint64_t)1 << 39) /* the policy wants the value out: the                                     \
                           last unpin evicts it */
/* exclusive holders: no pin may start (LOAD: no value-pin, since !MEM) */
#define FBK__ST_EXCL (FBK__ST_LOAD | FBK__ST_EVICT | FBK__ST_MUT)

struct fbk_handle {
    _Atomic uint64_t state; /* pins + FBK__ST_* flags */
    atomic_int refs;        /* lifetime: handle references + jobs and tasks (not pins) */
    atomic_int users;       /* handle references (fbk_handle_retain) */
    fbk_pool *pool;
    /* The policy's (pool mutex), and two of the item's fields in it:
     * node.weight is the item's `bytes` -- size() of obj as counted in the
     * pool's bytes_in_memory and in the policy's byte sums (0 when the pool
     * does not track bytes); it changes only under the pool mutex *and* an
     * exclusive flag (LOAD, MUT) or before the item is linked, so either
     * one suffices to read it.  node.aux is FBK__MUT_OWNER. */
    fbk__node node;
    /* Below: written only by the holder of an exclusive flag (LOAD, EVICT,
     * MUT, or STORING with a pin), read by pin holders; `key` is also
     * copied under the item's stripe lock. */
    void *obj;       /* in memory, or NULL; FBK__ST_MEM says which */
    fbk__token *tok; /* spill copy, or NULL; obj || tok always */
    fbk_key key;
#ifndef NDEBUG
    uint32_t magic; /* FBK__MAGIC_HANDLE while the item lives (debug builds) */
#endif
};
/* fbk__thread_id() of the fbk_load_mut holder, or 0 */
#define FBK__MUT_OWNER(h) ((h)->node.aux)
#define FBK__ITEM_BYTES(h) ((h)->node.weight)
#ifdef NDEBUG
/* issue 12: at most 96 bytes of metadata per item (it is 88) */
_Static_assert(sizeof(struct fbk_handle) <= 96, "fbk_handle grew past 96 bytes");
#define FBK__ITEM_MAGIC_OK(h) true
#define FBK__ITEM_SET_MAGIC(h, v) ((void)0)
#else
#define FBK__ITEM_MAGIC_OK(h) ((h)->magic == FBK__MAGIC_HANDLE)
#define FBK__ITEM_SET_MAGIC(h, v) ((h)->magic = (v))
#endif

/* A small number for this thread (never 0). */
unsigned fbk__thread_id(void);

/* Lock checks.  The pool mutex and the item stripes' mutexes are taken
 * through these wrappers; debug builds (no NDEBUG: Debug, ASan, TSan)
 * record the holder, so that a function that needs a mutex asserts the
 * caller holds it (FBK__ASSERT_POOL_HELD), and the lock order pool->mu ->
 * stripe is checked where pool->mu is taken (no stripe may be held then,
 * nor two stripes at once).  Release builds compile all of it away. */
extern _Thread_local unsigned fbk__stripes_held; /* stripe mutexes this thread holds */
#ifndef NDEBUG
#define FBK__SELF() ((unsigned long)pthread_self())
#define FBK__ASSERT_POOL_HELD(p)                                                                   \
    FBK__DEBUG_ASSERT(atomic_load_explicit(&(p)->mu_owner, memory_order_relaxed) == FBK__SELF(),   \
                      __func__, "called without the pool mutex")
#define FBK__SET_OWNER(x, v) atomic_store_explicit(&(x)->mu_owner, (v), memory_order_relaxed)
#else
#define FBK__ASSERT_POOL_HELD(p) ((void)0)
#define FBK__SET_OWNER(x, v) ((void)0)
#endif

static inline void fbk__pool_lock(fbk_pool *p)
{
    FBK__DEBUG_ASSERT(fbk__stripes_held == 0, "fbk__pool_lock",
                      "lock order: the pool mutex taken while holding an item stripe");
    pthread_mutex_lock(&p->mu);
    FBK__SET_OWNER(p, FBK__SELF());
}
static inline void fbk__pool_unlock(fbk_pool *p)
{
    FBK__ASSERT_POOL_HELD(p);
    FBK__SET_OWNER(p, 0);
    pthread_mutex_unlock(&p->mu);
}

/* Debug builds: h is a live item that the caller still holds a handle
 * reference to (fn names the public function for the report). */
#define FBK__CHECK_HANDLE(h, fn)                                                                   \
    (FBK__DEBUG_ASSERT(FBK__ITEM_MAGIC_OK(h), (fn),                                      \
                       "the handle's item was already freed (used after its last "                 \
                       "fbk_handle_release?)"),                                                    \
     FBK__DEBUG_ASSERT(atomic_load_explicit(&(h)->users, memory_order_relaxed) > 0, (fn),          \
                       "the handle was used after its last fbk_handle_release"))

/* Lifetime. */
/* A new item, linked into p: in memory (obj, weighing w) or only in the
 * spill area (tok, whose use it takes over), under key.  NULL when out of
 * memory (nothing taken).  *queued: an eviction write was queued (for
 * backpressure). */
fbk_handle *fbk__item_create(fbk_pool *p, void *obj, size_t w, fbk__token *tok,
                             const fbk_key *key, bool *queued);
/* n items, not linked (fbk_register_many); false when out of memory (none
 * kept). */
bool fbk__item_new_many(fbk_pool *p, fbk_handle **hs, size_t n);
/* Frees an item that was never linked (fbk_register_many's failure path). */
void fbk__item_discard(fbk_handle *h);
/* Takes one reference unless the item is already retiring. */
bool fbk__item_try_ref(fbk_handle *h);
void fbk__item_ref(fbk_handle *h);
void fbk__item_unref(fbk_handle *h);
/* Links a new item into its pool (in memory: `resident`, of weight w).
 * Returns whether an eviction write was queued (for backpressure). */
bool fbk__item_link(fbk_handle *h, bool resident, size_t w);

/* Ends a pin (the last pin of an item whose references are gone frees it;
 * of an item the policy has out, evicts it). */
void fbk__item_unpin(fbk_handle *h);
/* The hit path: pins h if its value is in memory and nobody holds it
 * exclusively -- one atomic add.  false: nothing is held (the slow path,
 * fbk__item_pin_value, takes over). */
static inline bool fbk__item_pin_fast(fbk_handle *h)
{
    uint64_t s = atomic_fetch_add_explicit(&h->state, FBK__ST_PIN, memory_order_acquire);
    if ((s & (FBK__ST_MEM | FBK__ST_EXCL)) == FBK__ST_MEM)
        return true;
    fbk__item_unpin(h);
    return false;
}
/* Pins h with its value in memory: waits for an exclusive holder, or reads
 * the value back (*loaded).  `wait` false: FBK_EAGAIN instead (fn names the
 * caller in messages). */
int fbk__item_pin_value(fbk_handle *h, bool wait, bool *loaded, const char *fn);
/* Records a successful access with the policy (a lock-free hit, a buffered
 * SLRU promotion, or a list change under the pool mutex, evicting what it
 * pushes out).  Returns whether an eviction write was queued. */
bool fbk__item_touch(fbk_handle *h, bool loaded);
/* fbk__item_touch for a hit that fbk__policy_hit could not record. */
bool fbk__item_touch_moved(fbk_handle *h);
/* Pin for a task: waits (caller's thread) until no EVICT/MUT; FBK_EBUSY if
 * the caller itself holds fbk_load_mut. */
int fbk__item_pin(fbk_handle *h);
/* 1 when h's value is, at this moment, only in the spill area (not in
 * memory, not being loaded): it has a spill copy, so nothing needs writing
 * out.  A hint (the item may be loaded and changed right after). */
bool fbk__item_spilled(fbk_handle *h);
/* fbk_load_mut: holds h exclusively (users == 1 checked by the caller). */
int fbk__item_mut_begin(fbk_handle *h, bool try_only, void **obj, const char *fn);
void fbk__item_mut_end(fbk_handle *h);
/* A copy of the item's current key. */
void fbk__item_key(fbk_handle *h, fbk_key *out);
/* With a pin held: write the value out if it is not in the spill area yet;
 * *tok gets a use of the spill copy when tok != NULL. */
int fbk__item_ensure_stored(fbk_handle *h, fbk__token **tok, fbk_key *key);
/* A new item (not in memory) for the spill copy t of key; takes over the
 * caller's use of t (released on failure). */
int fbk__item_from_token(fbk_pool *p, fbk__token *t, const fbk_key *key, fbk_handle **out);
/* With a pin held: bring the value into memory. */
int fbk__item_fill(fbk_handle *h);
/* With a pin held: persist to loc; ends the pin. */
int fbk__item_persist_pinned(fbk_handle *h, fbk_location *loc);

#endif
