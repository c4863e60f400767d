/* Seccomp filters from allowlist tables (filter.h): build, load, count,
 * print.
 *
 * The tables are deliberately short and specific to what the code does; a
 * call that is missing shows up as a SIGSYS in tests (run with
 * --seccomp-mode trap or log to find it), never as a silent failure.
 * Calls of another ABI (x32, i386 through int 0x80) match none of the
 * rules: they get the default action, as the native arch is the only one
 * in the filter. */
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "filter.h"
#include "util.h"

/* What the sanitizer runtime (make check) needs on top, once a process is
 * locked down; production builds do not have these. Leak checking, which
 * would need clone, ptrace and /proc, is turned off in filtered processes
 * (sandbox.c). */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif
#ifdef SANITIZER_BUILD
static const FilterRule sanitizer_rules[] = {
    FILTER_ALLOW("getpid", "reports name the process"),
    FILTER_ALLOW("gettid", "reports name the thread"),
    FILTER_ALLOW("sched_yield", "the allocator's spin locks"),
    FILTER_ALLOW("madvise", "the allocator returns memory"),
    FILTER_ALLOW_IF_CLEAR("mprotect", 2, PROT_EXEC, "the allocator's guard pages"),
    FILTER_ALLOW("munmap", "the allocator"),
    FILTER_ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "the allocator"),
    FILTER_ALLOW("write", "reports"),
    FILTER_ALLOW("rt_sigprocmask", "reports block signals"),
    FILTER_ALLOW("rt_sigaction", "reports restore dispositions"),
    FILTER_ALLOW("readlink", "reports resolve /proc/self/exe"),
    FILTER_ALLOW("prlimit64", "reports read the stack limit"),
    FILTER_ALLOW("exit_group", "abort_on_error"),
    FILTER_ALLOW("tgkill", "abort_on_error raises SIGABRT"),
    FILTER_ALLOW("sigaltstack", "the runtime's signal stack, set up and torn down at exit"),
    FILTER_ALLOW("rt_sigreturn", "the runtime's own signal handlers return"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_GET_SECCOMP, "__lsan_is_turned_off() below"),
};

/* An open that could write, create or truncate anything. */
#define OPEN_WRITE_FLAGS                                                                           \
    (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | (O_TMPFILE & ~O_DIRECTORY))

/* The runtime's start-up in a process re-executed under the filter. */
static const FilterRule sanitizer_start_rules[] = {
    FILTER_ALLOW_IF_CLEAR("open", 1, OPEN_WRITE_FLAGS, "reads /proc/self/cmdline, maps, environ"),
};

#include <sanitizer/lsan_interface.h>
#include <sys/resource.h>
/* Leak checking at exit needs clone, ptrace and /proc: nothing a filtered
 * process may do (a re-executed child inherits the filter without having
 * loaded it), nor one whose RLIMIT_NPROC is 0 (a locked-down child, even
 * with --seccomp-mode disabled). The same code run without the sandbox
 * checks leaks. */
int __lsan_is_turned_off(void) {
    struct rlimit rl;
    return filter_applied() || prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2 ||
           (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur == 0);
}
#endif

static bool loaded;

static const char *const mode_names[] = {
    [FILTER_KILL] = "kill",
    [FILTER_TRAP] = "trap",
    [FILTER_LOG] = "log",
    [FILTER_DISABLED] = "disabled",
};

int filter_mode_from_string(const char *s) {
    for (size_t i = 0; i < ELEMENTSOF(mode_names); i++) {
        if (streq(s, mode_names[i])) {
            return (int)i;
        }
    }
    return -EINVAL;
}

const char *filter_mode_to_string(FilterMode mode) {
    return (size_t)mode < ELEMENTSOF(mode_names) ? mode_names[mode] : NULL;
}

bool filter_applied(void) {
    return loaded;
}

static uint32_t default_action(FilterMode mode) {
    switch (mode) {
    case FILTER_TRAP:
        return SCMP_ACT_TRAP;
    case FILTER_LOG:
        return SCMP_ACT_LOG;
    default:
        return SCMP_ACT_KILL_PROCESS;
    }
}

