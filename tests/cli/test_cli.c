/* test_cli.c -- the fbk command-line tool, driven as a program: every
 * subcommand on lmdb: and file:, byte-exact round trips, --json parsed by
 * python3, damage found by verify, exit statuses, progress only on a
 * terminal.  FBK_TOOL is the built binary (tests/cli/CMakeLists.txt). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct run {
    int status; /* exit status, or 128 + signal */
    char *out, *err;
    size_t out_len, err_len;
} run;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void run_free(run *r)
{
    free(r->out);
    free(r->err);
}

/* Runs argv (argv[0] a program path) with stdin from in_path (NULL: empty),
 * stdout and stderr into files of dir. */
static run run_argv(const char *dir, const char *in_path, char *const argv[])
{
    char op[4200], ep[4200];
    snprintf(op, sizeof op, "%s/.out", dir);
    snprintf(ep, sizeof ep, "%s/.err", dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, in_path ? in_path : "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, op, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, ep, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "spawn %s: %s", argv[0], strerror(rc));
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    run r = {0};
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = slurp(op, &r.out_len);
    r.err = slurp(ep, &r.err_len);
    return r;
}

/* fbk ARGS... (NULL-terminated) */
static run fbk(const char *dir, const char *in_path, ...)
{
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)FBK_TOOL;
    va_list ap;
    va_start(ap, in_path);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 31)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    return run_argv(dir, in_path, argv);
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* python3 checks the JSON document `doc` with the assertion `expr` on d. */
static void json_check(const char *dir, const char *doc, const char *expr)
{
    char jp[4200], prog[2048];
    snprintf(jp, sizeof jp, "%s/.json", dir);
    write_file(jp, doc, strlen(doc));
    snprintf(prog, sizeof prog, "import json,sys; d=json.load(sys.stdin); assert %s, d", expr);
    char *argv[] = {"/usr/bin/python3", "-c", prog, NULL};
    if (access(argv[0], X_OK) != 0)
        cr_skip_test("python3 is not installed");
    run r = run_argv(dir, jp, argv);
    cr_assert_eq(r.status, 0, "json check '%s' failed on %s: %s", expr, doc, r.err);
    run_free(&r);
}

/* put data (len bytes) into URI LOC; returns the key (static). */
static const char *put(const char *dir, const char *uri, const char *loc, const void *data,
                       size_t len)
{
    static char key[64];
    char in[4200];
    snprintf(in, sizeof in, "%s/.in", dir);
    write_file(in, data, len);
    run r = fbk(dir, in, "put", uri, loc, NULL);
    cr_assert_eq(r.status, 0, "put: %s", r.err);
    cr_assert_eq(r.out_len, FBK_KEY_STRLEN + 1, "put printed '%s'", r.out);
    fbk_key k;
    r.out[FBK_KEY_STRLEN] = 0;
    cr_assert_eq(fbk_key_parse(r.out, &k), 0);
    snprintf(key, sizeof key, "%s", r.out);
    run_free(&r);
    return key;
}

static void get_exact(const char *dir, const char *uri, const char *loc, const char *key,
                      const void *data, size_t len)
{
    run r = fbk(dir, NULL, "get", uri, loc, key, NULL);
    cr_assert_eq(r.status, 0, "get %s: %s", key, r.err);
    cr_assert_eq(r.out_len, len, "get %s: %zu bytes, %zu expected", key, r.out_len, len);
    cr_assert(len == 0 || memcmp(r.out, data, len) == 0, "get %s: bytes differ", key);
    run_free(&r);
}

static const size_t sizes[3] = {0, 1, 3u << 20};

/* Every subcommand on one scheme: put/get round trips of 0 B, 1 B, 3 MiB,
 * ls, stat, verify (text and JSON), rm. */
