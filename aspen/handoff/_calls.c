/*
 * CallQueue: plugin calls run by worker threads that never take the GIL
 * (aspen/plugins/native_workers.py drives it).
 *
 * A worker thread calls serve() with its Extism instance; serve() lets go of
 * the GIL and, in C, takes jobs, calls libextism through the function
 * pointers the Python SDK's own library exports, and copies the output.
 * Finished jobs go on a list; the first one on an empty list wakes the event
 * loop through a file descriptor it reads (an eventfd, a pipe off Linux),
 * and the loop takes the whole list at once. A Python worker instead needs
 * the GIL to pick up a job and again to hand the result back, and under load
 * it waits for the loop to let go of it (benchmarks/RESULTS.md, "session 12").
 *
 * A guest's host-function calls still run Python: the SDK's cffi callback
 * takes the GIL on the worker's own (Python-created) thread, as before.
 * Only POSIX threads are used; setup.py builds this where they exist, and
 * without it the runtime uses Python workers (same behaviour, slower).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

enum { DONE_OK = 0, DONE_FAULT = 1, DONE_EXPIRED = 2, DONE_TOO_LARGE = 3, DONE_NO_INSTANCE = 4, DONE_HOST_OOM = 5, DONE_CANCELLED = 6 };

typedef int32_t (*call_fn)(void *, const char *, const uint8_t *, uint64_t, void *);
typedef uint64_t (*len_fn)(void *);
typedef const uint8_t *(*data_fn)(void *);
typedef const char *(*error_fn)(void *);

typedef struct Job {
    struct Job *next;
    unsigned long long id;
    char *export_; /* NULL: the stop sentinel */
    uint8_t *data;
    uint64_t len;
    uintptr_t host_context;
    int64_t deadline_ns;
    int status;
    int cancelled; /* the caller gave up while it waited: never run */
    uint8_t *out; /* output bytes, or the error text of a fault */
    uint64_t out_len;
} Job;

typedef struct {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t ready;
    Job *head, *tail; /* waiting, oldest first */
    Job *done;        /* finished, newest first */
    int read_fd, write_fd;
    call_fn call;
    len_fn out_len;
    data_fn out_data;
    error_fn error;
    uint64_t max_output;
} Shared;

typedef struct {
    PyObject_HEAD
    Shared *s; /* not in the object: workers use it with the GIL released */
} CallQueue;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void free_job(Job *j) {
    free(j->export_);
    free(j->data);
    free(j->out);
    free(j);
}

static void wake_loop(Shared *s) {
#ifdef __linux__
    uint64_t one = 1;
    (void)!write(s->write_fd, &one, sizeof one);
#else
    char one = 1;
    (void)!write(s->write_fd, &one, 1);
#endif
}

static void finish(Shared *s, Job *j, int status) {
    j->status = status;
    pthread_mutex_lock(&s->lock);
    int was_empty = s->done == NULL;
    j->next = s->done;
    s->done = j;
    pthread_mutex_unlock(&s->lock);
    if (was_empty) wake_loop(s); /* a non-empty list has woken the loop already */
}

static int copy_out(Job *j, const void *from, uint64_t len) {
    j->out = malloc(len ? len : 1);
    if (j->out == NULL) return 0;
    memcpy(j->out, from, len);
    j->out_len = len;
    return 1;
}

/* Run one job on `plugin`; 1 when the instance faulted and must be replaced. */
static int run(Shared *s, void *plugin, Job *j) {
    if (j->cancelled) {
        finish(s, j, DONE_CANCELLED);
        return 0;
    }
    if (plugin == NULL) {
        finish(s, j, DONE_NO_INSTANCE);
        return 1;
    }
    if (now_ns() >= j->deadline_ns) {
        finish(s, j, DONE_EXPIRED);
        return 0;
    }
    if (s->call(plugin, j->export_, j->data, j->len, (void *)j->host_context) != 0) {
        const char *text = s->error(plugin);
        if (text == NULL) text = "unknown error";
        finish(s, j, copy_out(j, text, strlen(text)) ? DONE_FAULT : DONE_HOST_OOM);
        return 1;
    }
    uint64_t len = s->out_len(plugin);
    if (len > s->max_output) {
        j->out_len = len;
        finish(s, j, DONE_TOO_LARGE);
        return 0;
    }
    finish(s, j, copy_out(j, s->out_data(plugin), len) ? DONE_OK : DONE_HOST_OOM);
    return 0;
}

/* serve(plugin) -> bool: run jobs on this thread until told to stop (False)
 * or until the instance faults (True: replace it, call again). */
