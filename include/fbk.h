/*
 * fbk.h -- libfbk, a storage engine for collections of large objects.
 *
 * A program hands libfbk objects; libfbk keeps the recently used ones in
 * memory (a segmented LRU of `mem_items` slots per pool) and spills the rest
 * to a backing store, loading them back on demand.  Objects can be persisted
 * to durable locations and registered back after a restart.
 *
 * Conventions
 *   - Every function that can fail returns int: 0 (FBK_OK) or a negative
 *     FBK_E* code; fbk_errmsg() then tells what failed on this thread.
 *   - Out-parameters come last.  On failure they are left unchanged and the
 *     objects involved are left exactly as they were.
 *   - All functions are thread-safe.  "Blocking" functions may do backend I/O
 *     on the caller's thread; the others never do.
 *   - close(NULL) / release(NULL) are harmless no-ops.
 *   - Misuse is undefined behaviour, not an error code: using an object
 *     after the call that frees it or drops your last reference to it
 *     (fbk_handle_release, fbk_pool_release, fbk_store_close,
 *     fbk_location_close, fbk_task_wait, fbk_task_release), releasing or
 *     closing one more times than you got it, fbk_unload / fbk_unload_mut
 *     without the matching load.  Release builds (NDEBUG) do not check and
 *     may seem to work; debug builds catch the cheap cases (a pin count or
 *     handle count going below zero, a freed handle or task used again
 *     while its memory is not reused, a task waited for twice) and abort
 *     with a "libfbk: misuse in FUNCTION: ..." message on stderr.
 *
 * Object lifetimes
 *   fbk_store     refcounted: freed after fbk_store_close() and the release of
 *                 the last pool, handle, location and task using it.
 *   fbk_pool      freed after fbk_pool_release() and the last handle release.
 *   fbk_handle    refcounted reference to one item (fbk_handle_retain).
 *   fbk_location  freed by fbk_location_close() once no task uses it.
 *   fbk_task      freed by fbk_task_wait() or fbk_task_release().
 */
#ifndef FBK_H
#define FBK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FBK_VERSION_MAJOR 0
#define FBK_VERSION_MINOR 1
#define FBK_VERSION_PATCH 0
/* "0.1.0" */
const char *fbk_version(void);

/* ------------------------------------------------------------------ keys */

/* An RFC 4122 version-4 UUID (from libuuid), the name of one stored value. */
typedef struct fbk_key {
    unsigned char bytes[16];
} fbk_key;
#define FBK_KEY_STRLEN 36

/* Writes the lowercase hyphenated form and a NUL into out. */
void fbk_key_format(const fbk_key *key, char out[FBK_KEY_STRLEN + 1]);
/* Parses the hyphenated (36 chars) or plain 32-hex form, either case.
 * FBK_EINVAL for anything else (including NULL). */
int fbk_key_parse(const char *text, fbk_key *out);
/* 1 if equal, 0 otherwise. */
int fbk_key_equal(const fbk_key *a, const fbk_key *b);
/* Writes the plain 32-hex lowercase form and a NUL into out. */
void fbk_key_format_hex(const fbk_key *key, char out[33]);
/* A fresh random (v4) key.  Not in the v0 contract; used by backends/tests. */
void fbk_key_generate(fbk_key *out);

/* ---------------------------------------------------------------- errors */

/* The one list of error codes: X(NAME, value, message). */
#define FBK_ERROR_MAP(X)                                                                           \
    X(EINVAL, -1, "invalid argument or misuse")                                                    \
    X(ENOMEM, -2, "out of memory")                                                                 \
    X(EIO, -3, "I/O error in the backend")                                                         \
    X(ENOSPC, -4, "no space left in the backend")                                                  \
    X(ENOTFOUND, -5, "key not found")                                                              \
    X(ECORRUPT, -6, "stored bytes failed checksum or format validation")                           \
    X(EAGAIN, -7, "the operation would have to block or wait")                                     \
    X(EBUSY, -8, "the item is shared, pinned or in use")                                           \
    X(ECODEC, -9, "a codec callback failed")                                                       \
    X(ECLOSED, -10, "the store is shutting down")                                                  \
    X(EREADONLY, -11, "a change was asked of a read-only store")                                   \
    X(ENOTSUP, -12, "the backend cannot do this")                                                  \
    X(ETIMEDOUT, -13, "a remote backend did not answer in time")