static void roundtrip(const char *scheme)
{
    char dir[4200], uri[4300];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir(scheme));
    snprintf(uri, sizeof uri, "%s:%s/store", scheme, dir);
    char keys[3][64];
    unsigned char *data[3];
    for (int i = 0; i < 3; i++) {
        data[i] = malloc(sizes[i] + 1);
        tu_fill(data[i], sizes[i], (uint64_t)i + 7);
        snprintf(keys[i], sizeof keys[i], "%s", put(dir, uri, "loc", data[i], sizes[i]));
    }
    for (int i = 0; i < 3; i++)
        get_exact(dir, uri, "loc", keys[i], data[i], sizes[i]);

    run r = fbk(dir, NULL, "ls", uri, "loc", NULL);
    cr_assert_eq(r.status, 0, "ls: %s", r.err);
    for (int i = 0; i < 3; i++) {
        char line[256];
        snprintf(line, sizeof line, "%s\t%zu\n", keys[i], sizes[i]);
        cr_assert(strstr(r.out, line), "ls lacks '%s': %s", line, r.out);
    }
    run_free(&r);
    r = fbk(dir, NULL, "ls", uri, "loc", "--json", NULL);
    cr_assert_eq(r.status, 0);
    char expr[512];
    snprintf(expr, sizeof expr,
             "len(d['objects']) == 3 and {o['key']: o['bytes'] for o in d['objects']}['%s'] == %zu",
             keys[2], sizes[2]);
    json_check(dir, r.out, expr);
    run_free(&r);

    r = fbk(dir, NULL, "--json", NULL); /* not an option before the command */
    cr_assert_eq(r.status, 2);
    run_free(&r);
    r = fbk(dir, NULL, "stat", "--json", uri, NULL); /* options anywhere after it */
    cr_assert_eq(r.status, 0, "stat: %s", r.err);
    snprintf(expr, sizeof expr,
             "d['objects'] == 3 and d['bytes'] == %zu and d['locations'][0]['location'] == 'loc' "
             "and d['backend'] == '%s'",
             sizes[0] + sizes[1] + sizes[2], scheme);
    json_check(dir, r.out, expr);
    run_free(&r);
    r = fbk(dir, NULL, "stat", uri, "loc", NULL);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "loc") && strstr(r.out, "3145729"), "%s", r.out);
    run_free(&r);

    r = fbk(dir, NULL, "verify", uri, NULL);
    cr_assert_eq(r.status, 0, "verify: %s%s", r.out, r.err);
    cr_assert(strstr(r.out, "verified 3 objects"), "%s", r.out);
    cr_assert_eq(r.err_len, 0, "stderr is not a terminal, yet: %s", r.err);
    run_free(&r);
    r = fbk(dir, NULL, "verify", uri, "loc", "--json", NULL);
    cr_assert_eq(r.status, 0);
    json_check(dir, r.out,
               "d['objects'] == 3 and d['damaged_objects'] == 0 and d['damaged'] == []");
    run_free(&r);

    r = fbk(dir, NULL, "rm", uri, "loc", keys[1], NULL);
    cr_assert_eq(r.status, 0, "rm: %s", r.err);
    cr_assert_eq(r.out_len, 0);
    run_free(&r);
    r = fbk(dir, NULL, "get", uri, "loc", keys[1], NULL);
    cr_assert_eq(r.status, 1, "get of a removed key: %d", r.status);
    cr_assert_eq(r.out_len, 0);
    cr_assert(strstr(r.err, keys[1]), "%s", r.err);
    run_free(&r);
    r = fbk(dir, NULL, "rm", uri, "loc", keys[1], NULL);
    cr_assert_eq(r.status, 1);
    run_free(&r);
    get_exact(dir, uri, "loc", keys[2], data[2], sizes[2]);
    for (int i = 0; i < 3; i++)
        free(data[i]);
}

Test(cli, roundtrip_lmdb)
{
    roundtrip("lmdb");
}

Test(cli, roundtrip_file)
{
    roundtrip("file");
}

