# proto/: the library every program links (libqlproto.a).

PROTO_SRCS := proto/msg.c proto/validate.c proto/wire.c proto/wire-data.c proto/wire-io.c \
	proto/wire-stream.c proto/conn.c proto/addr.c proto/log.c proto/log-journal.c proto/util.c proto/rules.c proto/vmconf.c \
	proto/acceptor.c proto/secret-file.c
PROTO_OBJS := $(PROTO_SRCS:%.c=$(OBJ)/%.o) $(OBJ)/gen/qubes-lite.pb-c.o
PROTO_LIB := $(LIB)/libqlproto.a
PROTO_LIBS := $(call pc_libs,libprotobuf-c libsystemd)

$(GEN)/qubes-lite.pb-c.c $(GEN)/qubes-lite.pb-c.h &: proto/qubes-lite.proto
	@mkdir -p $(GEN)
	$(if $(Q),@echo "  PROTOC  $<")
	$(Q)protoc-c --proto_path=proto --c_out=$(GEN) $<

# Generated code is not ours to hold to our warning set.
$(OBJ)/gen/qubes-lite.pb-c.o: $(GEN)/qubes-lite.pb-c.c
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(filter-out -Werror -Wmissing-prototypes,$(CFLAGS)) -c -o $@ $<

$(PROTO_LIB): $(PROTO_OBJS)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^