static PyObject *CallQueue_serve(CallQueue *self, PyObject *arg) {
    void *plugin = PyLong_AsVoidPtr(arg);
    if (plugin == NULL && PyErr_Occurred()) return NULL;
    Shared *s = self->s;
    int faulted = 0;
    Py_INCREF(self); /* the queue outlives the serving */
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (s->head == NULL) pthread_cond_wait(&s->ready, &s->lock);
        Job *j = s->head;
        s->head = j->next;
        if (s->head == NULL) s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        if (j->export_ == NULL) {
            free_job(j);
            break;
        }
        if ((faulted = run(s, plugin, j))) break;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(self);
    return PyBool_FromLong(faulted);
}

/* wait(): without the GIL, until a job (or the stop sentinel) is queued; a
 * worker without an instance makes one only when there is work for it. */
static PyObject *CallQueue_wait(CallQueue *self, PyObject *Py_UNUSED(ignored)) {
    Shared *s = self->s;
    Py_INCREF(self);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&s->lock);
    while (s->head == NULL) pthread_cond_wait(&s->ready, &s->lock);
    pthread_mutex_unlock(&s->lock);
    Py_END_ALLOW_THREADS
    Py_DECREF(self);
    Py_RETURN_NONE;
}

static PyObject *enqueue(CallQueue *self, Job *j) {
    Shared *s = self->s;
    pthread_mutex_lock(&s->lock);
    if (s->tail) s->tail->next = j;
    else s->head = j;
    s->tail = j;
    pthread_cond_signal(&s->ready);
    pthread_mutex_unlock(&s->lock);
    Py_RETURN_NONE;
}

