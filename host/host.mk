# host/: the host agent, the vm-* commands, the generator and the vsock
# proxy, and host/common, the library they share (host/README.md).

# Every object is listed here, before the link rule: a rule's prerequisites
# are expanded where it stands.

# host/common: the configuration (jansson) and the paths (libc only).
HOST_CONFIG_OBJS := $(OBJ)/host/common/config.o $(OBJ)/host/common/config-parser.o \
	$(OBJ)/host/common/config-sets.o $(OBJ)/host/common/config-derived.o \
	$(OBJ)/host/common/config-check.o $(OBJ)/host/common/paths.o

HOST_AGENT_OBJS := $(OBJ)/host/agent/main.o $(OBJ)/host/agent/agent.o \
	$(OBJ)/host/agent/clients.o $(OBJ)/host/agent/handoff.o $(OBJ)/host/agent/lifecycle.o \
	$(OBJ)/host/agent/vmmproc.o $(OBJ)/host/agent/idle.o $(HOST_CONFIG_OBJS) \
	$(OBJ)/host/agent/crosvm.o $(OBJ)/host/agent/vmm.o $(OBJ)/host/agent/vfio.o \
	$(OBJ)/host/agent/console.o $(OBJ)/host/agent/guestcall.o $(OBJ)/host/agent/switchconf.o \
	$(OBJ)/host/agent/tap.o $(OBJ)/host/agent/secret.o $(OBJ)/host/agent/qemu.o \
	$(OBJ)/host/agent/qemurun.o $(OBJ)/host/agent/qmp.o $(OBJ)/host/common/opts.o
VM_RUN_OBJS := $(OBJ)/host/cli/vm-run.o $(OBJ)/host/cli/vmrun-session.o \
	$(OBJ)/host/cli/vmrun-stream.o $(OBJ)/host/cli/vmrun-opts.o $(OBJ)/host/common/opts.o \
	$(OBJ)/host/common/paths.o $(OBJ)/host/cli/client.o $(OBJ)/host/cli/termfilter.o \
	$(OBJ)/host/cli/ttyescape.o
# vm-start, vm-stop, vm-list, vm-start-debug: one client module between them.
HOSTCTL_OBJS := $(OBJ)/host/cli/hostctl.o $(OBJ)/host/cli/client.o $(OBJ)/host/common/paths.o \
	$(OBJ)/host/common/opts.o
HOSTCTL_LIBS := -Wl,--as-needed $(call pc_libs,libprotobuf-c)
VM_COMMANDS := vm-start vm-stop vm-start-debug
HOST_LIBS := $(call pc_libs,jansson)
# The host agent's rtnetlink (tap.c), and only the host agent's.
TAP_LIBS := $(call pc_libs,libmnl)
# vm-run starts for every command: it links only what it uses (not
# libsystemd nor jansson), which keeps `vm-run VM true` short. It is also
# linked static-pie (still position independent, so still randomised): no
# dynamic loader, no libraries to map and relocate, about 200 µs less per
# start, a third of a local spawn of `true`. It needs nothing of libc that
# a static binary cannot have (no NSS, no iconv, no dlopen). DYNAMIC=1 (the
# top Makefile) links it as the others.
ifeq ($(DYNAMIC),1)
VM_RUN_LDFLAGS := $(LDFLAGS)
VM_RUN_LIBS := -Wl,--as-needed $(call pc_libs,libprotobuf-c)
else
VM_RUN_LDFLAGS := $(filter-out -pie,$(LDFLAGS)) -static-pie
VM_RUN_LIBS := $(call pc_libs,libprotobuf-c)
endif

CFLAGS_host := $(call pc_cflags,jansson libmnl)

PROGRAMS += $(BIN)/qubes-lite-host-agent $(BIN)/vm-run $(VM_COMMANDS:%=$(BIN)/%)

$(BIN)/qubes-lite-host-agent: $(HOST_AGENT_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS) $(TAP_LIBS) $(PROTO_LIBS)

