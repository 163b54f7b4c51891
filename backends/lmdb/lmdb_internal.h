/*
 * lmdb_internal.h -- declarations shared by the files of the lmdb: backend.
 *
 * Files:
 *   lmdb_backend.c   create/close, the ops table, the spill area (store/load/remove)
 *   lmdb_env.c       one LMDB environment: open, error mapping, read transactions,
 *                    map growth
 *   lmdb_txn.c       group commit: writers of many threads share write transactions
 *   lmdb_location.c  durable locations (named databases of the durable environment)
 *   lmdb_names.c     the name index of each location (maps)
 *   lmdb_share.c     sharing DIR between processes: the directory lock, each
 *                    store's own spill area and the cleanup of dead ones
 *
 * Lock order (see docs/lmdb-backend.md).  Each environment has
 *   m        its group-commit mutex (state of the shared write transaction), and
 *   maplock  a rwlock held shared by every read transaction and exclusively by
 *            map growth (mdb_env_set_mapsize needs no transaction in flight).
 * The spill environment comes before the durable one: a thread holding
 * anything of the spill environment may wait for the durable one, never the
 * reverse.  A thread growing a map holds nothing else.  No thread takes the
 * same maplock twice.
 *
 * Reopen (both environments, after LMDB reported MDB_PANIC, after a
 * failed map resize left no map (broken), or after a failed reopen): like map
 * growth.  The thread enters with m held and state IDLE (a read path first
 * releases its maplock, then takes m and waits for IDLE), sets state
 * REOPENING, releases m, takes maplock exclusively (every read transaction
 * of this process has ended), takes rpool_m to drop the pooled read
 * transactions, closes and reopens the environment, releases maplock and
 * takes m again.  It holds nothing of the durable environment and no spill
 * read transaction.  A persist holding a spill read transaction while it
 * waits for a durable batch only delays a reopen: the durable environment
 * never waits for the spill one.  A failed resize does not reopen by itself:
 * the grower sets broken and returns to IDLE (holding, like every grower,
 * nothing else), and the next operation meets broken -- a writer under m in
 * state IDLE, a reader under its shared maplock, which it releases first --
 * and reopens as above.  A durable reopen also opens every named database
 * again, in handle order, so each location keeps its MDB_dbi.
 *
 * A read-only store opens a location in fbk__lmdb_read_open: under loc_m,
 * then m in state IDLE (so no growth or reopen runs meanwhile), it begins a
 * read transaction without maplock, opens the handles and commits; a
 * MDB_MAP_RESIZED there grows (adopts) with m held as a writer would.
 */
#ifndef FBK_LMDB_INTERNAL_H
#define FBK_LMDB_INTERNAL_H

#include "fbk_backend.h"

#include <lmdb.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

#define FBK__LMDB_RTXN_POOL 32 /* reset read transactions kept for reuse */

/* A writer waiting for the commit of the batch it joined (on its stack). */
typedef struct fbk__lmdb_waiter {
    struct fbk__lmdb_waiter *next;
    int done;     /* set under m when the batch has finished */
    int batch_rc; /* LMDB result of the commit (or of the op that doomed it) */
} fbk__lmdb_waiter;

