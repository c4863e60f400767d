# tests/: what `make tests` builds (the cmocka unit tests, plus any helper
# program another fragment adds to TEST_PROGRAMS) and the fuzz targets,
# which need clang and are built by `make fuzz-build` only.

include tests/unit/unit.mk
include tests/fuzz/fuzz.mk
include tests/helpers/helpers.mk

# C tests that drive a real peer program (not unit tests: they start
# dpdk-testpmd), run by tests/integration/test_c_peers.py:
# tests/integration/c/NAME.c -> $(BUILD)/tests/integration/NAME.
PEER_TEST_SRCS := $(wildcard tests/integration/c/*.c)
PEER_TESTS := $(PEER_TEST_SRCS:tests/integration/c/%.c=$(BUILD)/tests/integration/%)
TEST_PROGRAMS += $(PEER_TESTS)

$(PEER_TESTS): $(BUILD)/tests/integration/%: $(OBJ)/tests/integration/c/%.o \
		$$(PEER_OBJS_$$*) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(PEER_OBJS_$*) $(PROTO_LIB) $(PROTO_LIBS) $(CMOCKA_LIBS)

.PHONY: tests
# Secondary expansion (enabled in unit.mk): TEST_PROGRAMS is read once every
# fragment has been included, whatever their order.
tests: $$(TEST_PROGRAMS) $(UNIT_TESTS)
