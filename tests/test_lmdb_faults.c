/* test_lmdb_faults.c -- the lmdb: backend under failing system calls: every
 * failure comes back as an FBK_E* code (to the caller or to on_error), the
 * process does not crash, the store reopens cleanly afterwards, and what was
 * synced before (and what a successful sync or save acknowledged during the
 * faults) is intact, byte for byte.
 *
 * The faults come from libfiu's POSIX preload library: a helper program
 * (tests/crash/lmdb_fault_child.c) runs a workload with
 * LD_PRELOAD=fiu_posix_preload.so and makes exactly the N-th call of one
 * function fail (pwrite, writev, fdatasync, fsync, short pwrite, ftruncate,
 * open, pread, mmap, munmap), for every N up to the number of calls the
 * workload makes (sampled when there are many).  A separate process, without
 * faults, then verifies the store.
 *
 * Skipped when libfiu is not installed (Debian: libfiu-dev fiu-utils), and
 * under sanitizers: the ASan runtime must come first in the list of loaded
 * libraries, which LD_PRELOAD of libfiu breaks.
 *
 * Environment: FBK_FAULT_SAMPLES (runs per fault point, default 12). */
#include "crash/crash_proc.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <inttypes.h>

typedef struct sweep {
    char child[4200];
    const char *preload;
    char dir[4096];
    char logpath[4200];
    crash_log *log;
    unsigned long runs, fired, errors, bg_errors, checked, acked_checked, drain_nomsg;
} sweep;

typedef struct fpoint {
    const char *name;
    int err;
    int must_surface; /* a fired failure must reach the caller or on_error */
} fpoint;

static void sweep_open(sweep *w, const char *name)
{
    if (CRASH_SANITIZED)
        cr_skip_test("LD_PRELOAD of libfiu does not mix with the sanitizer runtimes");
    const char *preload = getenv("FBK_FIU_PRELOAD");
    char buf[4200];
    const char *child = crash_helper("lmdb_fault_child", buf, sizeof buf);
    if (!preload || access(preload, R_OK) != 0 || !child)
        cr_skip_test("libfiu (fiu_posix_preload.so) or lmdb_fault_child not available");
    memset(w, 0, sizeof *w);
    w->preload = preload;
    snprintf(w->child, sizeof w->child, "%s", child);
    snprintf(w->dir, sizeof w->dir, "%s", tu_fresh_dir(name));
    snprintf(w->logpath, sizeof w->logpath, "%s.log", w->dir);
    w->log = crash_log_create(w->logpath);
    char *argv[] = {w->child, "setup", w->dir, w->logpath, NULL};
    char sbuf[64];
    int st = crash_wait(crash_spawn(argv, NULL, NULL));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "setup: %s: %s",
              crash_status_str(st, sbuf, sizeof sbuf), w->log->msg);
    cr_assert_eq(w->log->nbase, 6);
}

/* Clears what one run reports; keeps the baseline. */
static void log_clear(crash_log *l)
{
    size_t keep = offsetof(crash_log, f_calls);
    memset((char *)l + keep, 0, sizeof *l - keep);
    memset((char *)l + offsetof(crash_log, v_cycle), 0,
           offsetof(crash_log, nbase) - offsetof(crash_log, v_cycle));
}

static void verify(sweep *w, const char *what)
{
    uint32_t acked = w->log->f_nsynced;
    char *argv[] = {w->child, "verify", w->dir, w->logpath, NULL};
    char sbuf[64];
    int st = crash_wait(crash_spawn(argv, NULL, NULL));
    crash_log *l = w->log;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: clean reopen failed: %s: %s", what,
              crash_status_str(st, sbuf, sizeof sbuf), l->msg);
    cr_assert_eq(l->v_lost, 0, "%s: %" PRIu64 " synced objects lost: %s", what, l->v_lost, l->msg);
    cr_assert_eq(l->v_corrupt, 0, "%s: %" PRIu64 " synced objects unreadable: %s", what,
                 l->v_corrupt, l->msg);
    cr_assert_eq(l->f_wrong_bytes, 0, "%s: wrong bytes returned as data: %s", what, l->msg);
    cr_assert_eq(l->v_checked, l->nbase + acked);
    w->checked += l->v_checked;
    w->acked_checked += acked;
}