/* One environment with its group-commit state. */
typedef struct fbk__lmdb_env {
    MDB_env *env;
    MDB_dbi main;     /* the unnamed database (spill area) */
    const char *what; /* "spill" or "durable", for messages */
    char path[4096];
    size_t psize; /* LMDB page size */

    pthread_rwlock_t maplock;

    /* group commit (lmdb_txn.c); everything below is guarded by m */
    pthread_mutex_t m;
    pthread_cond_t cv;
    int state;          /* FBK__LMDB_IDLE ... */
    MDB_txn *txn;       /* the shared write transaction while OPEN/CLOSED */
    unsigned members;   /* writers inside the open batch (leader included) */
    size_t batch_pages; /* upper bound of pages the open batch allocates */
    size_t batch_bytes; /* payload bytes written by the open batch */
    unsigned batch_ops;
    int doomed;                /* LMDB code of an op that left the txn unusable */
    fbk__lmdb_waiter *waiters; /* writers of the open batch awaiting its commit */
    size_t used_pages;         /* last page in use after the last commit */
    size_t map_pages;          /* map size in pages */
    int force_grow;            /* MDB_MAP_FULL happened despite the estimate */

    /* reset read transactions for reuse, guarded by rpool_m */
    pthread_mutex_t rpool_m;
    MDB_txn *rpool[FBK__LMDB_RTXN_POOL];
    unsigned rpool_n;

    /* Durable env: which named databases (locations) a failed commit or sync
     * left without a durability promise.  Indexed by MDB_dbi (maxdbs + 2
     * entries, NULL for the spill env), guarded by m.  dirty_gen[dbi]: the
     * value of write_gen when a write of that database last started or
     * committed; synced_gen: write_gen when the last successful sync began.
     * A database is dirty when dirty_gen > synced_gen; a failed commit or
     * sync sets fail_rc of every dirty one (final for that location for the
     * rest of the store, see docs/lmdb-backend.md). */
    unsigned long long *dirty_gen;
    int *fail_rc;
    unsigned long long write_gen, synced_gen;
    /* names[dbi]: the name each named-database handle was opened with (so a
     * reopen in place can open them again under the same handles); written
     * under m inside a write transaction, read by a reopen (state
     * REOPENING).  NULL for the spill env. */
    char **names;
    int live;                     /* locks initialised */
    unsigned queued;              /* writers waiting for the next batch (under m) */
    unsigned long long batch_gen; /* batches opened so far (under m) */

    /* a failed resize left no usable map (the errno of mdb_env_set_mapsize):
     * set by the grower (state GROWING, maplock held exclusively), cleared
     * by a reopen (state REOPENING, likewise); read under maplock, or under
     * m in state IDLE.  The environment is then reopened by the next
     * operation. */
    int broken;

    /* reopen after MDB_PANIC (lmdb_env.c fbk__lmdb_reopen): the flags and
     * maximum of named databases of the first open; reopenable is set once
     * after it (both environments); reopens counts successful reopens (written by
     * the reopen, in state REOPENING with maplock held exclusively; read
     * under maplock, or under m in state IDLE).  env itself changes only
     * there too, and is NULL after a failed reopen. */
    unsigned flags;
    unsigned maxdbs;
    int reopenable;
    unsigned long long reopens;
} fbk__lmdb_env;

enum {
    FBK__LMDB_IDLE,       /* no write transaction */
    FBK__LMDB_BEGINNING,  /* a leader is beginning one (m released) */
    FBK__LMDB_OPEN,       /* a shared write transaction accepts writers */
    FBK__LMDB_CLOSED,     /* open, but full: commits when its members leave */
    FBK__LMDB_COMMITTING, /* its leader is committing (m released) */
    FBK__LMDB_GROWING,    /* a thread is resizing the map */
    FBK__LMDB_REOPENING   /* a thread is reopening the environment */
};

/* Named databases a store may have open at once (LMDB maxdbs): each
 * location takes three (its objects, its name index and the index's
 * reference counts), so 1024 locations. */
#define FBK__LMDB_LOC_DBS 3
#define FBK__LMDB_MAXDBS (1024 * FBK__LMDB_LOC_DBS)
/* Values a persist or register copies per write transaction: LMDB keeps a
 * write transaction's dirty pages in memory until it commits, so the bytes
 * of one transaction are bounded (one larger value still goes alone). */
#define FBK__LMDB_TXN_BYTES ((size_t)64 << 20)
/* Linux moves at most this many bytes per write()/pwrite() (MAX_RW_COUNT). */
#define FBK__LMDB_RW_MAX ((size_t)0x7ffff000)

/* The backend state (`self`). */
typedef struct fbk__lmdb {
    int lock_fd;  /* DIR/LOCK, flock()ed shared (LOCK_SH) while open */
    int readonly; /* FBK_STORE_READONLY: nothing in DIR is made or changed */
    /* this store's spill area: DIR/spill-<id> owned through the flock of
     * DIR/spill-<id>.lock (spill_lock_fd), or for a read-only store a
     * private mkdtemp directory (no lock file); "" when none */
    char spill_dir[4200];
    char spill_lock[4200];
    int spill_lock_fd;
    /* the durable environment, registered as open in this process */
    int env_claimed;
    dev_t env_dev;
    ino_t env_ino;
    fbk__lmdb_env spill;
    fbk__lmdb_env durable;
    /* open locations per database handle, so a drop never pulls a handle
     * from under an open location (and a slot LMDB reuses for another name
     * is never written through a stale handle).  loc_m is taken before
     * anything of the durable environment and held across a location's
     * open and a drop. */
    pthread_mutex_t loc_m;
    unsigned loc_open[FBK__LMDB_MAXDBS + 2];
} fbk__lmdb;