enum {
    FBK_OK = 0,
#define FBK__ERR_ENUM(name, value, msg) FBK_##name = (value),
    FBK_ERROR_MAP(FBK__ERR_ENUM)
#undef FBK__ERR_ENUM
};

/* A static description of err; never NULL ("unknown error" for others). */
const char *fbk_strerror(int err);
/* The code's name, e.g. "FBK_ENOSPC"; never NULL. */
const char *fbk_err_name(int err);
/* The detailed message of the last failure on the calling thread, e.g.
 * "file: link DIR/spill/ab/ab12...: No space left on device"; "" if none. */
const char *fbk_errmsg(void);
/* The OS errno behind the last failure on the calling thread, 0 if none. */
int fbk_last_os_error(void);

/* ------------------------------------------------------------- allocator */

/* Every allocation of libfbk's core and of the mem: backend goes through
 * this table, and so does what a backend allocates with fbk_malloc
 * (fbk_backend.h).  Not through it: the state of the lmdb:, file: and rados:
 * backends (the C library's malloc), LMDB's and librados's own allocations,
 * a codec's own (docs/backends.md, "Allocation").  Set it before opening any
 * store; NULL restores the C library's.  FBK_EINVAL if a function is
 * missing. */
typedef struct fbk_allocator {
    void *(*malloc)(size_t size, void *ctx);
    void *(*realloc)(void *ptr, size_t size, void *ctx);
    void (*free)(void *ptr, void *ctx);
    void *ctx;
} fbk_allocator;
int fbk_set_allocator(const fbk_allocator *a);

/* ----------------------------------------------------------------- codec */

/* How a user type becomes bytes and back.  dst/src may point straight into
 * backend memory (an LMDB page, a mapped file): encode and decode must not
 * keep the pointer.  Callbacks may run on any thread, including the store's
 * workers (eviction writes).  A non-zero result from encode/decode/clone is
 * reported as FBK_ECODEC, except FBK_ENOMEM, which is passed on as is. */
typedef struct fbk_codec {
    size_t (*size)(const void *obj, void *ctx);                       /* encoded length */
    int (*encode)(const void *obj, void *dst, size_t len, void *ctx); /* fill exactly len bytes */
    int (*decode)(const void *src, size_t len, void **out,
                  void *ctx);              /* src valid only during call */
    void (*destroy)(void *obj, void *ctx); /* free an in-memory object */
    int (*clone)(const void *obj, void **out,
                 void *ctx); /* optional (make_mut); NULL = encode+decode */
    void *ctx;

    /* Optional, for zero copy (libfbk's addition; leave NULL to always use
     * encode/decode).  A backend that can write or read a value in pieces
     * (file:) then moves the bytes between the object and the file with no
     * copy in between:
     * view: the encoded bytes of obj when they already lie contiguous in the
     *   object: a pointer to size(obj) bytes that stays valid while the
     *   object is neither changed nor destroyed; NULL means "use encode".
     * reserve: a new object whose encoded form will be exactly the len bytes
     *   written to *dst; the object must be complete once they are there (the
     *   object IS its bytes, as fbk_blob is).  Returns 0 or non-zero as
     *   decode does.  If the bytes then fail the frame check, the object is
     *   handed to destroy. */
    const void *(*view)(const void *obj, void *ctx);
    int (*reserve)(size_t len, void **obj, void **dst, void *ctx);
} fbk_codec;

/* A ready-made object type: a length-prefixed byte string. */
typedef struct fbk_blob {
    size_t len;
    unsigned char data[];
} fbk_blob;
/* A new blob holding a copy of data[0..len) (data may be NULL when len is 0,
 * or NULL to leave the bytes uninitialised).  NULL on ENOMEM. */