/* Runs the child with argv (its log cleared first) and checks what every
 * run must show: it exited cleanly, every error was an FBK_E* code with a
 * message, no load returned wrong bytes.  Returns the child's log. */
static crash_log *run_child(sweep *w, char **argv, const char *what)
{
    log_clear(w->log);
    char sbuf[64];
    int st = crash_wait(crash_spawn(argv, w->preload, NULL));
    crash_log *l = w->log;
    w->runs++;
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the workload died: %s: %s", what,
              crash_status_str(st, sbuf, sizeof sbuf), l->msg);
    cr_assert_eq(l->f_bad_codes, 0,
                 "%s: %" PRIu64 " errors were not FBK_E* codes with a message; first: %s", what,
                 l->f_bad_codes, l->msg);
    cr_assert_eq(l->f_wrong_bytes, 0, "%s: a load returned wrong bytes", what);
    return l;
}

/* One run with the nth call of p failing (nth = 0: count only).  Returns the
 * calls the workload made. */
static unsigned long run_one(sweep *w, const fpoint *p, unsigned long nth, size_t map_size)
{
    char n[32], e[16], m[32], what[160];
    snprintf(n, sizeof n, "%lu", nth);
    snprintf(e, sizeof e, "%d", p->err);
    snprintf(m, sizeof m, "%zu", map_size);
    snprintf(what, sizeof what, "%s call %lu failing with errno %d (map %zu)", p->name, nth, p->err,
             map_size);
    char *argv[] = {w->child, "fault", w->dir, w->logpath, (char *)p->name, n, e, m, NULL};
    crash_log *l = run_child(w, argv, what);
    if (nth == 0) {
        cr_assert_eq(l->f_api_errors + l->f_bg_errors, 0, "%s: errors without a fault: %s", what,
                     l->f_first_msg);
    } else if (l->f_fired > 0 && p->must_surface) {
        cr_assert_gt(l->f_api_errors + l->f_bg_errors, 0,
                     "%s: the failure was injected but no call reported an error (swallowed)",
                     what);
    }
    w->fired += l->f_fired;
    w->errors += l->f_api_errors;
    w->bg_errors += l->f_bg_errors;
    w->drain_nomsg += l->f_drain_nomsg;
    unsigned long calls = l->f_calls;
    verify(w, what);
    return calls;
}

static void sweep_point(sweep *w, const fpoint *p, size_t map_size, unsigned long *points)
{
    unsigned long calls = run_one(w, p, 0, map_size);
    unsigned long samples = (unsigned long)crash_env_long("FBK_FAULT_SAMPLES", 12);
    if (strstr(p->name, "/sync/"))
        samples = calls; /* the durability-critical calls: every one of them */
    if (calls == 0)
        return;
    unsigned long step = calls <= samples ? 1 : (calls + samples - 1) / samples;
    fprintf(stderr, "test_lmdb_faults: %s (errno %d, map %zu): %lu calls, every %lu-th fails\n",
            p->name, p->err, map_size, calls, step);
    for (unsigned long nth = 1; nth <= calls; nth += step) {
        run_one(w, p, nth, map_size);
        (*points)++;
    }
    if (step > 1 && (calls - 1) % step != 0) { /* always try the last call too */
        run_one(w, p, calls, map_size);
        (*points)++;
    }
}

static void sweep_report(sweep *w, const char *what, unsigned long points)
{
    fprintf(stderr,
            "test_lmdb_faults %s: %lu fault points tried (%lu runs), %lu failures injected, "
            "%lu errors returned to callers, %lu background errors, %lu objects verified "
            "byte-exact after clean reopens (%lu of them acknowledged under faults), 0 lost, "
            "0 corrupt; %lu fbk_store_drain errors came without a message\n",
            what, points, w->runs, w->fired, w->errors, w->bg_errors, w->checked, w->acked_checked,
            w->drain_nomsg);
    crash_log_destroy(w->log);
}

