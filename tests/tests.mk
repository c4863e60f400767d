# tests/: what `make tests` builds (the cmocka unit tests, plus any helper
# program another fragment adds to TEST_PROGRAMS) and the fuzz targets,
# which need clang and are built by `make fuzz-build` only.

include tests/unit/unit.mk
include tests/fuzz/fuzz.mk
include tests/helpers/helpers.mk

.PHONY: tests
# Secondary expansion (enabled in unit.mk): TEST_PROGRAMS is read once every
# fragment has been included, whatever their order.
tests: $$(TEST_PROGRAMS) $(UNIT_TESTS)
