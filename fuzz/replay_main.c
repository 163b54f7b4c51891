/* replay_main.c -- a standalone driver for the fuzz targets, so they build
 * and run without clang's libFuzzer runtime.
 *
 *   TARGET_replay FILE|DIR ...        run every file (directories: each file in it)
 *   TARGET_replay --random N SEED DIR mutate the files of DIR (or nothing) N times
 *
 * Exit status 0 when every input ran; a bug in the target shows as a crash or
 * a sanitizer report. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uint8_t *data;
    size_t size;
} input;

static input inputs[4096];
static size_t ninputs;

static int read_file(const char *path, input *in)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    in->data = malloc(n > 0 ? (size_t)n : 1);
    in->size = n > 0 ? (size_t)n : 0;
    size_t got = in->size ? fread(in->data, 1, in->size, f) : 0;
    fclose(f);
    return got == in->size ? 0 : -1;
}

static void collect(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: cannot stat %s\n", path);
        exit(2);
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            collect(sub);
        }
        if (d)
            closedir(d);
        return;
    }
    if (ninputs < sizeof inputs / sizeof inputs[0] && read_file(path, &inputs[ninputs]) == 0)
        ninputs++;
}

static uint64_t rng;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "--random") == 0) {
        unsigned long n = strtoul(argv[2], NULL, 10);
        rng = strtoull(argv[3], NULL, 10) | 1;
        for (int i = 4; i < argc; i++)
            collect(argv[i]);
        uint8_t buf[8192];
        for (unsigned long it = 0; it < n; it++) {
            size_t len = 0;
            if (ninputs && next() % 4) {
                input *in = &inputs[next() % ninputs];
                len = in->size < sizeof buf ? in->size : sizeof buf;
                memcpy(buf, in->data, len);
                unsigned flips = 1 + next() % 4;
                for (unsigned k = 0; k < flips && len; k++) {
                    switch (next() % 4) {
                    case 0: buf[next() % len] ^= (uint8_t)(1u << (next() % 8)); break;
                    case 1: buf[next() % len] = (uint8_t)next(); break;
                    case 2: len = next() % (len + 1); break;
                    default:
                        if (len < sizeof buf)
                            buf[len++] = (uint8_t)next();
                    }
                }
            } else {
                len = next() % 256;
                for (size_t k = 0; k < len; k++)
                    buf[k] = (uint8_t)next();
            }
            LLVMFuzzerTestOneInput(buf, len);
        }
        printf("replay: %lu random inputs ran\n", n);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        collect(argv[i]);
    for (size_t i = 0; i < ninputs; i++) {
        LLVMFuzzerTestOneInput(inputs[i].data, inputs[i].size);
        free(inputs[i].data);
    }
    printf("replay: %zu inputs ran\n", ninputs);
    return ninputs ? 0 : 1;
}
