/* file_spill.h -- for tests of the file: backend: where the spill area of
 * the store open on a directory is (DIR/spill-<16 hex>, docs/file-backend.md).
 * Header-only (static functions): include it from a test file. */
#ifndef FBK_TESTS_FILE_SPILL_H
#define FBK_TESTS_FILE_SPILL_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>

/* Number of spill areas "spill-<16 hex>" (directories, not lock files) in
 * dir; the last one's name into name (may be NULL). */
static inline int fs_spill_count(const char *dir, char name[64])
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        if (strncmp(s, "spill-", 6) != 0 || strlen(s) != 6 + 16 ||
            strspn(s + 6, "0123456789abcdef") != 16)
            continue;
        if (name)
            memcpy(name, s, 6 + 16 + 1);
        n++;
    }
    closedir(d);
    return n;
}

/* The name of the one spill area in dir ("spill-<16 hex>"), in a static
 * buffer; fails the test unless there is exactly one. */
static inline const char *fs_spill_name(const char *dir)
{
    static char name[64];
    int n = fs_spill_count(dir, name);
    cr_assert_eq(n, 1, "%d spill areas in %s, expected 1", n, dir);
    return name;
}

#endif
