/* host/config: host.json and vms/<name>.json. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/config.h"
#include "rules.h"
#include "util.h"

static char dir[] = "/tmp/test-config-XXXXXX";

static void write_file(const char *rel, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state) {
    char path[256];
    if (!mkdtemp(dir)) {
        return -1;
    }
    snprintf(path, sizeof(path), "%s/vms", dir);
    return mkdir(path, 0755);
}

static int teardown(void **state) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_dirs_from_environment(void **state) {
    setenv("QUBES_LITE_CONFIG_DIR", "/x/etc", 1);
    setenv("QUBES_LITE_RUNTIME_DIR", "/x/run", 1);
    assert_string_equal(config_dir(), "/x/etc");
    assert_string_equal(config_runtime_dir(), "/x/run");
    setenv("QUBES_LITE_CONFIG_DIR", "", 1);
    unsetenv("QUBES_LITE_RUNTIME_DIR");
    assert_string_equal(config_dir(), "/etc/qubes-lite");
    assert_string_equal(config_runtime_dir(), "/run/qubes-lite");
    unsetenv("QUBES_LITE_CONFIG_DIR");
}

static void test_host_ok(void **state) {
    HostConfig *c = NULL;
    ErrorText err;
    write_file("host.json", "{\"user\": \"root\"}");
    assert_int_equal(config_load_host(dir, &c, &err), 0);
    assert_string_equal(c->user, "root");
    assert_int_equal(c->user_uid, 0);
    host_config_free(c);

    write_file("host.json", "{}");
    assert_int_equal(config_load_host(dir, &c, &err), 0);
    assert_null(c->user);
    host_config_free(c);
}

static void expect_host_error(const char *text, int error, const char *needle) {
    HostConfig *c = NULL;
    ErrorText err = {{0}};
    write_file("host.json", text);
    assert_int_equal(config_load_host(dir, &c, &err), error);
    assert_null(c);
    if (!strstr(err.message, needle) || !strstr(err.message, "host.json")) {
        fail_msg("'%s' lacks '%s' or the file name", err.message, needle);
    }
}

static void test_host_errors(void **state) {
    expect_host_error("{\"user\": 1000}", -EINVAL, "key 'user': must be a string");
    expect_host_error("{\"user\": \"no such user here\"}", -EINVAL, "not a valid user name");
    expect_host_error("{\"user\": \"nosuchuserxyz\"}", -ESRCH, "no such user 'nosuchuserxyz'");
    expect_host_error("[1]", -EINVAL, "must hold a JSON object");
    expect_host_error("{\"user\": ", -EINVAL, "invalid JSON");
    expect_host_error("{\"user\": \"root\", \"user\": \"root\"}", -EINVAL, "invalid JSON");
    /* Unknown keys, at every level. */
    expect_host_error("{\"user\": \"root\", \"someFutureKey\": [1, 2]}", -EINVAL,
                      "key 'someFutureKey': unknown key");
    expect_host_error("{\"nixosVms\": []}", -EINVAL, "key 'nixosVms': unknown key");
    expect_host_error("{\"crosvm\": {\"logLvl\": \"info\"}}", -EINVAL,
                      "key 'crosvm.logLvl': unknown key");
    expect_host_error("{\"hostNetworking\": {\"nat\": {\"iface\": \"eth0\"}}}", -EINVAL,
                      "key 'hostNetworking.nat.iface': unknown key");
    expect_host_error("{\"vm-switch\": {\"extraRunArgs\": []}}", -EINVAL,
                      "key 'vm-switch.extraRunArgs': unknown key");
    /* Wrong types. */
    expect_host_error("{\"hostNetworking\": true}", -EINVAL,
                      "key 'hostNetworking': must be an attribute set");
    expect_host_error("{\"hostNetworking\": {\"nat\": {\"enable\": \"yes\"}}}", -EINVAL,
                      "key 'hostNetworking.nat.enable': must be true or false");
    expect_host_error("{\"enableBashIntegration\": 1}", -EINVAL,
                      "key 'enableBashIntegration': must be true or false");
    expect_host_error("{\"crosvm\": {\"extraArgs\": \"--foo\"}}", -EINVAL,
                      "key 'crosvm.extraArgs': must be a list of strings");
    expect_host_error("{\"crosvm\": {\"extraRunArgs\": [\"--a\", 2]}}", -EINVAL,
                      "key 'crosvm.extraRunArgs[1]': must be a string");
    expect_host_error("{\"isolatedPciDevices\": \"01:00.0\"}", -EINVAL,
                      "key 'isolatedPciDevices': must be a list of strings");
    /* Bad values. */
    expect_host_error("{\"crosvm\": {\"logLevel\": \"loud\"}}", -EINVAL,
                      "key 'crosvm.logLevel': 'loud' is not a log level");
    expect_host_error("{\"vm-switch\": {\"logLevel\": \"verbose\"}}", -EINVAL,
                      "key 'vm-switch.logLevel': 'verbose' is not a log level");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.0.0.1/24\"}}", -EINVAL,
                      "key 'hostNetworking.network': '10.0.0.1/24' is not an IPv4 network "
                      "a.b.c.d/N (N from 1 to 30, host part 0)");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.0.0.128/24\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.1.0.0/15\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.0.0.0/31\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"0.0.0.0/0\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.0.0.0/024\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.0.0.0\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"10.0.256.0/24\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"hostNetworking\": {\"network\": \"010.0.0.0/24\"}}", -EINVAL,
                      "key 'hostNetworking.network'");
    expect_host_error("{\"isolatedPciDevices\": [\"01:00.0\", \"1:0.0\"]}", -EINVAL,
                      "key 'isolatedPciDevices[1]': '1:0.0' is not a PCI address");
    expect_host_error("{\"isolatedPciDevices\": [\"01:20.0\"]}", -EINVAL,
                      "key 'isolatedPciDevices[0]'");
    expect_host_error("{\"hostNetworking\": {\"nat\": {\"interface\": \"a/b\"}}}", -EINVAL,
                      "key 'hostNetworking.nat.interface': 'a/b' is not a network interface");
    /* Missing required values. */
    expect_host_error("{\"hostNetworking\": {\"nat\": {\"enable\": true}}}", -EINVAL,
                      "key 'hostNetworking.nat.interface': missing (required when "
                      "hostNetworking.nat.enable is true)");
    expect_host_error("{\"hostNetworking\": {\"nat\": {\"enable\": true, "
                      "\"interface\": \"\"}}}",
                      -EINVAL, "key 'hostNetworking.nat.interface': missing");
}

