/*
 * plscen.h -- the save cycle and the checker of the power-loss tests.
 *
 * A "world" is a scratch tree ROOT/live holding a file: store (live/store)
 * with one location (live/store/loc) and the user's manifest beside the
 * keys (live/store/loc/MANIFEST, written by the commit callback through the
 * backend's I/O table: temporary + fsync + rename + fsync of the directory).
 * Objects are fbk_blobs of deterministic bytes; the world remembers the
 * length and seed of every key it ever made, and the text of every manifest
 * generation (generation 0: no manifest).
 *
 * The checker opens a store on a tree (a cut, or the live one) and checks:
 * the manifest is one of the allowed generations, byte for byte; every key
 * it names registers and loads byte-exact; every other key the location
 * lists loads byte-exact or fails with FBK_ECORRUPT (never wrong bytes).
 */
#ifndef PLSCEN_H
#define PLSCEN_H

#include <fbk.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define PL_MAX_OBJS 256
#define PL_MAX_GENS 64

/* plio phases used by the scenario */
enum { PL_PHASE_OTHER = 0, PL_PHASE_SAVE = 1, PL_PHASE_COMMIT = 2, PL_PHASE_AFTER = 3 };

typedef struct pl_obj {
    fbk_key key;
    size_t len;
    uint64_t seed;
} pl_obj;

typedef struct pl_world {
    char root[PATH_MAX];
    char live[PATH_MAX];
    char cuts[PATH_MAX];
    char store_dir[PATH_MAX];
    char loc_dir[PATH_MAX];
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    size_t mem_items;
    pl_obj objs[PL_MAX_OBJS];
    size_t nobjs;
    char *gen_text[PL_MAX_GENS];
    size_t gen_len[PL_MAX_GENS];
    int ngen;      /* generations made so far (the next is ngen + 1) */
    int committed; /* the last generation whose commit returned 0 */
    int commit_calls;
    int commit_rc;
    int temp_top; /* root is under FBK_POWERLOSS_DIR or /dev/shm */
} pl_world;

typedef struct pl_stats {
    long trees;
    long objects;  /* manifest objects checked */
    long lost;     /* named by the manifest, absent */
    long corrupt;  /* named by the manifest, ECORRUPT or other failure */
    long wrong;    /* any key: loaded bytes that are not the object's */
    long extra_ok;       /* keys outside the manifest that loaded intact */
    long extra_detected; /* keys outside the manifest refused as corrupt */
    long bad_manifest;   /* missing, torn, or a generation out of range */
    long failures;       /* trees with at least one problem */
    char first[2048];    /* the first problems, for the assertion message */
} pl_stats;

/* A fresh world ROOT = $FBK_POWERLOSS_DIR (else /dev/shm when writable)
 * /fbk-powerloss-<pid>/<name>, or tu_fresh_dir(name) otherwise; creates
 * ROOT/live and ROOT/cuts. */
void pl_world_init(pl_world *w, const char *name, size_t mem_items);
/* Removes the world's tree and frees the manifest texts. */
void pl_world_remove(pl_world *w);
/* Opens the store (file:live/store), a blob pool and the location. */
int pl_world_open(pl_world *w);
/* Closes location, pool and store (handles must be released first). */
void pl_world_close(pl_world *w);
/* Releases every handle in h[0..n) and sets them NULL. */
void pl_release_all(fbk_handle **h, size_t n);

/* A new object of len deterministic bytes; its handle in *out. */
void pl_new(pl_world *w, size_t len, uint64_t seed, fbk_handle **out);
/* Rewrites the object of *h with bytes from seed (it gets a new key). */
void pl_mutate(pl_world *w, fbk_handle *h, uint64_t seed);
/* 1 if h loads and holds the bytes the world recorded for its key. */
int pl_handle_ok(pl_world *w, fbk_handle *h);

/* fbk_save of h[0..n) with the commit callback writing the next manifest
 * generation; the plio user numbers follow (lo = committed, hi = attempted).
 * Sets the plio phases. */
int pl_save(pl_world *w, fbk_handle *const *h, size_t n, unsigned width);

/* Checks the store tree at store_dir (a cut's ".../store" or the live one);
 * the manifest may be any generation in [lo, hi].  Adds to *st; returns 0
 * if the tree is fine, -1 (and a line in st->first) if not.  `label`
 * names the tree in messages. */
int pl_check_tree(pl_world *w, const char *store_dir, int lo, int hi, const char *label,
                  pl_stats *st);

/* 1 under AddressSanitizer (the suites then do less work). */
int pl_sanitized(void);

#endif