Test(lmdb_faults, failed_writes_and_syncs_are_reported_and_synced_data_survives, .timeout = 300)
{
    static const fpoint pts[] = {
        /* name, errno, a fired failure must reach the caller or on_error */
        {"posix/io/rw/pwrite", EIO, 1},
        {"posix/io/rw/pwrite", ENOSPC, 1},
        /* a short write; libfiu's reduction (count -= random() % count) may
         * leave the count as it was, so it need not surface */
        {"posix/io/rw/pwrite/reduce", 0, 0},
        {"posix/io/rw/writev", EIO, 1},
        {"posix/io/rw/write", EIO, 1},
        {"posix/io/sync/fdatasync", EIO, 1},
        {"posix/io/sync/fsync", EIO, 1},
        {"posix/io/rw/ftruncate", EIO, 1},
        {"posix/io/oc/open", EIO, 1},
        {"posix/io/rw/pread", EIO, 1},
    };
    sweep w;
    sweep_open(&w, "io");
    unsigned long points = 0;
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++)
        sweep_point(&w, &pts[i], 0, &points);
    cr_assert_gt(w.fired, 0, "no fault was ever injected: is the preload library working?");
    sweep_report(&w, "I/O faults, default map", points);
}

Test(lmdb_faults, failures_while_a_tiny_map_grows_are_reported_and_synced_data_survives,
     .timeout = 300)
{
    /* 64 KiB maps: the workload's 8 objects of up to 90 KB make both
     * environments grow several times (munmap + mmap in mdb_env_set_mapsize).
     * LMDB ignores munmap's result, so a failed munmap need not surface. */
    static const fpoint pts[] = {
        {"posix/mm/mmap", ENOMEM, 1},
        {"posix/mm/munmap", EINVAL, 0},
        {"posix/io/rw/pwrite", ENOSPC, 1},
        {"posix/io/sync/fdatasync", EIO, 1},
    };
    sweep w;
    sweep_open(&w, "growth");
    unsigned long points = 0;
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++)
        sweep_point(&w, &pts[i], 64 << 10, &points);
    cr_assert_gt(w.fired, 0, "no fault was ever injected: is the preload library working?");
    sweep_report(&w, "faults during map growth (64 KiB maps)", points);
}

/* ---- recovery of the spill environment after LMDB marks it fatal ---- */

enum { RK = 6 }; /* objects spilled before the fault and after it (the child's RK) */

typedef struct rec_tally {
    unsigned long reopened; /* runs whose fault made the backend reopen the spill env */
    unsigned long loaded;   /* objects loaded byte-exact after the fault */
} rec_tally;

/* One "recover" run of the child (see tests/crash/lmdb_fault_child.c): the
 * nth call of p fails during one spill commit; afterwards, with the fault
 * off and the store still open, everything must load and new objects must
 * spill.  fail_open: the first open() after the fault fails too (the first
 * reopen attempt).  Returns the calls of p the commit made. */