static void test_host_defaults_and_values(void **state) {
    HostConfig *c = NULL;
    ErrorText err;
    write_file("host.json", "{}");
    assert_int_equal(config_load_host(dir, &c, &err), 0);
    assert_string_equal(c->network, "172.16.200.0/24");
    assert_int_equal(c->network_addr, 0xac10c800); /* 172.16.200.0 */
    assert_int_equal(c->network_prefix, 24);
    assert_false(c->nat_enable);
    assert_string_equal(c->nat_interface, "");
    assert_true(c->enable_bash_integration);
    assert_string_equal(c->crosvm_log_level, "info");
    assert_string_equal(c->switch_log_level, "info");
    assert_int_equal(c->crosvm_extra_args.n, 0);
    assert_int_equal(c->isolated_pci_devices.n, 0);
    host_config_free(c);

    /* The same as the defaults function. */
    assert_int_equal(config_host_defaults(&c), 0);
    assert_string_equal(c->network, "172.16.200.0/24");
    assert_string_equal(c->crosvm_log_level, "info");
    assert_true(c->enable_bash_integration);
    host_config_free(c);

    /* null is the default too (the NixOS module writes unset options so). */
    write_file("host.json", "{\"user\": null, \"hostNetworking\": {\"network\": \"10.9.8.0/24\", "
                            "\"nat\": {\"enable\": true, \"interface\": \"eth0\"}}, "
                            "\"enableBashIntegration\": false, "
                            "\"crosvm\": {\"logLevel\": \"debug\", \"extraArgs\": [\"--a\"], "
                            "\"extraRunArgs\": [\"--b\", \"c\"]}, "
                            "\"vm-switch\": {\"logLevel\": \"trace\", \"extraArgs\": [\"--x\"]}, "
                            "\"isolatedPciDevices\": [\"01:00.0\", \"0000:0A:1f.7\"]}");
    assert_int_equal(config_load_host(dir, &c, &err), 0);
    assert_null(c->user);
    assert_string_equal(c->network, "10.9.8.0/24");
    assert_int_equal(c->network_addr, 0x0a090800);
    assert_int_equal(c->network_prefix, 24);
    assert_true(c->nat_enable);
    assert_string_equal(c->nat_interface, "eth0");
    assert_false(c->enable_bash_integration);
    assert_string_equal(c->crosvm_log_level, "debug");
    assert_int_equal(c->crosvm_extra_args.n, 1);
    assert_string_equal(c->crosvm_extra_args.v[0], "--a");
    assert_int_equal(c->crosvm_extra_run_args.n, 2);
    assert_string_equal(c->crosvm_extra_run_args.v[1], "c");
    assert_string_equal(c->switch_log_level, "trace");
    assert_string_equal(c->switch_extra_args.v[0], "--x");
    assert_int_equal(c->isolated_pci_devices.n, 2);
    assert_string_equal(c->isolated_pci_devices.v[0], "0000:01:00.0");
    assert_string_equal(c->isolated_pci_devices.v[1], "0000:0a:1f.7");
    host_config_free(c);
}

static void test_host_missing(void **state) {
    HostConfig *c = NULL;
    ErrorText err;
    char path[256];
    snprintf(path, sizeof(path), "%s/host.json", dir);
    unlink(path);
    assert_int_equal(config_load_host(dir, &c, &err), -ENOENT);
    assert_non_null(strstr(err.message, "host.json"));
}

static void test_vm_ok(void **state) {
    VmConfig *c = NULL;
    ErrorText err;
    write_file("vms/work.json", "{\"id\": 3, \"name\": \"work\", \"memory\": 1024}");
    assert_int_equal(config_load_vm(dir, "work", &c, &err), 0);
    assert_string_equal(c->name, "work");
    assert_int_equal(c->id, 3);
    vm_config_free(c);

    /* name may be left out: the file name is the name. */
    write_file("vms/vault.json", "{\"id\": 255}");
    assert_int_equal(config_load_vm(dir, "vault", &c, &err), 0);
    assert_string_equal(c->name, "vault");
    assert_int_equal(c->id, 255);
    vm_config_free(c);
}

/* JSON written with single quotes, for readability; turned into double
 * quotes here (no test value holds a quote). */
static void write_json(const char *rel, const char *text) {
    char *copy = strdup(text);
    assert_non_null(copy);
    for (char *c = copy; *c; c++) {
        if (*c == '\'') {
            *c = '"';
        }
    }
    write_file(rel, copy);
    free(copy);
}

static VmConfig *load_vmj(const char *name, const char *text) {
    char rel[64];
    VmConfig *c = NULL;
    ErrorText err = {{0}};
    snprintf(rel, sizeof(rel), "vms/%s.json", name);
    write_json(rel, text);
    int r = config_load_vm(dir, name, &c, &err);
    if (r < 0) {
        fail_msg("loading %s failed: %s", text, err.message);
    }
    return c;
}

/* Each rule: the file, the key and the reason in one message. */
static void expect_vmj(const char *text, const char *needle) {
    VmConfig *c = NULL;
    ErrorText err = {{0}};
    write_json("vms/bad.json", text);
    assert_int_equal(config_load_vm(dir, "bad", &c, &err), -EINVAL);
    assert_null(c);
    if (!strstr(err.message, needle) || !strstr(err.message, "vms/bad.json")) {
        fail_msg("'%s' lacks '%s' or the file name", err.message, needle);
    }
}

static void expect_vm_error(const char *text, int error, const char *needle) {
    VmConfig *c = NULL;
    ErrorText err = {{0}};
    write_file("vms/bad.json", text);
    assert_int_equal(config_load_vm(dir, "bad", &c, &err), error);
    assert_null(c);
    if (!strstr(err.message, needle) || !strstr(err.message, "vms/bad.json")) {
        fail_msg("'%s' lacks '%s' or the file name", err.message, needle);
    }
}

static void test_vm_errors(void **state) {
    expect_vm_error("{}", -EINVAL, "key 'id': missing");
    expect_vm_error("{\"id\": \"3\"}", -EINVAL, "key 'id': must be an integer");
    expect_vm_error("{\"id\": 3.0}", -EINVAL, "key 'id': must be an integer");
    expect_vm_error("{\"id\": 4}", -EINVAL, "key 'id': must be odd");
    expect_vm_error("{\"id\": 1}", -EINVAL, "not 1");
    expect_vm_error("{\"id\": 257}", -EINVAL, "not 257");
    expect_vm_error("{\"id\": -3}", -EINVAL, "key 'id'");
    expect_vm_error("{\"id\": 3, \"name\": 5}", -EINVAL, "key 'name': must be a string");
    expect_vm_error("{\"id\": 3, \"name\": \"Bad\"}", -EINVAL, "key 'name': 'Bad' is not");
    expect_vm_error("{\"id\": 3, \"name\": \"other\"}", -EINVAL, "does not match");
    expect_vm_error("{\"id\": 3,}", -EINVAL, "invalid JSON");
}