fbk_blob *fbk_blob_new(const void *data, size_t len);
void fbk_blob_free(fbk_blob *b);
/* The codec for fbk_blob * objects. */
extern const fbk_codec fbk_blob_codec;

/* --------------------------------------------------------- opaque types */

typedef struct fbk_store fbk_store;
typedef struct fbk_pool fbk_pool;
typedef struct fbk_handle fbk_handle;
typedef struct fbk_location fbk_location;
typedef struct fbk_task fbk_task;
typedef struct fbk_backend_ops fbk_backend_ops; /* see fbk_backend.h */

/* ----------------------------------------------------------------- store */

/* Called on a worker thread for each failure of background work that has no
 * caller to return it to (an eviction write, the remove of a released item's
 * spill copy).  The object involved is kept: a failed eviction leaves the
 * item in memory and it is written again later. */
typedef void (*fbk_error_fn)(int err, const char *message, void *arg);

typedef struct fbk_store_options {
    unsigned threads;      /* background worker threads; 0 = the backend's preference
                              (2 for file:, else 1; fbk_store_threads tells) */
    fbk_error_fn on_error; /* background failures; NULL = counted only */
    void *on_error_arg;
    size_t map_size;            /* lmdb: (and rados:'s lmdb: spill area): initial map
                                   size of each environment in bytes; 0 = default
                                   (64 MiB); grows on demand.  The URI parameter
                                   map_size=... wins over it */
    const char *durable_dir;    /* lmdb: directory of the durable environment;
                                   NULL = DIR/durable.  The URI parameter
                                   durable_dir=... wins over it */
    unsigned max_queued_writes; /* eviction writes queued or running before a
                               blocking call waits for the workers; 0 = 32 x threads */
    size_t max_queued_bytes;    /* the same bound on their bytes, counted for
                                   codecs with `view` (fbk_blob): 0 = 16 MiB */
    unsigned flags;             /* FBK_STORE_READONLY */
    /* every field's zero value means its default, so `{0}` is valid */
} fbk_store_options;

/* A read-only store opens existing durable locations only: nothing in the
 * store directory is made or emptied, it works while other processes have the
 * store open for writing, and every call that would change a durable location
 * (persist, location remove, save, map put/remove) returns FBK_EREADONLY.
 * Pools on it can register and load.  A location that does not exist gives
 * FBK_ENOTFOUND instead of being created. */
#define FBK_STORE_READONLY 1u

/* Opens a store.  uri: "lmdb:DIR", "file:DIR", "mem:" (or "mem:NAME"),
 * "rados:DIR?pool=POOL" (when built with librados), or "SCHEME:ARG" of a
 * scheme a program registered (fbk_backend_register, fbk_backend.h); a bare
 * path means "lmdb:PATH".  opts == NULL means defaults.
 * The URI may carry parameters after '?': key=value pairs joined by '&',
 * percent-encoding allowed ("lmdb:/data/x?map_size=1g&threads=2").  Every
 * scheme takes threads, max_queued_writes, max_queued_bytes, readonly (0/1)
 * and its own (lmdb: map_size, durable_dir; the list of each scheme is in
 * docs/backends.md and in fbk_backend_lookup(scheme)->params).  A parameter
 * overrides the same field of opts.  An unknown key, or one the scheme does
 * not take, gives FBK_EINVAL naming it and listing the known ones.
 * Blocking (creates DIR and a spill area of this store's own in it).
 * Several processes may open one store (docs/maps.md, "Sharing").
 * FBK_EINVAL for an unknown scheme or bad argument,
 * FBK_EIO/FBK_ENOSPC/FBK_ENOMEM otherwise. */
int fbk_store_open(fbk_store **out, const char *uri, const fbk_store_options *opts);
/* Opens a store over a user's backend table; takes ownership of self (also on
 * failure: ops->close(self) is then called). */
