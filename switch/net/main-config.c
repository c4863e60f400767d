/* The configuration directory: VMs come, change and go. */
#include "main-config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "main-children.h"
#include "main-ctl.h"

/* A VM's listening vhost-user socket, <socket dir>/<name>.sock. */
static int listener_open(Switch *s, const char *name, int *ret_fd) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char file[VM_NAME_MAX + 8];
    snprintf(file, sizeof(file), "%s.sock", name);
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", s->opt->socket_dir, file);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    /* A socket left by an earlier run: ours to replace. */
    struct stat st;
    if (fstatat(s->socket_fd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
        (void)unlinkat(s->socket_fd, file, 0);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        return -errno;
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        int r = -errno;
        (void)unlinkat(s->socket_fd, file, 0);
        return r;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

void listener_close(Switch *s, Vm *v) {
    char file[VM_NAME_MAX + 8];
    if (v->listen_fd < 0) {
        return;
    }
    v->listen_fd = safe_close(v->listen_fd);
    snprintf(file, sizeof(file), "%s.sock", v->name);
    (void)unlinkat(s->socket_fd, file, 0);
}

static void vm_remove(Switch *s, Vm *v) {
    log_info("%s: removed", v->name);
    child_stop(s, v);
    unsigned port = vm_port(s, v);
    tell_peers(s, CTL_PEER_REMOVE, v);
    /* What the others counted against this port is not for the next VM in
     * the slot (their children forget it on PEER_REMOVE too). */
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        p->ring_full_to[port] = 0;
        memset(p->refused_from[port], 0, sizeof(p->refused_from[port]));
    }
    (void)policy_remove_port(s->policy, port);
    listener_close(s, v);
    vm_clear(v);
    s->stats_dirty = true;
}

/* Why conf cannot join the network as it is (or change v to it): the
 * other router or the VM with the same MAC. false when it can. */
static bool conf_conflicts(Switch *s, const Vm *self, const char *file, const VmConf *conf) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        const Vm *o = &s->vm[i];
        if (!o->used || o == self) {
            continue;
        }
        if (conf->role == VM_ROLE_ROUTER && o->conf.role == VM_ROLE_ROUTER) {
            log_error("%s: role=router, but %s is this network's router (exactly one per "
                      "network): ignored",
                      file, o->name);
            return true;
        }
        if (memcmp(conf->mac, o->conf.mac, 6) == 0) {
            log_error("%s: mac is %s's already: ignored", file, o->name);
            return true;
        }
    }
    return false;
}

/* A running VM's file changed: a new child with the new configuration. */
static void vm_change(Switch *s, Vm *v, const char *file, const VmConf *conf) {
    if (memcmp(&v->conf, conf, sizeof(*conf)) == 0) {
        return;
    }
    if (conf_conflicts(s, v, file, conf)) {
        return;
    }
    log_info("%s: configuration changed: restarting its child", v->name);
    child_stop(s, v);
    v->conf = *conf;
    (void)policy_set_port(s->policy, vm_port(s, v), conf->mac, conf->role);
    announce_peer(s, v);
    (void)child_start(s, v);
}

/* A VM new to the network: a free port, its listening socket, a child. */
static void vm_add(Switch *s, const char *name, const char *file, const VmConf *conf) {
    Vm *v = NULL;
    int r;
    if (conf_conflicts(s, NULL, file, conf)) {
        return;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        if (!s->vm[i].used) {
            v = &s->vm[i];
            break;
        }
    }
    if (!v) {
        log_error("%s: more than %u VMs on one network: ignored", file, CTL_MAX_PORTS);
        return;
    }
    vm_clear(v);
    r = listener_open(s, name, &v->listen_fd);
    if (r < 0) {
        log_error_errno(r, "%s: cannot listen on %s/%s.sock: %m: ignored", file, s->opt->socket_dir,
                        name);
        return;
    }
    r = policy_set_port(s->policy, vm_port(s, v), conf->mac, conf->role);
    if (r < 0) {
        listener_close(s, v);
        log_error_errno(r, "%s: refused by the policy: %m", file);
        return;
    }
    v->used = true;
    v->conf = *conf;
    snprintf(v->name, sizeof(v->name), "%s", name);
    log_info("%s: added (%s)", name, role_name(conf->role));
    announce_peer(s, v);
    (void)child_start(s, v);
}