static void test_vm_unknown_keys(void **state) {
    expect_vmj("{'id': 3, 'guestPrograms': []}", "key 'guestPrograms': unknown key");
    expect_vmj("{'id': 3, 'memroy': 10}", "key 'memroy': unknown key");
    expect_vmj("{'id': 3, 'crosvm': {'extra': []}}", "key 'crosvm.extra': unknown key");
    expect_vmj("{'id': 3, 'vmNetwork': {'lan': {'gateway': true}}}",
               "key 'vmNetwork.lan.gateway': unknown key");
}

static void test_vm_wrong_types(void **state) {
    expect_vmj("{'id': 3, 'memory': '1024'}", "key 'memory': must be an integer");
    expect_vmj("{'id': 3, 'cpus': true}", "key 'cpus': must be an integer");
    expect_vmj("{'id': 3, 'hostNetworking': 'yes'}", "key 'hostNetworking': must be true or false");
    expect_vmj("{'id': 3, 'disposable': 1}", "key 'disposable': must be true or false");
    expect_vmj("{'id': 3, 'idleTimeout': 1.5}", "key 'idleTimeout': must be an integer");
    expect_vmj("{'id': 3, 'rootDiskReadonly': 'no'}", "key 'rootDiskReadonly': must be true");
    expect_vmj("{'id': 3, 'kernel': 5}", "key 'kernel': must be a string");
    expect_vmj("{'id': 3, 'initramfs': []}", "key 'initramfs': must be a string");
    expect_vmj("{'id': 3, 'kernelParams': 'quiet'}", "key 'kernelParams': must be a list");
    expect_vmj("{'id': 3, 'kernelParams': ['quiet', 1]}",
               "key 'kernelParams[1]': must be a string");
    expect_vmj("{'id': 3, 'gpu': 1}", "key 'gpu': must be true, false or an attribute set");
    expect_vmj("{'id': 3, 'sound': 'pulse'}", "key 'sound': must be true, false or");
    expect_vmj("{'id': 3, 'additionalDisks': {'path': '/a'}}",
               "key 'additionalDisks': must be a list of attribute sets");
    expect_vmj("{'id': 3, 'additionalDisks': ['/a']}",
               "key 'additionalDisks[0]': must be an attribute set");
    expect_vmj("{'id': 3, 'sharedDirectories': [{'path': '/a', 'tag': 't', 'uid': [1]}]}",
               "key 'sharedDirectories[0].uid': must be a string, an integer or a boolean");
    expect_vmj("{'id': 3, 'pciDevices': [{'path': 1}]}",
               "key 'pciDevices[0].path': must be a string");
    expect_vmj("{'id': 3, 'vmNetwork': []}", "key 'vmNetwork': must be an attribute set");
    expect_vmj("{'id': 3, 'vmNetwork': {'lan': {'router': 'yes'}}}",
               "key 'vmNetwork.lan.router': must be true or false");
    expect_vmj("{'id': 3, 'vhostUser': [{'type': 'net', 'socket': {}}]}",
               "key 'vhostUser[0].socket': must be a string");
    expect_vmj("{'id': 3, 'crosvm': []}", "key 'crosvm': must be an attribute set");
    expect_vmj("{'id': 3, 'crosvm': {'logLevel': 3}}", "key 'crosvm.logLevel': must be a string");
    expect_vmj("{'id': 3, 'rootDisk': 5}", "key 'rootDisk': must be an attribute set");
}

static void test_vm_missing_required(void **state) {
    expect_vmj("{'name': 'bad'}", "key 'id': missing");
    expect_vmj("{'id': null}", "key 'id': missing");
    expect_vmj("{'id': 3, 'additionalDisks': [{'ro': false}]}",
               "key 'additionalDisks[0].path': missing");
    expect_vmj("{'id': 3, 'rootDisk': {'sparse': false}}", "key 'rootDisk.path': missing");
    expect_vmj("{'id': 3, 'sharedDirectories': [{'path': '/srv'}]}",
               "key 'sharedDirectories[0].tag': missing");
    expect_vmj("{'id': 3, 'sharedDirectories': [{'tag': 'srv'}]}",
               "key 'sharedDirectories[0].path': missing");
    expect_vmj("{'id': 3, 'pciDevices': [{'iommu': 'on'}]}", "key 'pciDevices[0].path': missing");
    expect_vmj("{'id': 3, 'vhostUser': [{'type': 'net'}]}", "key 'vhostUser[0].socket': missing");
    expect_vmj("{'id': 3, 'vhostUser': [{'socket': '/s'}]}", "key 'vhostUser[0].type': missing");
}

static void test_vm_memory_cpus_positive(void **state) {
    expect_vmj("{'id': 3, 'memory': 0}", "key 'memory': must be from 1 to");
    expect_vmj("{'id': 3, 'memory': -1024}", "key 'memory': must be from 1");
    expect_vmj("{'id': 3, 'cpus': 0}", "key 'cpus': must be from 1 to");
    expect_vmj("{'id': 3, 'cpus': -2}", "key 'cpus'");
    expect_vmj("{'id': 3, 'cpus': 100000}", "key 'cpus': must be from 1 to 1024, not 100000");
    expect_vmj("{'id': 3, 'idleTimeout': 0}", "key 'idleTimeout': must be from 1");
}

