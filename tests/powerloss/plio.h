/*
 * plio.h -- a power-loss model of the file: backend's system calls (tests only).
 *
 * plio installs its own fbk__file_io table (backends/file/file_io.h).  Every
 * call passes through to the real file system in a scratch tree (`root`),
 * and plio keeps a model of what a power cut would leave, with the
 * semantics of RocksDB's fault-injection file system:
 *
 *   - a file's data is durable up to its last successful fsync/fdatasync (or
 *     syncfs); the bytes written since are not;
 *   - a directory's entries (names made by create, link, rename, mkdir, and
 *     names removed by unlink, rename, rmdir) are durable only after an fsync
 *     of that directory (or a syncfs).
 *
 * Per inode the model keeps the synced bytes and the current bytes (writes
 * are mirrored); per directory the synced entries (read back from the real
 * directory at its fsync).  The real fsync/fdatasync/syncfs are NOT made:
 * the model is the judge of durability, and the tests stay fast.
 *
 * Power cuts.  With plio_cuts_enable(), before every call that changes the
 * file system (when something changed since the last cut) plio builds the
 * states a power cut at that point could leave -- several variants, see
 * PLIO_DIR_* and PLIO_DATA_* -- and writes each state it has not written
 * before as a directory tree under the cut directory, to be checked later.
 *
 * Faults.  plio_fault_arm() makes call N (counted from the arm) fail with an
 * errno, once or from then on.  A failed fsync makes nothing durable; with
 * `poison` the pages it failed to write stay lost (Linux marks them clean:
 * a later fsync succeeds without writing them).
 *
 * One plio session at a time per process; every function is thread-safe
 * (calls through the table are serialized by one mutex).
 */
#ifndef PLIO_H
#define PLIO_H

#include <stddef.h>
#include <stdint.h>

/* How a cut treats directory entries that were not synced. */
enum {
    PLIO_DIR_SYNCED = 0,  /* every unsynced name is dropped (removals undone) */
    PLIO_DIR_CURRENT = 1, /* every name as it is now (the metadata made it) */
    PLIO_DIR_MIXED = 2,   /* per directory, one or the other (seeded) */
    PLIO_DIR_MODES = 3
};
/* How a cut treats file bytes that were not synced. */
enum {
    PLIO_DATA_OLD = 0,  /* the file as last synced (never synced: empty) */
    PLIO_DATA_ZERO = 1, /* current length, unsynced bytes read back as zeros */
    PLIO_DATA_TORN = 2, /* current length, first half of the unsynced bytes
                           written, the rest stale garbage */
    PLIO_DATA_MODES = 3
};
#define PLIO_VARIANT(dir, data) ((dir) * PLIO_DATA_MODES + (data))
#define PLIO_VARIANTS (PLIO_DIR_MODES * PLIO_DATA_MODES)

/* The kinds of call, for fault reports. */
enum {
    PLIO_OPENAT, PLIO_CLOSE, PLIO_READ, PLIO_PREAD, PLIO_WRITE, PLIO_PWRITE, PLIO_FSYNC,
    PLIO_FDATASYNC, PLIO_SYNCFS, PLIO_LINKAT, PLIO_RENAMEAT, PLIO_UNLINKAT, PLIO_MKDIRAT,
    PLIO_FSTAT, PLIO_FSTATAT, PLIO_FTRUNCATE, PLIO_MMAP, PLIO_MUNMAP, PLIO_FLOCK,
    PLIO_FDOPENDIR, PLIO_READDIR, PLIO_CLOSEDIR, PLIO_COPY_FILE_RANGE, PLIO_KINDS
};
const char *plio_kind_name(int kind);

/* Starts a session over the existing directory `root` (absolute path): its
 * whole content counts as durable.  Installs the table.  0 or -1 (errno). */
int plio_start(const char *root);
/* Uninstalls the table (the plain POSIX table is back) and frees the model;
 * the cut records stay readable until the next plio_start. */
void plio_stop(void);
/* Installs a pass-through table without fsync/syncfs (the real ones are
 * slow and pointless for checking cut trees), or NULL for the POSIX one. */
void plio_install_fast(int on);

/* paused: the fast table of plio_install_fast (calls bypass the model,
 * e.g. to check a cut with a store of its own); 0: the model's table. */
void plio_pause(int paused);

/* Two numbers the test attaches to every cut (e.g. the oldest and newest
 * manifest generation the cut may hold). */
void plio_set_user(int lo, int hi);

/* ---- power cuts ---- */
/* From now on, cut before every changing call into dir/<k>/ (dir must
 * exist).  variants: a bit mask of PLIO_VARIANT() bits.  skip: a path
 * relative to root whose content is left out of every cut (created empty),
 * e.g. "store/spill", or NULL. */
void plio_cuts_enable(const char *dir, unsigned variants, const char *skip);
/* Leaves the content of `skip` (relative to root, e.g. "store/spill") out
 * of cuts and snapshots: it is created empty (the spill area is emptied at
 * every store open anyway); NULL for none. */
void plio_skip(const char *skip);
/* Cuts now (e.g. at the end of a run, or after a failed call returned). */
void plio_cut_now(void);
typedef struct plio_cut {
    char path[512];   /* the tree: same layout as root */
    long call;        /* cut before this call (1-based, counted from start) */
    int variant;
    int user_lo, user_hi;
} plio_cut;
size_t plio_cut_count(void);
const plio_cut *plio_cut_get(size_t i);
/* Statistics: changing points seen, trees built (variants deduplicated),
 * duplicates skipped. */
void plio_cut_stats(long *points, long *trees, long *dups);
/* Builds the durable state now (variant), at dst (created; must not exist). */
int plio_snapshot(const char *dst, int variant);

/* ---- faults ---- */
/* Call number `at` (1 = the next call) fails with err; with sticky, every
 * call from then on.  poison: see above.  Resets the fault record. */
void plio_fault_arm(long at, int err, int sticky, int poison);
void plio_fault_disarm(void);
/* Calls since the last arm (or start). */
long plio_calls(void);
/* Failures injected since the arm, and the kinds of the first one and of
 * all of them (a bit per kind). */
long plio_faults(int *first_kind, unsigned *kinds);
/* The test's phase (0..7), recorded with each injected fault: the phases
 * that saw a fault (a bit each), and the kinds of call that failed in one. */
void plio_set_phase(int phase);
unsigned plio_fault_phases(void);
unsigned plio_fault_kinds_in(int phase);

#endif