Test(cli, usage_errors_exit_2_with_nothing_on_stdout)
{
    const char *dir = tu_fresh_dir("usage");
    char uri[4300];
    snprintf(uri, sizeof uri, "lmdb:%s/s", dir);
    const char *cases[][6] = {
        {NULL},
        {"frobnicate", NULL},
        {"stat", NULL},
        {"stat", uri, "--bogus", NULL},
        {"ls", uri, NULL},
        {"get", uri, "loc", NULL},
        {"get", uri, "loc", "not-a-key", NULL},
        {"rm", uri, "loc", "1234", NULL},
        {"copy", uri, "a", uri, NULL},
        {"compact", NULL},
        {"verify", uri, "--jobs", "0", NULL},
        {"put", uri, "loc", "extra", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char **c = cases[i];
        run r = fbk(dir, NULL, c[0], c[0] ? c[1] : NULL, c[0] && c[1] ? c[2] : NULL,
                    c[0] && c[1] && c[2] ? c[3] : NULL, c[0] && c[1] && c[2] && c[3] ? c[4] : NULL,
                    NULL);
        cr_assert_eq(r.status, 2, "case %zu (%s): exit %d", i, c[0] ? c[0] : "-", r.status);
        cr_assert_eq(r.out_len, 0, "case %zu: stdout '%s'", i, r.out);
        cr_assert_gt(r.err_len, 0, "case %zu: no message", i);
        run_free(&r);
    }
    /* a store that is not there: a run-time error (2, never 1: "damage or
     * not found"), said as such on both schemes, with or without a
     * location, and nothing is made */
    char furi[4300];
    snprintf(furi, sizeof furi, "file:%s/s", dir);
    const char *missing[][4] = {
        {"stat", uri, NULL},          {"stat", furi, NULL},          {"verify", uri, NULL},
        {"verify", furi, NULL},       {"stat", uri, "loc", NULL},    {"verify", furi, "loc", NULL},
        {"verify", furi, "--json", NULL},
    };
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        const char **c = missing[i];
        run r = fbk(dir, NULL, c[0], c[1], c[2], c[2] ? c[3] : NULL, NULL);
        cr_assert_eq(r.status, 2, "missing store case %zu (%s %s): exit %d: %s", i, c[0], c[1],
                     r.status, r.err);
        cr_assert_eq(r.out_len, 0);
        cr_assert(strstr(r.err, "no store"), "case %zu: %s", i, r.err);
        run_free(&r);
    }
    struct stat st;
    cr_assert_neq(stat(uri + 5, &st), 0, "inspection created the store");
}

Test(cli, help_for_every_command)
{
    const char *dir = tu_fresh_dir("help");
    const char *cmds[] = {"stat", "ls", "get", "put", "rm", "verify", "copy", "compact"};
    for (size_t i = 0; i < 8; i++) {
        run r = fbk(dir, NULL, cmds[i], "--help", NULL);
        cr_assert_eq(r.status, 0);
        cr_assert(strstr(r.out, "usage: fbk ") && strstr(r.out, cmds[i]), "%s", r.out);
        run_free(&r);
    }
    run r = fbk(dir, NULL, "--help", NULL);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "compact"));
    run_free(&r);
}

/* Flips one byte of the file at path at offset off. */
static void flip(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "open %s", path);
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void verify_damaged(const char *dir, const char *uri, const char *key)
{
    run r = fbk(dir, NULL, "verify", uri, NULL);
    cr_assert_eq(r.status, 1, "verify after a flipped byte: exit %d: %s%s", r.status, r.out,
                 r.err);
    cr_assert(strstr(r.out, key) && strstr(r.out, "FBK_ECORRUPT"), "key not named: %s", r.out);
    cr_assert(strstr(r.out, "DAMAGED"), "%s", r.out);
    run_free(&r);
    r = fbk(dir, NULL, "verify", "--json", uri, NULL);
    cr_assert_eq(r.status, 1);
    char expr[256];
    snprintf(expr, sizeof expr,
             "d['damaged_objects'] == 1 and d['damaged'][0]['key'] == '%s' and "
             "d['damaged'][0]['error'] == 'FBK_ECORRUPT'",
             key);
    json_check(dir, r.out, expr);
    run_free(&r);
    r = fbk(dir, NULL, "get", uri, "loc", key, NULL);
    cr_assert_eq(r.status, 2, "get of a damaged object: exit %d", r.status);
    cr_assert_eq(r.out_len, 0);
    run_free(&r);
}