static void test_vm_bad_values(void **state) {
    expect_vmj("{'id': 3, 'kernel': 'bzImage'}", "key 'kernel': 'bzImage' is not an absolute path");
    expect_vmj("{'id': 3, 'initramfs': 'initrd'}", "key 'initramfs': 'initrd' is not an absolute");
    expect_vmj("{'id': 3, 'rootDisk': 'root.img'}",
               "key 'rootDisk': 'root.img' is not an absolute");
    expect_vmj("{'id': 3, 'additionalDisks': [{'path': 'data.qcow2'}]}",
               "key 'additionalDisks[0].path': 'data.qcow2' is not an absolute path");
    /* A separator in a value would smuggle in another option. */
    expect_vmj("{'id': 3, 'additionalDisks': [{'path': '/a,ro=false'}]}",
               "key 'additionalDisks[0].path': '/a,ro=false' holds ','");
    expect_vmj("{'id': 3, 'additionalDisks': [{'path': '/a', 'id': 'x,root'}]}",
               "key 'additionalDisks[0].id': 'x,root' holds ','");
    expect_vmj("{'id': 3, 'sharedDirectories': [{'path': '/a:b', 'tag': 't'}]}",
               "key 'sharedDirectories[0].path': '/a:b' holds ':'");
    expect_vmj("{'id': 3, 'sharedDirectories': [{'path': '/a', 'tag': 't:type=p9'}]}",
               "key 'sharedDirectories[0].tag': 't:type=p9' holds ':'");
    expect_vmj("{'id': 3, 'sharedDirectories': [{'path': '/a', 'tag': ''}]}",
               "key 'sharedDirectories[0].tag': must be a non-empty string");
    expect_vmj("{'id': 3, 'gpu': {'width': '1920,vulkan'}}",
               "key 'gpu.width': '1920,vulkan' holds");
    expect_vmj("{'id': 3, 'gpu': {'a=b': 1}}", "key 'gpu.a=b': not a valid option name");
    expect_vmj("{'id': 3, 'gpu': {}}", "key 'gpu': an empty attribute set");
    expect_vmj("{'id': 3, 'vhostUser': [{'type': 'net', 'socket': '/s,type=block'}]}",
               "key 'vhostUser[0].socket': '/s,type=block' holds ','");
    expect_vmj("{'id': 3, 'kernel': '/boot/vm\nlinuz'}", "invalid JSON");
    expect_vmj("{'id': 3, 'additionalDisks': [{'path': '/a', 'id': 'a\\u0001'}]}",
               "key 'additionalDisks[0].id': holds a control character");
    /* PCI addresses. */
    expect_vmj("{'id': 3, 'pciDevices': [{'path': '/sys/bus/pci/devices/0000:01:00.0'}]}",
               "key 'pciDevices[0].path': '/sys/bus/pci/devices/0000:01:00.0' is not a PCI");
    expect_vmj("{'id': 3, 'pciDevices': [{'path': '01:00.8'}]}", "key 'pciDevices[0].path'");
    expect_vmj("{'id': 3, 'pciDevices': [{'path': '01:00'}]}", "key 'pciDevices[0].path'");
    expect_vmj("{'id': 3, 'additionalDisks': [{'path': '/a', 'root': true}]}",
               "key 'additionalDisks[0].root': only rootDisk is the root device");
    /* rootDisk: ro comes from rootDiskReadonly, root is implied. */
    expect_vmj("{'id': 3, 'rootDisk': {'path': '/r', 'ro': false}}",
               "key 'rootDisk.ro': set by rootDiskReadonly");
    expect_vmj("{'id': 3, 'rootDisk': {'path': '/r', 'root': true}}", "key 'rootDisk.root'");
    /* Log levels, networks, MACs. */
    expect_vmj("{'id': 3, 'crosvm': {'logLevel': 'chatty'}}",
               "key 'crosvm.logLevel': 'chatty' is not a log level");
    expect_vmj("{'id': 3, 'vmNetwork': {'Lan': {}}}",
               "key 'vmNetwork.Lan': 'Lan' is not a valid network name");
    expect_vmj("{'id': 3, 'vmNetwork': {'lan': {'macAddress': '52:54:00:12:34'}}}",
               "key 'vmNetwork.lan.macAddress': '52:54:00:12:34' is not a VM's MAC address");
    expect_vmj("{'id': 3, 'vmNetwork': {'lan': {'macAddress': '53:54:00:12:34:56'}}}",
               "key 'vmNetwork.lan.macAddress': '53:54:00:12:34:56' is not a VM's MAC address");
    expect_vmj("{'id': 3, 'vmNetwork': {'lan': {'macAddress': '00:00:00:00:00:00'}}}",
               "key 'vmNetwork.lan.macAddress': '00:00:00:00:00:00' is not a VM's MAC address");
    expect_vmj("{'id': 3, 'vmNetwork': {'lan': 5}}",
               "key 'vmNetwork.lan': must be an attribute set");
}

static void test_vm_all_problems_at_once(void **state) {
    /* Loading stops at nothing: the first problem is the one returned. */
    VmConfig *c = NULL;
    ErrorText err = {{0}};
    write_json("vms/bad.json", "{'id': 4, 'memory': 0, 'what': 1}");
    assert_int_equal(config_load_vm(dir, "bad", &c, &err), -EINVAL);
    assert_non_null(strstr(err.message, "key 'what': unknown key"));
}

static void test_vm_defaults(void **state) {
    VmConfig *c = load_vmj("plain", "{'id': 3}");
    assert_string_equal(c->name, "plain");
    assert_non_null(strstr(c->path, "vms/plain.json"));
    assert_int_equal(c->memory_mib, 1024);
    assert_int_equal(c->cpus, 2);
    assert_false(c->host_networking);
    assert_false(c->disposable);
    assert_int_equal(c->idle_timeout, 60);
    assert_int_equal(c->additional_disks.n, 0);
    assert_null(c->root_disk);
    assert_null(c->kernel);
    assert_null(c->initramfs);
    assert_true(c->root_disk_readonly);
    assert_int_equal(c->kernel_params.n, 0);
    assert_int_equal(c->gpu.mode, CONFIG_FEATURE_DEFAULT);
    assert_int_equal(c->sound.mode, CONFIG_FEATURE_OFF);
    assert_int_equal(c->shared_directories.n, 0);
    assert_int_equal(c->pci_devices.n, 0);
    assert_int_equal(c->n_vm_networks, 0);
    assert_int_equal(c->vhost_user.n, 0);
    assert_null(c->crosvm_log_level);
    assert_int_equal(c->crosvm_extra_args.n, 0);
    assert_string_equal(c->tap_name, "vm-plain");
    vm_config_free(c);

    /* null everywhere is the same as absent. */
    c = load_vmj("nulls", "{'id': 5, 'name': null, 'memory': null, 'gpu': null, "
                          "'rootDisk': null, 'kernel': null, 'crosvm': {'logLevel': null}}");
    assert_int_equal(c->memory_mib, 1024);
    assert_int_equal(c->gpu.mode, CONFIG_FEATURE_DEFAULT);
    assert_null(c->root_disk);
    assert_null(c->crosvm_log_level);
    vm_config_free(c);
}

