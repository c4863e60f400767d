# qubes-lite: the one build.
#
#   make            every program into build/bin/
#   make test       install/check dependencies, build, run every test
#   make check      the same tests against an ASan+UBSan build (build/san/)
#   make fuzz       fuzz each target for FUZZ_SECONDS (default 60)
#   make bench      benchmarks, each beside its peer measured in the same run
#   make demo       vm-run and friends on real VMs under qemu
#   make install    the programs, the systemd generator and bash completion
#   make image      the guest image: build/rootfs/vmlinux and initrd.img
#
# Variables: BUILD (output dir), SAN=1 (sanitizers), CC, V=1 (verbose);
# for install: PREFIX (/usr/local), DESTDIR, BINDIR, GENERATORDIR, COMPLETIONDIR.

BUILD ?= build
SAN ?= 0
# vm-run and qubes-lite-init are linked static-pie (host.mk, rootfs.mk say
# why); DYNAMIC=1 links them as the other programs, for the sanitizer
# runtimes (SAN=1 implies it) and where there is no static libc or
# protobuf-c archive (nixpkgs).
DYNAMIC ?= $(SAN)
CC ?= gcc
PKG_CONFIG ?= pkg-config
PYTHON ?= /usr/bin/python3
FUZZ_SECONDS ?= 60

# Where `make install` puts things (DESTDIR is prepended to each). BINDIR
# is also compiled into the generator, as where to look for the host agent
# when it is not beside the generator's real path.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
GENERATORDIR ?= $(PREFIX)/lib/systemd/system-generators
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
INSTALL ?= install

ifeq ($(V),1)
Q :=
else
Q := @
endif

BIN := $(BUILD)/bin
OBJ := $(BUILD)/obj
GEN := $(BUILD)/gen
LIB := $(BUILD)/lib

WARNINGS := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wmissing-prototypes \
	-Wstrict-prototypes -Wno-unused-parameter -Wimplicit-fallthrough
HARDEN := -fstack-protector-strong -fstack-clash-protection -fcf-protection -fPIE \
	-D_FORTIFY_SOURCE=2
CFLAGS_BASE := -std=gnu11 -g -MD -MP $(WARNINGS) -D_GNU_SOURCE
LDFLAGS_BASE := -pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack

ifeq ($(SAN),1)
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN := -fsanitize=address,undefined
HARDEN := $(filter-out -D_FORTIFY_SOURCE=2,$(HARDEN))
else
OPT := -O2
LDSAN :=
endif

pc_cflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pc_libs = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null)

CFLAGS := $(CFLAGS_BASE) $(OPT) $(HARDEN) -I$(GEN) -Iproto -I. $(call pc_cflags,libprotobuf-c libsystemd) $(EXTRA_CFLAGS)
LDFLAGS := $(LDFLAGS_BASE) $(LDSAN) $(EXTRA_LDFLAGS)

PROGRAMS :=
TEST_PROGRAMS :=

.PHONY: all clean test check fuzz bench demo deps format install image
.DEFAULT_GOAL := all

include proto/proto.mk
include guest/guest.mk
include host/host.mk
include tests/tests.mk
include switch/switch.mk
include rootfs/rootfs.mk

all: $(PROGRAMS)

# Generic compile rule; generated headers must exist before any object.
$(OBJ)/%.o: %.c | $(GEN)/qubes-lite.pb-c.h
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(CFLAGS_$(firstword $(subst /, ,$<))) -c -o $@ $<

deps:
	$(Q)scripts/deps.sh

test: deps
	$(Q)$(MAKE) --no-print-directory all tests
	$(Q)BUILD=$(BUILD) scripts/run-tests.sh

check: deps
	$(Q)$(MAKE) --no-print-directory BUILD=build/san SAN=1 all tests
	$(Q)BUILD=build/san SAN=1 scripts/run-tests.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) PYTHONPATH=tests $(PYTHON) tests/bench/bench.py

# The image after the programs, not beside them: both would build the
# guest agent's objects at once under -j.
demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory image
	$(Q)BUILD=$(BUILD) scripts/demo.sh

# The generator is a relative link to the program in BINDIR, so that it
# finds the host agent beside its real path wherever the tree is copied;
# one completion file serves every vm-* command (bash-completion loads it
# by the command's name, hence the links).
COMPLETED_COMMANDS := vm-start vm-stop vm-start-debug vm-shell vm-list

install: all
	$(if $(Q),@echo "  INSTALL $(DESTDIR)$(PREFIX)")
	$(Q)$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(GENERATORDIR) $(DESTDIR)$(COMPLETIONDIR)
	$(Q)$(INSTALL) -m 0755 $(PROGRAMS) $(DESTDIR)$(BINDIR)/
	$(Q)ln -sfn $(shell realpath -m --relative-to=$(GENERATORDIR) $(BINDIR))/qubes-lite-generator \
		$(DESTDIR)$(GENERATORDIR)/qubes-lite-generator
	$(Q)$(INSTALL) -m 0644 host/cli/completion.bash $(DESTDIR)$(COMPLETIONDIR)/vm-run
	$(Q)for c in $(COMPLETED_COMMANDS); do ln -sfn vm-run $(DESTDIR)$(COMPLETIONDIR)/$$c; done

clean:
	rm -rf build

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
