/* The guest image's kernel command line: the qubes_lite.* parameters the
 * host writes for each VM (the project README has the contract), parsed
 * into a plain struct. A bad word is reported once and ignored, so that a
 * VM with a typo on its command line still boots and can be looked at. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#define PARAMS_PREFIX "qubes_lite."
#define PARAMS_NAME_MAX 63                 /* one DNS label */
#define PARAMS_USER_MAX 32                 /* as useradd allows */
#define PARAMS_DNS_MAX 3                   /* what the resolver reads */
#define PARAMS_IDLE_MAX (365u * 24 * 3600) /* the guest agent's own bound */

typedef struct InitParams {
    char name[PARAMS_NAME_MAX + 1]; /* the hostname; "" when not given */
    unsigned idle_s;                /* the idle timeout; 0: not disposable */
    char user[PARAMS_USER_MAX + 1]; /* the default user; "" when not given */
    bool has_ip;                    /* ip/prefix on the NIC below */
    struct in_addr ip;
    unsigned prefix; /* 1..32 */
    bool has_gw;     /* the default route; only with an ip */
    struct in_addr gw;
    bool has_mac; /* which NIC gets ip; else the first */
    uint8_t mac[6];
    unsigned n_dns;
    struct in_addr dns[PARAMS_DNS_MAX];
} InitParams;

/* Called once per rejected word with one line saying which and why. */
typedef void (*ParamsReport)(const char *message, void *userdata);

/* Parses the text of /proc/cmdline into *ret (zeroed first). Words that
 * do not start with PARAMS_PREFIX are the kernel's and left alone; a
 * parameter given twice takes its last value, as the kernel does. Double
 * quotes group a word and are dropped, as the kernel does. Returns the
 * number of words reported. */
unsigned params_parse(const char *cmdline, InitParams *ret, ParamsReport report, void *userdata);

/* The address of the netmask of prefix (1..32), in network order. */
uint32_t params_netmask(unsigned prefix);
