# tests/fuzz/: libFuzzer targets, one per parser of peer input.
#
#   make fuzz-build   every target into $(BUILD)/fuzz/ (clang)
#   make fuzz         each target for FUZZ_SECONDS over its seed corpus;
#                     new inputs go to tests/fuzz/scratch/TARGET, crashes to
#                     $(BUILD)/fuzz/artifacts/, the committed corpus is
#                     never written
#   make fuzz-list    the targets' names, one a line
#
# The targets and the protocol library are compiled with clang
# (-fsanitize=fuzzer,address,undefined) into objects of their own, apart
# from the gcc objects of the normal build.

FUZZ_CC ?= clang
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_OBJ := $(FUZZ_DIR)/obj
FUZZ_SCRATCH := tests/fuzz/scratch
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz-*.c)
# The targets of one message each, built from tests/fuzz/message.c:
# NAME:FIELD (the message's field number in Envelope), or
# NAME:FIELD:EXEC_FIELD for a message that is a field of Exec.
FUZZ_MESSAGES := hello:1 exec:2 pty:2:5 data:4 exited:9 error:11 host-status:21
fuzz_msg = $(subst :, ,$(filter $(1):%,$(FUZZ_MESSAGES)))
FUZZ_MESSAGE_TARGETS := $(foreach m,$(FUZZ_MESSAGES),fuzz-$(firstword $(subst :, ,$(m))))
FUZZ_TARGETS := $(sort $(FUZZ_SRCS:tests/fuzz/%.c=%) $(FUZZ_MESSAGE_TARGETS))
FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -I$(GEN) -Iproto -I. \
	-Itests/fuzz $(call pc_cflags,libprotobuf-c libsystemd)
FUZZ_COMMON_OBJS := $(PROTO_SRCS:%.c=$(FUZZ_OBJ)/%.o) $(FUZZ_OBJ)/gen/qubes-lite.pb-c.o \
	$(FUZZ_OBJ)/tests/fuzz/oracle.o

.PHONY: fuzz-build fuzz fuzz-list
fuzz-build: $(FUZZ_BINS)

fuzz-list:
	@printf '%s\n' $(FUZZ_TARGETS)

$(FUZZ_OBJ)/%.o: %.c | $(GEN)/qubes-lite.pb-c.h
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_MESSAGE_TARGETS:%=$(FUZZ_OBJ)/tests/fuzz/%.o): $(FUZZ_OBJ)/tests/fuzz/fuzz-%.o: \
		tests/fuzz/message.c | $(GEN)/qubes-lite.pb-c.h
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  FUZZCC  $< ($*)")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link \
		-DFUZZ_FIELD=$(word 2,$(call fuzz_msg,$*)) \
		$(if $(word 3,$(call fuzz_msg,$*)),-DFUZZ_EXEC_FIELD=$(word 3,$(call fuzz_msg,$*))) \
		-c -o $@ $<

# Generated code is not ours to hold to our warning set.
$(FUZZ_OBJ)/gen/qubes-lite.pb-c.o: $(GEN)/qubes-lite.pb-c.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(filter-out -Werror,$(FUZZ_CFLAGS)) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BINS): $(FUZZ_DIR)/%: $(FUZZ_OBJ)/tests/fuzz/%.o $(FUZZ_COMMON_OBJS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^ $(PROTO_LIBS)

fuzz: fuzz-build
	$(Q)set -e; for t in $(FUZZ_TARGETS); do \
		echo "  FUZZ    $$t for $(FUZZ_SECONDS)s"; \
		mkdir -p $(FUZZ_SCRATCH)/$$t $(FUZZ_DIR)/artifacts; \
		$(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
			$(FUZZ_SCRATCH)/$$t tests/fuzz/corpus/$$t; \
	done

# fuzz-host-config: the host's JSON configuration and the crosvm command
# line built from it (clang objects of host/, and jansson).
FUZZ_HOST_CONFIG_OBJS := $(HOST_CONFIG_OBJS:$(OBJ)/%=$(FUZZ_OBJ)/%) $(FUZZ_OBJ)/host/agent/crosvm.o \
	$(FUZZ_OBJ)/host/agent/vmm.o $(FUZZ_OBJ)/host/agent/secret.o
$(FUZZ_DIR)/fuzz-host-config: $(FUZZ_HOST_CONFIG_OBJS)
$(FUZZ_DIR)/fuzz-host-config: PROTO_LIBS += $(call pc_libs,jansson)
$(FUZZ_OBJ)/tests/fuzz/fuzz-host-config.o $(FUZZ_HOST_CONFIG_OBJS): FUZZ_CFLAGS += $(call pc_cflags,jansson)

# fuzz-fwcfg: the fw_cfg file directory of the guest's init and agent.
$(FUZZ_DIR)/fuzz-fwcfg: $(FUZZ_OBJ)/rootfs/fwcfg.o
# fuzz-termfilter: vm-run's filter of a guest's output to a terminal.
$(FUZZ_DIR)/fuzz-termfilter: $(FUZZ_OBJ)/host/cli/termfilter.o
