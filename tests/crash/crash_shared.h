/*
 * crash_shared.h -- the record a crash/fault test shares with its child
 * processes (tests/crash/crash_child.c, tests/crash/lmdb_fault_child.c).
 *
 * The test creates a file of sizeof(crash_log) bytes and passes its path to
 * each child; both sides map it MAP_SHARED.  A child killed by SIGKILL has
 * already stored what it wrote into the mapping (the page is shared with the
 * parent's mapping), so the parent can read the last acknowledged cycle after
 * waitpid().  Fields a child updates while it may be killed are atomics.
 */
#ifndef FBK_CRASH_SHARED_H
#define FBK_CRASH_SHARED_H

#include <stdint.h>

#define CRASH_LOG_MAGIC 0x46424b43u /* "FBKC" */
#define CRASH_MAX_BASE 16           /* baseline objects of the fault test */

typedef struct crash_base {
    unsigned char key[16];
    uint64_t seed;
    uint64_t len;
} crash_base;

typedef struct crash_log {
    uint32_t magic;

    /* ---- crash_child run: progress, written while it may be killed ---- */
    _Atomic int64_t started;   /* last cycle begun */
    _Atomic int64_t renamed;   /* last cycle whose manifest rename was begun */
    _Atomic int64_t acked;     /* last cycle whose fbk_save returned 0 */
    _Atomic int64_t objects;   /* objects in the last acknowledged save */
    _Atomic uint32_t crash_hit; /* the chosen crash point was reached */

    /* ---- crash_child verify: its findings ---- */
    int64_t v_cycle;    /* cycle of the manifest found (0: none) */
    uint64_t v_objects; /* objects listed by the manifest */
    uint64_t v_checked; /* objects registered and loaded byte-exact */
    uint64_t v_lost;    /* listed but not registrable (FBK_ENOTFOUND) */
    uint64_t v_corrupt; /* registered but not loadable or wrong bytes */
    uint64_t v_orphans; /* keys in the location the manifest does not list */
    uint64_t v_junk;    /* junk entries the location's scan removed */

    /* ---- lmdb_fault_child ---- */
    uint32_t nbase;
    crash_base base[CRASH_MAX_BASE];
    uint64_t f_calls;     /* calls of the fault point seen while armed */
    uint64_t f_fired;     /* injected failures */
    uint64_t f_api_errors;     /* public calls that returned an error */
    uint64_t f_bg_errors;      /* background errors (on_error) */
    uint64_t f_bad_codes;      /* errors that were not FBK_E* codes or had no message */
    uint64_t f_drain_nomsg;    /* fbk_store_drain errors without a message (core issue) */
    uint64_t f_wrong_bytes;    /* a load that returned bytes other than written */
    uint64_t f_commit_after_fail; /* commit called although fbk_save failed before it */
    uint32_t f_nsynced;        /* work objects acknowledged by a successful sync */
    crash_base synced[64];
    int32_t f_first_err;       /* first FBK_E* code returned */
    char f_first_msg[256];     /* its fbk_errmsg() */

    /* ---- any child: why it failed (exit status != 0) ---- */
    char msg[512];
} crash_log;

#endif
