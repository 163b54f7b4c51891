/* file_names.h -- the name index of a file: location (file_names.c).
 * locfd is the location's directory, path names it in messages. */
#ifndef FBK_FILE_NAMES_H
#define FBK_FILE_NAMES_H

#include "fbk_backend.h"

/* The directory inside a location that holds its name index. */
#define FBK__FILE_NAMES_DIR ".fbk-names"

int fbk__file_name_get(int locfd, const char *path, const void *name, size_t len, fbk_key *key,
                       uint64_t *size);
int fbk__file_name_scan(int locfd, const char *path, fbk_binding_fn each, void *arg);
/* Applies ops in order, each durable on return.  The caller has made every
 * bound object durable before. */
int fbk__file_name_apply(int locfd, const char *path, const fbk_name_op *ops, size_t n);

#endif
