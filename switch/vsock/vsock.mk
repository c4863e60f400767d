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

# The program: the device (libvhostuser.a), the host side, the loop.
VSOCK_PROG_OBJS := $(OBJ)/switch/vsock/main.o $(OBJ)/switch/vsock/device.o \
	$(OBJ)/switch/vsock/host.o

PROGRAMS += $(BIN)/qubes-lite-vsock

$(BIN)/qubes-lite-vsock: $(VSOCK_PROG_OBJS) $(VSOCK_LIB) $(VHOSTUSER_LIB) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PROTO_LIBS)
