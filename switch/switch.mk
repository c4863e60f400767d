# switch/: the sandboxed vhost-user device backends (README.md).
#
# libvhostuser.a is the vhost-user backend core (messages, validator,
# dispatch, guest memory, virtqueue walker); other programs (a userspace
# vsock device) link it too, with a device description of their own.

VHOSTUSER_SRCS := switch/vhost/vhost-user.c switch/vhost/vu-mem.c switch/vhost/vq.c
VHOSTUSER_OBJS := $(VHOSTUSER_SRCS:%.c=$(OBJ)/%.o)
VHOSTUSER_LIB := $(LIB)/libvhostuser.a

$(VHOSTUSER_LIB): $(VHOSTUSER_OBJS)
all: $(VHOSTUSER_LIB)

# Unit tests (tests/unit/test-NAME.c, built by tests/unit/unit.mk's rule).
UNIT_OBJS_test-vhost-user := $(VHOSTUSER_OBJS) $(OBJ)/switch/net/vu-net.o

UNIT_OBJS_test-vq := $(OBJ)/switch/vhost/vq.o $(OBJ)/switch/vhost/vu-mem.o

# Fuzz targets (tests/fuzz/fuzz.mk's rule links $^): the switch objects
# they exercise, compiled by clang like the rest of the fuzz build.
FUZZ_VHOSTUSER_OBJS := $(VHOSTUSER_SRCS:%.c=$(FUZZ_OBJ)/%.o)
$(FUZZ_DIR)/fuzz-vhost-msg: $(FUZZ_VHOSTUSER_OBJS) $(FUZZ_OBJ)/switch/net/vu-net.o
$(FUZZ_DIR)/fuzz-vq: $(FUZZ_OBJ)/switch/vhost/vq.o $(FUZZ_OBJ)/switch/vhost/vu-mem.o

# libvmswitch.a: what only vm-switch itself uses (frame rings between
# children, <vm>.conf, the forwarding policy, the control channel).
SWITCH_SRCS := switch/net/ring.c switch/net/policy.c switch/net/ctl.c \
	switch/net/vu-net.c switch/net/confine.c
SWITCH_OBJS := $(SWITCH_SRCS:%.c=$(OBJ)/%.o)
SWITCH_LIB := $(LIB)/libvmswitch.a

$(SWITCH_LIB): $(SWITCH_OBJS)
all: $(SWITCH_LIB)

UNIT_OBJS_test-ring := $(OBJ)/switch/net/ring.o
$(FUZZ_DIR)/fuzz-ring: $(FUZZ_OBJ)/switch/net/ring.o
UNIT_OBJS_test-policy := $(OBJ)/switch/net/policy.o
PEER_OBJS_vhost-testpmd := $(VHOSTUSER_OBJS) $(OBJ)/switch/net/vu-net.o

# The control channel between the main process and the children.
UNIT_OBJS_test-ctl := $(OBJ)/switch/net/ctl.o $(OBJ)/switch/net/policy.o
$(FUZZ_DIR)/fuzz-ctl: $(FUZZ_OBJ)/switch/net/ctl.o $(FUZZ_OBJ)/switch/net/policy.o

# The sandbox: namespaces, the minimal root, capabilities, rlimits and the
# seccomp allowlists (libseccomp, libcap), and the command line the
# sandboxed programs share.
SANDBOX_SRCS := switch/sandbox/sandbox.c switch/sandbox/supervisor.c switch/sandbox/filter.c \
	switch/sandbox/cli.c
SANDBOX_OBJS := $(SANDBOX_SRCS:%.c=$(OBJ)/%.o)
SANDBOX_LIBS := $(call pc_libs,libseccomp libcap)
SANDBOX_LIB := $(LIB)/libvmsandbox.a

$(SANDBOX_LIB): $(SANDBOX_OBJS)
all: $(SANDBOX_LIB)

# The three libraries, each from the objects named above.
$(VHOSTUSER_LIB) $(SWITCH_LIB) $(SANDBOX_LIB):
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# vm-switch itself: the main process and the per-VM children in one
# program. It links libc, libseccomp and libcap only: children are
# executed again in a root that holds just the files the program is mapped
# from (sandbox.c). The main process's modules are main*.c and options.c,
# the child's child*.c.
VM_SWITCH_SRCS := switch/net/main.c switch/net/options.c switch/net/main-config.c \
	switch/net/main-children.c switch/net/main-ctl.c switch/net/main-heartbeat.c \
	switch/net/main-stats.c switch/net/child.c switch/net/child-ctl.c switch/net/child-vhost.c \
	switch/net/child-rings.c switch/net/child-tx.c switch/net/child-rx.c
VM_SWITCH_OBJS := $(VM_SWITCH_SRCS:%.c=$(OBJ)/%.o)
VM_SWITCH_LIBS := $(SWITCH_LIB) $(VHOSTUSER_LIB) $(SANDBOX_LIB) $(PROTO_LIB)

PROGRAMS += $(BIN)/vm-switch

$(BIN)/vm-switch: $(VM_SWITCH_OBJS) $(VM_SWITCH_LIBS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SANDBOX_LIBS)

# The same program with test hooks (VM_SWITCH_TEST_HOOKS: SIGUSR1 makes a
# child call what its filter forbids), for tests only: the modules that
# have hooks are compiled again with them.
VM_SWITCH_HOOKED := $(BUILD)/tests/switch/vm-switch
VM_SWITCH_HOOKED_SRCS := switch/net/child.c switch/net/main-children.c
VM_SWITCH_HOOKED_OBJS := $(VM_SWITCH_HOOKED_SRCS:switch/net/%.c=$(OBJ)/tests/switch/%-hooked.o)
TEST_PROGRAMS += $(VM_SWITCH_HOOKED)

$(VM_SWITCH_HOOKED_OBJS): $(OBJ)/tests/switch/%-hooked.o: switch/net/%.c | $(GEN)/qubes-lite.pb-c.h
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -DVM_SWITCH_TEST_HOOKS -c -o $@ $<

$(VM_SWITCH_HOOKED): $(filter-out $(VM_SWITCH_HOOKED_SRCS:%.c=$(OBJ)/%.o),$(VM_SWITCH_OBJS)) \
		$(VM_SWITCH_HOOKED_OBJS) $(VM_SWITCH_LIBS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SANDBOX_LIBS)

UNIT_OBJS_test-filter := $(OBJ)/switch/net/confine.o $(SANDBOX_OBJS)
UNIT_LIBS_test-filter := $(SANDBOX_LIBS)
UNIT_OBJS_test-sandbox := $(SANDBOX_OBJS)
UNIT_LIBS_test-sandbox := $(SANDBOX_LIBS)

# Test programs: the syscall prober run under each role's filter, and a
# driver with vm-switch's process shape around the real sandbox.
SANDBOX_TEST_DIR := $(BUILD)/tests/sandbox
SANDBOX_TEST_PROGRAMS := $(SANDBOX_TEST_DIR)/try-syscall $(SANDBOX_TEST_DIR)/sandbox-driver
TEST_PROGRAMS += $(SANDBOX_TEST_PROGRAMS)

$(SANDBOX_TEST_PROGRAMS): $(SANDBOX_TEST_DIR)/%: $(OBJ)/tests/sandbox/%.o $(OBJ)/switch/net/confine.o \
		$(SANDBOX_LIB) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(OBJ)/switch/net/confine.o $(SANDBOX_LIB) $(PROTO_LIB) \
		$(SANDBOX_LIBS)

include switch/vsock/vsock.mk
