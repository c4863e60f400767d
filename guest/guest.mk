# guest/: qubes-lite-guest-agent, which runs inside each VM.

GUEST_SRCS := guest/main.c guest/session.c guest/child.c guest/stdin-queue.c guest/output.c \
	guest/spawn.c guest/idle.c guest/power.c \
	guest/wayland.c guest/users.c
# --secret-fw-cfg reads fw_cfg with the guest image's reader.
GUEST_OBJS := $(GUEST_SRCS:%.c=$(OBJ)/%.o) $(OBJ)/rootfs/fwcfg.o
GUEST_AGENT := $(BIN)/qubes-lite-guest-agent

CFLAGS_guest := $(call pc_cflags,wayland-client)

PROGRAMS += $(GUEST_AGENT)

$(GUEST_AGENT): $(GUEST_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $(GUEST_OBJS) $(PROTO_LIB) $(PROTO_LIBS) $(call pc_libs,wayland-client)

# Unit tests (tests/unit/test-NAME.c): the guest objects each one links.
UNIT_OBJS_test-idle := $(OBJ)/guest/idle.o
UNIT_OBJS_test-spawn := $(OBJ)/guest/spawn.o $(OBJ)/guest/wayland.o $(OBJ)/guest/users.o
UNIT_LIBS_test-spawn := $(call pc_libs,wayland-client)
UNIT_OBJS_test-users := $(OBJ)/guest/users.o