static void test_vm_values(void **state) {
    VmConfig *c =
        load_vmj("banking",
                 "{'id': 3, 'name': 'banking', 'memory': 4096, 'cpus': 4, 'hostNetworking': true, "
                 "'disposable': true, 'idleTimeout': 120, 'kernel': '/k', 'initramfs': '/i', "
                 "'rootDisk': {'path': '/r.img', 'sparse': false}, 'rootDiskReadonly': false, "
                 "'kernelParams': ['quiet', 'loglevel=3'], 'gpu': false, "
                 "'sound': {'backend': 'pulse', 'capture': true}, "
                 "'additionalDisks': [{'path': '/d', 'block-size': 4096, 'ro': false}], "
                 "'crosvm': {'logLevel': 'warn', 'extraArgs': ['--x'], 'extraRunArgs': ['--y']}}");
    assert_int_equal(c->id, 3);
    assert_int_equal(c->memory_mib, 4096);
    assert_int_equal(c->cpus, 4);
    assert_true(c->host_networking);
    assert_true(c->disposable);
    assert_int_equal(c->idle_timeout, 120);
    assert_string_equal(c->kernel, "/k");
    assert_string_equal(c->initramfs, "/i");
    assert_string_equal(c->root_disk->path, "/r.img");
    assert_int_equal(c->root_disk->opts.n, 1);
    assert_string_equal(c->root_disk->opts.v[0].key, "sparse");
    assert_string_equal(c->root_disk->opts.v[0].value, "false");
    assert_false(c->root_disk_readonly);
    assert_int_equal(c->kernel_params.n, 2);
    assert_string_equal(c->kernel_params.v[1], "loglevel=3");
    assert_int_equal(c->gpu.mode, CONFIG_FEATURE_OFF);
    assert_int_equal(c->sound.mode, CONFIG_FEATURE_CUSTOM);
    assert_int_equal(c->sound.opts.n, 2);
    assert_string_equal(c->sound.opts.v[1].value, "true");
    assert_int_equal(c->additional_disks.n, 1);
    assert_string_equal(c->additional_disks.v[0].opts.v[0].key, "block-size");
    assert_string_equal(c->additional_disks.v[0].opts.v[0].value, "4096");
    assert_string_equal(c->crosvm_log_level, "warn");
    assert_string_equal(c->crosvm_extra_args.v[0], "--x");
    assert_string_equal(c->crosvm_extra_run_args.v[0], "--y");
    vm_config_free(c);

    /* A plain string root disk is its path. */
    c = load_vmj("str", "{'id': 7, 'rootDisk': '/root.img'}");
    assert_string_equal(c->root_disk->path, "/root.img");
    assert_int_equal(c->root_disk->opts.n, 0);
    vm_config_free(c);
}

static void test_vm_derived(void **state) {
    HostConfig *h = NULL;
    ConfigAddresses a;
    char mac[18];

    assert_int_equal(config_host_defaults(&h), 0);
    unsetenv("QUBES_LITE_SWITCH_DIR");
    VmConfig *c = load_vmj("router", "{'id': 3, 'vmNetwork': {'internal': {'router': true}, "
                                     "'dmz': {'macAddress': '52:AB:cd:ef:12:34'}}}");
    /* The README's example: VM 3 is 172.16.200.3, its gateway .2, a /31. */
    config_vm_addresses(h, c, &a);
    assert_string_equal(a.vm_ip, "172.16.200.3");
    assert_string_equal(a.host_ip, "172.16.200.2");
    assert_int_equal(a.prefix, 31);
    assert_string_equal(c->tap_name, "vm-router");
    assert_int_equal(c->id, 3); /* the vsock CID */

    assert_int_equal(c->n_vm_networks, 2);
    assert_string_equal(c->vm_networks[0].network, "internal");
    assert_true(c->vm_networks[0].router);
    assert_false(c->vm_networks[0].mac_given);
    mac_format(c->vm_networks[0].mac, mac);
    assert_int_equal(strncmp(mac, "52:", 3), 0);
    assert_string_equal(c->vm_networks[0].socket, "/run/vm-switch/internal/router.sock");
    assert_string_equal(c->vm_networks[1].network, "dmz");
    assert_false(c->vm_networks[1].router);
    assert_true(c->vm_networks[1].mac_given);
    mac_format(c->vm_networks[1].mac, mac);
    assert_string_equal(mac, "52:ab:cd:ef:12:34");
    char first[18];
    mac_format(c->vm_networks[0].mac, first);
    vm_config_free(c);

    /* The derived MAC is stable: the same network and name give the same
     * one, another name or network another. */
    setenv("QUBES_LITE_SWITCH_DIR", "/tmp/sw", 1);
    c = load_vmj("router", "{'id': 3, 'vmNetwork': {'internal': {}, 'other': {}}}");
    mac_format(c->vm_networks[0].mac, mac);
    assert_string_equal(mac, first);
    mac_format(c->vm_networks[1].mac, mac);
    assert_string_not_equal(mac, first);
    assert_string_equal(c->vm_networks[0].socket, "/tmp/sw/internal/router.sock");
    vm_config_free(c);
    unsetenv("QUBES_LITE_SWITCH_DIR");
    c = load_vmj("banking", "{'id': 5, 'vmNetwork': {'internal': {}}}");
    mac_format(c->vm_networks[0].mac, mac);
    assert_string_not_equal(mac, first);
    assert_int_equal(strncmp(mac, "52:", 3), 0);
    /* Gateway addresses follow the id and the configured network. */
    host_config_free(h);
    write_file("host.json", "{\"hostNetworking\": {\"network\": \"10.1.2.0/24\"}}");
    ErrorText err;
    assert_int_equal(config_load_host(dir, &h, &err), 0);
    config_vm_addresses(h, c, &a);
    assert_string_equal(a.vm_ip, "10.1.2.5");
    assert_string_equal(a.host_ip, "10.1.2.4");
    host_config_free(h);
    /* Any prefix: the VM's /31 is the network's address plus the id. */
    write_file("host.json", "{\"hostNetworking\": {\"network\": \"10.20.0.0/16\"}}");
    assert_int_equal(config_load_host(dir, &h, &err), 0);
    assert_int_equal(h->network_prefix, 16);
    config_vm_addresses(h, c, &a);
    assert_string_equal(a.vm_ip, "10.20.0.5");
    assert_string_equal(a.host_ip, "10.20.0.4");
    assert_int_equal(config_vm_host_link_check(h, c, &err), 0);
    host_config_free(h);
    write_file("host.json", "{\"hostNetworking\": {\"network\": \"192.168.7.248/29\"}}");
    assert_int_equal(config_load_host(dir, &h, &err), 0);
    config_vm_addresses(h, c, &a);
    assert_string_equal(a.vm_ip, "192.168.7.253");
    assert_string_equal(a.host_ip, "192.168.7.252");
    assert_int_equal(config_vm_host_link_check(h, c, &err), 0);
    vm_config_free(c);
    /* A /29 holds ids up to 7: VM 9 does not fit, and is named. */
    c = load_vmj("shop", "{'id': 9}");
    assert_int_equal(config_vm_host_link_check(h, c, &err), -ERANGE);
    assert_non_null(strstr(err.message, "vms/shop.json: key 'id': 9 has no /31 in "
                                        "hostNetworking.network 192.168.7.248/29, which holds "
                                        "ids up to 7"));
    vm_config_free(c);
    host_config_free(h);
    /* The default /24 holds every id. */
    c = load_vmj("last", "{'id': 255}");
    assert_int_equal(config_vm_host_link_check(NULL, c, &err), 0);
    config_vm_addresses(NULL, c, &a);
    assert_string_equal(a.vm_ip, "172.16.200.255");
    vm_config_free(c);
}

