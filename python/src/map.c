/* map.c -- fbk._fbk.Map: an fbk_map with its pool and location; the Python
 * package makes it a collections.abc.MutableMapping (docs/python.md).  Its
 * view() is in view.c, its _memo() in memoize.c. */
#include "fbkpy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Releases what a Map holds, with the GIL released.  Returns fbk_map_close's
 * result (its message in *e). */
static int map_free(fbk_map *m, fbk_location *loc, fbk_pool *pool, err_t *e)
{
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = fbk_map_close(m);
    if (rc)
        fbkpy_err_capture(e, rc);
    fbk_location_close(loc);
    fbk_pool_release(pool);
    Py_END_ALLOW_THREADS
    return rc;
}

static int Map_init(MapObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"store", "name", "size_limit", "sync", NULL};
    StoreObject *store;
    PyObject *name;
    unsigned long long size_limit = 0;
    int sync = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!U|K$p:Map", kwlist, &fbkpy_Store_Type, &store,
                                     &name, &size_limit, &sync))
        return -1;
    if (self->m) {
        PyErr_SetString(PyExc_RuntimeError, "fbk.Map: already open");
        return -1;
    }
    if (!store->s) {
        fbkpy_raise_code(FBK_ECLOSED, "fbk.Map: the store is closed");
        return -1;
    }
    const char *locname = PyUnicode_AsUTF8(name);
    if (!locname)
        return -1;
    fbk_store *s = store->s;
    fbk_map_options o = {.size_limit = size_limit, .flags = sync ? 0 : FBK_MAP_NOSYNC};
    fbk_pool *pool = NULL;
    fbk_location *loc = NULL;
    fbk_map *m = NULL;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_pool_create(&pool, s, &fbk_blob_codec, 64);
    if (rc == 0)
        rc = fbk_location_open(s, locname, &loc);
    if (rc == 0)
        rc = fbk_map_open(pool, loc, &o, &m);
    if (rc) {
        fbkpy_err_capture(&e, rc);
        fbk_location_close(loc);
        fbk_pool_release(pool);
    }
    Py_END_ALLOW_THREADS
    if (e.rc) {
        fbkpy_raise_err(&e);
        return -1;
    }
    PyObject *ref = PyWeakref_NewRef((PyObject *)self, NULL);
    if (!ref || PyList_Append(store->maps, ref) < 0) {
        Py_XDECREF(ref);
        map_free(m, loc, pool, &e);
        return -1;
    }
    Py_DECREF(ref);
    self->m = m;
    self->loc = loc;
    self->pool = pool;
    self->sync = sync;
    self->size_limit = size_limit;
    Py_INCREF(store);
    Py_XSETREF(self->store, store);
    Py_INCREF(name);
    Py_XSETREF(self->name, name);
    return 0;
}

static void Map_dealloc(MapObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->m) {
        err_t e = {0};
        if (map_free(self->m, self->loc, self->pool, &e)) {
            PyObject *exc = PyErr_GetRaisedException();
            PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "fbk.Map: closing at collection: %s",
                             e.msg);
            PyErr_SetRaisedException(exc);
        }
        self->m = NULL;
    }
    Py_CLEAR(self->store);
    Py_CLEAR(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Map_traverse(MapObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->store);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Map_clear(MapObject *self)
{
    Py_CLEAR(self->store);
    return 0;
}

/* Starts a call that will release the GIL; -1 (ClosedError set) if closed. */
int fbkpy_map_enter(MapObject *self)
{
    if (!self->m) {
        fbkpy_raise_code(FBK_ECLOSED, "fbk.Map: closed");
        return -1;
    }
    self->busy++;
    return 0;
}

void fbkpy_map_leave(MapObject *self)
{
    self->busy--;
}

static PyObject *Map_close(MapObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->m)
        Py_RETURN_NONE;
    if (self->busy)
        return fbkpy_raise_code(FBK_EBUSY, "fbk.Map.close: another thread is using the map");
    fbk_map *m = self->m;
    self->m = NULL;
    err_t e = {0};
    if (map_free(m, self->loc, self->pool, &e))
        return fbkpy_raise_err(&e);
    Py_RETURN_NONE;
}

static PyObject *Map_sync(MapObject *self, PyObject *unused)
{
    (void)unused;
    if (fbkpy_map_enter(self) < 0)
        return NULL;
    fbk_map *m = self->m;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_map_sync(m);
    if (rc)
        fbkpy_err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    fbkpy_map_leave(self);
    if (e.rc)
        return fbkpy_raise_err(&e);
    Py_RETURN_NONE;
}

/* fbk_map_get_bytes's buffer: a new bytes object of the value's size,
 * allocated with the GIL taken back for the moment. */
typedef struct {
    PyThreadState *ts; /* saved while the GIL is released */
    PyObject *obj;
} bytes_ctx;