/* The VM name of a <vm>.conf file name; false for anything else. */
static bool conf_file_vm(const char *file, char name[VM_NAME_MAX + 1]) {
    size_t len = strlen(file);
    return len > 5 && streq(file + len - 5, ".conf") &&
           vm_name_from_filename(file, ".conf", name) >= 0;
}

/* One file of the directory, as it is now. */
static void config_file(Switch *s, const char *file) {
    char name[VM_NAME_MAX + 1];
    ErrorText err;
    VmConf conf;
    size_t n = strlen(file);
    if (n < 5 || !streq(file + n - 5, ".conf") || file[0] == '.') {
        return; /* not ours: editors' temporary files and the like */
    }
    if (vm_name_from_filename(file, ".conf", name) < 0) {
        char safe[64];
        log_error("%s: not a VM name ([a-z][a-z0-9-]{0,11}.conf): ignored",
                  str_sanitize(file, n, safe, sizeof(safe)));
        return;
    }
    Vm *v = vm_find(s, name);
    int r = vm_conf_load_at(s->config_fd, file, &conf, &err);
    if (r == -ENOENT) {
        if (v) {
            vm_remove(s, v);
        }
        return;
    }
    if (r < 0) {
        log_error("%s%s", err.message,
                  v ? " (the running VM keeps its configuration)" : ": ignored");
        return;
    }
    if (v) {
        vm_change(s, v, file, &conf);
    } else {
        vm_add(s, name, file, &conf);
    }
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The directory's entries but dot files, sorted (so that which of two
 * routers wins does not depend on the directory's order), into names
 * (the caller frees each) and their count into *ret_n. -1 when the
 * directory cannot be read (logged). */
static int config_list(Switch *s, char *names[CONFIG_SCAN_MAX], size_t *ret_n) {
    size_t n = 0;
    int dfd = fcntl(s->config_fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0) {
        log_error("cannot read %s: %m", s->opt->config_dir);
        return -1;
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        log_error("cannot read %s: %m", s->opt->config_dir);
        close(dfd);
        return -1;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) && n < CONFIG_SCAN_MAX) {
        if (de->d_name[0] != '.') {
            names[n] = strdup(de->d_name);
            if (names[n]) {
                n++;
            }
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    *ret_n = n;
    return 0;
}

/* VMs whose file is gone leave the network. */
static void remove_vanished(Switch *s) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        char file[VM_NAME_MAX + 8];
        struct stat st;
        if (!v->used) {
            continue;
        }
        snprintf(file, sizeof(file), "%s.conf", v->name);
        if (fstatat(s->config_fd, file, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
            vm_remove(s, v);
        }
    }
}

void config_scan(Switch *s, bool only_new) {
    char *names[CONFIG_SCAN_MAX];
    size_t n = 0;
    if (config_list(s, names, &n) < 0) {
        return;
    }
    remove_vanished(s);
    for (size_t i = 0; i < n; i++) {
        char name[VM_NAME_MAX + 1];
        bool known = conf_file_vm(names[i], name) && vm_find(s, name);
        if (!only_new || !known) {
            config_file(s, names[i]);
        }
        free(names[i]);
    }
}

/* A file left the directory: only a VM of ours leaving changes anything.
 * true when one did (a file refused for a conflict with it may get in). */
static bool config_file_gone(Switch *s, const char *file) {
    char name[VM_NAME_MAX + 1];
    Vm *v = conf_file_vm(file, name) ? vm_find(s, name) : NULL;
    if (!v) {
        return false;
    }
    vm_remove(s, v);
    return true;
}

void on_inotify(Switch *s) {
    union {
        struct inotify_event ev;
        char buf[4096];
    } u;
    bool rescan = false, admit = false;
    for (;;) {
        ssize_t n = read(s->inotify_fd, u.buf, sizeof(u.buf));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        for (char *p = u.buf; p < u.buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                rescan = true;
                continue;
            }
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                log_error("%s was removed or moved: no more configuration changes",
                          s->opt->config_dir);
                continue;
            }
            if (ev->len == 0 || ev->name[0] == '\0') {
                continue;
            }
            if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
                admit = config_file_gone(s, ev->name) || admit;
            } else {
                config_file(s, ev->name);
            }
        }
    }
    if (rescan || admit) {
        config_scan(s, !rescan);
    }
}