int fbk_store_open_backend(fbk_store **out, const fbk_backend_ops *ops, void *self,
                           const fbk_store_options *opts);
/* Blocks until all background work queued so far (and the work it queues in
 * turn) is done.  Returns 0, or the first background error since the last
 * drain (the error was also passed to on_error). */
int fbk_store_drain(fbk_store *s);
/* Drops the caller's reference; the store is freed after the last pool,
 * handle and location using it is released.  Existing pools and handles keep
 * working.  Undefined: closing s twice, or using s after closing it. */
void fbk_store_close(fbk_store *s);

/* Counters since open, for tests, benchmarks and monitoring. */
typedef struct fbk_store_stats {
    uint64_t stores;            /* backend store calls that succeeded */
    uint64_t loads;             /* backend load calls that succeeded */
    uint64_t removes;           /* spill copies removed */
    uint64_t evictions;         /* items dropped from memory after a write */
    uint64_t eviction_failures; /* eviction writes that failed (item kept) */
    uint64_t background_errors; /* all failures reported to on_error */
    uint64_t store_batches;     /* store_many calls (each wrote `stores` of several values) */
    uint64_t batched_stores;    /* values written through them */
} fbk_store_stats;
void fbk_store_stats_get(fbk_store *s, fbk_store_stats *out);
/* The store's background worker threads: fbk_store_options.threads, or when
 * that was 0 the backend's preference (2 for file:, 1 otherwise).  0 if s is
 * NULL. */
unsigned fbk_store_threads(const fbk_store *s);

/* ------------------------------------------------------------- locations */

/* Opens (creating when missing) a durable location, scans and sanitizes it
 * and remembers which keys it holds.  Blocking.  Opening a location that is
 * open already in the same store gives the same shared object (its key set,
 * its sync state), counted: each open needs its own fbk_location_close.  So
 * a remove through one handle is seen by a persist through the other.  On a
 * read-only store, a location that does not exist is FBK_ENOTFOUND. */
int fbk_location_open(fbk_store *s, const char *location, fbk_location **out);
size_t fbk_location_count(const fbk_location *loc);
/* How many junk entries the scan at open deleted: leftovers the backend
 * made itself (temporaries of a crashed write).  Nothing else is deleted. */
size_t fbk_location_junk_removed(const fbk_location *loc);
/* How many entries the scan at open found where the backend keeps keys that
 * it did not make (file:: a user's file inside a shard directory, a file
 * named like a shard, a key in the wrong shard...), and left alone.  They
 * are not keys; a persist that needs the name fails.  0 for a clean
 * location. */
size_t fbk_location_foreign_entries(const fbk_location *loc);
/* 1 or 0 */
int fbk_location_contains(const fbk_location *loc, const fbk_key *key);
/* Copies up to cap keys into out (in no particular order); returns the total. */
size_t fbk_location_keys(const fbk_location *loc, fbk_key *out, size_t cap);
/* Rescans loc: afterwards count/contains/keys reflect keys added or removed
 * by other processes (and other stores) since the open or the last refresh.
 * Blocking. */
int fbk_location_refresh(fbk_location *loc);
/* Makes every persist/remove on loc so far durable.  Blocking.  A failure is
 * final for this fbk_location: every later sync returns the same error
 * (pages the kernel failed to write may have been dropped); reopen the
 * location to find out what it holds. */
int fbk_location_sync(fbk_location *loc);
/* Removes key from loc; an absent key returns 0 with no backend call.
 * Blocking.  Durable after the next sync. */
int fbk_location_remove(fbk_location *loc, const fbk_key *key);
/* Deletes the location named `location` of s and every object (and name)
 * in it -- e.g. to free one of lmdb:'s 1024 location slots.  Blocking.
 * FBK_EBUSY while a fbk_location of that name is open in s,
 * FBK_ENOTFOUND if there is none, FBK_EREADONLY on a read-only store,
 * FBK_ENOTSUP where the backend cannot (file:, mem: and user tables without
 * drop_location; remove a file: location's directory yourself). */
