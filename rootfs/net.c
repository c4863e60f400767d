/* The guest's network address: see net.h. */
#include "net.h"

#include <errno.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "params.h"
#include "util.h"

static int net_socket(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

static int ifreq_init(struct ifreq *ifr, const char *ifname) {
    *ifr = (struct ifreq){0};
    if (strlen(ifname) >= sizeof(ifr->ifr_name)) {
        return -ENAMETOOLONG;
    }
    strcpy(ifr->ifr_name, ifname);
    return 0;
}

static void sockaddr_in_set(struct sockaddr *sa, struct in_addr a) {
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr = a};
    memcpy(sa, &sin, sizeof(sin));
}

static int link_up(int fd, const char *ifname) {
    struct ifreq ifr;
    int r = ifreq_init(&ifr, ifname);
    if (r < 0) {
        return r;
    }
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
        return -errno;
    }
    if (ifr.ifr_flags & IFF_UP) {
        return 0;
    }
    ifr.ifr_flags |= IFF_UP;
    return ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

int net_link_up(const char *ifname) {
    _cleanup_close_ int fd = net_socket();
    if (fd < 0) {
        return fd;
    }
    return link_up(fd, ifname);
}

int net_find_nic(const uint8_t *mac, char ret_name[IFNAMSIZ]) {
    _cleanup_close_ int fd = net_socket();
    struct if_nameindex *ifs;
    unsigned best = 0;
    char name[IFNAMSIZ] = "";

    if (fd < 0) {
        return fd;
    }
    ifs = if_nameindex();
    if (!ifs) {
        return -errno;
    }
    for (struct if_nameindex *i = ifs; i->if_index != 0; i++) {
        struct ifreq ifr;
        if (ifreq_init(&ifr, i->if_name) < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) < 0 ||
            ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
            continue;
        }
        if (mac ? memcmp(ifr.ifr_hwaddr.sa_data, mac, 6) == 0 : best == 0 || i->if_index < best) {
            best = i->if_index;
            snprintf(name, sizeof(name), "%s", i->if_name);
            if (mac) {
                break;
            }
        }
    }
    if_freenameindex(ifs);
    if (best == 0) {
        return -ENODEV;
    }
    memcpy(ret_name, name, IFNAMSIZ);
    return 0;
}

int net_set_address(const char *ifname, struct in_addr ip, unsigned prefix) {
    _cleanup_close_ int fd = net_socket();
    struct ifreq ifr;
    int r;

    if (fd < 0) {
        return fd;
    }
    r = ifreq_init(&ifr, ifname);
    if (r < 0) {
        return r;
    }
    /* The address first (the kernel gives it its class's mask), then the
     * real mask, which also replaces the prefix route. */
    sockaddr_in_set(&ifr.ifr_addr, ip);
    if (ioctl(fd, SIOCSIFADDR, &ifr) < 0) {
        return -errno;
    }
    sockaddr_in_set(&ifr.ifr_netmask, (struct in_addr){.s_addr = params_netmask(prefix)});
    if (ioctl(fd, SIOCSIFNETMASK, &ifr) < 0) {
        return -errno;
    }
    return link_up(fd, ifname);
}

int net_add_default_route(struct in_addr gw) {
    _cleanup_close_ int fd = net_socket();
    struct rtentry rt = {.rt_flags = RTF_UP | RTF_GATEWAY};

    if (fd < 0) {
        return fd;
    }
    sockaddr_in_set(&rt.rt_dst, (struct in_addr){.s_addr = INADDR_ANY});
    sockaddr_in_set(&rt.rt_genmask, (struct in_addr){.s_addr = INADDR_ANY});
    sockaddr_in_set(&rt.rt_gateway, gw);
    return ioctl(fd, SIOCADDRT, &rt) < 0 ? -errno : 0;
}
