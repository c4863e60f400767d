# host/: qubes-lite-host-agent and vm-run.

HOST_AGENT_OBJS := $(OBJ)/host/host-agent.o $(OBJ)/host/config.o
VM_RUN_OBJS := $(OBJ)/host/vm-run.o $(OBJ)/host/vmrun-opts.o $(OBJ)/host/config.o
HOST_LIBS := $(call pc_libs,jansson)

CFLAGS_host := $(call pc_cflags,jansson)

PROGRAMS += $(BIN)/qubes-lite-host-agent $(BIN)/vm-run

$(BIN)/qubes-lite-host-agent: $(HOST_AGENT_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS) $(PROTO_LIBS)

$(BIN)/vm-run: $(VM_RUN_OBJS) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(HOST_LIBS) $(PROTO_LIBS)

# Unit tests (tests/unit/test-<module>.c, built by the generic rule).
UNIT_OBJS_test-vmrun-opts := $(OBJ)/host/vmrun-opts.o
UNIT_LIBS_test-vmrun-opts :=
UNIT_OBJS_test-config := $(OBJ)/host/config.o
UNIT_LIBS_test-config := $(HOST_LIBS)