int fbk_location_drop(fbk_store *s, const char *location);
/* Frees loc once running tasks that use it have finished.  Undefined:
 * closing loc twice, or using it after closing it. */
void fbk_location_close(fbk_location *loc);

/* ----------------------------------------------------------------- pools */

/* A pool of objects of one codec, keeping at most mem_items in memory
 * (front half mem_items/2, back half the rest).  *codec is copied;
 * codec->ctx must outlive the pool. */
int fbk_pool_create(fbk_pool **out, fbk_store *s, const fbk_codec *codec, size_t mem_items);
/* Live items, in memory or spilled. */
size_t fbk_pool_size(const fbk_pool *p);
/* Drops the caller's reference; live handles keep the pool alive.
 * Undefined: releasing p twice, or using it after releasing it. */
void fbk_pool_release(fbk_pool *p);

/* Which value leaves memory when a pool is over its bounds (docs/design.md,
 * "Eviction policies", says which fits which access pattern). */
typedef enum fbk_policy {
    FBK_POLICY_SLRU = 0,  /* the segmented LRU above (default) */
    FBK_POLICY_SIEVE = 1, /* SIEVE (NSDI '24): one FIFO, a visited bit, a moving hand */
    FBK_POLICY_S3FIFO = 2 /* S3-FIFO (SOSP '23): small + main FIFO, ghost of recent keys */
} fbk_policy;

typedef struct fbk_pool_options {
    size_t mem_items; /* items kept in memory; 0 = no item bound */
    size_t mem_bytes; /* bytes of objects kept in memory, as the codec's size(); 0 = no byte bound */
    fbk_policy policy;
} fbk_pool_options;

/* As fbk_pool_create with a choice of policy and an optional byte bound.
 * At least one of mem_items and mem_bytes must be non-zero, and policy one of
 * the above, else FBK_EINVAL.  fbk_pool_create(out, s, codec, n) is
 * fbk_pool_create_v2 with {n, 0, FBK_POLICY_SLRU}.  With a byte bound the
 * pool keeps values whose sizes add up to at most mem_bytes (pinned values may
 * exceed it until unloaded; a value larger than the bound is written out at
 * its last unload); it calls the codec's size() once per value that enters
 * memory and once per fbk_unload_mut.  Under SIEVE and S3-FIFO a hit on a
 * value in memory takes no pool lock; under SLRU neither does a hit in the
 * front half. */
int fbk_pool_create_v2(fbk_pool **out, fbk_store *s, const fbk_codec *codec,
                       const fbk_pool_options *opts);

typedef struct fbk_pool_stats {
    uint64_t hits;            /* fbk_load/fbk_try_load calls that found the value in memory */
    uint64_t misses;          /* loads that read the value from the spill area */
    uint64_t evictions;       /* values dropped from memory */
    uint64_t items_in_memory; /* values in memory now */
    uint64_t bytes_in_memory; /* codec size() of the values in memory now: counted for pools
                                 with a byte bound or a codec with `view` (0 otherwise, so
                                 that no other pool pays a size() call per value) */
} fbk_pool_stats;
/* A snapshot of p's counters (each read atomically, not all at one
 * instant).  Zeroes *out when p is NULL.  Never blocks. */
void fbk_pool_stats_get(const fbk_pool *p, fbk_pool_stats *out);

/* --------------------------------------------------------------- handles */

/* Puts obj in the pool (in memory only, at the front of the LRU) and returns
 * a handle.  Takes ownership of obj on success; on failure the caller keeps
 * it.  No I/O on the caller's thread: the item pushed out of memory is
 * written by a worker.  When more than max_queued_writes (default
 * 32 x threads) such writes, or more than max_queued_bytes (default 16 MiB)
 * of their objects, are queued, waits for the workers to catch up (so memory
 * stays bounded when inserts outrun the backend). */
