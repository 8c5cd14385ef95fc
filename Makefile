# dovecot-lmdb: plain make, configured from Dovecot's dovecot-config.
DOVECOT_CONFIG ?= /usr/lib/dovecot/dovecot-config
-include $(DOVECOT_CONFIG)
# dovecot-config is a shell fragment: strip its quotes
unquote = $(subst ',,$(subst ",,$(1)))
DC_CFLAGS := $(call unquote,$(DOVECOT_CFLAGS))
DC_INCLUDE := $(call unquote,$(LIBDOVECOT_INCLUDE))
MODULEDIR ?= $(call unquote,$(dovecot_moduledir))
ifeq ($(MODULEDIR),)
MODULEDIR := /usr/lib/dovecot/modules
endif

CC ?= cc
EXTRA_CFLAGS ?=
EXTRA_LDFLAGS ?=
CFLAGS_ALL = $(DC_CFLAGS) -fPIC -DHAVE_CONFIG_H -Iinclude -Iplugin $(DC_INCLUDE) $(EXTRA_CFLAGS)
PLUGIN_LDFLAGS = -shared -Wl,-z,defs -L/usr/lib/dovecot $(EXTRA_LDFLAGS)

BUILD = build

LMDB_SRCS = plugin/lmdb-plugin.c plugin/lmdb-storage.c plugin/lmdb-mail.c \
	plugin/lmdb-save.c plugin/lmdb-sync.c plugin/lmdb-istream.c \
	plugin/lmdb-db.c plugin/lmdb-settings.c
LMDB_OBJS = $(patsubst plugin/%.c,$(BUILD)/%.o,$(LMDB_SRCS))
LMDB_PLUGIN = $(BUILD)/lib20_lmdb_plugin.so

# imap_lmdb (RFC 8474 OBJECTID): an imap-only plugin. Its imap symbols come
# from the imap binary when it is loaded, so it links without -z defs.
IMAP_LMDB_SRCS = $(wildcard plugin/imap-lmdb/*.c)
IMAP_LMDB_OBJS = $(patsubst plugin/imap-lmdb/%.c,$(BUILD)/imap-lmdb/%.o,$(IMAP_LMDB_SRCS))
IMAP_LMDB_PLUGIN = $(BUILD)/lib95_imap_lmdb_plugin.so

# doveadm lmdb {stats,check,compact,backup}: loaded by doveadm from
# $(MODULEDIR)/doveadm.  Its doveadm symbols come from the doveadm binary
# and its lmdb ones from lib20_lmdb_plugin.so (mail_plugins), so it links
# without -z defs.
DOVEADM_LMDB_SRCS = $(wildcard plugin/doveadm-lmdb/*.c)
DOVEADM_LMDB_OBJS = $(patsubst plugin/doveadm-lmdb/%.c,$(BUILD)/doveadm-lmdb/%.o,$(DOVEADM_LMDB_SRCS))
DOVEADM_LMDB_PLUGIN = $(BUILD)/lib20_doveadm_lmdb_plugin.so
DOVEADM_MODULEDIR ?= $(MODULEDIR)/doveadm
SYSCONFDIR ?= /etc/dovecot
DOCDIR ?= /usr/share/doc/dovecot-lmdb
# CONF_D=no: don't copy conf.d snippets into $(SYSCONFDIR)/conf.d
CONF_D ?= yes

UNIT_TESTS = $(BUILD)/test-lmdb-db
ASAN_UNIT_TESTS = $(BUILD)/test-lmdb-db-asan
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all test unit-test integration-test install clean demo demo-stop deps

all: $(LMDB_PLUGIN) $(if $(IMAP_LMDB_SRCS),$(IMAP_LMDB_PLUGIN))

# make bench [N=20000] [CORPUS=DIR|MBOX]: lmdb and fts_lmdb against Dovecot's
# formats and FTS backends (bench/run.py, writes docs/BENCHMARKS.md).
# Separate from `make test`; installs the "bench" package list first.
.PHONY: bench
bench:
	bash scripts/install-deps.sh bench
	$(MAKE) all
	BENCH_COMMAND="make bench$(if $(N), N=$(N))$(if $(CORPUS), CORPUS=$(CORPUS))" \
		/usr/bin/python3 bench/run.py $(if $(N),--n $(N)) $(if $(CORPUS),--corpus $(CORPUS))

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/%.o: plugin/%.c include/*.h plugin/*.h | $(BUILD)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(LMDB_PLUGIN): $(LMDB_OBJS)
	$(CC) $(CFLAGS_ALL) $(PLUGIN_LDFLAGS) -o $@.tmp $(LMDB_OBJS) \
		-ldovecot-storage -ldovecot -llmdb -lcrypto
	mv -f $@.tmp $@

$(BUILD)/imap-lmdb/%.o: plugin/imap-lmdb/%.c plugin/imap-lmdb/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(IMAP_LMDB_PLUGIN): $(IMAP_LMDB_OBJS)
	$(CC) $(CFLAGS_ALL) -shared $(EXTRA_LDFLAGS) -o $@.tmp $(IMAP_LMDB_OBJS)
	mv -f $@.tmp $@

all: $(if $(DOVEADM_LMDB_SRCS),$(DOVEADM_LMDB_PLUGIN))

$(BUILD)/doveadm-lmdb/%.o: plugin/doveadm-lmdb/%.c plugin/doveadm-lmdb/*.h include/*.h plugin/*.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Iplugin/doveadm-lmdb -c $< -o $@

$(DOVEADM_LMDB_PLUGIN): $(DOVEADM_LMDB_OBJS)
	$(CC) $(CFLAGS_ALL) -shared -L/usr/lib/dovecot $(EXTRA_LDFLAGS) \
		-o $@.tmp $(DOVEADM_LMDB_OBJS) \
		-ldovecot-storage -ldovecot -llmdb -lcrypto
	mv -f $@.tmp $@

# cmocka tests of the layer's maintenance functions (compact lock, stats,
# copies, compaction) that the doveadm commands use
UNIT_TESTS += $(BUILD)/test-lmdb-maint
ASAN_UNIT_TESTS += $(BUILD)/test-lmdb-maint-asan
unit-test: $(BUILD)/test-lmdb-maint $(BUILD)/test-lmdb-maint-asan

$(BUILD)/test-lmdb-maint: tests/unit/test-lmdb-maint.c plugin/lmdb-db.c include/lmdb-db.h | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude $(EXTRA_CFLAGS) \
		tests/unit/test-lmdb-maint.c plugin/lmdb-db.c \
		-llmdb -lcrypto -lcmocka $(EXTRA_LDFLAGS) -o $@

$(BUILD)/test-lmdb-maint-asan: tests/unit/test-lmdb-maint.c plugin/lmdb-db.c include/lmdb-db.h | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude $(SAN_FLAGS) \
		tests/unit/test-lmdb-maint.c plugin/lmdb-db.c \
		-llmdb -lcrypto -lcmocka -o $@

$(BUILD)/test-lmdb-db: tests/unit/test-lmdb-db.c plugin/lmdb-db.c include/lmdb-db.h | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude $(EXTRA_CFLAGS) \
		tests/unit/test-lmdb-db.c plugin/lmdb-db.c \
		-llmdb -lcrypto -lcmocka $(EXTRA_LDFLAGS) -o $@

$(BUILD)/test-lmdb-db-asan: tests/unit/test-lmdb-db.c plugin/lmdb-db.c include/lmdb-db.h | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude $(SAN_FLAGS) \
		tests/unit/test-lmdb-db.c plugin/lmdb-db.c \
		-llmdb -lcrypto -lcmocka -o $@

unit-test: $(UNIT_TESTS) $(ASAN_UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t"; $$t || exit 1; done
	@for t in $(ASAN_UNIT_TESTS); do echo "== $$t (ASan/UBSan)"; \
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $$t || exit 1; done

integration-test: all
	DOVECOT_LMDB_MODULE_DIR=$(CURDIR)/$(BUILD) /usr/bin/python3 -m pytest -q --durations=15 tests/integration $(PYTEST_ARGS)

test: unit-test integration-test

install: all
	install -d $(DESTDIR)$(MODULEDIR)
	install -m 0644 $(LMDB_PLUGIN) $(DESTDIR)$(MODULEDIR)/
	install -m 0644 $(IMAP_LMDB_PLUGIN) $(DESTDIR)$(MODULEDIR)/
	install -d $(DESTDIR)$(DOVEADM_MODULEDIR)
	$(if $(DOVEADM_LMDB_SRCS),install -m 0644 $(DOVEADM_LMDB_PLUGIN) $(DESTDIR)$(DOVEADM_MODULEDIR)/)
	install -d $(DESTDIR)$(DOCDIR)/examples
	install -m 0644 conf.d/*.conf $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	$(if $(wildcard docs/events.md),install -m 0644 docs/events.md $(DESTDIR)$(DOCDIR)/)
	@# never overwrite an admin's conf.d file: copy a snippet only if absent
	@if [ "$(CONF_D)" = yes ]; then \
		install -d $(DESTDIR)$(SYSCONFDIR)/conf.d; \
		for f in conf.d/*.conf; do \
			t=$(DESTDIR)$(SYSCONFDIR)/conf.d/$$(basename $$f); \
			if [ -e $$t ]; then echo "kept existing $$t (this version: $(DOCDIR)/examples/)"; \
			else install -m 0644 $$f $$t && echo "installed $$t"; fi; \
		done; \
	fi

deps:
	bash scripts/install-deps.sh test

demo:
	bash scripts/demo.sh

demo-stop:
	bash scripts/demo.sh stop

clean:
	rm -rf $(BUILD)

# ---- fts_lmdb: the exact-substring FTS backend (plugin/fts-lmdb/) ----
FTS_LMDB_DIR = plugin/fts-lmdb
FTS_LMDB_PURE = $(FTS_LMDB_DIR)/fts-lmdb-codec.c $(FTS_LMDB_DIR)/fts-lmdb-doc.c \
	$(FTS_LMDB_DIR)/fts-lmdb-store.c
FTS_LMDB_SRCS = $(FTS_LMDB_DIR)/fts-lmdb-plugin.c $(FTS_LMDB_DIR)/fts-backend-lmdb.c \
	$(FTS_LMDB_DIR)/fts-lmdb-capture.c $(FTS_LMDB_DIR)/fts-lmdb-query.c \
	$(FTS_LMDB_DIR)/fts-lmdb-maint.c $(FTS_LMDB_PURE)
FTS_LMDB_OBJS = $(patsubst $(FTS_LMDB_DIR)/%.c,$(BUILD)/fts-lmdb/%.o,$(FTS_LMDB_SRCS)) \
	$(BUILD)/fts-lmdb/lmdb-db.o
FTS_LMDB_HDRS = $(wildcard $(FTS_LMDB_DIR)/*.h) include/lmdb-db.h
FTS_LMDB_PLUGIN = $(BUILD)/lib21_fts_lmdb_plugin.so
FTS_LMDB_TEST_SRCS = $(FTS_LMDB_PURE) plugin/lmdb-db.c
FTS_LMDB_TEST_LIBS = -llmdb -lzstd -lcrypto -lcmocka
FTS_LMDB_FUZZERS = $(BUILD)/fuzz-fts-lmdb-posting $(BUILD)/fuzz-fts-lmdb-doc
FUZZERS += $(FTS_LMDB_FUZZERS)
FUZZ_TIME ?= 10
FUZZ_CC ?= clang

all: $(FTS_LMDB_PLUGIN)

$(BUILD)/fts-lmdb/%.o: $(FTS_LMDB_DIR)/%.c $(FTS_LMDB_HDRS) | $(BUILD)
	@mkdir -p $(BUILD)/fts-lmdb
	$(CC) $(CFLAGS_ALL) -I$(FTS_LMDB_DIR) -c $< -o $@

$(BUILD)/fts-lmdb/lmdb-db.o: plugin/lmdb-db.c include/lmdb-db.h | $(BUILD)
	@mkdir -p $(BUILD)/fts-lmdb
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# No -z defs: the fts plugin's symbols come from lib20_fts_plugin.so,
# loaded first because of fts_lmdb_plugin_dependencies.
$(FTS_LMDB_PLUGIN): $(FTS_LMDB_OBJS) $(FTS_LMDB_DIR)/fts-lmdb.map
	$(CC) $(CFLAGS_ALL) -shared -L/usr/lib/dovecot \
		-Wl,--version-script=$(FTS_LMDB_DIR)/fts-lmdb.map $(EXTRA_LDFLAGS) \
		-o $@.tmp $(FTS_LMDB_OBJS) \
		-ldovecot-storage -ldovecot -llmdb -lzstd -lcrypto
	mv -f $@.tmp $@

UNIT_TESTS += $(BUILD)/test-fts-lmdb
ASAN_UNIT_TESTS += $(BUILD)/test-fts-lmdb-asan
unit-test: $(BUILD)/test-fts-lmdb $(BUILD)/test-fts-lmdb-asan

$(BUILD)/test-fts-lmdb: tests/unit/test-fts-lmdb.c $(FTS_LMDB_TEST_SRCS) $(FTS_LMDB_HDRS) | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude -I$(FTS_LMDB_DIR) $(EXTRA_CFLAGS) \
		tests/unit/test-fts-lmdb.c $(FTS_LMDB_TEST_SRCS) \
		$(FTS_LMDB_TEST_LIBS) $(EXTRA_LDFLAGS) -o $@

$(BUILD)/test-fts-lmdb-asan: tests/unit/test-fts-lmdb.c $(FTS_LMDB_TEST_SRCS) $(FTS_LMDB_HDRS) | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude -I$(FTS_LMDB_DIR) $(SAN_FLAGS) \
		tests/unit/test-fts-lmdb.c $(FTS_LMDB_TEST_SRCS) \
		$(FTS_LMDB_TEST_LIBS) -o $@

# doveadm fts-lmdb {stats,check}: loaded by doveadm from
# $(DOVEADM_MODULEDIR), separate from the storage's doveadm plugin.  It
# links its own copy of the fts_lmdb store and the ldb layer (only its
# entry points are exported), so it needs no fts plugin symbols.
DOVEADM_FTS_LMDB_DIR = plugin/doveadm-fts-lmdb
DOVEADM_FTS_LMDB_PLUGIN = $(BUILD)/lib21_doveadm_fts_lmdb_plugin.so
DOVEADM_FTS_LMDB_OBJS = $(BUILD)/doveadm-fts-lmdb/doveadm-fts-lmdb.o \
	$(patsubst $(FTS_LMDB_DIR)/%.c,$(BUILD)/fts-lmdb/%.o,$(FTS_LMDB_PURE)) \
	$(BUILD)/fts-lmdb/lmdb-db.o

all: $(DOVEADM_FTS_LMDB_PLUGIN)

$(BUILD)/doveadm-fts-lmdb/%.o: $(DOVEADM_FTS_LMDB_DIR)/%.c $(FTS_LMDB_HDRS) | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -I$(FTS_LMDB_DIR) -c $< -o $@

$(DOVEADM_FTS_LMDB_PLUGIN): $(DOVEADM_FTS_LMDB_OBJS) $(DOVEADM_FTS_LMDB_DIR)/doveadm-fts-lmdb.map
	$(CC) $(CFLAGS_ALL) -shared -L/usr/lib/dovecot \
		-Wl,--version-script=$(DOVEADM_FTS_LMDB_DIR)/doveadm-fts-lmdb.map \
		$(EXTRA_LDFLAGS) -o $@.tmp $(DOVEADM_FTS_LMDB_OBJS) \
		-ldovecot-storage -ldovecot -llmdb -lzstd -lcrypto
	mv -f $@.tmp $@

install: install-doveadm-fts-lmdb
install-doveadm-fts-lmdb: $(DOVEADM_FTS_LMDB_PLUGIN)
	install -d $(DESTDIR)$(DOVEADM_MODULEDIR)
	install -m 0644 $(DOVEADM_FTS_LMDB_PLUGIN) $(DESTDIR)$(DOVEADM_MODULEDIR)/
.PHONY: install-doveadm-fts-lmdb

install: install-fts-lmdb
install-fts-lmdb: $(FTS_LMDB_PLUGIN)
	install -d $(DESTDIR)$(MODULEDIR)
	install -m 0644 $(FTS_LMDB_PLUGIN) $(DESTDIR)$(MODULEDIR)/
	@echo "Enable fts_lmdb with conf.d/90-fts-lmdb.conf (copy it to /etc/dovecot/conf.d/)"

# libFuzzer targets for the posting codec and the stored-text decoder;
# FUZZ_TIME seconds each (test runs them briefly).
$(BUILD)/fuzz-fts-lmdb-%: tests/fuzz/fuzz-fts-lmdb-%.c $(FTS_LMDB_DIR)/fts-lmdb-codec.c \
		$(FTS_LMDB_DIR)/fts-lmdb-doc.c $(FTS_LMDB_HDRS) | $(BUILD)
	$(FUZZ_CC) -g -O1 $(FUZZ_SAN) -I$(FTS_LMDB_DIR) \
		$< $(FTS_LMDB_DIR)/fts-lmdb-codec.c $(FTS_LMDB_DIR)/fts-lmdb-doc.c -lzstd -o $@

fuzz: $(FTS_LMDB_FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); \
		mkdir -p $(BUILD)/fuzz-corpus/$$n; echo "== $$n ($(FUZZ_TIME)s)"; \
		$$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
			$(BUILD)/fuzz-corpus/$$n tests/fuzz/seeds/$$n \
			> $(BUILD)/$$n.log 2>&1 || { tail -40 $(BUILD)/$$n.log; exit 1; }; \
		grep -E "^stat::number_of_executed_units|^Done" $(BUILD)/$$n.log; done

test: fuzz
.PHONY: install-fts-lmdb fuzz

# ---- hardening (issue 8): fuzz targets, stress, sanitizers, valgrind ----
# `make fuzz` runs every libFuzzer target in FUZZERS for FUZZ_TIME seconds
# (FUZZ_TIME=600 for a long run); `make fuzz-regress` only replays the
# seed corpora (tests/fuzz/seeds/<target>/, which keep every crash found),
# as part of unit-test.
FUZZ_SAN = -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
LMDB_FUZZERS = $(BUILD)/fuzz-lmdb-record $(BUILD)/fuzz-lmdb-settings \
	$(BUILD)/fuzz-fts-lmdb-query
FUZZERS += $(LMDB_FUZZERS)
fuzz: $(LMDB_FUZZERS)

$(BUILD)/fuzz-lmdb-record: tests/fuzz/fuzz-lmdb-record.c plugin/lmdb-db.c \
		include/lmdb-db.h | $(BUILD)
	$(FUZZ_CC) -g -O1 $(FUZZ_SAN) -Iinclude $< plugin/lmdb-db.c \
		-llmdb -lcrypto -o $@

$(BUILD)/fuzz-lmdb-settings: tests/fuzz/fuzz-lmdb-settings.c \
		plugin/lmdb-settings.c plugin/lmdb-settings.h | $(BUILD)
	$(FUZZ_CC) -g -O1 $(FUZZ_SAN) -DHAVE_CONFIG_H -Iplugin $(DC_INCLUDE) \
		$< plugin/lmdb-settings.c -L/usr/lib/dovecot \
		-Wl,-rpath,/usr/lib/dovecot -ldovecot -o $@

fuzz-regress: $(LMDB_FUZZERS) $(FTS_LMDB_FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); \
		echo "== $$n: replay tests/fuzz/seeds/$$n"; \
		$$f -runs=0 tests/fuzz/seeds/$$n > $(BUILD)/$$n-regress.log 2>&1 \
			|| { tail -40 $(BUILD)/$$n-regress.log; exit 1; }; done
unit-test: fuzz-regress

# `make stress`: tests/stress/stress.py against a private Dovecot for
# STRESS_SECONDS (60); STRESS_ARGS='--users 5 --sessions 8' and so on.
STRESS_SECONDS ?= 60
stress: all
	DOVECOT_LMDB_MODULE_DIR=$(CURDIR)/$(BUILD) STRESS_SECONDS=$(STRESS_SECONDS) \
		/usr/bin/python3 tests/stress/stress.py $(STRESS_ARGS)

# Damaged databases, and the record fuzzer's seeds (crash inputs included)
# replayed without libFuzzer.
HARDENING_TEST_SRCS = tests/unit/test-lmdb-hardening.c \
	tests/fuzz/fuzz-lmdb-record.c plugin/lmdb-db.c
UNIT_TESTS += $(BUILD)/test-lmdb-hardening
ASAN_UNIT_TESTS += $(BUILD)/test-lmdb-hardening-asan
unit-test: $(BUILD)/test-lmdb-hardening $(BUILD)/test-lmdb-hardening-asan

$(BUILD)/test-lmdb-hardening: $(HARDENING_TEST_SRCS) include/lmdb-db.h | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude $(EXTRA_CFLAGS) \
		$(HARDENING_TEST_SRCS) -llmdb -lcrypto -lcmocka $(EXTRA_LDFLAGS) -o $@

$(BUILD)/test-lmdb-hardening-asan: $(HARDENING_TEST_SRCS) include/lmdb-db.h | $(BUILD)
	$(CC) -std=gnu99 -g -O1 -Wall -W -Iinclude $(SAN_FLAGS) \
		$(HARDENING_TEST_SRCS) -llmdb -lcrypto -lcmocka -o $@

# The unit tests under valgrind: no error, no definite or indirect leak.
VALGRIND_UNIT = valgrind -q --leak-check=full \
	--errors-for-leak-kinds=definite,indirect --error-exitcode=1
unit-test-valgrind: $(UNIT_TESTS)
	@for t in $(UNIT_TESTS); do echo "== $$t (valgrind)"; \
		$(VALGRIND_UNIT) $$t > $$t-valgrind.log 2>&1 \
			|| { tail -60 $$t-valgrind.log; exit 1; }; done
test: unit-test-valgrind

# `make test-asan`: the modules built with ASan and UBSan into
# $(BUILD)/asan, and the whole integration suite run against them.  Stock
# Dovecot is not instrumented, so every Dovecot process gets the runtimes
# with LD_PRELOAD through import_environment (and doveadm through a
# wrapper).  Leak checks are off there (Dovecot's own allocations); any
# ASan or UBSan error aborts the process and leaves a report in
# $(BUILD)/asan/reports, and any report fails the run.
ASAN_BUILD = $(BUILD)/asan
ASAN_TESTS ?= tests/integration
ASAN_REPORTS = $(CURDIR)/$(ASAN_BUILD)/reports
ASAN_PRELOAD = $(shell $(CC) -print-file-name=libasan.so):$(shell $(CC) -print-file-name=libubsan.so)
ASAN_ENV = LD_PRELOAD=$(ASAN_PRELOAD) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(ASAN_REPORTS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$(ASAN_REPORTS)/ubsan
test-asan:
	$(MAKE) BUILD=$(ASAN_BUILD) EXTRA_CFLAGS="$(SAN_FLAGS)" \
		EXTRA_LDFLAGS="-fsanitize=address,undefined" all \
		$(ASAN_BUILD)/lib99_asan_canary_plugin.so
	rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS) && chmod 1777 $(ASAN_REPORTS)
	printf 'import_environment = $$import_environment %s\ndefault_vsz_limit = 0\n' \
		'$(ASAN_ENV)' > $(ASAN_BUILD)/asan.conf
	printf '#!/bin/sh\nexport %s\nexec /usr/bin/doveadm "$$@"\n' \
		'$(ASAN_ENV)' > $(ASAN_BUILD)/doveadm && chmod +x $(ASAN_BUILD)/doveadm
	DOVECOT_TEST_ASAN=$(ASAN_REPORTS) DOVEADM_BIN=$(CURDIR)/$(ASAN_BUILD)/doveadm \
		DOVECOT_TEST_EXTRA_CONFIG='!include $(CURDIR)/$(ASAN_BUILD)/asan.conf' \
		DOVECOT_LMDB_MODULE_DIR=$(CURDIR)/$(ASAN_BUILD) \
		/usr/bin/python3 -m pytest -q --durations=15 $(ASAN_TESTS) $(PYTEST_ARGS)
	@if [ -n "$$(ls $(ASAN_REPORTS))" ]; then \
		echo "ASan/UBSan reports:"; head -50 $(ASAN_REPORTS)/*; exit 1; fi
	@echo "test-asan: no ASan or UBSan report"

# CI's share (.ci/run; the whole suite under ASan takes some 20 minutes):
# the sanitizer self-checks, the IMAP suite and a 10-second stress run.
ASAN_CI_TESTS = tests/integration/test_lmdb_sanitizers.py \
	tests/integration/test_lmdb_imap.py tests/integration/test_lmdb_stress_run.py
test-asan-ci:
	$(MAKE) test-asan ASAN_TESTS="$(ASAN_CI_TESTS)" STRESS_TEST_SECONDS=10

# a module with a deliberate use after free: test_lmdb_sanitizers.py checks
# that test-asan catches it
$(BUILD)/lib99_asan_canary_plugin.so: tests/integration/asan-canary-plugin.c | $(BUILD)
	$(CC) $(CFLAGS_ALL) -shared -o $@ $<

.PHONY: fuzz-regress stress unit-test-valgrind test-asan test-asan-ci
