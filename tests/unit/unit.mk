# tests/unit/: one cmocka binary per module, grouped by the folder it tests:
# tests/unit/DIR/test-NAME.c -> $(BUILD)/tests/unit/DIR/test-NAME
# (DIR: proto, guest, host, switch, rootfs).
#
# A test links the objects in UNIT_OBJS_test-NAME (the modules it
# exercises; each folder's fragment sets them), libqlproto.a, the libraries
# in UNIT_LIBS_test-NAME, the protocol library's own libraries and cmocka.
# Both variables may be empty or set in a fragment included later: they are
# expanded only when the rule is used.

UNIT_SRCS := $(wildcard tests/unit/*/test-*.c)
UNIT_TEST_DIR := $(BUILD)/tests/unit
UNIT_TESTS := $(UNIT_SRCS:tests/unit/%.c=$(UNIT_TEST_DIR)/%)

CMOCKA_LIBS := $(call pc_libs,cmocka)
# Used by the Makefile's generic compile rule for every tests/ source.
CFLAGS_tests += $(call pc_cflags,cmocka) -I.

# test-wire checks round trips with the same Msg comparison the fuzzers use.
UNIT_OBJS_test-wire += $(OBJ)/tests/fuzz/oracle.o

.SECONDEXPANSION:
$(UNIT_TESTS): $(UNIT_TEST_DIR)/%: $(OBJ)/tests/unit/%.o $$(UNIT_OBJS_$$(notdir $$*)) $(PROTO_LIB)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(UNIT_OBJS_$(notdir $*)) $(PROTO_LIB) \
		$(UNIT_LIBS_$(notdir $*)) $(PROTO_LIBS) $(CMOCKA_LIBS)