Test(cli, verify_finds_a_flipped_byte_file)
{
    char dir[4200], uri[4300], path[4400];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("damage_file"));
    snprintf(uri, sizeof uri, "file:%s/s", dir);
    unsigned char data[4096];
    tu_fill(data, sizeof data, 1);
    put(dir, uri, "loc", data, sizeof data);
    char key[64];
    snprintf(key, sizeof key, "%s", put(dir, uri, "loc", data, sizeof data));
    fbk_key k;
    char hex[33];
    fbk_key_parse(key, &k);
    fbk_key_format_hex(&k, hex);
    snprintf(path, sizeof path, "%s/s/loc/%.2s/%s", dir, hex, hex);
    flip(path, 24 + 1000);
    verify_damaged(dir, uri, key);
}

Test(cli, verify_finds_a_flipped_byte_lmdb)
{
    char dir[4200], uri[4300], path[4400];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("damage_lmdb"));
    snprintf(uri, sizeof uri, "lmdb:%s/s", dir);
    size_t n = 64 << 10;
    unsigned char *data = malloc(n);
    tu_fill(data, n, 99);
    put(dir, uri, "loc", data + 1, 100);
    char key[64];
    snprintf(key, sizeof key, "%s", put(dir, uri, "loc", data, n));
    /* the value's bytes lie in the durable environment's overflow pages */
    snprintf(path, sizeof path, "%s/s/durable/data.mdb", dir);
    size_t len;
    char *db = slurp(path, &len);
    char *at = memmem(db, len, data + 5000, 64);
    cr_assert(at, "value not found in %s", path);
    flip(path, at - db);
    free(db);
    free(data);
    verify_damaged(dir, uri, key);
}

Test(cli, progress_only_on_a_terminal)
{
    const char *script = "/usr/bin/script";
    if (access(script, X_OK) != 0)
        cr_skip_test("script (bsdutils) is not installed");
    char dir[4200], uri[4300], cmd[9000];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("progress"));
    snprintf(uri, sizeof uri, "file:%s/s", dir);
    put(dir, uri, "loc", "abc", 3);
    /* a pipe: no progress, no escape codes */
    run r = fbk(dir, NULL, "verify", uri, NULL);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.err_len, 0, "progress into a pipe: '%s'", r.err);
    cr_assert(!strchr(r.out, '\033') && !strchr(r.out, '\r'));
    run_free(&r);
    /* a pty (script): the progress line, then cleared */
    snprintf(cmd, sizeof cmd, "%s verify %s", FBK_TOOL, uri);
    char *argv[] = {(char *)script, "-qec", cmd, "/dev/null", NULL};
    r = run_argv(dir, NULL, argv);
    cr_assert_eq(r.status, 0, "%s %s", r.out, r.err);
    cr_assert(strstr(r.out, "verify: ") && strstr(r.out, "objects/s") && strstr(r.out, "ETA"),
              "no progress on a terminal: %s", r.out);
    cr_assert(strstr(r.out, "\033[K"), "%s", r.out);
    cr_assert(strstr(r.out, "verified 1 objects"), "%s", r.out);
    run_free(&r);
}