int fbk_insert(fbk_pool *p, void *obj, fbk_handle **out);
/* A handle for key as held by loc, without loading it.  Blocking (copies the
 * value into the spill area unless that key is already registered there).
 * FBK_ENOTFOUND if loc does not hold key.  Registering the same key twice
 * gives two distinct handles sharing one spill copy (one register_key call). */
int fbk_register(fbk_pool *p, fbk_location *loc, const fbk_key *key, fbk_handle **out);
/* As n fbk_register calls (out[0..n) get the handles, in the order of
 * keys), in as few backend calls as the backend allows: one register_many
 * for the keys not in the spill area yet when the table has it.  On failure
 * (FBK_ENOTFOUND naming the first key loc lacks, the backend's error,
 * FBK_ENOMEM) no handle is returned, out is untouched and nothing stays
 * registered.  n == 0 is a no-op.  Blocking. */
int fbk_register_many(fbk_pool *p, fbk_location *loc, const fbk_key *keys, size_t n,
                      fbk_handle **out);
/* Another reference to the SAME item; returns h.  Each reference needs its
 * own fbk_handle_release. */
fbk_handle *fbk_handle_retain(fbk_handle *h);
/* Drops one reference.  The last one takes the item out of the pool; its
 * spill copy, if any, is removed in the background.  Undefined (debug builds
 * abort): more releases than references (1 + retains), any use of h after
 * the last release except the fbk_unload of a pin still held, and the last
 * release while fbk_load_mut holds the item. */
void fbk_handle_release(fbk_handle *h);
/* The item's current key (it changes on fbk_load_mut). */
void fbk_handle_key(const fbk_handle *h, fbk_key *out);
fbk_pool *fbk_handle_pool(const fbk_handle *h);

/* Pins the item in memory and gives read access to it until fbk_unload().
 * Blocking: reads the item back if spilled (FBK_ECORRUPT, FBK_ECODEC,
 * FBK_EIO... leave it spilled and the LRU unchanged).  Several threads may
 * hold loads at once.  A pin keeps the item alive: releasing its last handle
 * before fbk_unload() is allowed. */
int fbk_load(fbk_handle *h, const void **obj);
/* As fbk_load, but FBK_EAGAIN if the item is not in memory or is being
 * evicted right now; never blocks on I/O. */
int fbk_try_load(fbk_handle *h, const void **obj);
/* Ends one pin taken by fbk_load/fbk_try_load.  Allowed after the last
 * fbk_handle_release (the pin kept the item alive).  Undefined (debug builds
 * abort): an fbk_unload without a pin to end (no load, or a second unload of
 * one load). */
void fbk_unload(fbk_handle *h);
/* Exclusive write access.  FBK_EBUSY unless h is the only reference and the
 * item is not pinned.  Removes the spill copy and gives the item a NEW key.
 * Blocking (loads the item if spilled).  It holds no reference: end it with
 * fbk_unload_mut before releasing the last handle. */
int fbk_load_mut(fbk_handle *h, void **obj);
/* As fbk_load_mut, FBK_EAGAIN instead of I/O or waiting. */
int fbk_try_load_mut(fbk_handle *h, void **obj);
/* Ends the write access of fbk_load_mut/fbk_try_load_mut/fbk_make_mut.
 * Undefined (debug builds abort): calling it when no such write access holds
 * the item. */
void fbk_unload_mut(fbk_handle *h);
/* Write access whether shared or not: when *h is shared (or pinned), clones
 * the object into a new item, releases one reference to the old item and
 * stores the new handle in *h.  Then as fbk_load_mut on *h; end with
 * fbk_unload_mut(*h).  On failure *h is unchanged. */
int fbk_make_mut(fbk_handle **h, void **obj);

/* Writes the item to the spill area if it is not there yet.  Blocking. */
int fbk_write_now(fbk_handle *h);
/* Writes the item if needed, then copies it into loc; no backend call if loc
 * already holds the key.  Blocking.  Durable after fbk_location_sync(loc). */
int fbk_persist(fbk_handle *h, fbk_location *loc);

