/* lmdb_share.c -- sharing one lmdb: store directory between processes: the
 * directory lock, each store's own spill area with its liveness lock, the
 * cleanup of spill areas whose process died, and the one-open-per-process
 * rule of LMDB environments.  See docs/lmdb-backend.md, "Sharing". */
#include "lmdb_internal.h"

#include "fbk_dirs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPILL_PREFIX "spill-"
#define SPILL_ID_LEN 16 /* hex digits */
#define CLAIM_TRIES 8

/* ------------------------------------------------------- directory lock */

int fbk__lmdb_dir_lock(fbk__lmdb *b, const char *dir)
{
    /* shared by every store, writer or read-only: only a holder of LOCK_EX
     * (fbk compact, or a libfbk from before sharing) keeps others out */
    int err = fbk__dir_lock(NULL, AT_FDCWD, dir, b->readonly, "lmdb", &b->lock_fd);
    if (err == FBK_OK && b->lock_fd < 0) /* a read-only store makes nothing */
        return fbk_error_set(FBK_ENOTFOUND, ENOENT,
                             "lmdb: read-only open of %s: no store there (%s/LOCK does not exist)",
                             dir, dir);
    return err;
}

/* ------------------------------------------------- one open per process */

/* LMDB allows one open of an environment per process: its reader-table
 * locks are fcntl() locks, which the close of any descriptor of lock.mdb in
 * the process releases, after which other processes take this one's readers
 * for dead (and may reuse the pages they read).  So a second store of this
 * process on the same durable environment is refused.  An entry made by the
 * parent of a fork() is not this process's (LMDB: an environment is not
 * used after fork), so entries carry the pid. */
struct open_env {
    struct open_env *next;
    dev_t dev;
    ino_t ino;
    pid_t pid;
};
static pthread_mutex_t open_envs_m = PTHREAD_MUTEX_INITIALIZER;
static struct open_env *open_envs;

int fbk__lmdb_env_claim(fbk__lmdb *b, const char *durable)
{
    struct stat st;
    if (stat(durable, &st) != 0) {
        if (errno == ENOENT && b->readonly)
            return fbk_error_set(FBK_ENOTFOUND, ENOENT,
                                 "lmdb: read-only open: no durable environment at %s", durable);
        return fbk_error_from_errno(errno, "lmdb: stat %s", durable);
    }
    pid_t pid = getpid();
    pthread_mutex_lock(&open_envs_m);
    for (struct open_env *o = open_envs; o; o = o->next) {
        if (o->pid == pid && o->dev == st.st_dev && o->ino == st.st_ino) {
            pthread_mutex_unlock(&open_envs_m);
            return fbk_error_set(FBK_EBUSY, 0,
                                 "lmdb: %s is in use by another store of this process (LMDB "
                                 "opens an environment once per process): share that "
                                 "fbk_store, or close it first",
                                 durable);
        }
    }
    struct open_env *o = malloc(sizeof *o);
    if (o) {
        *o = (struct open_env){open_envs, st.st_dev, st.st_ino, pid};
        open_envs = o;
        b->env_dev = st.st_dev;
        b->env_ino = st.st_ino;
        b->env_claimed = 1;
    }
    pthread_mutex_unlock(&open_envs_m);
    return o ? FBK_OK : fbk_error_set(FBK_ENOMEM, ENOMEM, "lmdb: open %s: out of memory", durable);
}

void fbk__lmdb_env_unclaim(fbk__lmdb *b)
{
    if (!b->env_claimed)
        return;
    pid_t pid = getpid();
    pthread_mutex_lock(&open_envs_m);
    for (struct open_env **p = &open_envs; *p; p = &(*p)->next) {
        struct open_env *o = *p;
        if (o->pid == pid && o->dev == b->env_dev && o->ino == b->env_ino) {
            *p = o->next;
            free(o);
            break;
        }
    }
    pthread_mutex_unlock(&open_envs_m);
    b->env_claimed = 0;
}

/* ------------------------------------------------------------ spill areas */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if ((flag == FTW_DP ? rmdir(path) : unlink(path)) != 0 && errno != ENOENT)
        return errno;
    return 0;
}

/* rm -rf path (no symbolic link followed); 0 or an errno.  A missing path
 * is 0. */
static int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : errno;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 || errno == ENOENT ? 0 : errno;
    int rc = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc < 0 ? errno : rc;
}

/* 1 if name is "spill-" + SPILL_ID_LEN hex digits + suffix. */
static int spill_name(const char *name, const char *suffix)
{
    size_t p = sizeof SPILL_PREFIX - 1;
    if (strncmp(name, SPILL_PREFIX, p) != 0)
        return 0;
    for (size_t i = 0; i < SPILL_ID_LEN; i++)
        if (name[p + i] == '\0' || !strchr("0123456789abcdef", name[p + i]))
            return 0;
    return strcmp(name + p + SPILL_ID_LEN, suffix) == 0;
}

/* A spill area whose lock file nobody holds: its owner died.  Removed
 * while its lock is held (so its owner cannot be a process that has just
 * made the lock file: such an owner finds the file unlinked and picks
 * another id). */
