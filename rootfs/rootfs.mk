# rootfs/: the guest image. qubes-lite-init, its PID 1, is built with every
# program; `make image` assembles $(BUILD)/rootfs/vmlinux and initrd.img
# around it and the guest agent (rootfs/mkimage.py).

INIT_SRCS := rootfs/init.c rootfs/params.c rootfs/sysinit.c rootfs/net.c rootfs/fwcfg.c
INIT_OBJS := $(INIT_SRCS:%.c=$(OBJ)/%.o)
INIT := $(BIN)/qubes-lite-init
IMAGE_DIR := $(BUILD)/rootfs

# PID 1 is static-pie: nothing to load before it runs, no library in the
# image it could break on, and still randomised. It uses nothing of libc a
# static binary cannot have (no NSS: it reads /etc/passwd with fgetpwent).
# DYNAMIC=1 (the top Makefile; SAN=1 implies it) links it as the others,
# and the image builder brings its libraries along.
ifeq ($(DYNAMIC),1)
INIT_LDFLAGS := $(LDFLAGS)
else
INIT_LDFLAGS := $(filter-out -pie,$(LDFLAGS)) -static-pie
endif

PROGRAMS += $(INIT)

$(INIT): $(INIT_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(INIT_LDFLAGS) -o $@ $(INIT_OBJS) $(PROTO_LIB)

# Always run: the builder itself skips the kernel when it is cached.
image:
	$(Q)scripts/deps.sh image
	$(Q)$(MAKE) -s --no-print-directory $(INIT) $(GUEST_AGENT)
	$(Q)$(PYTHON) rootfs/mkimage.py --bin $(BIN) --out $(IMAGE_DIR)

UNIT_OBJS_test-params := $(OBJ)/rootfs/params.o
UNIT_OBJS_test-fwcfg := $(OBJ)/rootfs/fwcfg.o
