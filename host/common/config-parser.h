/* The tools the configuration's file parsers share (config.c,
 * config-sets.c): a Parser that records every problem of one file, key
 * names for the messages, typed getters, and the small value checks they
 * are handed. Internal to host/common.
 *
 * One parser walks a whole file and records every problem it finds: the
 * first goes to the caller's ErrorText (loading stops at it), each one,
 * as a line, to the report stream when there is one (`--check` lists
 * them all). Getters take an object and a key: an absent key or JSON null
 * keeps the default already in *out; a value of the wrong type or out of
 * range is a problem naming the dotted key ("crosvm.logLevel",
 * "additionalDisks[1].path"). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "host/common/config.h"
#include "util.h"

/* A dotted key with list indexes, as messages show it. */
#define CONFIG_KEY_MAX 160
/* A network interface name: IFNAMSIZ less the NUL. */
#define CONFIG_IFNAME_MAX 15u
/* What the log-level keys accept, in the words of their message. */
#define CONFIG_LOG_LEVEL_WHAT "a log level (error, warn, info, debug, trace)"

typedef struct ConfigParser {
    const char *path; /* the file, first in every message */
    ErrorText *err;   /* the first problem (may be NULL) */
    FILE *report;     /* every problem, a line each (may be NULL) */
    int first_r;      /* the first problem's negative errno */
    unsigned problems;
} ConfigParser;

/* Records a problem: "PATH: key 'KEY': REASON" (without key: "PATH:
 * REASON"). Returns r. */
_printf_(4, 5) int parser_problem(ConfigParser *p, int r, const char *key, const char *fmt, ...);
/* An out-of-memory problem; -ENOMEM. */
int parser_oom(ConfigParser *p);
/* strdup() that reports running out of memory. */
char *parser_strdup(ConfigParser *p, const char *s);

/* "prefix.name" (or "name" without a prefix) into buf; returns buf. */
const char *parser_key(char buf[static CONFIG_KEY_MAX], const char *prefix, const char *name);
/* "prefix[i]" into buf; returns buf. */
const char *parser_key_index(char buf[static CONFIG_KEY_MAX], const char *prefix, size_t i);

/* Parses the parser's file, which must hold one JSON object (duplicate
 * keys refused); a problem otherwise, -ENOENT when it does not exist. */
int parser_load_object(ConfigParser *p, json_t **ret);

/* Reports every key of obj that `allowed` (NULL-terminated) lacks. */
void parser_check_keys(ConfigParser *p, json_t *obj, const char *prefix,
                       const char *const *allowed);
/* obj's value for name unless absent or null (obj may be NULL). */
json_t *parser_present(json_t *obj, const char *name);
void parser_bool(ConfigParser *p, json_t *obj, const char *prefix, const char *name, bool *out);
void parser_uint(ConfigParser *p, json_t *obj, const char *prefix, const char *name, unsigned min,
                 unsigned max, unsigned *out);
/* A string that `valid` (may be NULL) accepts, `what` naming what it
 * must be; replaces *out. */
void parser_string(ConfigParser *p, json_t *obj, const char *prefix, const char *name,
                   bool (*valid)(const char *), const char *what, char **out);
/* A list: an array of as many zeroed items of item_size as it has (and
 * one more, a terminator), its JSON array in *ret_array; NULL when absent,
 * or reported as not a list ("must be a list of WHAT"), or out of memory. */
void *parser_list(ConfigParser *p, json_t *obj, const char *prefix, const char *name,
                  const char *what, size_t item_size, json_t **ret_array);
/* A list of strings, each one checked as parser_string() does. */
void parser_strv(ConfigParser *p, json_t *obj, const char *prefix, const char *name,
                 bool (*valid)(const char *), const char *what, ConfigStrv *out);
/* An object, or NULL (absent, null, or reported as not an object). */
json_t *parser_object(ConfigParser *p, json_t *obj, const char *prefix, const char *name);

/* ---- the small value checks -------------------------------------------------------------- */

bool config_log_level_valid(const char *s);
bool config_ifname_valid(const char *s);
/* An option key of a free-form set: [A-Za-z0-9_-]+. */
bool config_opt_key_valid(const char *s);
bool config_has_control(const char *s);
/* Absolute, no control characters. */
bool config_path_valid(const char *s);
/* "01:00.0" or "0000:01:00.0" (config_pci_canonical()). */
bool config_pci_valid(const char *s);
/* "a.b.c.d/N", canonical (no leading zeros), N from
 * CONFIG_NETWORK_PREFIX_MIN to CONFIG_NETWORK_PREFIX_MAX and the host part
 * 0, into the address (host order) and N. */
bool config_network_parse(const char *s, uint32_t *ret_addr, unsigned *ret_prefix);
