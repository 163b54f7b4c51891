/* scan_fuzzer -- the file: backend's scan of a location directory, fed
 * arbitrary names and contents.
 *
 * The input is decoded into up to 24 directory entries of a location
 * (LOC/00..ff/<32 hex>): valid keys in their shard, keys in the wrong
 * shard, near-keys (uppercase, 31/33 characters, a non-hex digit),
 * temporaries (.tmp-*), subdirectories and symlinks under key names, files
 * and symlinks named like shards at the root, and other root names (a
 * user's manifest); contents are valid frames (made through the public API
 * at start-up), truncated / flipped / extended frames, garbage or nothing.
 * An input of even length gets the location's marker (.fbk-location), an
 * odd one none (an earlier version's location, or a stranger's directory).
 * Then fbk_location_open scans it on a file: store, and every listed key is
 * registered and loaded.  Checked against a model built while decoding:
 *   - an unmarked directory is used only when it is empty, or when nothing
 *     in it is foreign and it has a shard directory; otherwise the open is
 *     FBK_EINVAL and the tree is left exactly as it was;
 *   - the listed keys are exactly the valid key files, the junk count is
 *     exactly the number of libfbk temporaries (the only entries deleted),
 *     the foreign count exactly the number of other entries in the shards
 *     (and shard-named non-directories), all of which remain with the keys,
 *     the shards and the untouched root names (symlink targets outside the
 *     location survive);
 *   - a load gives back exactly the frame's payload when the file holds a
 *     valid frame (checked here independently: magic, version, reserved,
 *     length, XXH3) and FBK_ECORRUPT otherwise -- never wrong bytes.
 * Any mismatch traps.  One store is opened for the whole run. */
#include <fbk.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "scan_fuzzer: %s:%d: check failed: %s (last error: %s)\n", __FILE__,   \
                    __LINE__, #c, fbk_errmsg());                                                   \
            __builtin_trap();                                                                      \
        }                                                                                          \
    } while (0)

enum { NKEYS = 8, NFRAMES = 4, MAXREC = 24, MAXFILE = 4096 };

/* Keys of the names; 0 and 1 share shard "3a", 2 and 3 shard "00". */
static const char *const key_hex[NKEYS] = {
    "3a5f0c2e9b1d4e7f8a6b2c3d4e5f6a7b", "3a00ffeeddcc4bbaa998877665544332",
    "00112233445566778899aabbccddeeff", "00ffffffffff4fffbfffffffffffffff",
    "ffeeddccbbaa49887766554433221100", "7e57c0de00004000800000000000beef",
    "c0ffee00c0ff4ee0a0c0ffee00c0ffee", "0123456789ab4cdef0123456789abcde",
};

static char base[4096];     /* scratch directory */
static char locdir[4200];   /* the location under test */
static char outside[4200];  /* targets of symlinks: must survive the scan */
static fbk_store *store;
static unsigned char *frames[NFRAMES];
static size_t frame_len[NFRAMES];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rmtree(const char *path) { (void)nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS); }

static void mkdir_p(const char *path)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", path) >= sizeof tmp)
        return;
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            (void)mkdir(tmp, 0755);
            *p = '/';
        }
    (void)mkdir(tmp, 0755);
}

static int write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int ok = len == 0 || write(fd, buf, len) == (ssize_t)len;
    close(fd);
    return ok ? 0 : -1;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) == 0 && (buf = malloc((size_t)st.st_size + 1)) &&
        read(fd, buf, (size_t)st.st_size) != st.st_size) {
        free(buf);
        buf = NULL;
    }
    close(fd);
    if (buf)
        *len = (size_t)st.st_size;
    return buf;
}

static uint64_t le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The frame rules of docs/formats.md, checked independently of src/frame.c. */
static int frame_valid(const unsigned char *p, size_t len)
{
    return len >= 24 && memcmp(p, "FBKB", 4) == 0 && p[4] == 1 && (p[5] | p[6] | p[7]) == 0 &&
           le64(p + 8) == len - 24 && le64(p + 16) == XXH3_64bits(p + 24, len - 24);
}

