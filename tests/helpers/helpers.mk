# tests/helpers/: programs the integration tests run beside the real ones.
# crosvm-standin plays crosvm for the host agent's lifecycle tests (crosvm
# is not packaged for this distribution).

STANDIN := $(BUILD)/tests/helpers/crosvm-standin
TEST_PROGRAMS += $(STANDIN)

$(STANDIN): $(OBJ)/tests/helpers/crosvm-standin.o
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^
