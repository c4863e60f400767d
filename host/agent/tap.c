/* tap: making and removing a hostNetworking VM's TAP.
 *
 * The device comes from /dev/net/tun (Documentation/networking/tuntap.rst):
 *   TUNSETIFF      IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, with IFF_TUN_EXCL so
 *                  that it fails (EBUSY) rather than attach to a device
 *                  someone made meanwhile; no IFF_MULTI_QUEUE
 *   TUNSETOWNER/TUNSETGROUP   who may attach to it without CAP_NET_ADMIN
 *   TUNSETPERSIST  it outlives our descriptor, for the VMM to open by name
 * Everything else goes over rtnetlink (libmnl), each request acknowledged
 * and each answer checked: RTM_GETLINK (is it there, is it a TAP, is it
 * ours), RTM_NEWLINK (alias, IFF_UP), RTM_NEWADDR (IFA_LOCAL = IFA_ADDRESS
 * = the host's address with the /31 prefix, as `ip addr add A/31` gives:
 * RFC 3021, no broadcast), RTM_DELLINK.
 *
 * What the VMMs do when they open it by name: crosvm TUNSETIFF with
 * IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, and IFF_MULTI_QUEUE only with more
 * than one queue pair (`--net ...,vq-pairs=N`); qemu IFF_TAP | IFF_NO_PI,
 * IFF_VNET_HDR when the kernel has it, IFF_MULTI_QUEUE only with
 * `queues=N` > 1. The kernel refuses an attach whose IFF_MULTI_QUEUE
 * differs from the device's and takes the other per-queue flags from
 * whoever attaches, so a single-queue TAP serves both, as does one made by
 * `ip tuntap add ... mode tap` (the NixOS module's). */
#include "tap.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TUN_PATH "/dev/net/tun"
/* Room for any answer to the requests below (one link's attributes are a
 * few hundred bytes to a few KiB); libmnl's MNL_SOCKET_BUFFER_SIZE would
 * be a variable-length array. */
#define NL_BUFFER_SIZE 16384
/* The kernel's extended-ack text, as much as we keep of it. */
#define NL_KERNEL_MSG_MAX 160

typedef struct Netlink {
    struct mnl_socket *sock;
    unsigned portid;
    unsigned seq;
    char kernel_msg[NL_KERNEL_MSG_MAX]; /* of the last refusal, "" if none */
} Netlink;

/* What RTM_GETLINK says about one interface. */
typedef struct LinkInfo {
    int index;
    bool tap;  /* kind "tun" in TAP mode */
    bool ours; /* alias TAP_ALIAS */
    char kind[32];
} LinkInfo;

/* One request in flight: where its answers go. */
typedef struct Talk {
    Netlink *nl;
    mnl_cb_t cb; /* each answer that is not an acknowledgement or error */
    void *data;
} Talk;

static void nl_closep(Netlink *nl) {
    if (nl->sock) {
        mnl_socket_close(nl->sock);
        nl->sock = NULL;
    }
}

static int nl_open(Netlink *nl, ErrorText *err) {
    nl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
    if (!nl->sock) {
        int r = -errno;
        return error_set(err, r, "cannot open a netlink socket: %s", strerror(-r));
    }
    /* The kernel's own words with a refusal (extended ack), and only the
     * header of our request echoed back with it. Both optional: without
     * them errors come with their errno alone. */
    int one = 1;
    (void)mnl_socket_setsockopt(nl->sock, NETLINK_EXT_ACK, &one, sizeof(one));
    (void)mnl_socket_setsockopt(nl->sock, NETLINK_CAP_ACK, &one, sizeof(one));
    if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        int r = -errno;
        nl_closep(nl);
        return error_set(err, r, "cannot bind a netlink socket: %s", strerror(-r));
    }
    nl->portid = mnl_socket_get_portid(nl->sock);
    nl->seq = (unsigned)time(NULL);
    return 0;
}

static int ext_ack_attr_cb(const struct nlattr *a, void *data) {
    Netlink *nl = data;
    if (mnl_attr_get_type(a) == NLMSGERR_ATTR_MSG &&
        mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0) {
        const char *m = mnl_attr_get_str(a);
        str_sanitize(m, strlen(m), nl->kernel_msg, sizeof(nl->kernel_msg));
    }
    return MNL_CB_OK;
}

