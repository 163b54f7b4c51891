/*
 * crash_proc.h -- what tests/test_crash.c and tests/test_lmdb_faults.c need
 * to run their helper programs: the shared log (crash_shared.h), starting a
 * helper from $FBK_TEST_BIN with an optional LD_PRELOAD and a ready pipe,
 * and describing how it ended.  Test-side only (uses Criterion).
 */
#ifndef FBK_CRASH_PROC_H
#define FBK_CRASH_PROC_H

#include "crash_shared.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CRASH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CRASH_SANITIZED 1
#endif
#endif
#ifndef CRASH_SANITIZED
#define CRASH_SANITIZED 0
#endif

/* The path of helper program `name` ($FBK_TEST_BIN/name); NULL if missing. */
static inline const char *crash_helper(const char *name, char *buf, size_t cap)
{
    const char *bin = getenv("FBK_TEST_BIN");
    if (!bin || !*bin)
        return NULL;
    snprintf(buf, cap, "%s/%s", bin, name);
    return access(buf, X_OK) == 0 ? buf : NULL;
}

/* Creates `path` holding a zeroed crash_log and maps it shared. */
static inline crash_log *crash_log_create(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    cr_assert_geq(fd, 0, "create %s: %s", path, strerror(errno));
    cr_assert_eq(ftruncate(fd, (off_t)sizeof(crash_log)), 0, "ftruncate %s", path);
    void *m = mmap(NULL, sizeof(crash_log), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    cr_assert_neq(m, MAP_FAILED, "mmap %s: %s", path, strerror(errno));
    crash_log *log = m;
    log->magic = CRASH_LOG_MAGIC;
    return log;
}

static inline void crash_log_destroy(crash_log *log) { munmap(log, sizeof *log); }

/* Starts argv[0] with argv.  preload: LD_PRELOAD value for the child (NULL:
 * inherit).  readyfd: when not NULL, a pipe is made, its write end becomes fd
 * 3 of the child and *readyfd gets the read end. */
static inline pid_t crash_spawn(char *const argv[], const char *preload, int *readyfd)
{
    int p[2] = {-1, -1};
    if (readyfd)
        cr_assert_eq(pipe2(p, O_CLOEXEC), 0, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (readyfd && dup2(p[1], 3) != 3)
            _exit(126);
        if (preload)
            setenv("LD_PRELOAD", preload, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    if (readyfd) {
        close(p[1]);
        *readyfd = p[0];
    }
    return pid;
}

/* Waits for pid; returns the raw wait status. */
static inline int crash_wait(pid_t pid)
{
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    cr_assert_eq(r, pid, "waitpid: %s", strerror(errno));
    return st;
}

/* "exit 3", "signal 9", ... */
static inline const char *crash_status_str(int st, char *buf, size_t cap)
{
    if (WIFEXITED(st))
        snprintf(buf, cap, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, cap, "status 0x%x", st);
    return buf;
}

/* A positive number from the environment, or dflt. */
static inline long crash_env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    long n = v && *v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : dflt;
}

#endif
