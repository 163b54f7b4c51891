/* file_names.h -- the name index of a file: location (file_names.c).
 * locfd is the location's directory, path names it in messages. */
#ifndef FBK_FILE_NAMES_H
#define FBK_FILE_NAMES_H

#include "fbk_backend.h"

/* The directory inside a location that holds its name index. */
#define FBK__FILE_NAMES_DIR ".fbk-names"

/* The file of a name in the directory: the XXH3-128 of the name, 32 hex. */
void fbk__file_name_file(const void *name, size_t len, char out[33]);
/* 1 if the binding file `file` names key, 0 if it names another key or
 * there is none, else an FBK_E* code. */
int fbk__file_name_binds(int locfd, const char *path, const char *file, const fbk_key *key);

int fbk__file_name_get(int locfd, const char *path, const void *name, size_t len, fbk_key *key,
                       uint64_t *size);
/* Whether the store whose spill id (16 hex digits) is `id` is open. */
typedef int (*fbk__file_alive_fn)(void *arg, const char *id);
/* Lists the bindings.  With alive (a writer), it also removes the binding
 * temporaries whose store is gone (alive(alive_arg, id) == 0, or the name
 * of a version before sharing); NULL deletes nothing. */
int fbk__file_name_scan(int locfd, const char *path, fbk_binding_fn each, void *arg,
                        fbk__file_alive_fn alive, void *alive_arg);
/* Applies ops in order, each durable on return.  The caller has made every
 * bound object durable before.  owner: the writing store's spill id, put
 * into the names of its temporaries. */
int fbk__file_name_apply(int locfd, const char *path, const char *owner, const fbk_name_op *ops,
                         size_t n);

#endif