/* NLMSG_ERROR: error 0 is the acknowledgement that ends a request;
 * anything else is the kernel's refusal, kept in errno with its text. */
static int talk_error_cb(const struct nlmsghdr *nlh, void *data) {
    Talk *t = data;
    const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
    size_t len = mnl_nlmsg_get_payload_len(nlh);
    if (len < sizeof(*e)) {
        errno = EBADMSG;
        return MNL_CB_ERROR;
    }
    if (e->error == 0) {
        return MNL_CB_STOP;
    }
    if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
        /* The attributes follow our request as echoed: its header alone
         * when capped, else all of it. */
        size_t off = sizeof(*e);
        if (!(nlh->nlmsg_flags & NLM_F_CAPPED) && e->msg.nlmsg_len >= sizeof(e->msg)) {
            off += MNL_ALIGN(e->msg.nlmsg_len - sizeof(e->msg));
        }
        if (off <= len) {
            (void)mnl_attr_parse(nlh, (unsigned)off, ext_ack_attr_cb, t->nl);
        }
    }
    /* The kernel sends a negative errno; never let a refusal read as 0. */
    errno = e->error < 0 ? -e->error : e->error;
    return MNL_CB_ERROR;
}

static int talk_data_cb(const struct nlmsghdr *nlh, void *data) {
    Talk *t = data;
    if (!t->cb) {
        errno = EPROTO; /* an answer to a request that expects none */
        return MNL_CB_ERROR;
    }
    return t->cb(nlh, t->data);
}

static int talk_done_cb(const struct nlmsghdr *nlh, void *data) {
    return MNL_CB_STOP;
}

static int talk_overrun_cb(const struct nlmsghdr *nlh, void *data) {
    errno = ENOSPC;
    return MNL_CB_ERROR;
}

/* Sends req with NLM_F_ACK and reads until the kernel acknowledges it or
 * refuses: answers of other types go to cb (with data). libmnl checks that
 * each answer is well formed and carries our sequence number and port.
 * Returns 0 or a negative errno; on a refusal nl->kernel_msg holds the
 * kernel's explanation when it gave one. */
static int nl_talk(Netlink *nl, struct nlmsghdr *req, mnl_cb_t cb, void *data) {
    mnl_cb_t ctl[NLMSG_MIN_TYPE] = {
        [NLMSG_ERROR] = talk_error_cb,
        [NLMSG_DONE] = talk_done_cb,
        [NLMSG_OVERRUN] = talk_overrun_cb,
    };
    _Alignas(struct nlmsghdr) char buf[NL_BUFFER_SIZE];
    Talk t = {.nl = nl, .cb = cb, .data = data};

    req->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    req->nlmsg_seq = ++nl->seq;
    nl->kernel_msg[0] = '\0';
    if (mnl_socket_sendto(nl->sock, req, req->nlmsg_len) < 0) {
        return -errno;
    }
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(nl->sock, buf, sizeof(buf));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        errno = 0;
        int r = mnl_cb_run2(buf, (size_t)n, req->nlmsg_seq, nl->portid, talk_data_cb, &t, ctl,
                            ELEMENTSOF(ctl));
        if (r == MNL_CB_STOP) {
            return 0;
        }
        if (r == MNL_CB_ERROR) {
            return errno > 0 ? -errno : -EPROTO;
        }
    }
}

