# switch/vsock/: qubes-lite-vsock, one VM's virtio-vsock device over
# vhost-user (libvhostuser.a), its host side behind a unix socket.
#
# libvsock.a is the protocol: packet headers and the connection
# multiplexer, pure code that the unit tests and fuzzers drive alone.

VSOCK_SRCS := switch/vsock/packet.c switch/vsock/mux.c
VSOCK_OBJS := $(VSOCK_SRCS:%.c=$(OBJ)/%.o)
VSOCK_LIB := $(LIB)/libvsock.a

$(VSOCK_LIB): $(VSOCK_OBJS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

all: $(VSOCK_LIB)

UNIT_OBJS_test-vsock-packet := $(OBJ)/switch/vsock/packet.o
UNIT_OBJS_test-vsock-mux := $(VSOCK_OBJS)

# Fuzz targets (tests/fuzz/fuzz.mk's rule); fuzz-vsock-connect needs only
# the protocol library (proto/addr.c).
$(FUZZ_DIR)/fuzz-vsock-mux: $(VSOCK_SRCS:%.c=$(FUZZ_OBJ)/%.o)

# The program: the device (libvhostuser.a), the host side, the loop, its
# command line and sandbox (libvmsandbox.a). It links libc, libseccomp,
# libcap and the protocol library's own (sandbox.c binds what it is mapped
# from into its root).
VSOCK_PROG_SRCS := switch/vsock/main.c switch/vsock/options.c switch/vsock/confine.c \
	switch/vsock/sockets.c switch/vsock/device.c switch/vsock/host.c
VSOCK_PROG_OBJS := $(VSOCK_PROG_SRCS:%.c=$(OBJ)/%.o)
VSOCK_PROG_LIBS := $(VSOCK_LIB) $(VHOSTUSER_LIB) $(SANDBOX_LIB) $(PROTO_LIB)

PROGRAMS += $(BIN)/qubes-lite-vsock

$(BIN)/qubes-lite-vsock: $(VSOCK_PROG_OBJS) $(VSOCK_PROG_LIBS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SANDBOX_LIBS) $(PROTO_LIBS)

# The same program with a test hook (VSOCK_TEST_HOOKS: SIGUSR2 makes the
# device call what its filter forbids), for tests only: main.c is compiled
# again with it.
VSOCK_HOOKED := $(BUILD)/tests/switch/qubes-lite-vsock
VSOCK_HOOKED_OBJ := $(OBJ)/tests/switch/vsock-main-hooked.o
TEST_PROGRAMS += $(VSOCK_HOOKED)

$(VSOCK_HOOKED_OBJ): switch/vsock/main.c | $(GEN)/qubes-lite.pb-c.h
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -DVSOCK_TEST_HOOKS -c -o $@ $<

$(VSOCK_HOOKED): $(filter-out $(OBJ)/switch/vsock/main.o,$(VSOCK_PROG_OBJS)) $(VSOCK_HOOKED_OBJ) \
		$(VSOCK_PROG_LIBS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(SANDBOX_LIBS) $(PROTO_LIBS)
