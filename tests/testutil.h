/* Shared helpers for the Criterion suites (not part of the library). */
#ifndef FBK_TESTUTIL_H
#define FBK_TESTUTIL_H

#include <fbk.h>
#include <fbk_backend.h>
#include <stddef.h>
#include <stdint.h>

/* A fresh, empty directory for this test: $FBK_TEST_DIR/<name> (or
 * /tmp/fbk-test-<pid>/<name>), removed first if it exists.  Returns a static
 * buffer valid until the next call. */
const char *tu_fresh_dir(const char *name);
/* rm -rf path (0 on success). */
int tu_rmtree(const char *path);
/* Deterministic bytes: fills buf[0..len) from seed. */
void tu_fill(void *buf, size_t len, uint64_t seed);
/* A new fbk_blob of len deterministic bytes from seed (aborts the test on ENOMEM). */
fbk_blob *tu_blob(size_t len, uint64_t seed);
/* 1 if blob holds exactly the bytes tu_blob(len, seed) would. */
int tu_blob_check(const fbk_blob *b, size_t len, uint64_t seed);

/* For tests that call a backend table directly: the arg of tu_fill_bytes
 * (an fbk_fill_fn writing tu_fill(len, seed), then failing with FBK_ECODEC
 * when `fail`) and of tu_check_bytes (an fbk_read_fn: FBK_ECORRUPT unless
 * the bytes are exactly those). */
typedef struct tu_bytes {
    size_t len;
    uint64_t seed;
    int fail;
} tu_bytes;
int tu_fill_bytes(void *dst, size_t len, void *arg);
int tu_check_bytes(const void *src, size_t len, void *arg);

/* 1 if fd is open on a file whose path contains `part` (read through
 * /proc/self/fd), for tests that interpose a system call and fail it only on
 * one file. */
int tu_fd_path_has(int fd, const char *part);

/* A file: backend table used directly (no store): opened on dir with the
 * table's zero-copy members asserted present, and closed. */
typedef struct tu_be {
    const fbk_backend_ops *ops;
    void *self;
} tu_be;
tu_be tu_file_open(const char *dir);
void tu_be_close(tu_be *b);

/* An fbk_key_fn for scan: counts the keys in the size_t at arg. */
int tu_count_key(const fbk_key *key, void *arg);

/* A tmpfs of `size` (mount's size= syntax, e.g. "2m") mounted on a fresh
 * directory $FBK_TEST_DIR/<name>, for full-disk and read-only tests; NULL
 * when it cannot be mounted (not root, no tmpfs): the test then cr_skips.
 * Returns a static buffer like tu_fresh_dir.  tu_remount_ro makes it
 * read-only (0 or -1); tu_umount detaches it (best effort). */
const char *tu_tmpfs(const char *name, const char *size);
int tu_remount_ro(const char *path);
void tu_umount(const char *path);

/* A map and what it stands on: a store, a pool of fbk_blobs, a location. */
typedef struct tu_mapenv {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
} tu_mapenv;
/* Opens the store at uri (store_flags: fbk_store_options.flags), a pool of
 * mem_items fbk_blobs, the location `loc` and its map (o may be NULL).
 * Returns 0, or the first failure's code with what was opened closed again
 * (fbk_errmsg() tells).  Usable in forked children (no assertion). */
int tu_map_open(tu_mapenv *e, const char *uri, const char *loc, size_t mem_items,
                const fbk_map_options *o, unsigned store_flags);
/* Closes the map, location, pool and store; returns fbk_map_close's result. */
int tu_map_close(tu_mapenv *e);

/* The ceph.conf of the rados: test cluster ($FBK_RADOS_CONF, set by CTest
 * for the test_rados* suites), or NULL when it is unset or missing. */
const char *tu_rados_conf(void);
/* Skips the test (Criterion) when there is no test cluster. */
#define TU_NEED_RADOS()                                                                            \
    do {                                                                                           \
        if (!tu_rados_conf())                                                                      \
            cr_skip_test("no test cluster ($FBK_RADOS_CONF unset or missing)");                    \
    } while (0)

/* A counting allocator for fbk_set_allocator (malloc/realloc/free
 * underneath): tu_alloc_live counts the blocks handed out and not yet freed,
 * tu_alloc_calls the malloc/realloc calls; tu_alloc_fail, when set, is asked
 * before each malloc/realloc and makes it fail (NULL) when it returns 1. */
extern long tu_alloc_live_get(void);
extern unsigned long tu_alloc_calls_get(void);
void tu_alloc_reset(void);
extern int (*volatile tu_alloc_fail)(void);
extern const fbk_allocator tu_counting_allocator;

#endif