/* Fills err with "<what>: <strerror> (kernel: <text>)" and returns r. */
_printf_(4, 5) static int nl_fail(ErrorText *err, int r, const Netlink *nl, const char *fmt, ...) {
    char what[ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (nl->kernel_msg[0]) {
        return error_set(err, r, "%s: %s (kernel: %s)", what, strerror(-r), nl->kernel_msg);
    }
    return error_set(err, r, "%s: %s", what, strerror(-r));
}

static int linkinfo_data_cb(const struct nlattr *a, void *data) {
    uint8_t *tun_type = data;
    if (mnl_attr_get_type(a) == IFLA_TUN_TYPE && mnl_attr_validate(a, MNL_TYPE_U8) == 0) {
        *tun_type = mnl_attr_get_u8(a);
    }
    return MNL_CB_OK;
}

typedef struct LinkAttrs {
    LinkInfo info;
    uint16_t ifi_type;
    uint8_t tun_type; /* IFLA_TUN_TYPE: IFF_TUN or IFF_TAP; 0 if not said */
    bool answered;
} LinkAttrs;

static int linkinfo_cb(const struct nlattr *a, void *data) {
    LinkAttrs *l = data;
    switch (mnl_attr_get_type(a)) {
    case IFLA_INFO_KIND:
        if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0) {
            const char *k = mnl_attr_get_str(a);
            str_sanitize(k, strlen(k), l->info.kind, sizeof(l->info.kind));
        }
        break;
    case IFLA_INFO_DATA:
        if (mnl_attr_validate(a, MNL_TYPE_NESTED) == 0) {
            (void)mnl_attr_parse_nested(a, linkinfo_data_cb, &l->tun_type);
        }
        break;
    }
    return MNL_CB_OK;
}

static int link_attr_cb(const struct nlattr *a, void *data) {
    LinkAttrs *l = data;
    switch (mnl_attr_get_type(a)) {
    case IFLA_LINKINFO:
        if (mnl_attr_validate(a, MNL_TYPE_NESTED) == 0) {
            (void)mnl_attr_parse_nested(a, linkinfo_cb, l);
        }
        break;
    case IFLA_IFALIAS:
        if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) == 0) {
            l->info.ours = streq(mnl_attr_get_str(a), TAP_ALIAS);
        }
        break;
    }
    return MNL_CB_OK;
}

static int link_cb(const struct nlmsghdr *nlh, void *data) {
    LinkAttrs *l = data;
    if (nlh->nlmsg_type != RTM_NEWLINK || l->answered ||
        mnl_nlmsg_get_payload_len(nlh) < sizeof(struct ifinfomsg)) {
        errno = EPROTO;
        return MNL_CB_ERROR;
    }
    const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
    l->answered = true;
    l->info.index = ifi->ifi_index;
    l->ifi_type = ifi->ifi_type;
    if (mnl_attr_parse(nlh, sizeof(*ifi), link_attr_cb, l) < 0) {
        errno = EPROTO;
        return MNL_CB_ERROR;
    }
    return MNL_CB_OK;
}

/* Every link request we make fits in this. */
typedef struct LinkRequest {
    _Alignas(struct nlmsghdr) char buf[512];
} LinkRequest;

/* A link request of `type` about the interface `index` (0: named by an
 * IFLA_IFNAME the caller adds). */
static struct nlmsghdr *link_request(LinkRequest *req, uint16_t type, int index) {
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(req->buf);
    nlh->nlmsg_type = type;
    struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = index;
    return nlh;
}

/* What the interface `name` is: -ENODEV when there is none. */
static int link_get(Netlink *nl, const char *name, LinkInfo *ret, ErrorText *err) {
    LinkRequest req;
    struct nlmsghdr *nlh = link_request(&req, RTM_GETLINK, 0);
    mnl_attr_put_strz(nlh, IFLA_IFNAME, name);

    LinkAttrs l = {0};
    int r = nl_talk(nl, nlh, link_cb, &l);
    if (r == -ENODEV) {
        return r;
    }
    if (r < 0) {
        return nl_fail(err, r, nl, "cannot look up the interface %s", name);
    }
    if (!l.answered || l.info.index <= 0) {
        return error_set(err, -EPROTO, "cannot look up the interface %s: no answer", name);
    }
    /* IFLA_TUN_TYPE since Linux 4.20; before, a TAP is the tun driver's
     * Ethernet device (a TUN has no link-layer header). */
    l.info.tap = streq(l.info.kind, "tun") &&
                 (l.tun_type ? l.tun_type == IFF_TAP : l.ifi_type == ARPHRD_ETHER);
    *ret = l.info;
    return 0;
}

/* RTM_NEWLINK on an existing link: sets `alias` when given, then the
 * flags in `change` to those of `flags`. */
static int link_set(Netlink *nl, int index, const char *alias, unsigned flags, unsigned change) {
    LinkRequest req;
    struct nlmsghdr *nlh = link_request(&req, RTM_NEWLINK, index);
    struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
    ifi->ifi_flags = flags;
    ifi->ifi_change = change;
    if (alias) {
        mnl_attr_put_strz(nlh, IFLA_IFALIAS, alias);
    }
    return nl_talk(nl, nlh, NULL, NULL);
}

