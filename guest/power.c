/* VM poweroff: see power.h. */
#include "power.h"

#include <errno.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static sd_bus *power_bus;
static sd_event_source *power_child;
static int power_pidfd = -EBADF;
static PowerFailed power_failed;
static void *power_userdata;

static void power_report_failure(void) {
    if (power_failed) {
        power_failed(power_userdata);
    }
}

static int on_systemd_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
    const sd_bus_error *e = sd_bus_message_get_error(m);
    if (e) {
        log_error("systemd refused to power off: %s", e->message ? e->message : e->name);
        power_report_failure();
    }
    return 0;
}

static int on_logind_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
    const sd_bus_error *e = sd_bus_message_get_error(m);
    int r;

    if (!e) {
        return 0;
    }
    log_warning("logind PowerOff failed (%s), asking systemd", e->message ? e->message : e->name);
    r = sd_bus_call_method_async(power_bus, NULL, "org.freedesktop.systemd1",
                                 "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                 "PowerOff", on_systemd_reply, NULL, "");
    if (r < 0) {
        log_error_errno(r, "Failed to ask systemd to power off: %m");
        power_report_failure();
    }
    return 0;
}

static int power_off_dbus(sd_event *e) {
    int r;

    if (!power_bus) {
        r = sd_bus_open_system(&power_bus);
        if (r < 0) {
            return log_error_errno(r, "Failed to connect to the system bus: %m");
        }
        r = sd_bus_attach_event(power_bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
            return log_error_errno(r, "Failed to attach the system bus: %m");
        }
    }
    r = sd_bus_call_method_async(power_bus, NULL, "org.freedesktop.login1",
                                 "/org/freedesktop/login1", "org.freedesktop.login1.Manager",
                                 "PowerOff", on_logind_reply, NULL, "b", 0);
    if (r < 0) {
        return log_error_errno(r, "Failed to ask logind to power off: %m");
    }
    return 0;
}

static int on_command_exit(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    siginfo_t si = {0};
    if (waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0) {
        return 0;
    }
    if (si.si_code == CLD_EXITED && si.si_status == 0) {
        log_info("Poweroff command done");
    } else {
        log_error("Poweroff command failed (%s %d)", si.si_code == CLD_EXITED ? "status" : "signal",
                  si.si_status);
        power_report_failure();
    }
    power_child = sd_event_source_disable_unref(power_child);
    power_pidfd = safe_close(power_pidfd);
    return 0;
}

static int power_off_command(sd_event *e, const char *command) {
    if (power_child) {
        return -EBUSY;
    }
    pid_t pid = fork();
    if (pid < 0) {
        return log_error_errno(-errno, "Failed to fork the poweroff command: %m");
    }
    if (pid == 0) {
        sigset_t none;
        struct sigaction sa = {.sa_handler = SIG_DFL};
        for (int sig = 1; sig < NSIG; sig++) {
            (void)sigaction(sig, &sa, NULL);
        }
        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(127);
    }
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) {
        /* Cannot watch it: wait for it so that it does not linger. */
        (void)waitpid(pid, NULL, 0);
        return 0;
    }
    power_pidfd = (int)fd;
    int r = sd_event_add_io(e, &power_child, power_pidfd, EPOLLIN, on_command_exit, NULL);
    if (r < 0) {
        (void)waitpid(pid, NULL, 0);
        power_pidfd = safe_close(power_pidfd);
        return log_error_errno(r, "Failed to watch the poweroff command: %m");
    }
    return 0;
}

int power_off(sd_event *e, const char *command, PowerFailed on_failed, void *userdata) {
    power_failed = on_failed;
    power_userdata = userdata;
    if (command) {
        return power_off_command(e, command);
    }
    return power_off_dbus(e);
}

void power_done(void) {
    if (power_child) {
        siginfo_t si;
        (void)waitid(P_PIDFD, power_pidfd, &si, WEXITED);
    }
    power_child = sd_event_source_disable_unref(power_child);
    power_pidfd = safe_close(power_pidfd);
    power_bus = sd_bus_flush_close_unref(power_bus);
}
