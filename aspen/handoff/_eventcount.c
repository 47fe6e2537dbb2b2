/*
 * EventCount: a counter a thread waits on, without the GIL, until another
 * thread bumps it (aspen/handoff/__init__.py says who waits on which).
 *
 * A waiter parks on a futex (Linux) right away; elsewhere it sleeps in
 * 50 us steps, so nothing busy-waits off Linux either. The spinning this
 * file used to do (with a sched_yield every 40 us) earned nothing over HTTP
 * under load (benchmarks/RESULTS.md, "bench_http") and was removed.
 * A bump only touches atomics, so it needs no lock and no GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

typedef struct {
    _Atomic uint32_t seq;
    _Atomic uint32_t parked;
} Counter;

typedef struct {
    PyObject_HEAD
    Counter *c; /* not in the object: a waiter uses it with the GIL released */
} EventCount;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void bump(EventCount *ec) {
    atomic_fetch_add(&ec->c->seq, 1);
#ifdef __linux__
    if (atomic_load(&ec->c->parked)) {
        syscall(SYS_futex, &ec->c->seq, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    }
#endif
}

/* Wait while ec->seq == seen, at most timeout_ns. Called without the GIL.
 * Returns 1 when the count moved. */
static int wait_moved(EventCount *ec, uint32_t seen, int64_t timeout_ns) {
    int64_t end = now_ns() + timeout_ns;
    atomic_fetch_add(&ec->c->parked, 1);
    int moved;
    for (;;) {
        if ((moved = atomic_load(&ec->c->seq) != seen)) break;
        int64_t left = end - now_ns();
        if (left <= 0) break;
#ifdef __linux__
        struct timespec ts = {left / 1000000000, left % 1000000000};
        syscall(SYS_futex, &ec->c->seq, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
#else
        struct timespec ts = {0, left < 50000 ? left : 50000};
        nanosleep(&ts, NULL);
#endif
    }
    atomic_fetch_sub(&ec->c->parked, 1);
    return moved;
}

static PyObject *EventCount_value(EventCount *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLong(atomic_load(&self->c->seq));
}

static PyObject *EventCount_bump(EventCount *self, PyObject *Py_UNUSED(ignored)) {
    bump(self);
    Py_RETURN_NONE;
}

static PyObject *EventCount_wait(EventCount *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"seen", "timeout_ns", NULL};
    unsigned long seen;
    long long timeout_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "kL", kw, &seen, &timeout_ns)) return NULL;
    int moved;
    Py_INCREF(self); /* the counter outlives the wait */
    Py_BEGIN_ALLOW_THREADS
    moved = wait_moved(self, (uint32_t)seen, timeout_ns);
    Py_END_ALLOW_THREADS
    Py_DECREF(self);
    return PyBool_FromLong(moved);
}

static PyMethodDef EventCount_methods[] = {
    {"value", (PyCFunction)EventCount_value, METH_NOARGS, "The current count."},
    {"bump", (PyCFunction)EventCount_bump, METH_NOARGS, "Advance the count and wake its waiters."},
    {"wait", (PyCFunction)EventCount_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(seen, timeout_ns) -> bool: without the GIL, wait until the count is no longer seen."},
    {NULL, NULL, 0, NULL},
};

static PyObject *EventCount_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (!PyArg_ParseTuple(args, ":EventCount")) return NULL;
    EventCount *self = (EventCount *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->c = malloc(sizeof(Counter));
    if (self->c == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    atomic_init(&self->c->seq, 0);
    atomic_init(&self->c->parked, 0);
    return (PyObject *)self;
}

static void EventCount_dealloc(EventCount *self) {
    free(self->c); /* no thread waits on it: a wait holds a reference */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject EventCountType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aspen.handoff._eventcount.EventCount",
    .tp_basicsize = sizeof(EventCount),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A counter threads wait on without the GIL until it moves.",
    .tp_new = EventCount_new,
    .tp_dealloc = (destructor)EventCount_dealloc,
    .tp_methods = EventCount_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_eventcount", "GIL-free hand-off between threads.", -1, NULL,
};

PyMODINIT_FUNC PyInit__eventcount(void) {
    if (PyType_Ready(&EventCountType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&EventCountType);
    if (PyModule_AddObject(m, "EventCount", (PyObject *)&EventCountType) < 0) {
        Py_DECREF(&EventCountType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