static int link_delete(Netlink *nl, int index) {
    LinkRequest req;
    return nl_talk(nl, link_request(&req, RTM_DELLINK, index), NULL, NULL);
}

static int addr_add(Netlink *nl, int index, struct in_addr a, unsigned prefix) {
    _Alignas(struct nlmsghdr) char buf[256];
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = RTM_NEWADDR;
    nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = (unsigned)index;
    mnl_attr_put(nlh, IFA_LOCAL, sizeof(a), &a);
    mnl_attr_put(nlh, IFA_ADDRESS, sizeof(a), &a);
    return nl_talk(nl, nlh, NULL, NULL);
}

/* As the kernel's dev_valid_name(), without '%' (a name template there). */
static int name_check(const char *name, ErrorText *err) {
    char shown[64];
    size_t len = strnlen(name, IFNAMSIZ);
    str_sanitize(name, strnlen(name, 40), shown, sizeof(shown));
    if (len == 0) {
        return error_set(err, -EINVAL, "the TAP name is empty");
    }
    if (len >= IFNAMSIZ) {
        return error_set(err, -EINVAL, "TAP name \"%s%s\" is longer than %d bytes", shown,
                         strlen(name) > 40 ? "..." : "", IFNAMSIZ - 1);
    }
    if (streq(name, ".") || streq(name, "..")) {
        return error_set(err, -EINVAL, "\"%s\" is not a valid interface name", shown);
    }
    for (const char *p = name; *p; p++) {
        if (*p == '/' || *p == ':' || *p == '%' || isspace((unsigned char)*p) ||
            !isprint((unsigned char)*p)) {
            return error_set(err, -EINVAL,
                             "TAP name \"%s\" holds a character an interface name cannot have",
                             shown);
        }
    }
    return 0;
}

/* Makes the persistent TAP `name`; returns its descriptor, still attached,
 * so that closing it after TUNSETPERSIST 0 takes the TAP away again. -EBUSY
 * (no message) when a device of that name appeared since we looked. */
static int tun_create(const char *name, uid_t owner, gid_t group, ErrorText *err) {
    _cleanup_close_ int fd = open(TUN_PATH, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int r = -errno;
        return error_set(err, r, "cannot open %s to make the TAP %s: %s", TUN_PATH, name,
                         strerror(-r));
    }
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL};
    memcpy(ifr.ifr_name, name, strlen(name) + 1); /* name_check(): < IFNAMSIZ */
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int r = -errno;
        if (r == -EBUSY) {
            return r;
        }
        return error_set(err, r, "cannot make the TAP %s (TUNSETIFF on %s): %s", name, TUN_PATH,
                         strerror(-r));
    }
    /* Before TUNSETPERSIST: until then closing fd removes the device. */
    if (owner != (uid_t)-1 && ioctl(fd, TUNSETOWNER, (unsigned long)owner) < 0) {
        int r = -errno;
        return error_set(err, r, "cannot give the TAP %s to uid %u: %s", name, (unsigned)owner,
                         strerror(-r));
    }
    if (group != (gid_t)-1 && ioctl(fd, TUNSETGROUP, (unsigned long)group) < 0) {
        int r = -errno;
        return error_set(err, r, "cannot give the TAP %s to gid %u: %s", name, (unsigned)group,
                         strerror(-r));
    }
    if (ioctl(fd, TUNSETPERSIST, 1UL) < 0) {
        int r = -errno;
        return error_set(err, r, "cannot make the TAP %s persistent: %s", name, strerror(-r));
    }
    return TAKE_FD(fd);
}

/* Takes a TAP made by tun_create() away again: no longer persistent, it
 * goes with its last descriptor, ours. Only this descriptor's device can be
 * touched, whatever its name has become. */
static void tun_undo(int fd) {
    (void)ioctl(fd, TUNSETPERSIST, 0UL);
    safe_close(fd);
}

/* Alias (first: from then on the TAP is recognisably ours, should we die
 * before the end), address, then up. */
