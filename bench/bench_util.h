/* bench_util.h -- what every benchmark program needs: a clock, writing back
 * a file system's dirty data between timed phases, removing a tree. */
#ifndef FBK_BENCH_UTIL_H
#define FBK_BENCH_UTIL_H

#include <fbk.h>

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Monotonic seconds. */
static inline double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Writes back all dirty data of DIR's file system (untimed), so that each
 * phase starts from the same state instead of meeting the writeback of the
 * one before (which otherwise lands on whichever side runs second). */
static inline void bench_flush(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        syncfs(fd);
        close(fd);
    }
}

static inline int bench_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf path (best effort). */
static inline void bench_rmtree(const char *path)
{
    nftw(path, bench_rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

/* Runs a libfbk call; on failure prints the call and fbk_errmsg() and exits
 * (a benchmark has nothing to recover). */
#define CHECK(call)                                                                                \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_) {                                                                                 \
            fprintf(stderr, "%s: %s\n", #call, fbk_errmsg());                                      \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#endif
