/*
 * bench_checksum.c -- what the frame check costs on a load: XXH3-64 of bytes
 * the kernel has just copied out of the page cache, against the same hash of
 * bytes already in cache.
 *
 *   bench_checksum [DIR [ROUNDS]]        (defaults /dev/shm, 300)
 *
 * For 16 KiB, 256 KiB, 1 MiB and 4 MiB: one file of that size in DIR, then
 * ROUNDS times: pread the whole file into one buffer (timed), hash the buffer
 * (timed: "after read"), hash it again (timed: "in cache").  Mean µs per
 * round.  The hash is the one the core uses (libxxhash's x86 dispatcher when
 * CMake found it, see src/frame.c).  The difference between the two hash
 * columns is what the kernel's copy costs the check: the copy leaves the
 * data outside the near caches.
 */
#include "bench_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef FBK_HAVE_XXH_DISPATCH
#include <xxh_x86dispatch.h>
#define HASH XXH3_64bits_dispatch
#else
#define HASH XXH3_64bits
#endif

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/dev/shm";
    int rounds = argc > 2 ? atoi(argv[2]) : 300;
    if (rounds < 1) {
        fprintf(stderr, "usage: bench_checksum [DIR [ROUNDS]]\n");
        return 2;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/bench_checksum.%d", dir, (int)getpid());
    static const size_t sizes[] = {16 << 10, 256 << 10, 1 << 20, 4 << 20};
    unsigned long long sink = 0;
    printf("%10s %12s %16s %14s\n", "bytes", "pread us", "hash after us", "hash again us");
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t len = sizes[s];
        unsigned char *buf = malloc(len);
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (!buf || fd < 0) {
            perror(path);
            return 1;
        }
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)(i * 131u + 7u);
        if (write(fd, buf, len) != (ssize_t)len) {
            perror("write");
            return 1;
        }
        double tr = 0, ta = 0, tc = 0;
        for (int r = 0; r < rounds; r++) {
            double t0 = bench_now();
            if (pread(fd, buf, len, 0) != (ssize_t)len) {
                perror("pread");
                return 1;
            }
            double t1 = bench_now();
            sink += HASH(buf, len);
            double t2 = bench_now();
            sink += HASH(buf, len);
            double t3 = bench_now();
            tr += t1 - t0;
            ta += t2 - t1;
            tc += t3 - t2;
        }
        printf("%10zu %12.2f %16.2f %14.2f\n", len, tr / rounds * 1e6, ta / rounds * 1e6,
               tc / rounds * 1e6);
        close(fd);
        unlink(path);
        free(buf);
    }
    return sink == 42; /* keeps the hashes */
}