/* copy keeps keys, is byte-exact, synced, and resumes. */
static void copy_between(const char *from, const char *to)
{
    char dir[4200], u1[4300], u2[4300], name[64];
    snprintf(name, sizeof name, "copy_%s_%s", from, to);
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir(name));
    snprintf(u1, sizeof u1, "%s:%s/a", from, dir);
    snprintf(u2, sizeof u2, "%s:%s/b", to, dir);
    char keys[3][64];
    unsigned char *data[3];
    for (int i = 0; i < 3; i++) {
        data[i] = malloc(sizes[i] + 1);
        tu_fill(data[i], sizes[i], (uint64_t)i + 40);
        snprintf(keys[i], sizeof keys[i], "%s", put(dir, u1, "src", data[i], sizes[i]));
    }
    run r = fbk(dir, NULL, "copy", u1, "src", u2, "dst", "--json", NULL);
    cr_assert_eq(r.status, 0, "copy: %s", r.err);
    json_check(dir, r.out, "d['copied'] == 3 and d['skipped'] == 0 and d['bytes'] == 3145729");
    run_free(&r);
    for (int i = 0; i < 3; i++)
        get_exact(dir, u2, "dst", keys[i], data[i], sizes[i]);
    /* an interrupted copy: one object missing in the destination */
    r = fbk(dir, NULL, "rm", u2, "dst", keys[2], NULL);
    cr_assert_eq(r.status, 0);
    run_free(&r);
    r = fbk(dir, NULL, "copy", u1, "src", u2, "dst", NULL);
    cr_assert_eq(r.status, 0, "copy again: %s", r.err);
    cr_assert(strstr(r.out, "copied 1 objects") && strstr(r.out, "2 objects and 0 names were"),
              "%s", r.out);
    run_free(&r);
    get_exact(dir, u2, "dst", keys[2], data[2], sizes[2]);
    r = fbk(dir, NULL, "verify", u2, "dst", NULL);
    cr_assert_eq(r.status, 0);
    run_free(&r);
    for (int i = 0; i < 3; i++)
        free(data[i]);
}

Test(cli, copy_file_to_lmdb)
{
    copy_between("file", "lmdb");
}

Test(cli, copy_lmdb_to_file)
{
    copy_between("lmdb", "file");
}

Test(cli, copy_within_one_store)
{
    char dir[4200], uri[4300];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("copy_same"));
    snprintf(uri, sizeof uri, "lmdb:%s/s", dir);
    char key[64];
    snprintf(key, sizeof key, "%s", put(dir, uri, "a", "hello", 5));
    run r = fbk(dir, NULL, "copy", uri, "a", uri, "b", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    get_exact(dir, uri, "b", key, "hello", 5);
}

Test(cli, copy_does_not_copy_damage)
{
    char dir[4200], u1[4300], u2[4300], path[4400];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("copy_damage"));
    snprintf(u1, sizeof u1, "file:%s/a", dir);
    snprintf(u2, sizeof u2, "lmdb:%s/b", dir);
    char key[64];
    snprintf(key, sizeof key, "%s", put(dir, u1, "loc", "0123456789", 10));
    put(dir, u1, "loc", "fine", 4);
    fbk_key k;
    char hex[33];
    fbk_key_parse(key, &k);
    fbk_key_format_hex(&k, hex);
    snprintf(path, sizeof path, "%s/a/loc/%.2s/%s", dir, hex, hex);
    flip(path, 24 + 3);
    run r = fbk(dir, NULL, "copy", u1, "loc", u2, "loc", NULL);
    cr_assert_eq(r.status, 1, "copy of a damaged object: exit %d", r.status);
    cr_assert(strstr(r.err, key) && strstr(r.err, "checksum"), "%s", r.err);
    run_free(&r);
    r = fbk(dir, NULL, "get", u2, "loc", key, NULL);
    cr_assert_eq(r.status, 1, "the damaged object was copied");
    run_free(&r);
}