static void *new_bytes(size_t size, void *arg)
{
    bytes_ctx *c = arg;
    if (size > PY_SSIZE_T_MAX)
        return NULL;
    PyEval_RestoreThread(c->ts);
    Py_XDECREF(c->obj);
    c->obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    char *p = c->obj ? PyBytes_AS_STRING(c->obj) : NULL;
    c->ts = PyEval_SaveThread();
    return p;
}

/* self[name] (missing: KeyError), or self.get(name, dflt) (dflt != NULL). */
static PyObject *map_lookup(MapObject *self, PyObject *key, PyObject *dflt)
{
    name_t nm;
    if (fbkpy_name_get(key, &nm) < 0)
        return NULL;
    if (!fbkpy_name_valid(&nm)) { /* no such name can be bound */
        Py_XDECREF(nm.hold);
        if (dflt)
            return Py_NewRef(dflt);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    if (fbkpy_map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        return NULL;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    /* one copy, straight into the new bytes object (fbk_map_get_bytes calls
     * new_bytes, which takes the GIL back for the allocation) */
    bytes_ctx bc = {NULL, NULL};
    bc.ts = PyEval_SaveThread();
    int rc = fbk_map_get_bytes(m, nm.p, (size_t)nm.n, new_bytes, &bc);
    if (rc && rc != FBK_ENOTFOUND)
        fbkpy_err_capture(&e, rc);
    PyEval_RestoreThread(bc.ts);
    fbkpy_map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc == 0)
        return bc.obj;
    Py_CLEAR(bc.obj);
    if (PyErr_Occurred()) /* the allocation failed */
        return NULL;
    if (rc == FBK_ENOTFOUND) {
        if (dflt)
            return Py_NewRef(dflt);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return fbkpy_raise_err(&e);
}

static PyObject *Map_subscript(MapObject *self, PyObject *key)
{
    return map_lookup(self, key, NULL);
}

static PyObject *Map_get(MapObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(name, default=None)");
        return NULL;
    }
    return map_lookup(self, args[0], nargs == 2 ? args[1] : Py_None);
}

static int map_store(MapObject *self, PyObject *key, PyObject *value)
{
    name_t nm;
    if (fbkpy_name_get(key, &nm) < 0)
        return -1;
    if (!fbkpy_name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        fbkpy_raise_code(FBK_EINVAL, "fbk.Map: a name is 1 to 4096 bytes");
        return -1;
    }
    Py_buffer val;
    if (PyObject_GetBuffer(value, &val, PyBUF_SIMPLE) < 0) {
        Py_XDECREF(nm.hold);
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "fbk.Map: a value is bytes-like, not %.100s",
                         Py_TYPE(value)->tp_name);
        }
        return -1;
    }
    if (fbkpy_map_enter(self) < 0) {
        PyBuffer_Release(&val);
        Py_XDECREF(nm.hold);
        return -1;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    /* one copy (checksummed in the same pass) into the map, which writes it
     * into the location with its binding (fbk_map_put_bytes) */
    int rc = fbk_map_put_bytes(m, nm.p, (size_t)nm.n, val.buf, (size_t)val.len);
    if (rc)
        fbkpy_err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    fbkpy_map_leave(self);
    PyBuffer_Release(&val);
    Py_XDECREF(nm.hold);
    if (e.rc) {
        fbkpy_raise_err(&e);
        return -1;
    }
    return 0;
}

static int map_delete(MapObject *self, PyObject *key)
{
    name_t nm;
    if (fbkpy_name_get(key, &nm) < 0)
        return -1;
    if (!fbkpy_name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    if (fbkpy_map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        return -1;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fbk_map_remove(m, nm.p, (size_t)nm.n);
    if (rc && rc != FBK_ENOTFOUND)
        fbkpy_err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    fbkpy_map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc == FBK_ENOTFOUND) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    if (rc) {
        fbkpy_raise_err(&e);
        return -1;
    }
    return 0;
}

static int Map_ass_subscript(MapObject *self, PyObject *key, PyObject *value)
{
    return value ? map_store(self, key, value) : map_delete(self, key);
}

static int Map_contains(MapObject *self, PyObject *key)
{
    name_t nm;
    if (fbkpy_name_get(key, &nm) < 0)
        return -1;
    if (!fbkpy_name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        return 0;
    }
    if (fbkpy_map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        return -1;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fbk_map_contains(m, nm.p, (size_t)nm.n);
    if (rc < 0)
        fbkpy_err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    fbkpy_map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc < 0) {
        fbkpy_raise_err(&e);
        return -1;
    }
    return rc;
}

static Py_ssize_t Map_length(MapObject *self)
{
    if (fbkpy_map_enter(self) < 0)
        return -1;
    fbk_map *m = self->m;
    uint64_t n;
    Py_BEGIN_ALLOW_THREADS
    n = fbk_map_count(m);
    Py_END_ALLOW_THREADS
    fbkpy_map_leave(self);
    return (Py_ssize_t)n;
}

/* fbk_map_names into one growing buffer of (size_t length, bytes) records,
 * without the GIL; the list is built afterwards. */
typedef struct {
    char *buf;
    size_t len, cap, count;
} names_acc;

static int names_each(const void *name, size_t len, void *arg)
{
    names_acc *a = arg;
    size_t need = a->len + sizeof(size_t) + len;
    if (need > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < need)
            cap *= 2;
        char *nb = realloc(a->buf, cap);
        if (!nb)
            return FBK_ENOMEM;
        a->buf = nb;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, &len, sizeof len);
    memcpy(a->buf + a->len + sizeof len, name, len);
    a->len = need;
    a->count++;
    return 0;
}

