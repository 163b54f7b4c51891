/*
 * counting_backend.h -- an in-memory fbk_backend_ops table for the core's
 * tests (not part of the library).
 *
 * It keeps the spill area and every named location as key -> bytes maps,
 * counts every call, records which keys were stored and removed, and can be
 * told to misbehave: fail an operation with a given FBK_E* code, sleep in
 * store, hold an operation at a gate until the test opens it, or corrupt the
 * stored bytes of a key.  It also counts contract violations by the core (a
 * second store of a key still present, a remove of an absent key, ...).
 *
 * The state is refcounted: the store holds one reference (dropped by the
 * ops->close callback, which only marks it closed) and the test holds one
 * (dropped by counting_free()), so the test may inspect it after
 * fbk_store_close().
 *
 * All functions are thread-safe.
 */
#ifndef COUNTING_BACKEND_H
#define COUNTING_BACKEND_H

#include <fbk.h>
#include <stddef.h>
#include <stdint.h>

typedef struct counting counting;

typedef enum counting_op {
    CB_STORE,
    CB_LOAD,
    CB_REMOVE,
    CB_OPEN_LOCATION,
    CB_CLOSE_LOCATION,
    CB_SCAN,
    CB_PERSIST,
    CB_REGISTER_KEY,
    CB_REMOVE_PERSISTED,
    CB_SYNC,
    CB_PERSIST_MANY,
    CB_REGISTER_MANY,
    CB_STORE_MANY, /* each value of a store_many also counts as a CB_STORE call */
    CB_NOPS
} counting_op;

/* Flags for counting_open_flags(). */
#define COUNTING_BATCH 1u       /* fill persist_many/register_many in the table */
#define COUNTING_STORE_MANY 2u  /* fill store_many (version 2) in the table */
#define COUNTING_STORE_MANY_V1 4u /* ... but say version 1: the core must not call it */
#define COUNTING_IOV 8u /* fill store_iov/load_into (version 2); they count as CB_STORE/CB_LOAD */

/* A fresh backend state (refcount 1, owned by the caller).  NULL on ENOMEM. */
counting *counting_new(void);
/* The table: persist_many/register_many NULL unless flags has COUNTING_BATCH,
 * store_many NULL unless it has COUNTING_STORE_MANY (or _V1), store_iov and
 * load_into NULL unless it has COUNTING_IOV (with _V1 the table says
 * version 1, so the core must ignore all three). */
const fbk_backend_ops *counting_ops(unsigned flags);
/* Copies the sizes of the first store_many calls (at most 256 are kept), in
 * call order, into out[0..cap); returns how many calls there were in all. */
size_t counting_store_many_sizes(counting *cb, size_t *out, size_t cap);
/* Opens a store over a fresh counting backend; *cb gets the test's
 * reference (free it with counting_free after the store is closed).  Returns
 * fbk_store_open_backend's result; on failure *cb is still set (and closed). */
int counting_open(fbk_store **out, const fbk_store_options *opts, counting **cb);
int counting_open_flags(fbk_store **out, const fbk_store_options *opts, unsigned flags,
                        counting **cb);
/* Takes one more reference (for a test that hands cb to
 * fbk_store_open_backend itself); returns cb. */
counting *counting_ref(counting *cb);
/* Drops the test's reference (the state is freed once the store closed it
 * too).  NULL is a no-op. */
void counting_free(counting *cb);

/* ---- counters ---- */
/* Calls of op so far (failed ones included). */
unsigned long counting_calls(counting *cb, counting_op op);
/* The most calls of op that were in progress at once (since open/reset). */
unsigned counting_max_active(counting *cb, counting_op op);
/* Sum of all op counters (every backend call except close). */
unsigned long counting_total_calls(counting *cb);
/* Times ops->close was called (0 or 1 if the core is right). */
unsigned long counting_close_calls(counting *cb);
/* Contract violations seen: a store of a key present in the spill area, a
 * remove / load / persist of a key absent from it, a register_key of a key
 * present in it, and two operations at once on one key (in the spill area or
 * in one location) when either of them writes. */
unsigned long counting_violations(counting *cb);
/* Zeroes every call counter (max_active restarts from the calls in
 * progress) and the store/remove records. */
void counting_reset(counting *cb);