Test(cli, compact_lmdb_gives_space_back_and_keeps_every_object)
{
    char dir[4200], uri[4300];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("compact_lmdb"));
    snprintf(uri, sizeof uri, "lmdb:%s/s", dir);
    size_t n = 1 << 20;
    unsigned char *data = malloc(n);
    char keys[8][64];
    for (int i = 0; i < 8; i++) {
        tu_fill(data, n, (uint64_t)i);
        snprintf(keys[i], sizeof keys[i], "%s", put(dir, uri, "loc", data, n));
    }
    for (int i = 0; i < 7; i++) {
        run r = fbk(dir, NULL, "rm", uri, "loc", keys[i], NULL);
        cr_assert_eq(r.status, 0);
        run_free(&r);
    }
    run r = fbk(dir, NULL, "compact", uri, "--json", NULL);
    cr_assert_eq(r.status, 0, "compact: %s", r.err);
    json_check(dir, r.out, "d['bytes_after'] + 5 * 2**20 < d['bytes_before']");
    run_free(&r);
    get_exact(dir, uri, "loc", keys[7], data, n);
    r = fbk(dir, NULL, "verify", uri, NULL);
    cr_assert_eq(r.status, 0);
    run_free(&r);
    r = fbk(dir, NULL, "compact", uri, NULL);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, " -> ") && strstr(r.out, "bytes"), "%s", r.out);
    run_free(&r);
    free(data);
}

Test(cli, compact_is_refused_while_a_program_has_the_store_open)
{
    char dir[4200], uri[4300];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("compact_busy"));
    snprintf(uri, sizeof uri, "lmdb:%s/s", dir);
    put(dir, uri, "loc", "x", 1);
    fbk_store *s;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    run r = fbk(dir, NULL, "compact", uri, NULL);
    cr_assert_eq(r.status, 2);
    cr_assert_eq(r.out_len, 0);
    cr_assert(strstr(r.err, "open in a program"), "%s", r.err);
    run_free(&r);
    fbk_store_close(s);
}

Test(cli, compact_file_removes_empty_shards_and_temporaries)
{
    char dir[4200], uri[4300], tmp[4400];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("compact_file"));
    snprintf(uri, sizeof uri, "file:%s/s", dir);
    char key[64];
    snprintf(key, sizeof key, "%s", put(dir, uri, "loc", "abc", 3));
    snprintf(tmp, sizeof tmp, "%s/s/loc/00/.tmp-0123", dir);
    write_file(tmp, "junk", 4);
    /* refs (backends/file/file_refs.c): one whose object is gone goes, one
     * beside the object stays */
    char hex[33], dead[4500], live[4500];
    for (int i = 0, j = 0; key[i] && j < 32; i++)
        if (key[i] != '-')
            hex[j++] = key[i], hex[j] = '\0';
    snprintf(dead, sizeof dead, "%s/s/loc/00/00112233445566778899aabbccddeeff.name-%032d", dir, 7);
    write_file(dead, "", 0);
    snprintf(live, sizeof live, "%s/s/loc/%.2s/%s.name-%032d", dir, hex, hex, 7);
    write_file(live, "", 0);
    run r = fbk(dir, NULL, "compact", uri, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    struct stat st;
    cr_assert_neq(stat(tmp, &st), 0, "temporary left");
    cr_assert_neq(stat(dead, &st), 0, "a ref of a missing object left");
    cr_assert_eq(stat(live, &st), 0, "the ref of a present object was removed");
    int shards = 0;
    for (int i = 0; i < 256; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/s/loc/%02x", dir, i);
        shards += stat(p, &st) == 0;
    }
    cr_assert_eq(shards, 1, "%d shard directories left", shards);
    get_exact(dir, uri, "loc", key, "abc", 3);
}

/* file: spill areas are DIR/spill-<id> (with DIR/spill-<id>.lock): stat
 * lists no spill area as a location but does list a location whose name
 * merely begins with "spill"; compact removes dead stores' spill areas (the
 * DIR/spill of earlier versions too) and nothing else. */