/* A list of every name, as bytes. */
static PyObject *Map_names(MapObject *self, PyObject *unused)
{
    (void)unused;
    if (fbkpy_map_enter(self) < 0)
        return NULL;
    fbk_map *m = self->m;
    names_acc a = {0};
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_map_names(m, names_each, &a);
    if (rc == FBK_ENOMEM && !e.rc) {
        e.rc = rc;
        snprintf(e.msg, sizeof e.msg, "fbk.Map: no memory for the list of names");
    } else if (rc) {
        fbkpy_err_capture(&e, rc);
    }
    Py_END_ALLOW_THREADS
    fbkpy_map_leave(self);
    if (e.rc) {
        free(a.buf);
        return fbkpy_raise_err(&e);
    }
    PyObject *list = PyList_New((Py_ssize_t)a.count);
    size_t off = 0;
    for (size_t i = 0; list && i < a.count; i++) {
        size_t len;
        memcpy(&len, a.buf + off, sizeof len);
        PyObject *b = PyBytes_FromStringAndSize(a.buf + off + sizeof len, (Py_ssize_t)len);
        if (!b) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, b);
        off += sizeof len + len;
    }
    free(a.buf);
    return list;
}

static PyObject *Map_iter(MapObject *self)
{
    PyObject *list = Map_names(self, NULL);
    if (!list)
        return NULL;
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static PyObject *Map_get_bytes(MapObject *self, void *c)
{
    (void)c;
    if (!self->m)
        return fbkpy_raise_code(FBK_ECLOSED, "fbk.Map: closed");
    return PyLong_FromUnsignedLongLong(fbk_map_bytes(self->m));
}

static PyObject *Map_get_closed(MapObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->m == NULL);
}

static PyObject *Map_get_name(MapObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->name ? self->name : Py_None);
}

static PyObject *Map_get_size_limit(MapObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->size_limit);
}

static PyObject *Map_get_store(MapObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->store ? (PyObject *)self->store : Py_None);
}

static PyObject *Map_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *Map_exit(MapObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = Map_close(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyMethodDef Map_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Map_get, METH_FASTCALL,
     "get(name, default=None): the value, or default if unbound."},
    {"view", (PyCFunction)fbkpy_Map_view, METH_O,
     "view(name): the value pinned in memory; `with m.view(n) as mv` gives a read-only "
     "memoryview without copying."},
    {"names", (PyCFunction)Map_names, METH_NOARGS, "A list of every name (bytes)."},
    {"sync", (PyCFunction)Map_sync, METH_NOARGS, "Makes every put/remove so far durable."},
    {"close", (PyCFunction)Map_close, METH_NOARGS, "Syncs what is pending and closes the map."},
    {"_memo", (PyCFunction)(void (*)(void))fbkpy_Map_memo, METH_FASTCALL, NULL},
    {"__enter__", Map_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Map_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Map_getset[] = {
    {"bytes_used", (getter)Map_get_bytes, NULL, "bytes of the distinct values named", NULL},
    {"closed", (getter)Map_get_closed, NULL, "True after close()", NULL},
    {"name", (getter)Map_get_name, NULL, "the map's location name", NULL},
    {"store", (getter)Map_get_store, NULL, "the Store it was opened on", NULL},
    {"size_limit", (getter)Map_get_size_limit, NULL, "bytes kept at most; 0 = no limit", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods Map_as_mapping = {
    .mp_length = (lenfunc)Map_length,
    .mp_subscript = (binaryfunc)Map_subscript,
    .mp_ass_subscript = (objobjargproc)Map_ass_subscript,
};

static PySequenceMethods Map_as_sequence = {
    .sq_contains = (objobjproc)Map_contains,
};

PyTypeObject fbkpy_Map_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fbk._fbk.Map",
    .tp_basicsize = sizeof(MapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Map(store, name, size_limit=0, *, sync=True): names (bytes) bound to values "
              "(bytes) in one location of the store.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Map_init,
    .tp_dealloc = (destructor)Map_dealloc,
    .tp_traverse = (traverseproc)Map_traverse,
    .tp_clear = (inquiry)Map_clear,
    .tp_iter = (getiterfunc)Map_iter,
    .tp_as_mapping = &Map_as_mapping,
    .tp_as_sequence = &Map_as_sequence,
    .tp_methods = Map_methods,
    .tp_getset = Map_getset,
    .tp_weaklistoffset = offsetof(MapObject, weakreflist),
};