static void clean_dead(int dfd, const char *dir, const char *lockname)
{
    int fd = openat(dfd, lockname, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    struct stat mine, now;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &mine) == 0 && mine.st_nlink > 0 &&
        fstatat(dfd, lockname, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == mine.st_ino &&
        now.st_dev == mine.st_dev) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%.*s", dir, (int)(strlen(lockname) - 5), lockname);
        if (remove_tree(path) == 0)
            unlinkat(dfd, lockname, 0); /* still holding the flock */
    }
    close(fd); /* releases the flock */
}

void fbk__lmdb_spill_clean(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return; /* best effort: the open goes on without it */
    int dfd = dirfd(d);
    struct dirent *e;
    char path[4200];
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strcmp(nm, "spill") == 0) {
            /* the one spill area of versions before sharing: such a
             * version took DIR/LOCK exclusively, and we hold it shared, so
             * none of them runs */
            snprintf(path, sizeof path, "%s/%s", dir, nm);
            remove_tree(path);
        } else if (spill_name(nm, ".lock")) {
            clean_dead(dfd, dir, nm);
        } else if (spill_name(nm, "")) {
            /* a spill directory without its lock file: its owner removed
             * the lock file last (at close or as a cleaner), or never made
             * the directory before it; either way nobody uses it */
            char lock[300];
            snprintf(lock, sizeof lock, "%s.lock", nm);
            if (faccessat(dfd, lock, F_OK, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
                snprintf(path, sizeof path, "%s/%s", dir, nm);
                remove_tree(path);
            }
        }
    }
    closedir(d);
}

/* One try at DIR/spill-<id>: 1 claimed, 0 lost a race (try another id),
 * < 0 error. */
static int claim_one(fbk__lmdb *b, const char *dir)
{
    unsigned char r[SPILL_ID_LEN / 2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return fbk_error_from_errno(errno, "lmdb: %s: random spill area id", dir);
    char id[SPILL_ID_LEN + 1];
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(id + 2 * i, 3, "%02x", r[i]);
    /* lengths checked by fbk__lmdb_spill_claim */
    snprintf(b->spill_dir, sizeof b->spill_dir, "%.4000s/" SPILL_PREFIX "%s", dir, id);
    snprintf(b->spill_lock, sizeof b->spill_lock, "%.4000s/" SPILL_PREFIX "%s.lock", dir, id);
    int fd = open(b->spill_lock, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return errno == EEXIST ? 0 : fbk_error_from_errno(errno, "lmdb: create %s", b->spill_lock);
    /* a cleaner may flock and unlink it between our create and flock: it
     * then holds the lock, or the file is no longer linked */
    struct stat mine, now;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || fstat(fd, &mine) != 0 || mine.st_nlink == 0 ||
        lstat(b->spill_lock, &now) != 0 || now.st_ino != mine.st_ino ||
        now.st_dev != mine.st_dev) {
        close(fd);
        return 0;
    }
    if (mkdir(b->spill_dir, 0755) != 0) {
        int e = errno;
        unlink(b->spill_lock);
        close(fd);
        return e == EEXIST ? 0 : fbk_error_from_errno(e, "lmdb: mkdir %s", b->spill_dir);
    }
    b->spill_lock_fd = fd;
    return 1;
}

int fbk__lmdb_spill_claim(fbk__lmdb *b, const char *dir)
{
    if (strlen(dir) + sizeof "/" SPILL_PREFIX ".lock" + SPILL_ID_LEN >= 4096)
        return fbk_error_set(FBK_EINVAL, 0, "lmdb: directory name too long: %.200s...", dir);
    if (b->readonly) {
        /* nothing is made in DIR: a private directory, removed at close */
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !tmp[0] || strlen(tmp) > 3000)
            tmp = "/tmp";
        snprintf(b->spill_dir, sizeof b->spill_dir, "%s/fbk-spill-XXXXXX", tmp);
        if (!mkdtemp(b->spill_dir)) {
            int e = errno;
            b->spill_dir[0] = '\0';
            return fbk_error_from_errno(e, "lmdb: read-only open of %s: make a private spill "
                                           "directory under %s",
                                        dir, tmp);
        }
        return FBK_OK;
    }
    for (int i = 0; i < CLAIM_TRIES; i++) {
        int r = claim_one(b, dir);
        if (r == 1)
            return FBK_OK;
        if (r < 0) {
            b->spill_dir[0] = b->spill_lock[0] = '\0';
            return r;
        }
    }
    b->spill_dir[0] = b->spill_lock[0] = '\0';
    return fbk_error_set(FBK_EIO, 0,
                         "lmdb: %s: could not claim a spill area in %d tries (each id was taken "
                         "or its lock file removed meanwhile)",
                         dir, CLAIM_TRIES);
}

void fbk__lmdb_spill_release(fbk__lmdb *b)
{
    /* the directory first, then the lock file: a directory with no lock
     * file is stale to every cleaner, a lock file with no directory is
     * harmless */
    if (b->spill_dir[0])
        remove_tree(b->spill_dir); /* best effort: a later open cleans up */
    if (b->spill_lock[0])
        unlink(b->spill_lock);
    if (b->spill_lock_fd >= 0)
        close(b->spill_lock_fd);
    b->spill_lock_fd = -1;
    b->spill_dir[0] = b->spill_lock[0] = '\0';
}