Test(cli, file_spill_areas_are_not_locations_and_compact_removes_dead_ones)
{
    char dir[4200], uri[4300], p[4500];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("cli_spill_areas"));
    snprintf(uri, sizeof uri, "file:%s/s", dir);
    char key[64];
    snprintf(key, sizeof key, "%s", put(dir, uri, "spillway", "abc", 3));
    static const char *const dead[] = {"spill", "spill-0123456789abcdef"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/s/%s", dir, dead[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/s/%s/00", dir, dead[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/s/%s/00/00000000000000000000000000000000", dir, dead[i]);
        write_file(p, "old", 3);
    }
    snprintf(p, sizeof p, "%s/s/spill-0123456789abcdef.lock", dir);
    write_file(p, "", 0);
    snprintf(p, sizeof p, "%s/s/spill-notes", dir);
    write_file(p, "mine", 4);
    run r = fbk(dir, NULL, "stat", uri, "--json", NULL);
    cr_assert_eq(r.status, 0, "stat: %s", r.err);
    json_check(dir, r.out,
               "[l['location'] for l in d['locations']] == ['spillway'] and d['objects'] == 1");
    run_free(&r);
    r = fbk(dir, NULL, "compact", uri, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    struct stat st;
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/s/%s", dir, dead[i]);
        cr_assert_neq(stat(p, &st), 0, "%s left by compact", dead[i]);
    }
    snprintf(p, sizeof p, "%s/s/spill-0123456789abcdef.lock", dir);
    cr_assert_neq(stat(p, &st), 0, "a dead lock file left by compact");
    snprintf(p, sizeof p, "%s/s/spill-notes", dir);
    cr_assert_eq(stat(p, &st), 0, "compact removed a file that is not a spill area");
    get_exact(dir, uri, "spillway", key, "abc", 3);
}

#ifdef FBK_STORE_READONLY
Test(cli, inspection_works_while_a_program_has_the_store_open)
{
    const char *schemes[] = {"lmdb", "file"};
    for (int i = 0; i < 2; i++) {
        char dir[4200], uri[4300];
        snprintf(dir, sizeof dir, "%s", tu_fresh_dir(schemes[i]));
        snprintf(uri, sizeof uri, "%s:%s/s", schemes[i], dir);
        char key[64];
        snprintf(key, sizeof key, "%s", put(dir, uri, "loc", "abc", 3));
        fbk_store *s; /* the program: this process holds the store open */
        cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
        run r = fbk(dir, NULL, "stat", uri, NULL);
        cr_assert_eq(r.status, 0, "stat beside a program: %s", r.err);
        run_free(&r);
        r = fbk(dir, NULL, "ls", uri, "loc", NULL);
        cr_assert_eq(r.status, 0, "ls beside a program: %s", r.err);
        run_free(&r);
        get_exact(dir, uri, "loc", key, "abc", 3);
        r = fbk(dir, NULL, "verify", uri, NULL);
        cr_assert_eq(r.status, 0, "verify beside a program: %s", r.err);
        run_free(&r);
        fbk_store_close(s);
    }
}
#endif