static int add_rule(scmp_filter_ctx ctx, const FilterRule *r) {
    int nr = seccomp_syscall_resolve_name(r->name);
    if (nr == __NR_SCMP_ERROR) {
        return -EINVAL;
    }
    switch (r->kind) {
    case FILTER_RULE_ALLOW:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    case FILTER_RULE_ARG_EQ:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                SCMP_CMP(r->arg, SCMP_CMP_EQ, r->value));
    case FILTER_RULE_ARG_CLEAR:
        if (r->value == 0) {
            return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        }
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                SCMP_CMP(r->arg, SCMP_CMP_MASKED_EQ, r->value, 0));
    case FILTER_RULE_ERRNO:
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO((uint32_t)r->value), nr, 0);
    }
    return -EINVAL;
}

static int add_rules(scmp_filter_ctx ctx, const FilterRule *rules, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int r = add_rule(ctx, &rules[i]);
        /* A sanitizer addition may repeat a production rule. */
        if (r < 0 && r != -EEXIST) {
            return r;
        }
    }
    return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release)

/* Trap mode: say which call was refused, then end the process. Without
 * this a PID 1 would ignore the SIGSYS and go on with a bogus result.
 * write() and _exit() only: every role allows them. */
static void on_sigsys(int sig, siginfo_t *si, void *uc) {
    char buf[64] = "seccomp: refused system call ";
    char digits[12];
    size_t n = strlen(buf);
    unsigned v = (unsigned)si->si_syscall;
    int k = 0;
    do {
        digits[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && k < (int)sizeof(digits));
    while (k > 0) {
        buf[n++] = digits[--k];
    }
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* nothing more to say */
    }
    _exit(128 + SIGSYS);
}

/* Installed unless the program handles SIGSYS itself. */
static int install_trap_reporter(void) {
    struct sigaction old, sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
    if (sigaction(SIGSYS, NULL, &old) < 0) {
        return -errno;
    }
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) {
        return 0;
    }
    return sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : 0;
}

int filter_apply(const FilterTable *t, FilterMode mode) {
    if (!t || (size_t)mode >= ELEMENTSOF(mode_names)) {
        return -EINVAL;
    }
    if (mode == FILTER_DISABLED) {
        return 0;
    }
    _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = seccomp_init(default_action(mode));
    if (!ctx) {
        return -ENOMEM;
    }
    /* The caller sets no_new_privs itself, as a step of its own; libseccomp
     * must not hide a missing one. */
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    if (r < 0) {
        return r;
    }
    r = add_rules(ctx, t->rules, t->n_rules);
    if (r < 0) {
        return r;
    }
#ifdef SANITIZER_BUILD
    r = add_rules(ctx, sanitizer_rules, ELEMENTSOF(sanitizer_rules));
    if (r >= 0 && t->reexec) {
        r = add_rules(ctx, sanitizer_start_rules, ELEMENTSOF(sanitizer_start_rules));
    }
    if (r < 0) {
        return r;
    }
#endif
    if (mode == FILTER_TRAP) {
        r = install_trap_reporter();
        if (r < 0) {
            return r;
        }
    }
    r = seccomp_load(ctx);
    if (r < 0) {
        return r;
    }
    loaded = true;
    return 0;
}

size_t filter_count(const FilterTable *t) {
    size_t n = 0;
    for (size_t i = 0; i < t->n_rules; i++) {
        if (t->rules[i].kind == FILTER_RULE_ERRNO) {
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            seen =
                t->rules[j].kind != FILTER_RULE_ERRNO && streq(t->rules[j].name, t->rules[i].name);
        }
        n += !seen;
    }
    return n;
}

void filter_print(const FilterTable *t, FILE *f) {
    for (size_t i = 0; i < t->n_rules; i++) {
        const FilterRule *r = &t->rules[i];
        char cond[64] = "";
        switch (r->kind) {
        case FILTER_RULE_ALLOW:
            break;
        case FILTER_RULE_ARG_EQ:
            snprintf(cond, sizeof(cond), "arg%u == %#llx", r->arg, (unsigned long long)r->value);
            break;
        case FILTER_RULE_ARG_CLEAR:
            if (r->value != 0) {
                snprintf(cond, sizeof(cond), "(arg%u & %#llx) == 0", r->arg,
                         (unsigned long long)r->value);
            }
            break;
        case FILTER_RULE_ERRNO:
            snprintf(cond, sizeof(cond), "fails with %s", strerrorname_np((int)r->value));
            break;
        }
        fprintf(f, "%-20s %-28s %s\n", r->name, cond, r->why);
    }
    fprintf(f, "%s: %zu system calls allowed\n", t->role, filter_count(t));
}