static void cleanup(void)
{
    fbk_store_close(store);
    store = NULL;
    rmtree(base);
    const char *t = getenv("FBK_TEST_DIR");
    if (t && *t)
        (void)rmdir(t); /* the per-build folder (in /dev/shm), once empty */
}

/* Opens the store and makes NFRAMES valid frames by persisting blobs to a
 * location and reading the files back. */
static void init(void)
{
    const char *t = getenv("FBK_TEST_DIR");
    if (t && *t) {
        snprintf(base, sizeof base, "%s/scan-%ld", t, (long)getpid());
        rmtree(base);
        mkdir_p(base);
    } else {
        snprintf(base, sizeof base, "/tmp/fbk-scan-XXXXXX");
        CHECK(mkdtemp(base) != NULL);
    }
    snprintf(locdir, sizeof locdir, "%s/loc", base);
    snprintf(outside, sizeof outside, "%s/outside", base);
    char uri[4300], proto[4300];
    snprintf(uri, sizeof uri, "file:%s/store", base);
    snprintf(proto, sizeof proto, "%s/proto", base);
    CHECK(fbk_store_open(&store, uri, NULL) == 0);
    atexit(cleanup);

    fbk_pool *p;
    fbk_location *loc;
    CHECK(fbk_pool_create(&p, store, &fbk_blob_codec, 4) == 0);
    CHECK(fbk_location_open(store, proto, &loc) == 0);
    static const size_t lens[NFRAMES] = {0, 1, 57, 3000};
    for (int i = 0; i < NFRAMES; i++) {
        fbk_blob *b = fbk_blob_new(NULL, lens[i]);
        CHECK(b != NULL);
        for (size_t k = 0; k < lens[i]; k++)
            b->data[k] = (unsigned char)(k * 31 + (size_t)i * 7 + 1);
        fbk_handle *h;
        CHECK(fbk_insert(p, b, &h) == 0);
        CHECK(fbk_persist(h, loc) == 0);
        fbk_key key;
        fbk_handle_key(h, &key);
        char hex[33], path[4400];
        fbk_key_format_hex(&key, hex);
        snprintf(path, sizeof path, "%s/%.2s/%s", proto, hex, hex);
        frames[i] = read_file(path, &frame_len[i]);
        CHECK(frames[i] != NULL && frame_valid(frames[i], frame_len[i]));
        CHECK(frame_len[i] == 24 + lens[i]);
        fbk_handle_release(h);
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    CHECK(fbk_store_drain(store) == 0);

    /* symlink targets: a valid frame file and a directory with one */
    mkdir_p(outside);
    char path[4400];
    snprintf(path, sizeof path, "%s/frame", outside);
    CHECK(write_file(path, frames[2], frame_len[2]) == 0);
    snprintf(path, sizeof path, "%s/dir/3a", outside);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/dir/3a/%s", outside, key_hex[0]);
    CHECK(write_file(path, frames[1], frame_len[1]) == 0);
}

/* ------------------------------------------------------------- decoding */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static uint8_t rd(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

/* The model: key files (name -> content) and how much junk there is. */
typedef struct model {
    int nkeys;
    char key_name[MAXREC][33];
    unsigned char *content[MAXREC];
    size_t content_len[MAXREC];
    int junk;    /* libfbk temporaries: deleted */
    int foreign; /* anything else not a key in the shards: left alone */
    int nroot;
    char root_name[MAXREC][16]; /* other root names: never touched */
} model;

static int path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Content for a file, chosen by c; returns a malloc'ed buffer. */
static unsigned char *make_content(reader *r, size_t *len)
{
    uint8_t c = rd(r), a = rd(r);
    const unsigned char *f = frames[a % NFRAMES];
    size_t fl = frame_len[a % NFRAMES];
    unsigned char *buf = malloc(MAXFILE + 2);
    if (!buf)
        abort();
    switch (c % 6) {
    case 0: /* a valid frame */
        memcpy(buf, f, fl);
        *len = fl;
        break;
    case 1: { /* garbage from the input */
        size_t n = rd(r) % 64;
        for (size_t i = 0; i < n; i++)
            buf[i] = rd(r);
        *len = n;
        break;
    }
    case 2: /* truncated */
        memcpy(buf, f, fl);
        *len = fl ? rd(r) % fl : 0;
        break;
    case 3: { /* one bit flipped */
        memcpy(buf, f, fl);
        size_t at = ((size_t)rd(r) << 8 | rd(r)) % fl;
        buf[at] ^= (unsigned char)(1u << (rd(r) % 8));
        *len = fl;
        break;
    }
    case 4: /* empty */
        *len = 0;
        break;
    default: /* one byte too many */
        memcpy(buf, f, fl);
        buf[fl] = rd(r);
        *len = fl + 1;
    }
    return buf;
}

/* LOC/<shard> as a directory; -1 if that name is taken by something else
 * (a file or symlink made by an earlier entry). */
static int shard_dir(const char *shard, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", locdir, shard);
    (void)mkdir(out, 0755);
    struct stat st;
    return lstat(out, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* path = LOC/<shard>/<name>, the shard made a directory; -1 if the shard
 * is not a directory or the name is taken already. */
static int free_path(const char *shard, const char *name, char *path, size_t cap)
{
    char dir[4300];
    if (shard_dir(shard, dir, sizeof dir) != 0)
        return -1;
    snprintf(path, cap, "%s/%s", dir, name);
    return path_exists(path) ? -1 : 0;
}

/* Decodes one entry and creates it; updates the model. */
static void one_entry(reader *r, model *m)
{
    uint8_t kind = rd(r) % 13, ki = rd(r);
    const char *hex = key_hex[ki % NKEYS];
    char shard[3] = {hex[0], hex[1], 0};
    char path[4400], name[64];
    size_t len = 0;
    unsigned char *content = NULL;
    switch (kind) {
    case 0:
    case 1:
    case 2:
    case 3: /* a valid key in its shard */
        if (free_path(shard, hex, path, sizeof path) != 0)
            return;
        content = make_content(r, &len);
        CHECK(write_file(path, content, len) == 0);
        snprintf(m->key_name[m->nkeys], 33, "%s", hex);
        m->content[m->nkeys] = content;
        m->content_len[m->nkeys] = len;
        m->nkeys++;
        return;
    case 4: /* a key in the wrong shard */
        snprintf(shard, sizeof shard, "%02x", (unsigned)((strtoul(shard, NULL, 16) + 1 + ki / NKEYS) & 0xff));
        snprintf(name, sizeof name, "%s", hex);
        break;
    case 5: { /* near-keys */
        snprintf(name, sizeof name, "%s", hex);
        uint8_t how = rd(r);
        size_t at = 2 + how / 8 % 30; /* keep the shard prefix */
        switch (how % 4) {
        case 0: name[at] = (char)(name[at] >= 'a' ? name[at] - 32 : 'A'); break;
        case 1: name[31] = 0; break;
        case 2: name[32] = 'a'; name[33] = 0; break;
        default: name[at] = 'g';
        }
        break;
    }
    case 6: /* a temporary left by a crash */
        snprintf(name, sizeof name, ".tmp-%s-%016x", hex, (unsigned)rd(r));
        break;
    case 7: { /* a directory under a key name, with things inside */
        if (free_path(shard, hex, path, sizeof path) != 0)
            return;
        CHECK(mkdir(path, 0755) == 0);
        char sub[4500];
        snprintf(sub, sizeof sub, "%s/%s", path, hex);
        CHECK(write_file(sub, frames[0], frame_len[0]) == 0);
        if (rd(r) & 1) {
            snprintf(sub, sizeof sub, "%s/d/e", path);
            mkdir_p(sub);
        }
        m->foreign++;
        return;
    }
    case 8: /* a symlink under a key name, to a valid frame outside */
        if (free_path(shard, hex, path, sizeof path) != 0)
            return;
        {
            char target[4300];
            snprintf(target, sizeof target, "%s/frame", outside);
            CHECK(symlink(target, path) == 0);
        }
        m->foreign++;
        return;
    case 9: /* a file named like a shard at the root */
    case 10: { /* ... or a symlink to a directory holding a key */
        snprintf(path, sizeof path, "%s/%s", locdir, shard);
        if (path_exists(path))
            return;
        if (kind == 9) {
            content = make_content(r, &len);
            CHECK(write_file(path, content, len) == 0);
            free(content);
        } else {
            char target[4300];
            snprintf(target, sizeof target, "%s/dir/3a", outside);
            CHECK(symlink(target, path) == 0);
        }
        m->foreign++;
        return;
    }
    default: { /* other names at the root: a user's, never touched */
        static const char *const others[] = {"MANIFEST", "AB", "3A", "0", "abc", "manifest.tmp",
                                             ".tmp-x", "g0"};
        const char *o = others[ki % 8];
        snprintf(path, sizeof path, "%s/%s", locdir, o);
        if (path_exists(path))
            return;
        content = make_content(r, &len);
        CHECK(write_file(path, content, len) == 0);
        free(content);
        snprintf(m->root_name[m->nroot++], 16, "%s", o);
        return;
    }
    }
    /* kinds 4-6: a file `name` in `shard`: a temporary is junk, the rest
     * foreign */
    if (free_path(shard, name, path, sizeof path) != 0)
        return;
    content = make_content(r, &len);
    CHECK(write_file(path, content, len) == 0);
    free(content);
    if (kind == 6)
        m->junk++;
    else
        m->foreign++;
}

/* What a tree holds, to see that a refused open left it as it was: the
 * entries (recursively, symlinks not followed), their sizes summed, and
 * the shard directories at its top. */
typedef struct tree_sum {
    long entries;
    long long bytes;
    long shard_dirs;
} tree_sum;

static tree_sum *g_sum;

static int sum_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)flag;
    if (ftw->level == 0)
        return 0;
    g_sum->entries++;
    g_sum->bytes += S_ISREG(sb->st_mode) ? (long long)sb->st_size : 0;
    const char *n = path + ftw->base;
    if (ftw->level == 1 && S_ISDIR(sb->st_mode) && strlen(n) == 2 &&
        strspn(n, "0123456789abcdef") == 2)
        g_sum->shard_dirs++;
    return 0;
}

static int tree_walk(const char *path, tree_sum *sum)
{
    g_sum = sum;
    return nftw(path, sum_one, 32, FTW_PHYS);
}

static int model_find(const model *m, const char *hex)
{
    for (int i = 0; i < m->nkeys; i++)
        if (strcmp(m->key_name[i], hex) == 0)
            return i;
    return -1;
}

/* After the scan: the root holds the marker, shard directories, the user's
 * names and the foreign shard-named entries; each shard key files of the
 * model and foreign entries, no temporary. */
static void check_tree(const model *m)
{
    int foreign_seen = 0;
    DIR *d = opendir(locdir);
    CHECK(d != NULL);
    struct dirent *de;
    int keys_seen = 0, roots_seen = 0;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
            continue;
        char path[4600];
        snprintf(path, sizeof path, "%s/%s", locdir, n);
        int root_other = 0;
        for (int i = 0; i < m->nroot; i++)
            root_other |= strcmp(m->root_name[i], n) == 0;
        if (root_other) {
            roots_seen++;
            continue;
        }
        if (strcmp(n, ".fbk-location") == 0)
            continue;
        struct stat st;
        CHECK(lstat(path, &st) == 0);
        CHECK(strlen(n) == 2);
        if (!S_ISDIR(st.st_mode)) {
            foreign_seen++; /* a file or symlink by a shard's name */
            continue;
        }
        DIR *s = opendir(path);
        CHECK(s != NULL);
        struct dirent *se;
        while ((se = readdir(s)) != NULL) {
            if (strcmp(se->d_name, ".") == 0 || strcmp(se->d_name, "..") == 0)
                continue;
            struct stat sst;
            CHECK(fstatat(dirfd(s), se->d_name, &sst, AT_SYMLINK_NOFOLLOW) == 0);
            if (model_find(m, se->d_name) >= 0 && strncmp(se->d_name, n, 2) == 0 &&
                S_ISREG(sst.st_mode)) {
                keys_seen++;
                continue;
            }
            /* a temporary's name: the scan deletes those */
            CHECK(!(strncmp(se->d_name, ".tmp-", 5) == 0 && strlen(se->d_name) == 54 &&
                    S_ISREG(sst.st_mode)));
            foreign_seen++;
        }
        closedir(s);
    }
    closedir(d);
    CHECK(keys_seen == m->nkeys);
    CHECK(roots_seen == m->nroot);
    CHECK(foreign_seen == m->foreign);
    /* nothing outside the location was followed */
    char path[4400];
    snprintf(path, sizeof path, "%s/frame", outside);
    CHECK(path_exists(path));
    snprintf(path, sizeof path, "%s/dir/3a/%s", outside, key_hex[0]);
    CHECK(path_exists(path));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!store)
        init();
    rmtree(locdir);
    CHECK(mkdir(locdir, 0755) == 0);

    reader r = {data, size};
    model m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < MAXREC && r.n > 0; i++)
        one_entry(&r, &m);

    int marked = size % 2 == 0;
    char marker[4300];
    snprintf(marker, sizeof marker, "%s/.fbk-location", locdir);
    if (marked)
        CHECK(write_file(marker, "", 0) == 0);
    tree_sum before = {0, 0, 0}, after = {0, 0, 0};
    CHECK(tree_walk(locdir, &before) == 0);
    int usable = marked || before.entries == 0 || (m.foreign == 0 && before.shard_dirs > 0);

    fbk_location *loc;
    int rc = fbk_location_open(store, locdir, &loc);
    if (!usable) {
        CHECK(rc == FBK_EINVAL);
        CHECK(strstr(fbk_errmsg(), "not a libfbk location") != NULL);
        CHECK(tree_walk(locdir, &after) == 0);
        CHECK(memcmp(&before, &after, sizeof before) == 0);
        CHECK(!path_exists(marker));
        for (int i = 0; i < m.nkeys; i++)
            free(m.content[i]);
        return 0;
    }
    CHECK(rc == 0);
    CHECK(path_exists(marker));
    CHECK(fbk_location_count(loc) == (size_t)m.nkeys);
    CHECK(fbk_location_junk_removed(loc) == (size_t)m.junk);
    CHECK(fbk_location_foreign_entries(loc) == (size_t)m.foreign);
    fbk_key listed[MAXREC];
    CHECK(fbk_location_keys(loc, listed, MAXREC) == (size_t)m.nkeys);
    check_tree(&m);

    fbk_pool *p;
    CHECK(fbk_pool_create(&p, store, &fbk_blob_codec, 2) == 0);
    for (int i = 0; i < m.nkeys; i++) {
        char hex[33];
        fbk_key_format_hex(&listed[i], hex);
        int k = model_find(&m, hex);
        CHECK(k >= 0);
        for (int j = 0; j < i; j++)
            CHECK(!fbk_key_equal(&listed[j], &listed[i])); /* listed once */
        CHECK(fbk_location_contains(loc, &listed[i]));
        fbk_handle *h;
        CHECK(fbk_register(p, loc, &listed[i], &h) == 0);
        const unsigned char *c = m.content[k];
        size_t cl = m.content_len[k];
        for (int pass = 0; pass < 2; pass++) {
            const void *obj;
            int lrc = fbk_load(h, &obj);
            if (frame_valid(c, cl)) {
                CHECK(lrc == 0);
                const fbk_blob *b = obj;
                CHECK(b->len == cl - 24 && memcmp(b->data, c + 24, b->len) == 0);
                fbk_unload(h);
            } else {
                CHECK(lrc == FBK_ECORRUPT); /* and it stays so: never wrong bytes */
                CHECK(fbk_errmsg()[0] != '\0');
            }
        }
        fbk_handle_release(h);
    }
    fbk_pool_release(p);
    fbk_location_close(loc);
    CHECK(fbk_store_drain(store) == 0);
    for (int i = 0; i < m.nkeys; i++)
        free(m.content[i]);
    return 0;
}