/* A location: one named database of the durable environment. */
typedef struct fbk__lmdb_loc {
    MDB_dbi dbi;
    MDB_dbi names; /* the name index (lmdb_names.c), when has_names */
    MDB_dbi refs;  /* bindings per object key (lmdb_names.c); 0 when read-only */
    int has_names;
    char name[];
} fbk__lmdb_loc;

/* Room for "key <32 hex digits>"-style descriptions of what a write is for. */
#define FBK__LMDB_WHAT 320

/* An operation run inside a shared write transaction (or, through
 * fbk__lmdb_read_open, a read transaction), on the caller's thread with
 * e->m held.  Returns 0, a negative FBK_E* code (the op left the txn
 * healthy and undid its own writes), or a positive/MDB_* LMDB code (the txn
 * is unusable: the whole batch fails or, for MDB_MAP_FULL, is retried). */
typedef int (*fbk__lmdb_op_fn)(MDB_txn *txn, void *arg);

/* ---- lmdb_env.c ---- */
/* 1 for a code an op returns when it left the write transaction unusable (an
 * errno or MDB_* value), 0 for FBK_* codes. */
#define FBK__LMDB_FATAL(rc) ((rc) > 0 || (rc) < -1000)
/* The FBK_E* code for an LMDB or errno code. */
int fbk__lmdb_code(int rc);
/* Maps rc like fbk__lmdb_code and records "lmdb: <msg>: <mdb_strerror>". */
int fbk__lmdb_error(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* mkdir -p, each directory it makes fsynced into its parent (fbk__dir_make,
 * backends/common/fbk_dirs.h); 0 or FBK_E* with a message. */
int fbk__lmdb_mkdirs(const char *path);
/* Creates and opens e at path (created if missing).  With MDB_RDONLY in
 * flags nothing is made or written (no directory, no reservation, no
 * MDB_CREATE): an environment that does not exist is FBK_ENOTFOUND.  On
 * failure e is closed. */
int fbk__lmdb_env_open(fbk__lmdb_env *e, const char *what, const char *path, unsigned flags,
                       size_t map_size, unsigned maxdbs);
void fbk__lmdb_env_close(fbk__lmdb_env *e);
/* A read transaction, with e->maplock held shared until fbk__lmdb_rtxn_end. */
int fbk__lmdb_rtxn_begin(fbk__lmdb_env *e, MDB_txn **out);
void fbk__lmdb_rtxn_end(fbk__lmdb_env *e, MDB_txn *txn);
/* Pages an op storing a value of len bytes may allocate (value + tree). */
size_t fbk__lmdb_pages_for(const fbk__lmdb_env *e, size_t len);
/* 1 if the open batch (if any) plus need more pages fit in the map (m held). */
int fbk__lmdb_fits(const fbk__lmdb_env *e, size_t need);
/* Called with e->m held and state IDLE: resizes the map so that `need` more
 * pages fit (or adopts another process's size when need is 0 and
 * MDB_MAP_RESIZED was seen).  Releases m while waiting for readers. */
int fbk__lmdb_grow(fbk__lmdb_env *e, size_t need);
/* Re-reads the used pages and map size (m held, no write txn). */
void fbk__lmdb_env_refresh(fbk__lmdb_env *e);
/* Records (m held, inside a write transaction) that dbi is the handle of the
 * named database `name`, for a reopen in place.  0 or ENOMEM (an LMDB-style
 * code: the op fails its batch). */
int fbk__lmdb_note_dbi(fbk__lmdb_env *e, MDB_dbi dbi, const char *name);
/* Marks named database dbi of the durable env as written since the last
 * sync: call before a write starts and again after it returned. */
void fbk__lmdb_touch(fbk__lmdb_env *e, MDB_dbi dbi);
/* A commit of e failed with rc (m held): every dirty named database loses
 * its durability promise (fail_rc). */
void fbk__lmdb_commit_failed(fbk__lmdb_env *e, int rc);
/* sync of location `name` (handle dbi): its earlier failure if it has one,
 * else mdb_env_sync.  0 or FBK_E* with a message. */
int fbk__lmdb_env_sync(fbk__lmdb_env *e, MDB_dbi dbi, const char *name);
/* Called with e->m held and state IDLE on an environment that LMDB marked
 * fatal (MDB_PANIC), that a failed map resize left without a map (e->broken)
 * or whose last reopen failed (e->env NULL): closes it and opens the same
 * path again with the same flags and the last map size that worked, so it
 * holds the last committed transaction.  seen: e->reopens when the caller met
 * the panic; if another thread has reopened since (and the environment is
 * not broken), returns 0 at once.  Releases m while waiting for readers
 * (state REOPENING keeps writers out).  0, or FBK_E* with a message (e->env
 * is then NULL and the next operation tries again). */
int fbk__lmdb_reopen(fbk__lmdb_env *e, unsigned long long seen);

/* Runs op in a read transaction of e that is then committed, so that the
 * database handles op opened stay usable by every later transaction (the
 * way a read-only environment opens named databases).  LMDB lets one
 * transaction at a time open handles: the caller serialises (loc_m).  op
 * runs with e->m held in state IDLE, so it may call fbk__lmdb_note_dbi.
 * Returns 0, op's FBK_E* code, or FBK_E* for an LMDB failure (message names
 * `what`). */
int fbk__lmdb_read_open(fbk__lmdb_env *e, fbk__lmdb_op_fn op, void *arg, const char *what);

/* ---- lmdb_txn.c ---- */
/* Runs op in the shared write transaction of e and returns once that
 * transaction committed.  need_pages: upper bound of pages op allocates;
 * bytes: payload size for the batch cap; what: the object the write is for
 * ("store of key <hex>", "location <name>"), named in every error message.
 * Returns 0 or FBK_E* (message set). */
int fbk__lmdb_write(fbk__lmdb_env *e, fbk__lmdb_op_fn op, void *arg, size_t need_pages,
                    size_t bytes, const char *what);

/* ---- lmdb_backend.c ---- */
/* The largest value e can hold: LMDB writes a value's overflow pages (a
 * 16-byte page header, then the value, rounded up to whole pages) with one
 * pwrite at commit, and a write over FBK__LMDB_RW_MAX bytes comes back short
 * (LMDB then fails the commit with EIO).  2 GiB - 4 KiB - 16 with 4 KiB
 * pages. */
size_t fbk__lmdb_value_max(const fbk__lmdb_env *e);
/* FBK_EINVAL naming the value (what) and the limit, if len bytes exceed it. */
int fbk__lmdb_check_len(const fbk__lmdb_env *e, size_t len, const char *what);
/* Deletes key from dbi of e in a shared write transaction; FBK_ENOTFOUND
 * (message naming `what`) if absent. */
int fbk__lmdb_delete(fbk__lmdb_env *e, MDB_dbi dbi, const fbk_key *key, const char *what);
/* FBK_ENOTFOUND with "lmdb: <what>: no key <hex>". */
int fbk__lmdb_not_found(const char *what, const fbk_key *key);

/* ---- lmdb_share.c ---- */
/* Opens DIR/LOCK (a read-only store: only an existing one, O_RDONLY) and
 * takes flock(LOCK_SH).  FBK_EBUSY while someone holds it exclusively. */
int fbk__lmdb_dir_lock(fbk__lmdb *b, const char *dir);
/* Registers the durable environment at `durable` as open in this process;
 * FBK_EBUSY if a store of this process has it open already (LMDB allows one
 * open per process), FBK_ENOTFOUND for a missing one of a read-only store. */
int fbk__lmdb_env_claim(fbk__lmdb *b, const char *durable);
void fbk__lmdb_env_unclaim(fbk__lmdb *b);
/* Writer stores, at open: removes the spill areas of dead processes
 * (spill-<id> whose lock file nobody holds, spill-<id> with no lock file,
 * the old single DIR/spill).  Best effort. */
void fbk__lmdb_spill_clean(const char *dir);
/* Makes this store's spill directory (b->spill_dir): DIR/spill-<id> with its
 * lock file held, or a private temporary directory for a read-only store. */
int fbk__lmdb_spill_claim(fbk__lmdb *b, const char *dir);
/* Removes the spill directory, then its lock file (best effort). */
void fbk__lmdb_spill_release(fbk__lmdb *b);

/* ---- lmdb_location.c ---- */
#define FBK__LMDB_NAME_MAX 255 /* longest location name, in bytes */
int fbk__lmdb_open_location(void *self, const char *location, void **loc);
void fbk__lmdb_close_location(void *self, void *loc);
int fbk__lmdb_scan(void *self, void *loc, fbk_key_fn each, void *arg);
int fbk__lmdb_persist(void *self, void *loc, const fbk_key *key);
int fbk__lmdb_register_key(void *self, void *loc, const fbk_key *key);
int fbk__lmdb_remove_persisted(void *self, void *loc, const fbk_key *key);
int fbk__lmdb_sync(void *self, void *loc);
int fbk__lmdb_persist_many(void *self, void *loc, const fbk_key *keys, size_t n);
int fbk__lmdb_register_many(void *self, void *loc, const fbk_key *keys, size_t n);
/* Deletes the location `name` and everything in it (mdb_drop with del=1 in
 * a durable write transaction); its slot among the FBK__LMDB_MAXDBS is free
 * again.  FBK_ENOTFOUND if there is no such location, FBK_EBUSY while an
 * fbk_location of it is open, FBK_EINVAL for a bad name.  Blocking; needs
 * no sync to be durable-as-persists-are (it commits like a persist). */
int fbk__lmdb_drop_location(void *self, const char *name);

/* ---- lmdb_names.c ---- */
/* The named database of a location's name index: "\x1fnames:" + location. */
int fbk__lmdb_names_dbname(const char *location, char *out, size_t cap);
/* The named database of the bindings per object key of that index:
 * "\x1frefs:" + location. */
int fbk__lmdb_refs_dbname(const char *location, char *out, size_t cap);
/* In the write transaction that opened a location: when the reference
 * counts are empty but the index is not (a location whose names were
 * written by a version before the counts), counts every binding. */
int fbk__lmdb_refs_build(MDB_txn *txn, MDB_dbi names, MDB_dbi refs);
/* remove_unbound (table version 5): deletes key from loc unless a binding
 * refers to it, decided in one write transaction.  1 deleted (or absent),
 * 0 kept, or FBK_E*. */
int fbk__lmdb_remove_unbound(void *self, void *loc, const fbk_key *key);
int fbk__lmdb_remove_unbound_many(void *self, void *loc, const fbk_key *keys, size_t n,
                                  int *removed);
int fbk__lmdb_name_get(void *self, void *loc, const void *name, size_t len, fbk_key *key,
                       uint64_t *size);
int fbk__lmdb_name_scan(void *self, void *loc, fbk_binding_fn each, void *arg);
int fbk__lmdb_name_apply(void *self, void *loc, const fbk_name_op *ops, size_t n);
/* Objects and name changes in one transaction (version 5 persist_names). */
int fbk__lmdb_persist_names(void *self, void *loc, const fbk_key *keys, size_t n,
                            const fbk_name_op *ops, size_t nops);
/* Framed values from memory and name changes in one transaction (version 6
 * write_names). */
int fbk__lmdb_write_names(void *self, void *loc, const fbk_frame_req *reqs, size_t n,
                          const fbk_name_op *ops, size_t nops);
/* Inside a durable write transaction: applies ops[0..n) to l's name index,
 * all or none (unless missing is NULL -- checked already -- every bound key
 * is checked first: FBK_EINVAL and *missing = index + 1 of the first key l
 * lacks).  Returns 0, FBK_EINVAL or an LMDB code. */
int fbk__lmdb_names_put(MDB_txn *txn, const fbk__lmdb_loc *l, const fbk_name_op *ops, size_t n,
                        int *missing);
/* The check alone, writing nothing: every key ops bind is in l or among
 * coming[0..ncoming) (about to be written in this transaction). */
int fbk__lmdb_names_check(MDB_txn *txn, const fbk__lmdb_loc *l, const fbk_name_op *ops, size_t n,
                          const fbk_key *coming, size_t ncoming, int *missing);
/* What ops[0..n) write, for fbk__lmdb_write's estimate. */
size_t fbk__lmdb_names_bytes(const fbk_name_op *ops, size_t n);
size_t fbk__lmdb_names_pages(const fbk__lmdb_env *e, const fbk_name_op *ops, size_t n);
/* The FBK_EINVAL of a binding whose key l lacks (missing: index + 1). */
int fbk__lmdb_names_refused(const fbk__lmdb_loc *l, const fbk_name_op *ops, int missing);
int fbk__lmdb_contains(void *self, void *loc, const fbk_key *key);
/* A location's value read in place (lazy register, backend table v4). */
int fbk__lmdb_load_persisted(void *self, void *loc, const fbk_key *key, fbk_read_fn read,
                             void *arg);

#endif