static void test_vm_vhost_user_merge(void **state) {
    ConfigDevice *v = NULL;
    size_t n = 0;
    unsetenv("QUBES_LITE_SWITCH_DIR");
    VmConfig *c =
        load_vmj("shop", "{'id': 7, 'vmNetwork': {'internal': {}}, 'vhostUser': ["
                         "{'type': 'net', 'socket': '/run/vm-switch/internal/shop.sock'}, "
                         "{'type': 'block', 'socket': '/run/blk.sock', 'max-queue-size': 256}]}");
    assert_int_equal(config_vm_vhost_user(c, &v, &n), 0);
    /* The vmNetwork one once, then the other vhostUser item. */
    assert_int_equal(n, 2);
    assert_string_equal(v[0].path, "/run/vm-switch/internal/shop.sock");
    assert_null(v[1].path);
    assert_int_equal(v[1].opts.n, 3);
    assert_string_equal(v[1].opts.v[0].key, "type");
    assert_string_equal(v[1].opts.v[2].value, "256");
    free(v);
    vm_config_free(c);
}

static void test_pci_canonical(void **state) {
    char b[13];
    assert_true(config_pci_canonical("01:00.0", b));
    assert_string_equal(b, "0000:01:00.0");
    assert_true(config_pci_canonical("0000:01:00.0", b));
    assert_string_equal(b, "0000:01:00.0");
    assert_true(config_pci_canonical("00AB:Fe:1F.7", b));
    assert_string_equal(b, "00ab:fe:1f.7");
    assert_false(config_pci_canonical("01:20.0", b)); /* device > 0x1f */
    assert_false(config_pci_canonical("01:00.8", b)); /* function > 7 */
    assert_false(config_pci_canonical("1:00.0", b));
    assert_false(config_pci_canonical("01-00.0", b));
    assert_false(config_pci_canonical("0000:01:00.0/", b));
    assert_false(config_pci_canonical("", b));
    assert_false(config_pci_canonical(NULL, b));
}

/* ---- config_check_all: a fresh directory per test ---- */

static char cdir[64];

static void cwrite(const char *rel, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", cdir, rel);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    for (const char *c = text; *c; c++) {
        fputc(*c == '\'' ? '"' : *c, f);
    }
    fclose(f);
}

static void cdir_new(void) {
    char path[128];
    snprintf(cdir, sizeof(cdir), "/tmp/test-check-XXXXXX");
    assert_non_null(mkdtemp(cdir));
    snprintf(path, sizeof(path), "%s/vms", cdir);
    assert_int_equal(mkdir(path, 0755), 0);
}

static void cdir_remove(void) {
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cdir);
    assert_int_equal(system(cmd), 0);
}

/* Runs the check with flags; returns its output (free it) and the count. */
static char *check_with(unsigned flags, int *ret_count) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    *ret_count = config_check_all(cdir, f, flags);
    fclose(f);
    return buf;
}

/* The configuration alone, not the files it names. */
static char *check(int *ret_count) {
    return check_with(0, ret_count);
}

static void expect_in(const char *out, const char *needle) {
    if (!strstr(out, needle)) {
        fail_msg("'%s' lacks '%s'", out, needle);
    }
}

static void test_check_all_good(void **state) {
    int n;
    cdir_new();
    cwrite("host.json", "{'user': 'root', 'isolatedPciDevices': ['01:00.0']}");
    cwrite("vms/router.json", "{'id': 3, 'kernel': '/k', 'vmNetwork': {'lan': {'router': true}}}");
    cwrite("vms/client.json", "{'id': 5, 'kernel': '/k', 'vmNetwork': {'lan': {}}, "
                              "'pciDevices': [{'path': '01:00.0'}]}");
    cwrite("vms/notes.txt", "not a VM");
    char *out = check(&n);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
    free(out);
    cdir_remove();

    /* Neither host.json nor vms/: nothing to complain about. */
    cdir_new();
    out = check(&n);
    assert_int_equal(n, 0);
    free(out);
    cdir_remove();
}

/* A narrower hostNetworking.network: the VMs with host networking whose
 * /31 is outside it are named, one line each; the others need no address. */
static void test_check_all_host_link(void **state) {
    int n;
    cdir_new();
    cwrite("host.json", "{'hostNetworking': {'network': '10.7.0.16/28'}}");
    cwrite("vms/a.json", "{'id': 15, 'kernel': '/k', 'hostNetworking': true}");
    cwrite("vms/b.json", "{'id': 17, 'kernel': '/k', 'hostNetworking': true}");
    cwrite("vms/c.json", "{'id': 19, 'kernel': '/k'}");
    char *out = check(&n);
    expect_in(out, "vms/b.json: key 'id': 17 has no /31 in hostNetworking.network "
                   "10.7.0.16/28, which holds ids up to 15\n");
    assert_int_equal(n, 1);
    free(out);
    cdir_remove();
}

/* With CONFIG_CHECK_FILES: each kernel, initramfs, disk and shared
 * directory is there and of its kind, one line per one that is not. */
