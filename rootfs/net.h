/* The guest's network address, set the way ifconfig and route set it
 * (SIOCSIF*, SIOCADDRT): IPv4 on one NIC and a default route. */
#pragma once

#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>

/* Brings the interface up. */
int net_link_up(const char *ifname);

/* The name of the Ethernet NIC with this MAC, or with mac NULL the first
 * one (lowest index), into ret_name; -ENODEV when there is none. */
int net_find_nic(const uint8_t *mac, char ret_name[IFNAMSIZ]);

/* Sets ip/prefix on the interface and brings it up. */
int net_set_address(const char *ifname, struct in_addr ip, unsigned prefix);

/* Adds the default route through gw. */
int net_add_default_route(struct in_addr gw);