/* submit(id, export, data, host_context, timeout_ns) */
static PyObject *CallQueue_submit(CallQueue *self, PyObject *args) {
    unsigned long long id;
    const char *export_;
    Py_buffer data;
    unsigned long long host_context;
    long long timeout_ns;
    if (!PyArg_ParseTuple(args, "Kyy*KL", &id, &export_, &data, &host_context, &timeout_ns)) return NULL;
    Job *j = calloc(1, sizeof(Job));
    if (j != NULL) {
        j->export_ = strdup(export_);
        j->data = malloc(data.len ? data.len : 1);
    }
    if (j == NULL || j->export_ == NULL || j->data == NULL) {
        if (j != NULL) free_job(j);
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    memcpy(j->data, data.buf, data.len);
    j->len = data.len;
    PyBuffer_Release(&data);
    j->id = id;
    j->host_context = (uintptr_t)host_context;
    j->deadline_ns = now_ns() + timeout_ns;
    return enqueue(self, j);
}

/* stop_one(): the next worker to look returns from serve(). */
static PyObject *CallQueue_stop_one(CallQueue *self, PyObject *Py_UNUSED(ignored)) {
    Job *j = calloc(1, sizeof(Job));
    if (j == NULL) return PyErr_NoMemory();
    return enqueue(self, j);
}

/* cancel(id): a job still waiting is never run (it comes back DONE_CANCELLED). */
static PyObject *CallQueue_cancel(CallQueue *self, PyObject *arg) {
    unsigned long long id = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    Shared *s = self->s;
    pthread_mutex_lock(&s->lock);
    for (Job *j = s->head; j; j = j->next) {
        if (j->id == id && j->export_ != NULL) {
            j->cancelled = 1;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    Py_RETURN_NONE;
}

/* take() -> [(id, status, payload)]: the finished jobs, oldest first; payload
 * is the output (OK), the error text (FAULT), else the output length. */
static PyObject *CallQueue_take(CallQueue *self, PyObject *Py_UNUSED(ignored)) {
    Shared *s = self->s;
    char drain[64];
    while (read(s->read_fd, drain, sizeof drain) > 0) {
    } /* before taking: a job finished after this wakes the loop again */
    pthread_mutex_lock(&s->lock);
    Job *j = s->done;
    s->done = NULL;
    pthread_mutex_unlock(&s->lock);
    Job *oldest = NULL;
    while (j) { /* reverse: newest first → oldest first */
        Job *next = j->next;
        j->next = oldest;
        oldest = j;
        j = next;
    }
    PyObject *list = PyList_New(0);
    for (j = oldest; j; j = oldest) {
        oldest = j->next;
        PyObject *payload = NULL;
        if (list != NULL) {
            if (j->status == DONE_OK) payload = PyBytes_FromStringAndSize((char *)j->out, (Py_ssize_t)j->out_len);
            else if (j->status == DONE_FAULT) payload = PyUnicode_DecodeUTF8((char *)j->out, (Py_ssize_t)j->out_len, "replace");
            else payload = PyLong_FromUnsignedLongLong(j->out_len);
            PyObject *item = payload ? Py_BuildValue("(KiN)", j->id, j->status, payload) : NULL;
            if (item == NULL || PyList_Append(list, item) < 0) Py_CLEAR(list);
            Py_XDECREF(item);
        }
        free_job(j);
    }
    return list;
}

static PyObject *CallQueue_fileno(CallQueue *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLong(self->s->read_fd);
}

static PyMethodDef CallQueue_methods[] = {
    {"serve", (PyCFunction)CallQueue_serve, METH_O,
     "serve(plugin) -> bool: on a worker thread, without the GIL, run jobs on the instance at address plugin "
     "until stop_one (False) or a fault (True: replace the instance)."},
    {"wait", (PyCFunction)CallQueue_wait, METH_NOARGS, "Without the GIL, until a job is queued."},
    {"submit", (PyCFunction)CallQueue_submit, METH_VARARGS,
     "submit(id, export, data, host_context, timeout_ns): queue a call; host_context is a cffi handle's address."},
    {"cancel", (PyCFunction)CallQueue_cancel, METH_O, "cancel(id): if still queued, the job never runs."},
    {"stop_one", (PyCFunction)CallQueue_stop_one, METH_NOARGS, "Make one serving worker return."},
    {"take", (PyCFunction)CallQueue_take, METH_NOARGS, "take() -> [(id, status, payload)], oldest first."},
    {"fileno", (PyCFunction)CallQueue_fileno, METH_NOARGS, "The descriptor that turns readable when calls finish."},
    {NULL, NULL, 0, NULL},
};

/* CallQueue(call, output_length, output_data, error, max_output): the first
 * four are the addresses of libextism's functions of those names. */
static PyObject *CallQueue_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    unsigned long long call, out_len, out_data, error, max_output;
    if (!PyArg_ParseTuple(args, "KKKKK:CallQueue", &call, &out_len, &out_data, &error, &max_output)) return NULL;
    CallQueue *self = (CallQueue *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    Shared *s = self->s = calloc(1, sizeof(Shared));
    if (s == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    s->read_fd = s->write_fd = -1;
#ifdef __linux__
    s->read_fd = s->write_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int opened = s->read_fd >= 0;
#else
    int fds[2];
    int opened = pipe(fds) == 0;
    if (opened) {
        s->read_fd = fds[0];
        s->write_fd = fds[1];
        for (int i = 0; i < 2; i++) {
            fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
            fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        }
    }
#endif
    if (!opened) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->ready, NULL);
    s->call = (call_fn)(uintptr_t)call;
    s->out_len = (len_fn)(uintptr_t)out_len;
    s->out_data = (data_fn)(uintptr_t)out_data;
    s->error = (error_fn)(uintptr_t)error;
    s->max_output = max_output;
    return (PyObject *)self;
}

static void CallQueue_dealloc(CallQueue *self) {
    Shared *s = self->s; /* no worker serves: serve() holds a reference */
    if (s != NULL) {
        for (Job *lists[2] = {s->head, s->done}, **l = lists; l < lists + 2; l++) {
            for (Job *j = *l, *next; j; j = next) {
                next = j->next;
                free_job(j);
            }
        }
        if (s->read_fd >= 0) close(s->read_fd);
        if (s->write_fd >= 0 && s->write_fd != s->read_fd) close(s->write_fd);
        if (s->read_fd >= 0) {
            pthread_mutex_destroy(&s->lock);
            pthread_cond_destroy(&s->ready);
        }
        free(s);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CallQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aspen.handoff._calls.CallQueue",
    .tp_basicsize = sizeof(CallQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Plugin calls run by worker threads without the GIL.",
    .tp_new = CallQueue_new,
    .tp_dealloc = (destructor)CallQueue_dealloc,
    .tp_methods = CallQueue_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_calls", "Plugin calls run without the GIL.", -1, NULL,
};

PyMODINIT_FUNC PyInit__calls(void) {
    if (PyType_Ready(&CallQueueType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CallQueueType);
    if (PyModule_AddObject(m, "CallQueue", (PyObject *)&CallQueueType) < 0
        || PyModule_AddIntConstant(m, "DONE_OK", DONE_OK) < 0
        || PyModule_AddIntConstant(m, "DONE_FAULT", DONE_FAULT) < 0
        || PyModule_AddIntConstant(m, "DONE_EXPIRED", DONE_EXPIRED) < 0
        || PyModule_AddIntConstant(m, "DONE_TOO_LARGE", DONE_TOO_LARGE) < 0
        || PyModule_AddIntConstant(m, "DONE_NO_INSTANCE", DONE_NO_INSTANCE) < 0
        || PyModule_AddIntConstant(m, "DONE_HOST_OOM", DONE_HOST_OOM) < 0
        || PyModule_AddIntConstant(m, "DONE_CANCELLED", DONE_CANCELLED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
