/*
 * fbk_backend.h -- the backend table of libfbk: where the bytes live.
 *
 * A backend stores opaque byte strings under 16-byte keys in a *spill area*
 * (the temporary storage the cache evicts into) and copies them to and from
 * durable *locations*.  The built-in backends (`mem:`, `file:`, `lmdb:`,
 * `rados:`) are tables of this shape; a user may supply their own to
 * fbk_store_open_backend(), or register a scheme for it (fbk_backend_register
 * below) and open it by URI.  Overview: docs/backends.md; backends/mem/ is a
 * template that uses only this header.
 *
 * What a backend may assume (the core guarantees it, as the original
 * file_backed `BackingStore` wrapper did):
 *   - it never sees two operations race on ONE key: for a given key,
 *     `store` happens once (until a `remove`), `remove` only after the last
 *     user of the key is gone, `load`/`persist` only while the key is present
 *     in the spill area, `register_key` only for a key not present in the
 *     spill area;
 *   - operations on DIFFERENT keys may run concurrently on any threads, so the
 *     backend's own shared state must be thread-safe;
 *   - all functions are plain blocking calls; they never call back into the
 *     store (only into the fill/read/key callbacks they are handed).
 *
 * What a backend must do:
 *   - return 0 or a negative FBK_E* code, never abort; set a message with
 *     fbk_error_set() / fbk_error_from_errno() so the user learns what failed;
 *   - leave the previous state intact on failure (a failed `store` leaves no
 *     readable value under the key; a failed `persist` leaves no half-written
 *     value under the key in the location).
 *
 * The blob framing (magic, version, length, XXH3 checksum) is done by the
 * core, inside the fill/read callbacks: backends store and return exactly the
 * bytes they were given and need no integrity checks of their own.
 */
#ifndef FBK_BACKEND_H
#define FBK_BACKEND_H

#include "fbk.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h> /* struct iovec */