/* ----------------------------------------------------------------- tasks */

/* Each _async call pins the item's current value before it returns and does
 * the work on a worker thread.  out == NULL means fire-and-forget (errors go
 * to on_error).  The task keeps h's item, loc and the store alive. */
int fbk_write_now_async(fbk_handle *h, fbk_task **out);
int fbk_persist_async(fbk_handle *h, fbk_location *loc, fbk_task **out);
/* Loads the item into memory in the background. */
int fbk_prefetch(fbk_handle *h, fbk_task **out);
/* Blocks until the task is finished; returns its result and frees t.
 * Undefined (debug builds abort): a second fbk_task_wait, or one after
 * fbk_task_release, of the same t. */
int fbk_task_wait(fbk_task *t);
/* 1 if finished (non-blocking), 0 otherwise.  Only before fbk_task_wait /
 * fbk_task_release: t is freed by those. */
int fbk_task_done(const fbk_task *t);
/* Stop waiting: frees t; the operation still completes.  Undefined (debug
 * builds abort): a second fbk_task_release, or one after fbk_task_wait. */
void fbk_task_release(fbk_task *t);

/* ------------------------------------------------------------------ save */

/* Called between the sync and the removal of stale keys; should atomically
 * switch the user's own reference (e.g. rename a manifest).  0 = committed. */
typedef int (*fbk_commit_fn)(void *arg);
/* Persists every handle to loc (skipping keys already there, at most
 * max_parallel at a time; 0 = the store's thread count), syncs loc, calls
 * commit(arg) (may be NULL: nothing to call), and, only if that returned 0,
 * removes from loc the keys that were there before and are not among
 * handles.  A failure before commit leaves the previous save intact and
 * returns the error; commit's non-zero result is returned as is.  Once commit
 * returned 0 the save has succeeded and fbk_save returns 0: a stale key that
 * cannot be removed is reported to on_error (and by the next
 * fbk_store_drain) and is removed by a later save.  Blocking. */
int fbk_save(fbk_location *loc, fbk_handle *const *handles, size_t n, unsigned max_parallel,
             fbk_commit_fn commit, void *arg);

/* ------------------------------------------------------------------ maps */

/* A map binds names -- byte strings of 1 to FBK_NAME_MAX bytes, any bytes --
 * to objects persisted in one location: what a program keeps instead of a
 * manifest of keys (persistent memoization, blob databases).  The name index
 * lives in the backend next to the objects (docs/maps.md).  Every function is
 * thread-safe; put/get/remove/contains/get_or_compute/names/sync/close are
 * blocking. */
#define FBK_NAME_MAX 4096
typedef struct fbk_map fbk_map;
typedef struct fbk_map_options {
    uint64_t size_limit; /* bytes of objects (codec size()) the map keeps; 0 = no limit */
    unsigned flags;      /* FBK_MAP_NOSYNC */
} fbk_map_options;
/* put/remove durable at fbk_map_sync/close, not on return */
#define FBK_MAP_NOSYNC 1u

/* Opens the map of loc, whose objects live in pool p (p's codec decodes
 * them).  opts == NULL means defaults.  The map keeps p and loc alive until
 * fbk_map_close.  FBK_ENOTSUP on a backend table without names (before
 * version 4). */
int fbk_map_open(fbk_pool *p, fbk_location *loc, const fbk_map_options *opts, fbk_map **out);
/* Syncs what is pending, then frees m; returns that result (m is freed
 * whatever it is).  fbk_map_close(NULL) returns 0. */
int fbk_map_close(fbk_map *m);
/* Persists h's item (as fbk_persist) and binds name to its current key,
 * replacing an earlier binding; the caller keeps h (the map takes a
 * reference of its own to h's item, so that gets share it: fbk_load_mut(h)
 * is then FBK_EBUSY -- use fbk_make_mut).  Without FBK_MAP_NOSYNC
 * it is durable when it returns; concurrent puts share their syncs (group
 * commit).  FBK_EINVAL for a NULL/empty/too long name or a NULL handle,
 * FBK_EREADONLY on a read-only store. */