static void test_check_all_files(void **state) {
    char json[2048], path[256];
    int n;
    cdir_new();
    snprintf(path, sizeof(path), "%s/img", cdir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/share", cdir);
    assert_int_equal(mkdir(path, 0700), 0);
    cwrite("img/vmlinuz", "k");
    cwrite("img/root.img", "r");
    cwrite("share/x", "");
    snprintf(json, sizeof(json),
             "{'id': 3, 'kernel': '%s/img/vmlinuz', 'initramfs': '%s/img/initrd', "
             "'rootDisk': '%s/img/root.img', 'additionalDisks': [{'path': '/dev/null'}, "
             "{'path': '%s/share'}, {'path': '%s/img/root.img', 'ro': true}], "
             "'sharedDirectories': [{'path': '%s/share', 'tag': 's'}, "
             "{'path': '%s/img/vmlinuz', 'tag': 't'}]}",
             cdir, cdir, cdir, cdir, cdir, cdir, cdir);
    cwrite("vms/a.json", json);
    char *out = check_with(CONFIG_CHECK_FILES, &n);
    expect_in(out, "vms/a.json: key 'initramfs': ");
    expect_in(out, "/img/initrd does not exist\n");
    /* /dev/null is a character device: neither a file nor a disk. */
    expect_in(out, "vms/a.json: key 'additionalDisks[0].path': /dev/null is not a file or a "
                   "block device\n");
    expect_in(out, "vms/a.json: key 'additionalDisks[1].path': ");
    expect_in(out, "/share is not a file or a block device\n");
    expect_in(out, "vms/a.json: key 'sharedDirectories[1].path': ");
    expect_in(out, "/img/vmlinuz is not a directory\n");
    assert_int_equal(n, 4);
    free(out);
    /* The configuration alone has nothing to say of them. */
    out = check(&n);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
    free(out);
    cdir_remove();
}

static void test_check_all_problems(void **state) {
    int n;
    cdir_new();
    cwrite("host.json", "{'crosvm': {'logLevel': 'loud'}, 'extra': 1}");
    cwrite("vms/a.json", "{'id': 3, 'kernel': '/k', 'vmNetwork': {'lan': {'router': true}, "
                         "'wan': {'macAddress': '52:00:00:00:00:01'}}, "
                         "'pciDevices': [{'path': '0000:02:00.0'}]}");
    cwrite("vms/b.json", "{'id': 3, 'kernel': '/k', 'vmNetwork': {'lan': {'router': true}, "
                         "'wan': {'macAddress': '52:00:00:00:00:01', 'router': true}}, "
                         "'pciDevices': [{'path': '02:00.0'}]}");
    cwrite("vms/c.json", "{'id': 4, 'memory': 0}");
    cwrite("vms/Bad.json", "{'id': 9}");
    cwrite("vms/nokernel.json", "{'id': 11}");
    char *out = check(&n);
    /* Every problem of every file, each with its file and key. */
    expect_in(out, "host.json: key 'extra': unknown key");
    expect_in(out, "host.json: key 'crosvm.logLevel': 'loud' is not a log level");
    expect_in(out, "vms/c.json: key 'id': must be odd");
    expect_in(out, "vms/c.json: key 'memory': must be from 1");
    expect_in(out, "vms/Bad.json: the file name is not a valid VM name");
    expect_in(out, "vms/nokernel.json: key 'kernel': missing (required to start the VM)");
    /* Across files. */
    expect_in(out, "vms/b.json: key 'id': 3 is already the id of VM 'a'");
    expect_in(out, "vms/b.json: key 'pciDevices[0].path': 0000:02:00.0 is already given to VM 'a'");
    expect_in(out, "vms/b.json: key 'vmNetwork.wan.macAddress': 52:00:00:00:00:01 is already the "
                   "MAC of VM 'a'");
    expect_in(out, "vms/b.json: key 'vmNetwork.lan.router': network 'lan' already has a router, "
                   "VM 'a'");
    /* wan has one router (b): fine. */
    assert_null(strstr(out, "network 'wan'"));
    /* c.json failed to load: its kernel is not reported on top. */
    assert_null(strstr(out, "c.json: key 'kernel'"));
    assert_int_equal(n, 10);
    size_t lines = 0;
    for (char *c = out; *c; c++) {
        lines += *c == '\n';
    }
    assert_int_equal(lines, 10);
    free(out);
    cdir_remove();

    /* A host.json that is not JSON is one problem, named. */
    cdir_new();
    cwrite("host.json", "{'user': ");
    out = check(&n);
    expect_in(out, "host.json: 1:9: invalid JSON");
    assert_int_equal(n, 1);
    free(out);
    cdir_remove();

    /* A network without a router. */
    cdir_new();
    cwrite("vms/x.json", "{'id': 3, 'kernel': '/k', 'vmNetwork': {'lan': {}}}");
    cwrite("vms/y.json", "{'id': 5, 'kernel': '/k', 'vmNetwork': {'lan': {}}}");
    out = check(&n);
    expect_in(out, "vms/x.json: key 'vmNetwork.lan': network 'lan' has 0 routers; it needs exactly "
                   "one");
    assert_int_equal(n, 1);
    free(out);
    /* No output stream: just the count. */
    assert_int_equal(config_check_all(cdir, NULL, 0), 1);
    cdir_remove();
}

static void test_vm_missing_or_bad_name(void **state) {
    VmConfig *c = NULL;
    ErrorText err;
    assert_int_equal(config_load_vm(dir, "nosuch", &c, &err), -ENOENT);
    assert_non_null(strstr(err.message, "vms/nosuch.json"));
    assert_int_equal(config_load_vm(dir, "../host", &c, &err), -EINVAL);
    assert_non_null(strstr(err.message, "not a valid VM name"));
    assert_null(c);
}

/* The one listing of vms/: every *.json but dotfiles, by file name, each
 * with its VM name or "" when the file name is no VM's. */
static void test_vm_files(void **state) {
    ConfigVmFile *files = NULL;
    size_t n = 0;

    cdir_new();
    cwrite("vms/b.json", "{}");
    cwrite("vms/a.json", "{}");
    cwrite("vms/a-b.json", "{}");
    cwrite("vms/Bad.json", "{}");
    cwrite("vms/.hidden.json", "{}");
    cwrite("vms/notes.txt", "");
    cwrite("vms/.json", "");
    assert_int_equal(config_vm_files(cdir, &files, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(files[0].file, "Bad.json");
    assert_string_equal(files[0].name, "");
    assert_string_equal(files[1].file, "a-b.json");
    assert_string_equal(files[1].name, "a-b");
    assert_string_equal(files[2].file, "a.json");
    assert_string_equal(files[2].name, "a");
    assert_string_equal(files[3].name, "b");
    config_vm_files_free(files, n);
    cdir_remove();

    char missing[] = "/nonexistent-config-dir";
    assert_int_equal(config_vm_files(missing, &files, &n), -ENOENT);
}

static void test_file_paths(void **state) {
    char *host = config_host_file("/c"), *vms = config_vms_dir("/c"),
         *vm = config_vm_file("/c", "x");
    assert_string_equal(host, "/c/host.json");
    assert_string_equal(vms, "/c/vms");
    assert_string_equal(vm, "/c/vms/x.json");
    free(host);
    free(vms);
    free(vm);
    /* Nothing of that name beside this test binary. */
    assert_null(config_program_beside_self("no-such-program-here"));
}

/* The original README's configurations pass the check as they are. */
static void test_check_all_readme_examples(void **state) {
    int n;
    cdir_new();
    cwrite("host.json", "{'user': 'root', 'hostNetworking': {'network': '172.16.200.0/24', "
                        "'nat': {'enable': true, 'interface': 'eth0'}}, "
                        "'isolatedPciDevices': ['01:00.0', '02:00.0']}");
    cwrite("vms/banking.json", "{'id': 3, 'name': 'banking', 'memory': 4096, 'cpus': 4, "
                               "'hostNetworking': true, 'disposable': true, 'idleTimeout': 120, "
                               "'kernel': '/k'}");
    cwrite("vms/shopping.json", "{'id': 5, 'name': 'shopping', 'memory': 2048, 'cpus': 2, "
                                "'hostNetworking': true, 'disposable': true, 'kernel': '/k'}");
    cwrite("vms/personal.json", "{'id': 7, 'name': 'personal', 'memory': 4096, 'cpus': 4, "
                                "'kernel': '/k'}");
    cwrite("vms/vault.json", "{'id': 13, 'name': 'vault', 'memory': 2048, 'kernel': '/k'}");
    cwrite("vms/untrusted.json", "{'id': 9, 'name': 'untrusted', 'memory': 4096, "
                                 "'disposable': true, 'idleTimeout': 60, 'kernel': '/k'}");
    cwrite("vms/sys-usb.json", "{'id': 11, 'name': 'sys-usb', 'memory': 1024, 'kernel': '/k', "
                               "'pciDevices': [{'path': '01:00.0'}]}");
    cwrite("vms/sys-net.json", "{'id': 15, 'name': 'sys-net', 'memory': 1024, 'kernel': '/k', "
                               "'pciDevices': [{'path': '02:00.0'}]}");
    cwrite("vms/router.json", "{'id': 17, 'name': 'router', 'hostNetworking': true, "
                              "'kernel': '/k', 'vmNetwork': {'internal': {'router': true, "
                              "'macAddress': '52:ab:cd:ef:12:34'}}}");
    cwrite("vms/client-a.json", "{'id': 19, 'kernel': '/k', 'vmNetwork': {'internal': {}}}");
    cwrite("vms/client-b.json", "{'id': 21, 'kernel': '/k', 'vmNetwork': {'internal': {}}}");
    char *out = check(&n);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
    free(out);
    cdir_remove();
}

/* vmm and qemu.extraArgs, in host.json and per VM: validated and stored. */
static void test_vmm(void **state) {
    HostConfig *h = NULL;
    ErrorText err;
    write_file("host.json", "{}");
    assert_int_equal(config_load_host(dir, &h, &err), 0);
    assert_int_equal(h->vmm, CONFIG_VMM_CROSVM);
    assert_int_equal(h->qemu_extra_args.n, 0);
    host_config_free(h);
    write_file("host.json", "{\"vmm\": \"qemu\", \"qemu\": {\"extraArgs\": [\"-a\", \"b\"]}}");
    assert_int_equal(config_load_host(dir, &h, &err), 0);
    assert_int_equal(h->vmm, CONFIG_VMM_QEMU);
    assert_int_equal(h->qemu_extra_args.n, 2);
    assert_string_equal(h->qemu_extra_args.v[1], "b");
    host_config_free(h);
    write_file("host.json", "{\"vmm\": null, \"qemu\": {\"extraArgs\": null}}");
    assert_int_equal(config_load_host(dir, &h, &err), 0);
    assert_int_equal(h->vmm, CONFIG_VMM_CROSVM);
    host_config_free(h);
    expect_host_error("{\"vmm\": \"kvmtool\"}", -EINVAL,
                      "key 'vmm': 'kvmtool' is not a VMM (crosvm or qemu)");
    expect_host_error("{\"qemu\": {\"extraRunArgs\": []}}", -EINVAL,
                      "key 'qemu.extraRunArgs': unknown key");
    expect_host_error("{\"qemu\": {\"extraArgs\": \"-a\"}}", -EINVAL,
                      "key 'qemu.extraArgs': must be a list of strings");

    VmConfig *c = load_vmj("plain", "{'id': 3}");
    assert_int_equal(c->vmm, CONFIG_VMM_UNSET);
    assert_int_equal(c->qemu_extra_args.n, 0);
    vm_config_free(c);
    c = load_vmj("q", "{'id': 3, 'vmm': 'qemu', 'qemu': {'extraArgs': ['-x']}}");
    assert_int_equal(c->vmm, CONFIG_VMM_QEMU);
    assert_string_equal(c->qemu_extra_args.v[0], "-x");
    vm_config_free(c);
    c = load_vmj("c", "{'id': 3, 'vmm': 'crosvm', 'qemu': {'extraArgs': []}}");
    assert_int_equal(c->vmm, CONFIG_VMM_CROSVM);
    vm_config_free(c);
    expect_vmj("{'id': 3, 'vmm': 'QEMU'}", "key 'vmm': 'QEMU' is not a VMM (crosvm or qemu)");
    expect_vmj("{'id': 3, 'vmm': 1}", "key 'vmm': must be a string");
    expect_vmj("{'id': 3, 'qemu': {'extra': []}}", "key 'qemu.extra': unknown key");
    expect_vmj("{'id': 3, 'qemu': []}", "key 'qemu': must be an attribute set");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dirs_from_environment),
        cmocka_unit_test(test_host_ok),
        cmocka_unit_test(test_host_errors),
        cmocka_unit_test(test_host_missing),
        cmocka_unit_test(test_vm_ok),
        cmocka_unit_test(test_vm_errors),
        cmocka_unit_test(test_vm_missing_or_bad_name),
        cmocka_unit_test(test_host_defaults_and_values),
        cmocka_unit_test(test_vm_unknown_keys),
        cmocka_unit_test(test_vm_wrong_types),
        cmocka_unit_test(test_vm_missing_required),
        cmocka_unit_test(test_vm_memory_cpus_positive),
        cmocka_unit_test(test_vm_bad_values),
        cmocka_unit_test(test_vm_all_problems_at_once),
        cmocka_unit_test(test_vm_defaults),
        cmocka_unit_test(test_vm_values),
        cmocka_unit_test(test_vm_derived),
        cmocka_unit_test(test_vm_vhost_user_merge),
        cmocka_unit_test(test_pci_canonical),
        cmocka_unit_test(test_check_all_good),
        cmocka_unit_test(test_check_all_problems),
        cmocka_unit_test(test_check_all_host_link),
        cmocka_unit_test(test_check_all_files),
        cmocka_unit_test(test_check_all_readme_examples),
        cmocka_unit_test(test_vmm),
        cmocka_unit_test(test_vm_files),
        cmocka_unit_test(test_file_paths),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