#ifdef __cplusplus
extern "C" {
#endif

/* Fills dst[0..len) with the framed blob.  Returns 0 or an FBK_E* code
 * (the backend must then discard the partial value and return that code). */
typedef int (*fbk_fill_fn)(void *dst, size_t len, void *arg);
/* Consumes src[0..len); src need only stay valid during the call. */
typedef int (*fbk_read_fn)(const void *src, size_t len, void *arg);
/* Called once per key found by scan; a non-zero result stops the scan and is
 * returned by it. */
typedef int (*fbk_key_fn)(const fbk_key *key, void *arg);
/* load_into's callback (version 2): told the stored length, sets iov[0..*n)
 * (*n <= FBK_PLACE_MAX) to where those len bytes go, in order, summing to
 * exactly len.  Returns 0, or an FBK_E* code that load_into must return
 * without reading further. */
#define FBK_PLACE_MAX 2
typedef int (*fbk_place_fn)(size_t len, struct iovec *iov, int *n, void *arg);

/* 1: the contract's table.  2: appends store_many, store_iov, load_into.
 * 3: appends workers.  4: appends the name index (maps), contains,
 * scan_foreign, drop_location and load_persisted.  5: appends
 * persist_names and remove_unbound.  6: appends write_names and
 * remove_unbound_many. */
#define FBK_BACKEND_OPS_VERSION 6

/* One change of a location's name index (version 4): bind name[0..len) to
 * key, or unbind it when key is NULL.  `size` is the object's payload size
 * (the codec's size()), kept with the binding so that a map learns its bytes
 * without reading objects. */
typedef struct fbk_name_op {
    const void *name;
    size_t len;
    const fbk_key *key; /* NULL: unbind */
    uint64_t size;
} fbk_name_op;
/* Called once per binding by name_scan; non-zero stops the scan and is
 * returned by it. */
typedef int (*fbk_binding_fn)(const void *name, size_t len, const fbk_key *key, uint64_t size,
                              void *arg);

/* One value of a batched store (version 2): the same four arguments as
 * `store`, plus the outcome of this one value, set by the backend. */
typedef struct fbk_store_req {
    const fbk_key *key;
    size_t len;
    fbk_fill_fn fill;
    void *arg;
    int result; /* out: 0 when the value is readable, else its FBK_E* code */
} fbk_store_req;

/* One value write_names (version 6) puts into a location straight from the
 * caller's memory: the framed value (the core's 24-byte header, then the
 * codec's bytes) as iov[0..niov), niov <= 4, under a key new to the
 * location. */
typedef struct fbk_frame_req {
    const fbk_key *key;
    const struct iovec *iov;
    int niov;
} fbk_frame_req;

/*
 * The table.  `version` comes first; later versions only append members, so a
 * table built against version 1 keeps working.  `self` is the backend's own
 * state, handed to fbk_store_open_backend() and owned by the store from then
 * on (freed by `close`).  `loc` is the backend's handle for one location, made
 * by `open_location` and freed by `close_location`.
 */
struct fbk_backend_ops {
    unsigned version; /* FBK_BACKEND_OPS_VERSION */
    const char *name; /* short name for messages, e.g. "lmdb" */

    /* ---- spill area ---- */
    /* Store `len` bytes under `key`: obtain a writable buffer of exactly `len`
     * bytes (ideally the final resting place, e.g. an LMDB MDB_RESERVE page),
     * call fill(buf, len, arg) exactly once, and make the value readable by
     * `load`.  Durability is not required: the spill area is disposable. */
    int (*store)(void *self, const fbk_key *key, size_t len, fbk_fill_fn fill, void *arg);
    /* Call read(ptr, len, arg) once with the bytes stored under `key` and
     * return its result.  FBK_ENOTFOUND if the key is absent. */
    int (*load)(void *self, const fbk_key *key, fbk_read_fn read, void *arg);
    /* Delete the spill copy of `key`.  FBK_ENOTFOUND if absent. */
    int (*remove)(void *self, const fbk_key *key);

    /* ---- durable locations ---- */
    /* Open (creating when missing) the location named `location` (a
     * directory for file:, a database name for lmdb:, any name for mem:).
     * FBK_EINVAL for a name the backend cannot use. */
    int (*open_location)(void *self, const char *location, void **loc);
    void (*close_location)(void *self, void *loc);
    /* Sanitize the location (delete junk: the backend's own leftovers, such
     * as temporaries of a crashed write -- never an entry it did not make)
     * and call each(key, arg) for every key it holds.  Returns the number
     * of junk entries it deleted (>= 0), or an FBK_E* code. */
    int (*scan)(void *self, void *loc, fbk_key_fn each, void *arg);
    /* Copy the spill copy of `key` into `loc` (atomically: never a
     * half-written value under the key).  Need not be durable until `sync`. */
    int (*persist)(void *self, void *loc, const fbk_key *key);
    /* Copy `key` from `loc` into the spill area.  FBK_ENOTFOUND if absent. */
    int (*register_key)(void *self, void *loc, const fbk_key *key);
    /* Delete `key` from `loc`.  FBK_ENOTFOUND if absent. */
    int (*remove_persisted)(void *self, void *loc, const fbk_key *key);
    /* Make every persist/remove_persisted on `loc` so far durable.  A failed
     * sync must be reported, and never turned into success by a later call
     * that merely retries (the kernel may have dropped the dirty pages). */
    int (*sync)(void *self, void *loc);
    /* Free `self`.  Called once, after every location is closed and all
     * background work has finished. */
    void (*close)(void *self);

    /* ---- optional batch forms; NULL means the core loops ---- */
    int (*persist_many)(void *self, void *loc, const fbk_key *keys, size_t n);
    int (*register_many)(void *self, void *loc, const fbk_key *keys, size_t n);

    /* ---- version 2 (read only when version >= 2) ---- */
    /* Optional: store n values at once, with the guarantees of n `store`
     * calls (distinct keys, each fill called once per attempt, a failed value
     * left unreadable).  Sets every reqs[i].result and returns 0 when all
     * succeeded, else the first failure's code (with its message).  The core
     * hands over the eviction writes that queued up together, so a backend
     * with a costly commit (LMDB) pays it once per batch.  NULL: the core
     * calls `store` once per value. */
    int (*store_many)(void *self, fbk_store_req *reqs, size_t n);
    /* Optional zero-copy forms of store and load, for a backend whose
     * natural I/O is a gather write / scatter read (file:).  NULL: the core
     * uses store/load.
     * store_iov: `store` with the value given as iov[0..n) (n <= 4; the
     *   framed header, then the object's own bytes), written as they are
     *   (writev).  The segments stay valid and unchanged during the call.
     *   Same guarantees as store.
     * load_into: `load` that reads straight into memory the core places:
     *   call place(len, iov, &n, arg) once with the stored length, then fill
     *   those segments completely (a value that turns out shorter than len:
     *   FBK_ECORRUPT).  FBK_ENOTFOUND if the key is absent.  `hint` is the
     *   length the core stored under the key (0: unknown, e.g. after a
     *   register): a backend may trust it instead of finding the length out
     *   (file: saves an fstat), calling place(hint) -- but must then fail
     *   with FBK_ECORRUPT if the value is not exactly hint bytes long. */
    int (*store_iov)(void *self, const fbk_key *key, const struct iovec *iov, int n);
    int (*load_into)(void *self, const fbk_key *key, size_t hint, fbk_place_fn place, void *arg);

    /* ---- version 3 (read only when version >= 3) ---- */
    /* The worker threads this backend is best served by when the program
     * leaves fbk_store_options.threads at 0; 0 means the core's default (1).
     * file: says 2 (writes of different files overlap), lmdb: 1 (one writer
     * per environment: a second worker only waits for the first one's
     * transaction).  A table copied to wrap a built-in one keeps its value. */
    unsigned workers;

    /* ---- version 4 (read only when version >= 4) ---- */
    /* The name index of a location (maps, docs/maps.md).  All optional as a
     * group: a table without name_get/name_scan/name_apply gives
     * FBK_ENOTSUP to fbk_map_open.  Names are 1..FBK_NAME_MAX arbitrary
     * bytes.  The core serialises name_apply calls per location within a
     * store; other processes may change the index at any time (the backend
     * answers from its durable state, not from a cache of its own).
     * name_get: *key (and *size) of the binding of name; FBK_ENOTFOUND if
     *   unbound.
     * name_scan: each(name, len, key, size, arg) for every binding.
     * name_apply: apply ops[0..n) in order, all or none.  Every key bound
     *   was persisted into loc before.  The bindings are visible to name_get
     *   and name_scan of every store on return, and durable after the next
     *   `sync` of loc -- never before the objects they bind: a backend whose
     *   persist is not durable yet makes the bound objects durable first. */
    int (*name_get)(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                    uint64_t *size);
    int (*name_scan)(void *self, void *loc, fbk_binding_fn each, void *arg);
    int (*name_apply)(void *self, void *loc, const fbk_name_op *ops, size_t n);
    /* Optional: 1 if loc holds key right now (as other processes left it),
     * 0 if not, or an FBK_E* code.  The core asks it before skipping a
     * persist that its key set says is not needed (fbk_save), so that a key
     * removed by another store is written again.  NULL: the key set is
     * trusted. */
    int (*contains)(void *self, void *loc, const fbk_key *key);
    /* Optional: how many entries the last `scan` of `loc` found in the area
     * the backend keeps keys in that are neither keys nor the backend's own
     * leftovers, and left alone (a backend deletes only what it made).
     * NULL: 0. */
    size_t (*scan_foreign)(void *self, void *loc);
    /* Optional: deletes the location named `location` and everything in it
     * (fbk_location_drop).  The core calls it only while no fbk_location of
     * that name is open in the store.  FBK_ENOTFOUND if there is no such
     * location, FBK_EBUSY if the backend knows it is in use.  NULL:
     * fbk_location_drop gives FBK_ENOTSUP. */
    int (*drop_location)(void *self, const char *location);
    /* Optional: call read(ptr, len, arg) once with the bytes `loc` holds
     * under `key` (as `load` does for the spill area); FBK_ENOTFOUND if
     * absent.  With it, fbk_register copies nothing: the item's bytes are
     * read from the location when it is loaded, and copied into the spill
     * area only if the key is about to leave the location (the core calls
     * register_key then) or is persisted elsewhere.  NULL: every register
     * copies at once (register_key). */
    int (*load_persisted)(void *self, void *loc, const fbk_key *key, fbk_read_fn read,
                          void *arg);

    /* ---- version 5 (read only when version >= 5) ---- */
    /* Optional: persist_many of keys[0..n), then name_apply of ops[0..nops),
     * with the guarantees of both, committed together where the backend can
     * (lmdb: the name changes go into the transaction of the last objects,
     * so a map batch costs one commit, not two).  Every key ops bind is
     * among keys or held by loc.  A refused binding (FBK_EINVAL: its key is
     * not there) applies no name change.  NULL: the core calls persist_many
     * and name_apply. */
    int (*persist_names)(void *self, void *loc, const fbk_key *keys, size_t n,
                         const fbk_name_op *ops, size_t nops);
    /* Optional: delete `key` from `loc` unless a binding of loc's name index
     * -- as every process left it -- refers to it, decided in the same
     * atomic step as the delete (lmdb: reference counts kept with the index
     * in its transactions).  1 when deleted (or absent), 0 when kept because
     * bound, or an FBK_E* code.  A map removes the objects its changes
     * orphaned with it, so that an object another process bound to a name
     * meanwhile survives.  NULL: remove_persisted (safe only while no other
     * process binds names in loc). */
    int (*remove_unbound)(void *self, void *loc, const fbk_key *key);

    /* ---- version 6 (read only when version >= 6) ---- */
    /* Optional: write the framed values reqs[0..n) into loc straight from
     * memory (no spill copy: the core hands the bytes it has), then apply
     * ops[0..nops) as name_apply does, committed together where the backend
     * can (lmdb: one write transaction; values of more than 64 MiB in all
     * take several, the name changes going into the last).  The keys are
     * new to loc and distinct; the segments stay valid and unchanged during
     * the call.  Same guarantees as persist_names: never a half-written
     * value, durable at the next `sync`, a binding never durable before its
     * object, a refused binding (FBK_EINVAL: its key is neither among reqs
     * nor in loc) applies no name change.  n may be 0 (a name_apply) and
     * nops may be 0 (objects only: a map's FBK_MAP_NOSYNC put writes its
     * object at once and binds it at the next sync).  NULL: the core writes
     * each value to the spill area and persists it from there. */
    int (*write_names)(void *self, void *loc, const fbk_frame_req *reqs, size_t n,
                       const fbk_name_op *ops, size_t nops);
    /* Optional: remove_unbound of keys[0..n) (distinct) at once: removed[i]
     * is set to 1 when keys[i] was deleted (or absent), 0 when it was kept
     * because bound.  FBK_OK, or an FBK_E* code -- then removed[] still
     * tells which keys were deleted (lmdb: the keys of the transactions
     * that committed; the map's orphans of a batch go in transactions of
     * 1024, one commit each instead of one per key).  NULL: remove_unbound
     * per key. */
    int (*remove_unbound_many)(void *self, void *loc, const fbk_key *keys, size_t n,
                               int *removed);
};

/*
 * Error reporting for backends (and the core).  Each thread keeps the message
 * of its last failure; fbk_errmsg() reads it.
 *
 * fbk_error_set: records `code`, `os_errno` (0 if none) and a printf-style
 * message; returns `code` so a backend can write `return fbk_error_set(...)`.
 * fbk_error_from_errno: maps an errno value to an FBK_E* code (ENOSPC/EDQUOT ->
 * FBK_ENOSPC, ENOMEM -> FBK_ENOMEM, ENOENT -> FBK_ENOTFOUND, EINVAL/
 * ENAMETOOLONG/ENOTDIR -> FBK_EINVAL, anything else -> FBK_EIO), records a
 * message ending in ": <strerror>", and returns the code.
 */
int fbk_error_set(int code, int os_errno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int fbk_error_from_errno(int os_errno, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fbk_error_vset(int code, int os_errno, const char *fmt, va_list ap);

/*
 * The allocator table of fbk_set_allocator(), for backends: memory a backend
 * gets here is counted with libfbk's own (and fails with it in an
 * out-of-memory test).  Same contracts as malloc/calloc/realloc/free
 * (fbk_calloc: NULL on overflow; fbk_realloc: NULL on failure, ptr left
 * untouched; fbk_free(NULL) does nothing).  A block must be freed through the
 * table it came from: a backend that holds memory across fbk_set_allocator()
 * calls must not use these.  Thread-safe.
 */
void *fbk_malloc(size_t size);
void *fbk_calloc(size_t count, size_t size);
void *fbk_realloc(void *ptr, size_t size);
void fbk_free(void *ptr);

/*
 * The scheme registry: which backend a URI "SCHEME:ARG?key=value&..." opens.
 *
 * fbk_store_open() looks SCHEME up in one table that holds the built-in
 * backends (lmdb, file, mem, and rados when built with librados) and every
 * scheme a program added with fbk_backend_register().  It then checks the
 * URI's parameters against the core's own (threads, max_queued_writes,
 * max_queued_bytes, readonly) and the scheme's declared list -- an unknown
 * key is FBK_EINVAL naming it and listing the known ones --, parses each
 * value once according to its kind, applies the core's to a copy of the
 * caller's fbk_store_options, and calls the scheme's `create` with ARG, the
 * backend's parameters and that copy.  The table `create` returns is then
 * opened as by fbk_store_open_backend().
 */

/* How a parameter's value is parsed (and what fbk_backend_params_get puts in
 * *num). */
typedef enum fbk_param_kind {
    FBK_PARAM_STRING = 0, /* any text; *num is 0 */
    FBK_PARAM_SIZE = 1,   /* bytes: digits, then an optional k/m/g/t (powers of 1024) */
    FBK_PARAM_UINT = 2,   /* a plain unsigned decimal number */
    FBK_PARAM_BOOL = 3    /* 0, 1, false or true; *num is 0 or 1 */
} fbk_param_kind;

/* One URI parameter a scheme takes.  A scheme's list ends with an entry whose
 * name is NULL. */
typedef struct fbk_backend_param {
    const char *name;        /* the key, e.g. "map_size" */
    fbk_param_kind kind;
    const char *description; /* one line, for error messages and tools; may be NULL */
} fbk_backend_param;

/* The parameters of one URI, checked and parsed (opaque; valid only during
 * the `create` call it is handed to). */
typedef struct fbk_backend_params fbk_backend_params;

/* Looks up the parameter `name` in params.  Returns 1 when the URI gave it:
 * *text (if text is not NULL) gets its percent-decoded value and *num (if num
 * is not NULL) its parsed value (see fbk_param_kind); 0 when the URI did not
 * give it or params is NULL (outputs untouched). */
int fbk_backend_params_get(const fbk_backend_params *params, const char *name, const char **text,
                           uint64_t *num);

/* A scheme's constructor: make the backend named by `arg` (the URI's part
 * between "SCHEME:" and '?', percent-encoding left as it is; "" when there is
 * none).  params: the URI's parameters that the scheme declared (never the
 * core's).  opts: never NULL; the caller's options with the URI's core
 * parameters applied.  ctx: the scheme's `ctx`.  On success sets *ops and
 * *self as fbk_store_open_backend() takes them and returns 0; otherwise
 * returns an FBK_E* code with a message and leaves nothing behind.  The same
 * duties as the built-in constructors below. */
typedef int (*fbk_backend_create_fn)(void *ctx, const char *arg, const fbk_backend_params *params,
                                     const fbk_store_options *opts, const fbk_backend_ops **ops,
                                     void **self);

/* 1: the first version.  Later versions only append members. */
#define FBK_BACKEND_SCHEME_VERSION 1
/* fbk_backend_scheme.flags: the URI must name something after "SCHEME:"
 * (a directory); "SCHEME:" alone is then FBK_EINVAL. */
#define FBK_BACKEND_SCHEME_NEEDS_ARG 1u

typedef struct fbk_backend_scheme {
    unsigned version;                /* FBK_BACKEND_SCHEME_VERSION */
    const char *scheme;              /* 1..15 characters: a lowercase letter, then lowercase
                                        letters, digits, '+', '-', '.' (URIs match it in any case) */
    const fbk_backend_param *params; /* terminated by a NULL name; NULL = none */
    unsigned flags;                  /* FBK_BACKEND_SCHEME_NEEDS_ARG */
    fbk_backend_create_fn create;
    void *ctx; /* handed to create */
} fbk_backend_scheme;

/* Adds a scheme, so that fbk_store_open("SCHEME:ARG?...") opens it exactly as
 * it opens a built-in one.  *scheme and everything it points at must stay
 * valid and unchanged until the process ends (static storage is the usual
 * home); a scheme cannot be removed.  Thread-safe, also against concurrent
 * fbk_store_open calls.  Returns 0, FBK_EBUSY if the scheme is taken already
 * (a built-in or an earlier registration), FBK_EINVAL for a NULL or
 * malformed table (version 0, bad scheme name, no create, a parameter
 * without a name, an unknown kind, a parameter named like one of the
 * core's), FBK_ENOMEM. */
int fbk_backend_register(const fbk_backend_scheme *scheme);
/* The table registered for `scheme` (matched in any case), or NULL.  The
 * pointer stays valid until the process ends. */
const fbk_backend_scheme *fbk_backend_lookup(const char *scheme);

/*
 * The built-in backends' constructors, for users who wrap a built-in table
 * (fault injection, counting, tracing) and pass the wrapper to
 * fbk_store_open_backend().  `arg` is the part of the URI after the scheme.
 * On success *ops points at a static table and *self at fresh state owned by
 * the caller until handed to a store.
 */
int fbk_backend_mem_create(const char *arg, const fbk_store_options *opts,
                           const fbk_backend_ops **ops, void **self);
int fbk_backend_lmdb_create(const char *dir, const fbk_store_options *opts,
                            const fbk_backend_ops **ops, void **self);
int fbk_backend_file_create(const char *dir, const fbk_store_options *opts,
                            const fbk_backend_ops **ops, void **self);
/* rados: (only in a libfbk built with librados, FBK_WITH_RADOS).  `arg` is
 * "DIR?pool=POOL[&conf=PATH][&client=NAME][&spill=lmdb|file][&timeout=S]
 * [&map_size=SIZE]", checked as fbk_store_open checks the URI (the registry's
 * `rados` entry is what fbk_store_open itself calls). */
int fbk_backend_rados_create(const char *arg, const fbk_store_options *opts,
                             const fbk_backend_ops **ops, void **self);

#ifdef __cplusplus
}
#endif
#endif /* FBK_BACKEND_H */