static unsigned long recover_one(sweep *w, const fpoint *p, unsigned long nth, int fail_open,
                                 rec_tally *t)
{
    char n[32], e[16], f[4], what[200];
    snprintf(n, sizeof n, "%lu", nth);
    snprintf(e, sizeof e, "%d", p->err);
    snprintf(f, sizeof f, "%d", fail_open);
    snprintf(what, sizeof what, "recover: %s call %lu failing with errno %d%s", p->name, nth,
             p->err, fail_open ? ", first reopen failing" : "");
    char *argv[] = {w->child, "recover", w->dir, w->logpath, (char *)p->name, n, e, f, NULL};
    crash_log *l = run_child(w, argv, what);
    int reopened = nth > 0 && l->f_fired > 0 && l->v_orphans > 0;
    /* A failed reopen costs the one load that tried it, nothing more: the
     * next load reopens again. */
    uint64_t failed = fail_open && reopened ? 1 : 0;
    /* the old behaviour: after MDB_PANIC every spill load failed (FBK_EIO)
     * until the store was reopened, which empties the spill area */
    cr_assert_eq(l->v_lost, failed,
                 "%s: %" PRIu64 " objects spilled before the fault do not load after it: %s", what,
                 l->v_lost, l->f_first_msg);
    cr_assert_eq(l->f_api_errors, failed, "%s: %" PRIu64 " calls failed after the fault: %s", what,
                 l->f_api_errors, l->f_first_msg);
    if (failed) {
        cr_assert_eq(l->f_first_err, FBK_EIO, "%s: %s", what, l->f_first_msg);
        cr_assert(strstr(l->f_first_msg, "reopen") != NULL,
                  "%s: the failed reopen's message does not say so: %s", what, l->f_first_msg);
        cr_assert_geq(l->v_orphans, 2, "%s: no second reopen", what);
    }
    /* every object of the run, old and new, came back byte-exact */
    cr_assert_eq(l->v_checked, 2 * RK + 3 - failed, "%s: %" PRIu64 " of %d loads were right", what,
                 l->v_checked, 2 * RK + 3);
    if (nth == 0) {
        cr_assert_eq(l->v_cycle, 0, "%s: drain failed without a fault", what);
        cr_assert_eq(l->v_objects + l->f_bg_errors, 0, "%s: errors without a fault", what);
        cr_assert_eq(l->v_orphans, 0, "%s: an environment was reopened without a fault", what);
    } else if (l->f_fired > 0) {
        /* the failed eviction write was reported: to on_error, by the drain
         * (an FBK_E* code), and in the store's statistics */
        cr_assert(l->v_cycle < 0 && l->v_cycle >= FBK_ECLOSED,
                  "%s: drain returned %" PRId64 " after a failed eviction write", what, l->v_cycle);
        cr_assert_geq(l->f_bg_errors, 1, "%s: on_error was not called", what);
        cr_assert_geq(l->v_objects, 1, "%s: no eviction failure counted", what);
        w->fired += l->f_fired;
        w->bg_errors += l->f_bg_errors;
        t->reopened += (unsigned long)reopened;
    }
    t->loaded += l->v_checked;
    return l->f_calls;
}

Test(lmdb_faults, spill_environment_recovers_after_lmdb_marks_it_fatal, .timeout = 300)
{
    /* Every pwrite of the one spill commit fails once.  The data pages go
     * out first (pwrite, or writev for several runs of pages; this commit
     * uses pwrite only), the meta page last.  When the meta-page write
     * fails, LMDB sets MDB_FATAL_ERROR and every later transaction on the
     * environment returns MDB_PANIC; a failed data-page write leaves it
     * usable. */
    static const fpoint pts[] = {
        {"posix/io/rw/pwrite", EIO, 1},
        {"posix/io/rw/pwrite", ENOSPC, 1},
    };
    sweep w;
    sweep_open(&w, "recover");
    unsigned long points = 0;
    rec_tally t = {0, 0};
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) {
        unsigned long calls = recover_one(&w, &pts[i], 0, 0, &t);
        fprintf(stderr, "test_lmdb_faults recover: %s (errno %d): %lu calls in the commit\n",
                pts[i].name, pts[i].err, calls);
        cr_assert_gt(calls, 0, "the spill commit made no %s call", pts[i].name);
        for (unsigned long nth = 1; nth <= calls; nth++) {
            unsigned long before = t.reopened;
            recover_one(&w, &pts[i], nth, 0, &t);
            points++;
            /* only the meta-page write makes the environment fatal */
            if (nth < calls)
                cr_assert_eq(t.reopened, before, "%s call %lu of %lu: an unexpected reopen",
                             pts[i].name, nth, calls);
            else
                cr_assert_gt(t.reopened, before,
                             "%s errno %d: failing the commit's last pwrite (the meta page) "
                             "did not make the spill environment reopen",
                             pts[i].name, pts[i].err);
        }
        /* the meta-page write again, and the first reopen fails as well */
        unsigned long before = t.reopened;
        recover_one(&w, &pts[i], calls, 1, &t);
        points++;
        cr_assert_gt(t.reopened, before, "no reopen after a failed one");
        log_clear(w.log); /* verify counts into the v_ fields the runs used */
        verify(&w, "after the recover runs");
    }
    fprintf(stderr,
            "test_lmdb_faults recover: %lu fault points (%lu runs), %lu failures injected, "
            "%lu background errors, %lu runs reopened the spill environment, %lu objects loaded "
            "byte-exact in the same open store after the fault; %lu baseline objects verified "
            "after clean reopens\n",
            points, w.runs, w.fired, w.bg_errors, t.reopened, t.loaded, w.checked);
    crash_log_destroy(w.log);
}