int fbk_map_put(fbk_map *m, const void *name, size_t len, fbk_handle *h);
/* A new handle (registered, not loaded) for exactly the key bound to name,
 * which the caller releases; FBK_ENOTFOUND if unbound.  Sees what other
 * processes synced. */
int fbk_map_get(fbk_map *m, const void *name, size_t len, fbk_handle **out);
/* Unbinds name; FBK_ENOTFOUND if unbound. */
int fbk_map_remove(fbk_map *m, const void *name, size_t len);
/* 1 if name is bound, 0 if not, or a negative FBK_E* code. */
int fbk_map_contains(fbk_map *m, const void *name, size_t len);
/* As fbk_map_get when name is bound.  Otherwise compute(name, len, &obj, arg)
 * runs on the caller's thread -- once among concurrent callers of the same
 * name in this process; the others wait for it -- then obj (owned by the map
 * from then on) is inserted into the map's pool, put under name, and its
 * handle returned to every waiter (each gets its own reference).  A non-zero
 * result of compute is returned, as is, to all of them and nothing is bound;
 * the next call computes again. */
typedef int (*fbk_compute_fn)(const void *name, size_t len, void **obj, void *arg);
int fbk_map_get_or_compute(fbk_map *m, const void *name, size_t len, fbk_compute_fn compute,
                           void *arg, fbk_handle **out);
/* Calls each(name, len, arg) for every name (this process's view plus what
 * others synced); each's non-zero result stops the walk and is returned. */
typedef int (*fbk_name_fn)(const void *name, size_t len, void *arg);
int fbk_map_names(fbk_map *m, fbk_name_fn each, void *arg);
/* Names bound, and codec size() of the distinct objects they name, as this
 * process knows them (refreshed by fbk_map_names). */
uint64_t fbk_map_count(fbk_map *m);
uint64_t fbk_map_bytes(fbk_map *m);
/* Makes every put/remove so far durable (and removes from the location the
 * objects no name refers to any more). */
int fbk_map_sync(fbk_map *m);

/* Byte-level put and get, for a caller that has the value as bytes (the
 * Python package): no item, no spill copy.
 * fbk_map_put_bytes binds name to a new object whose encoded form is
 * data[0..size) -- for a map over fbk_blob_codec, the value itself -- with
 * the durability of fbk_map_put.  The bytes are copied once (checksummed in
 * the same pass) into memory the map holds until the batch that binds them
 * writes them into the location, in the transaction of the binding, through
 * the backend's write_names (table version 6, lmdb:).  Without write_names,
 * or while the map holds 64 MiB of such bytes already (FBK_MAP_NOSYNC puts
 * waiting for a sync), the bytes are decoded by the pool's codec, inserted
 * and put as fbk_map_put does (through the spill area).  Errors as fbk_map_put (FBK_ECODEC from the
 * codec's decode). */
int fbk_map_put_bytes(fbk_map *m, const void *name, size_t len, const void *data, size_t size);
/* fbk_map_get_bytes copies the encoded form of the object bound to name (a
 * blob's bytes) into memory the caller hands out: buf(size, arg) is called
 * at most once, with the size, and returns where size bytes go (NULL:
 * FBK_ENOMEM).  An object not in memory is read straight from the location
 * (backend table version 4 load_persisted: one copy, checked against the
 * frame's checksum in the same pass), with no item registered; otherwise
 * as fbk_map_get, then fbk_load.  FBK_ENOTFOUND if unbound, FBK_ECORRUPT
 * on damaged bytes.  When it fails after buf was called, the caller frees
 * what buf handed out (its bytes are undefined). */
typedef void *(*fbk_buf_fn)(size_t size, void *arg);
int fbk_map_get_bytes(fbk_map *m, const void *name, size_t len, fbk_buf_fn buf, void *arg);

#ifdef __cplusplus
}
#endif

#include "fbk_backend.h"

#endif /* FBK_H */