#ifdef FBK_NAME_MAX
/* --name on put/get/rm, names in ls/stat/verify, names carried by copy. */
static void names(const char *scheme)
{
    char dir[4200], uri[4300], u2[4300], in[4400], name[64];
    snprintf(name, sizeof name, "names_%s", scheme);
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir(name));
    snprintf(uri, sizeof uri, "%s:%s/s", scheme, dir);
    snprintf(u2, sizeof u2, "lmdb:%s/copy", dir);
    snprintf(in, sizeof in, "%s/.in", dir);
    write_file(in, "hello", 5);
    run r = fbk(dir, in, "put", uri, "m", "--name", "greeting", NULL);
    cr_assert_eq(r.status, 0, "put --name: %s", r.err);
    char key[64];
    snprintf(key, sizeof key, "%.36s", r.out);
    run_free(&r);
    write_file(in, "", 0);
    r = fbk(dir, in, "put", uri, "m", "--name=odd\\x01name", "--json", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    json_check(dir, r.out, "d['name_hex'] == '6f6464016e616d65' and d['bytes'] == 0");
    run_free(&r);

    r = fbk(dir, NULL, "get", uri, "m", "--name", "greeting", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(r.out_len == 5 && !memcmp(r.out, "hello", 5));
    run_free(&r);
    r = fbk(dir, NULL, "ls", uri, "m", NULL);
    cr_assert_eq(r.status, 0);
    char line[128];
    snprintf(line, sizeof line, "greeting\t%s\t5\n", key);
    cr_assert(strstr(r.out, line) && strstr(r.out, "odd\\x01name\t"), "%s", r.out);
    run_free(&r);
    r = fbk(dir, NULL, "stat", uri, "--json", NULL);
    json_check(dir, r.out, "d['locations'][0]['names'] == 2 and len(d['locations']) == 1");
    run_free(&r);
    r = fbk(dir, NULL, "verify", uri, "--json", NULL);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    json_check(dir, r.out, "d['names'] == 2 and d['damaged'] == []");
    run_free(&r);

    r = fbk(dir, NULL, "copy", uri, "m", u2, "m", "--json", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    json_check(dir, r.out, "d['copied'] == 2 and d['names'] == 2");
    run_free(&r);
    r = fbk(dir, NULL, "copy", uri, "m", u2, "m", "--json", NULL);
    json_check(dir, r.out, "d['copied'] == 0 and d['names_skipped'] == 2");
    run_free(&r);
    r = fbk(dir, NULL, "get", u2, "m", "--name", "greeting", NULL);
    cr_assert(r.status == 0 && r.out_len == 5 && !memcmp(r.out, "hello", 5), "%s", r.err);
    run_free(&r);

    r = fbk(dir, NULL, "rm", uri, "m", key, NULL); /* would leave a name dangling */
    cr_assert_eq(r.status, 2);
    run_free(&r);
    r = fbk(dir, NULL, "rm", uri, "m", "--name", "greeting", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    r = fbk(dir, NULL, "get", uri, "m", "--name", "greeting", NULL);
    cr_assert_eq(r.status, 1);
    cr_assert_eq(r.out_len, 0);
    run_free(&r);
    r = fbk(dir, NULL, "rm", uri, "m", "--name", "greeting", NULL);
    cr_assert_eq(r.status, 1);
    run_free(&r);
}

Test(cli, names_lmdb)
{
    names("lmdb");
}

Test(cli, names_file)
{
    names("file");
}
#endif

#ifdef FBK_NAME_MAX
/* A name whose object is gone from the location is damage: named, exit 1. */
Test(cli, verify_finds_a_name_whose_object_is_gone)
{
    char dir[4200], uri[4300], in[4400], path[4500];
    snprintf(dir, sizeof dir, "%s", tu_fresh_dir("dangling_name"));
    snprintf(uri, sizeof uri, "file:%s/s", dir);
    snprintf(in, sizeof in, "%s/.in", dir);
    write_file(in, "hello", 5);
    run r = fbk(dir, in, "put", uri, "m", "--name", "lost", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    fbk_key k;
    r.out[FBK_KEY_STRLEN] = 0;
    cr_assert_eq(fbk_key_parse(r.out, &k), 0);
    run_free(&r);
    r = fbk(dir, in, "put", uri, "m", "--name", "kept", NULL);
    run_free(&r);
    char hex[33];
    fbk_key_format_hex(&k, hex);
    snprintf(path, sizeof path, "%s/s/m/%.2s/%s", dir, hex, hex);
    cr_assert_eq(unlink(path), 0, "%s", path);
    r = fbk(dir, NULL, "verify", uri, NULL);
    cr_assert_eq(r.status, 1, "exit %d: %s%s", r.status, r.out, r.err);
    cr_assert(strstr(r.out, "damaged name: m name 'lost'") && !strstr(r.out, "'kept'"), "%s",
              r.out);
    run_free(&r);
    r = fbk(dir, NULL, "verify", uri, "m", "--json", NULL);
    cr_assert_eq(r.status, 1);
    json_check(dir, r.out,
               "d['damaged_names'] == 1 and d['damaged'][0]['kind'] == 'name' and "
               "d['damaged'][0]['name'] == 'lost' and d['names'] == 2");
    run_free(&r);
}
#endif
