/* memoize.c -- Map._memo(), the core of fbk.memoize: the function runs once
 * among concurrent callers of a name, on the caller's own thread, with the
 * GIL taken back for the call (memo_compute). */
#include "fbkpy.h"

#include <string.h>

#define MEMO_RAISED 1 /* compute's result when the function raised */

typedef struct {
    PyThreadState *ts;
    PyObject *func, *args, *kwargs, *dumps;
    PyObject *result; /* the function's result, when this thread computed it */
    PyObject *exc;    /* what the function (or pickling) raised */
    int computed;
} memo_ctx;

/* A copy of the pinned value as bytes; unpins and releases h. */
static PyObject *copy_out(fbk_handle *h, const fbk_blob *b)
{
    PyObject *r = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)b->len);
    char *dst = r ? PyBytes_AS_STRING(r) : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (dst)
        memcpy(dst, b->data, b->len);
    fbk_unload(h);
    fbk_handle_release(h);
    Py_END_ALLOW_THREADS
    return r;
}

/* Runs on the caller's thread inside fbk_map_get_or_compute (no GIL held):
 * takes the GIL back, calls the function and pickles its result. */
static int memo_compute(const void *name, size_t len, void **obj, void *arg)
{
    (void)name;
    (void)len;
    memo_ctx *c = arg;
    PyEval_RestoreThread(c->ts);
    int rc = 0;
    c->computed = 1;
    PyObject *res = PyObject_Call(c->func, c->args, c->kwargs);
    PyObject *data = res ? PyObject_CallOneArg(c->dumps, res) : NULL;
    if (data && !PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "fbk.memoize: the pickler did not return bytes");
        Py_CLEAR(data);
    }
    if (data) {
        fbk_blob *b = fbk_blob_new(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
        if (b) {
            *obj = b;
            c->result = Py_NewRef(res);
        } else {
            PyErr_NoMemory();
        }
    }
    if (PyErr_Occurred()) {
        c->exc = PyErr_GetRaisedException();
        rc = MEMO_RAISED;
    }
    Py_XDECREF(res);
    Py_XDECREF(data);
    c->ts = PyEval_SaveThread();
    return rc;
}

/* _memo(name, func, args, kwargs, dumps) -> (computed, value): calls
 * func(*args, **kwargs) once among concurrent callers of this name unless it
 * is bound already.  computed True: value is the function's result; False:
 * value is the stored pickle (bytes). */
PyObject *fbkpy_Map_memo(MapObject *self, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyTuple_Check(argv[2]) || (argv[3] != Py_None && !PyDict_Check(argv[3]))) {
        PyErr_SetString(PyExc_TypeError, "_memo(name, func, args: tuple, kwargs: dict, dumps)");
        return NULL;
    }
    name_t nm;
    if (fbkpy_name_get(argv[0], &nm) < 0)
        return NULL;
    if (!fbkpy_name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        return fbkpy_raise_code(FBK_EINVAL, "fbk.memoize: a name is 1 to 4096 bytes");
    }
    memo_ctx c = {.func = argv[1], .args = argv[2], .kwargs = argv[3] == Py_None ? NULL : argv[3],
                  .dumps = argv[4]};
    PyObject *out = NULL;
    for (;;) {
        if (fbkpy_map_enter(self) < 0)
            break;
        fbk_map *m = self->m;
        fbk_handle *h = NULL;
        const void *obj = NULL;
        err_t e = {0};
        c.computed = 0;
        c.ts = PyEval_SaveThread();
        int rc = fbk_map_get_or_compute(m, nm.p, (size_t)nm.n, memo_compute, &c, &h);
        if (rc == 0 && !c.computed) {
            rc = fbk_load(h, &obj);
            if (rc) {
                fbkpy_err_capture(&e, rc);
                fbk_handle_release(h);
            }
        } else if (rc == 0) {
            fbk_handle_release(h);
        } else if (rc != MEMO_RAISED) {
            fbkpy_err_capture(&e, rc);
        }
        PyEval_RestoreThread(c.ts);
        fbkpy_map_leave(self);
        if (rc == MEMO_RAISED && c.exc) { /* the function raised here */
            PyErr_SetRaisedException(c.exc);
            c.exc = NULL;
            break;
        }
        if (rc == MEMO_RAISED)
            continue; /* it raised in another thread: nothing bound, call it here */
        if (rc) {
            Py_CLEAR(c.result);
            fbkpy_raise_err(&e);
            break;
        }
        if (c.computed) {
            out = Py_BuildValue("(ON)", Py_True, c.result);
            c.result = NULL;
        } else {
            PyObject *v = copy_out(h, obj);
            out = v ? Py_BuildValue("(ON)", Py_False, v) : NULL;
        }
        break;
    }
    Py_XDECREF(c.result);
    Py_XDECREF(c.exc);
    Py_XDECREF(nm.hold);
    return out;
}