static int tap_configure(Netlink *nl, const char *name, struct in_addr a, const char *address,
                         unsigned prefix, ErrorText *err) {
    LinkInfo link;
    int r = link_get(nl, name, &link, err);
    if (r == -ENODEV) {
        return error_set(err, r, "the TAP %s vanished as it was made", name);
    }
    if (r < 0) {
        return r;
    }
    if (!link.tap) {
        return error_set(err, -EPROTO, "%s is not the TAP just made", name);
    }
    r = link_set(nl, link.index, TAP_ALIAS, 0, 0);
    if (r < 0) {
        return nl_fail(err, r, nl, "cannot set the alias of the TAP %s", name);
    }
    r = addr_add(nl, link.index, a, prefix);
    if (r < 0) {
        return nl_fail(err, r, nl, "cannot give the TAP %s the address %s/%u", name, address,
                       prefix);
    }
    r = link_set(nl, link.index, NULL, IFF_UP, IFF_UP);
    if (r < 0) {
        return nl_fail(err, r, nl, "cannot bring the TAP %s up", name);
    }
    return 0;
}

/* Opens nl (the caller closes it) and looks `name` up, as link_get(). */
static int nl_open_and_look(Netlink *nl, const char *name, LinkInfo *ret, ErrorText *err) {
    int r = nl_open(nl, err);
    if (r < 0) {
        return r;
    }
    return link_get(nl, name, ret, err);
}

static int existing(const char *name, const LinkInfo *link, bool *ret_created, ErrorText *err) {
    if (streq(link->kind, "tun") && !link->tap) {
        return error_set(err, -EEXIST, "%s exists and is a TUN device, not a TAP", name);
    }
    if (!link->tap) {
        return error_set(err, -EEXIST, "%s exists and is not a TAP device (%s)", name,
                         link->kind[0] ? link->kind : "no link kind");
    }
    *ret_created = link->ours;
    return 0;
}

int tap_ensure(const char *name, uid_t owner, gid_t group, const char *address, unsigned prefix,
               bool *ret_created, ErrorText *err) {
    struct in_addr a;
    int r = name_check(name, err);
    if (r < 0) {
        return r;
    }
    if (inet_pton(AF_INET, address, &a) != 1) {
        return error_set(err, -EINVAL, "TAP %s: \"%.40s\" is not an IPv4 address", name, address);
    }
    if (prefix < 1 || prefix > 32) {
        return error_set(err, -EINVAL, "TAP %s: prefix length %u is not from 1 to 32", name,
                         prefix);
    }

    _cleanup_(nl_closep) Netlink nl = {0};
    LinkInfo link;
    r = nl_open_and_look(&nl, name, &link, err);
    if (r == 0) {
        return existing(name, &link, ret_created, err);
    }
    if (r != -ENODEV) {
        return r;
    }

    int fd = tun_create(name, owner, group, err);
    if (fd == -EBUSY) {
        /* Someone made it between our look and TUNSETIFF: theirs. */
        r = link_get(&nl, name, &link, err);
        if (r == -ENODEV) {
            return error_set(err, -EBUSY, "cannot make the TAP %s: the name is busy", name);
        }
        return r < 0 ? r : existing(name, &link, ret_created, err);
    }
    if (fd < 0) {
        return fd;
    }
    r = tap_configure(&nl, name, a, address, prefix, err);
    if (r < 0) {
        tun_undo(fd);
        return r;
    }
    safe_close(fd); /* persistent: it stays for the VMM */
    *ret_created = true;
    return 0;
}

int tap_remove(const char *name, ErrorText *err) {
    int r = name_check(name, err);
    if (r < 0) {
        return r;
    }
    _cleanup_(nl_closep) Netlink nl = {0};
    LinkInfo link;
    r = nl_open_and_look(&nl, name, &link, err);
    if (r == -ENODEV || (r == 0 && !(link.tap && link.ours))) {
        return 0; /* gone already, or not ours: left as it is */
    }
    if (r < 0) {
        return r;
    }
    /* By index: the device we just looked at, whatever has its name now. */
    r = link_delete(&nl, link.index);
    if (r == -ENODEV) {
        return 0; /* gone meanwhile */
    }
    if (r < 0) {
        return nl_fail(err, r, &nl, "cannot remove the TAP %s", name);
    }
    return 1;
}