/* ---- records ---- */
/* Successful stores / spill removes so far, in order. */
size_t counting_stored_count(counting *cb);
int counting_stored_key(counting *cb, size_t i, fbk_key *out); /* 0 or -1 */
size_t counting_removed_count(counting *cb);
int counting_removed_key(counting *cb, size_t i, fbk_key *out); /* 0 or -1 */
/* How many successful stores / removes were of key. */
size_t counting_times_stored(counting *cb, const fbk_key *key);
size_t counting_times_removed(counting *cb, const fbk_key *key);

/* ---- spill area ---- */
size_t counting_spill_size(counting *cb);
int counting_spill_has(counting *cb, const fbk_key *key);
/* Copies the stored bytes of key into a malloc'ed buffer (*len its size).
 * Returns NULL if absent. */
unsigned char *counting_spill_get(counting *cb, const fbk_key *key, size_t *len);
/* Replaces the stored bytes of key (0, or -1 if absent). */
int counting_spill_set(counting *cb, const fbk_key *key, const void *data, size_t len);
/* XORs the byte at offset with 0xFF (0, or -1 if absent / out of range). */
int counting_corrupt(counting *cb, const fbk_key *key, size_t offset);
/* Cuts the stored bytes of key to len (0, or -1 if absent / longer). */
int counting_truncate(counting *cb, const fbk_key *key, size_t len);

/* ---- locations (they outlive stores: a location is state of cb) ---- */
size_t counting_loc_count(counting *cb, const char *name);
int counting_loc_has(counting *cb, const char *name, const fbk_key *key);
/* Puts raw bytes under key in the named location (created if missing). */
int counting_loc_put(counting *cb, const char *name, const fbk_key *key, const void *data,
                     size_t len);
/* Adds n junk entries that the next scan of the location deletes. */
void counting_loc_add_junk(counting *cb, const char *name, unsigned n);

/* ---- misbehaviour ---- */
/* The next n calls of op fail with code (n < 0: forever; code 0 or n == 0
 * clears).  A failing call counts but changes nothing. */
void counting_fail(counting *cb, counting_op op, int code, int n);
/* Sleep this long inside every store call (0 = none). */
void counting_store_sleep_ms(counting *cb, unsigned ms);
/* Gates: while the gate of op is closed, calls of op block on entry (after
 * being counted) until it is opened. */
void counting_gate_close(counting *cb, counting_op op);
void counting_gate_open(counting *cb, counting_op op);
/* Blocks until at least k calls of op are waiting at its gate. */
void counting_gate_wait(counting *cb, counting_op op, unsigned k);
/* Calls of op currently blocked at its gate. */
unsigned counting_gate_blocked(counting *cb, counting_op op);
/* Blocks until ops->close has been called. */
void counting_wait_closed(counting *cb);

/* ---- a codec for tests: objects are fbk_blob *, encoded as raw bytes ---- */
typedef struct tc_ctx {
    _Atomic int fail_encode; /* when set, encode fails: 1 -> returns -1, else the value */
    _Atomic int fail_decode; /* when set, decode fails: 1 -> returns -1, else the value */
    _Atomic int fail_clone;  /* when set, clone returns -1 */
    _Atomic unsigned long encodes, decodes, clones, destroys; /* call counts */
} tc_ctx;
/* The raw-bytes codec with (clone != 0) or without a clone callback; ctx may
 * be NULL (no faults, no counts). */
fbk_codec tc_codec(tc_ctx *ctx, int clone);

/* ---- fixture: a counting store and one pool of the test codec ---- */
typedef struct fx {
    fbk_store *s;
    counting *cb;
    fbk_pool *p;
    tc_ctx ctx;
    fbk_store_options opts;
    unsigned flags; /* counting_open_flags() flags, e.g. COUNTING_STORE_MANY */
} fx;
/* Opens f->s over a counting backend (f->opts as set by the caller, e.g.
 * threads / on_error; zero it for defaults) and creates f->p with mem_items
 * and the test codec (with clone).  Aborts the test on failure. */
void fx_open(fx *f, size_t mem_items);
/* Drains, checks that the core broke no backend rule (violations == 0),
 * releases the pool, closes the store and drops the test's reference to the
 * backend.  Handles must have been released by the test. */
void fx_close(fx *f);

/* Inserts tu_blob(len, seed) into p; aborts the test on failure. */
fbk_handle *tc_insert(fbk_pool *p, size_t len, uint64_t seed);
/* Loads h and compares with tu_blob(len, seed): 0 if equal, 1 if the bytes
 * differ, else fbk_load's error. */
int tc_check(fbk_handle *h, size_t len, uint64_t seed);
/* The current key of h. */
fbk_key tc_key(const fbk_handle *h);

#endif