$(BIN)/vm-run: $(VM_RUN_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(VM_RUN_LDFLAGS) -o $@ $^ $(VM_RUN_LIBS)

$(VM_COMMANDS:%=$(BIN)/%): $(BIN)/%: $(OBJ)/host/cli/%.o $(HOSTCTL_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(HOSTCTL_OBJS) $(PROTO_LIB) $(HOSTCTL_LIBS)

# vm-list also loads each VM's file (a broken one is listed as invalid).
VM_LIST_OBJS := $(OBJ)/host/cli/vm-list.o $(filter-out $(OBJ)/host/common/paths.o,$(HOSTCTL_OBJS)) \
	$(HOST_CONFIG_OBJS)
PROGRAMS += $(BIN)/vm-list

$(BIN)/vm-list: $(VM_LIST_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS) $(PROTO_LIBS)

# Unit tests (tests/unit/test-<module>.c, built by the generic rule).
UNIT_OBJS_test-vmrun-opts := $(OBJ)/host/cli/vmrun-opts.o $(OBJ)/host/common/opts.o
UNIT_LIBS_test-vmrun-opts :=
UNIT_OBJS_test-config := $(HOST_CONFIG_OBJS)
UNIT_LIBS_test-config := $(HOST_LIBS)

# The crosvm command line against golden argv lists.
UNIT_OBJS_test-crosvm := $(OBJ)/host/agent/crosvm.o $(OBJ)/host/agent/vmm.o \
	$(OBJ)/host/agent/secret.o $(HOST_CONFIG_OBJS)
UNIT_LIBS_test-crosvm := $(HOST_LIBS)
# The VM's secret file: its creation rules, and reading it back.
UNIT_OBJS_test-secret := $(OBJ)/host/agent/secret.o $(OBJ)/host/common/paths.o
UNIT_LIBS_test-secret :=
# The qemu command line against golden argv lists; the QMP client against
# a fake qemu.
UNIT_OBJS_test-qemu := $(OBJ)/host/agent/qemu.o $(OBJ)/host/agent/vmm.o \
	$(OBJ)/host/agent/secret.o $(HOST_CONFIG_OBJS)
UNIT_LIBS_test-qemu := $(HOST_LIBS)
UNIT_OBJS_test-qmp := $(OBJ)/host/agent/qmp.o
UNIT_LIBS_test-qmp := $(HOST_LIBS)
UNIT_OBJS_test-vfio := $(OBJ)/host/agent/vfio.o $(HOST_CONFIG_OBJS)
UNIT_LIBS_test-vfio := $(HOST_LIBS)
# A Connect's guest connections, against a unix listener.
UNIT_OBJS_test-handoff := $(OBJ)/host/agent/handoff.o $(OBJ)/host/agent/agent.o
UNIT_LIBS_test-handoff :=
# The VMM's environment and process.
UNIT_OBJS_test-vmmproc := $(OBJ)/host/agent/vmmproc.o $(OBJ)/host/agent/vmm.o
UNIT_LIBS_test-vmmproc :=
# The console's scrollback ring and pty.
UNIT_OBJS_test-console := $(OBJ)/host/agent/console.o
UNIT_LIBS_test-console := $(call pc_libs,libsystemd)

# tap.c against the kernel, in a network namespace of its own (root), and
# the same calls for the VM test (tests/integration/c/host-tap.c).
PEER_OBJS_host-tap := $(OBJ)/host/agent/tap.o
$(BUILD)/tests/integration/host-tap: CMOCKA_LIBS += $(TAP_LIBS)

# The terminal filter vm-run puts before a terminal.
UNIT_OBJS_test-termfilter := $(OBJ)/host/cli/termfilter.o
UNIT_LIBS_test-termfilter :=
# vm-run -t's ~. escape.
UNIT_OBJS_test-ttyescape := $(OBJ)/host/cli/ttyescape.o
UNIT_LIBS_test-ttyescape :=
UNIT_OBJS_test-vmshell-opts := $(OBJ)/host/cli/vmshell-opts.o $(OBJ)/host/common/opts.o
UNIT_LIBS_test-vmshell-opts :=
# client.c's session opening against a peer on a socketpair.
UNIT_OBJS_test-client := $(OBJ)/host/cli/client.o $(OBJ)/host/common/paths.o \
	$(OBJ)/host/common/opts.o
UNIT_LIBS_test-client :=
UNIT_OBJS_test-units := $(OBJ)/host/tools/units.o $(OBJ)/host/common/paths.o
# A VM's runtime files: no name gives another VM's.
UNIT_OBJS_test-paths := $(OBJ)/host/common/paths.o
UNIT_LIBS_test-paths :=
UNIT_LIBS_test-units :=

# vm-shell: the serial console client, and ssh over vsock through the proxy.
VM_SHELL_OBJS := $(OBJ)/host/cli/vm-shell.o $(OBJ)/host/cli/vmshell-opts.o $(OBJ)/host/common/opts.o \
	$(OBJ)/host/cli/client.o $(HOST_CONFIG_OBJS)
PROGRAMS += $(BIN)/vm-shell $(BIN)/qubes-lite-vsock-proxy

$(BIN)/vm-shell: $(VM_SHELL_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS) $(PROTO_LIBS)

# The proxy needs nothing but libc (and parse_uint from the protocol library).
$(BIN)/qubes-lite-vsock-proxy: $(OBJ)/host/tools/vsock-proxy.o $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -Wl,--as-needed $(PROTO_LIBS)

# The systemd generator: units for every configured VM. The host agent is
# looked for beside the generator's real path, else in BINDIR.
BINDIR ?= /usr/bin
GENERATOR_OBJS := $(OBJ)/host/tools/generator.o $(OBJ)/host/tools/units.o $(HOST_CONFIG_OBJS) \
	$(OBJ)/host/common/opts.o
PROGRAMS += $(BIN)/qubes-lite-generator
$(OBJ)/host/tools/generator.o: CFLAGS_host += -DQUBES_LITE_BINDIR='"$(BINDIR)"'

$(BIN)/qubes-lite-generator: $(GENERATOR_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS) $(PROTO_LIBS)
