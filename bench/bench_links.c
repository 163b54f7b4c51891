/*
 * bench_links.c -- what the sharded layout of a location costs a persist:
 * N hard links into one flat directory + syncfs, against the same links
 * spread over 256 shard directories (as a file: location holds them) +
 * syncfs.  Plain files on both sides; no libfbk.
 *
 *   bench_links [DIR [N [BYTES [REPS]]]]   (defaults bench-links.tmp 200 1048576 5)
 *
 * Each rep makes N files of BYTES in DIR/src, writes everything back, then
 * runs both layouts (taking turns at going first); the fastest rep of each
 * is printed.  On ext4 a syncfs writes every directory block the links
 * dirtied: few links spread over 256 directories dirty more blocks than the
 * same links in one directory, many links fewer.
 */
#include "bench_util.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *path)
{
    perror(path ? path : what);
    exit(1);
}

static void syncfs_at(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) != 0)
        die("syncfs", dir);
    close(fd);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "bench-links.tmp";
    int n = argc > 2 ? atoi(argv[2]) : 200;
    size_t bytes = argc > 3 ? strtoull(argv[3], NULL, 10) : (size_t)1 << 20;
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    if (n < 1 || reps < 1) {
        fprintf(stderr, "usage: bench_links [DIR [N [BYTES [REPS]]]]\n");
        return 2;
    }
    unsigned char *buf = calloc(1, bytes ? bytes : 1);
    char p[4300], q[4300];
    double best[2] = {1e30, 1e30};
    for (int r = 0; r < reps; r++) {
        bench_rmtree(dir);
        snprintf(p, sizeof p, "%s/src", dir);
        if (mkdir(dir, 0755) != 0 || mkdir(p, 0755) != 0)
            die("mkdir", dir);
        snprintf(p, sizeof p, "%s/flat", dir);
        if (mkdir(p, 0755) != 0)
            die("mkdir", p);
        snprintf(p, sizeof p, "%s/sharded", dir);
        if (mkdir(p, 0755) != 0)
            die("mkdir", p);
        for (int s = 0; s < 256; s++) {
            snprintf(p, sizeof p, "%s/sharded/%02x", dir, s);
            if (mkdir(p, 0755) != 0)
                die("mkdir", p);
        }
        for (int i = 0; i < n; i++) {
            snprintf(p, sizeof p, "%s/src/%08d", dir, i);
            int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0 || write(fd, buf, bytes) != (ssize_t)bytes)
                die("write", p);
            close(fd);
        }
        for (int k = 0; k < 2; k++) {
            int sharded = (k + r) % 2;
            syncfs_at(dir); /* every rep and layout starts clean */
            double t0 = bench_now();
            for (int i = 0; i < n; i++) {
                snprintf(p, sizeof p, "%s/src/%08d", dir, i);
                if (sharded)
                    snprintf(q, sizeof q, "%s/sharded/%02x/%08d", dir, (unsigned)(i * 37) % 256u,
                             i);
                else
                    snprintf(q, sizeof q, "%s/flat/%08d", dir, i);
                if (link(p, q) != 0)
                    die("link", q);
            }
            syncfs_at(dir);
            double t = bench_now() - t0;
            if (t < best[sharded])
                best[sharded] = t;
        }
    }
    bench_rmtree(dir);
    printf("%d links of %zu-byte files + syncfs: flat %.2f ms, 256 shards %.2f ms (%.2fx)\n", n,
           bytes, best[0] * 1e3, best[1] * 1e3, best[1] / best[0]);
    free(buf);
    return 0;
}
