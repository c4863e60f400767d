/* What every VMM behind VmmOps shares. */
#include "vmm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int vmm_print_command(const VmmOps *ops, const HostConfig *h, const VmConfig *vm, FILE *out,
                      ErrorText *err) {
    _cleanup_strv_free_ char **argv = NULL;
    int r = ops->argv(h, vm, &argv, err);
    if (r < 0) {
        return r;
    }
    for (char **p = argv; *p; p++) {
        fprintf(out, "%s\n", *p);
    }
    if (fflush(out) != 0 || ferror(out)) {
        r = errno > 0 ? -errno : -EIO;
        return error_set(err, r, "cannot write the command: %s", strerror(-r));
    }
    return 0;
}

void vmm_argv_add_owned(VmmArgv *a, char *s) {
    if (!s) {
        a->oom = true;
        return;
    }
    if (a->oom) {
        free(s);
        return;
    }
    if (a->n + 2 > a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        char **v = reallocarray(a->v, cap, sizeof(char *));
        if (!v) {
            free(s);
            a->oom = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

void vmm_argv_add(VmmArgv *a, const char *s) {
    vmm_argv_add_owned(a, strdup(s));
}

void vmm_argv_addf(VmmArgv *a, const char *fmt, ...) {
    char *s;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);
    vmm_argv_add_owned(a, s);
}

void vmm_argv_add_strv(VmmArgv *a, const ConfigStrv *s) {
    for (size_t i = 0; i < s->n; i++) {
        vmm_argv_add(a, s->v[i]);
    }
}

char *vmm_join_opts(const char *head, const ConfigKvList *opts, char sep) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        return NULL;
    }
    bool first = true;
    if (head) {
        fputs(head, f);
        first = false;
    }
    for (size_t i = 0; i < opts->n; i++) {
        if (!first) {
            fputc(sep, f);
        }
        fprintf(f, "%s=%s", opts->v[i].key, opts->v[i].value);
        first = false;
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

const char *vmm_env_or(const char *var, const char *fallback) {
    const char *e = getenv(var);
    return (e && *e) ? e : fallback;
}
