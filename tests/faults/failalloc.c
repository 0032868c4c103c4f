/* LD_PRELOAD allocation-failure seam for the fault suite: fails malloc/calloc/realloc called
 * directly by tandemd's own code (the executable) or by libjansson, leaving libc, libmicrohttpd,
 * hiredis and libcurl alone, so what is tested is tandem's handling of NULL, not third-party code.
 *
 * Off until the process gets SIGUSR2 (start-up is not what is tested); each SIGUSR2 toggles.
 * While on, with TANDEM_TEST_FAIL_ALLOC_EVERY=M every M-th counted call fails (default 10);
 * a list "M1,M2,..." gives phases: each SIGUSR1 moves to the next M (the last one stays);
 * TANDEM_TEST_FAIL_ALLOC_SEED=S shifts which ones. Counters are written to the file named by
 * TANDEM_TEST_FAIL_ALLOC_REPORT at each toggle ("counted failed").
 *
 * Build: cc -shared -fPIC -O1 -o libfailalloc.so tests/faults/failalloc.c -ldl
 * Not usable with ASan builds (ASan owns malloc). Test-only: never linked into tandemd. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t a, size_t b);
extern void *__libc_realloc(void *p, size_t n);

struct range {
    uintptr_t lo, hi;
};

static struct range ranges[8];
static int n_ranges;
static atomic_int active;
static atomic_ulong counted, failed;
static unsigned long every = 10, seed;
static unsigned long phases[16];
static int n_phases, phase;
static char report_path[512];

static int find_ranges(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    int main_prog = name[0] == '\0' && n_ranges == 0;
    if (!main_prog && !strstr(name, "libjansson"))
        return 0;
    for (int i = 0; i < info->dlpi_phnum && n_ranges < 8; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            ranges[n_ranges].lo = info->dlpi_addr + ph->p_vaddr;
            ranges[n_ranges].hi = ranges[n_ranges].lo + ph->p_memsz;
            n_ranges++;
        }
    }
    return 0;
}

static void write_report(void)
{
    if (!report_path[0])
        return;
    int fd = open(report_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return;
    char line[64];
    int n = snprintf(line, sizeof line, "%lu %lu\n", atomic_load(&counted), atomic_load(&failed));
    if (n > 0 && write(fd, line, (size_t)n) < 0) {
        /* nothing to do: the report is best effort */
    }
    close(fd);
}

static void next_phase(int sig)
{
    (void)sig;
    if (phase + 1 < n_phases)
        phase++;
    if (n_phases)
        every = phases[phase];
}

static void toggle(int sig)
{
    (void)sig;
    atomic_store(&active, !atomic_load(&active));
    write_report();
}

__attribute__((constructor)) static void init(void)
{
    const char *e = getenv("TANDEM_TEST_FAIL_ALLOC_EVERY");
    for (const char *p = e; p && *p && n_phases < 16;) {
        long v = atol(p);
        if (v > 0)
            phases[n_phases++] = (unsigned long)v;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    if (n_phases)
        every = phases[0];
    e = getenv("TANDEM_TEST_FAIL_ALLOC_SEED");
    if (e)
        seed = (unsigned long)atol(e);
    e = getenv("TANDEM_TEST_FAIL_ALLOC_REPORT");
    if (e)
        snprintf(report_path, sizeof report_path, "%s", e);
    dl_iterate_phdr(find_ranges, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = toggle;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = next_phase;
    sigaction(SIGUSR1, &sa, NULL);
}

static int should_fail(void *caller)
{
    if (!atomic_load(&active))
        return 0;
    uintptr_t a = (uintptr_t)caller;
    int ours = 0;
    for (int i = 0; i < n_ranges; i++)
        if (a >= ranges[i].lo && a < ranges[i].hi)
            ours = 1;
    if (!ours)
        return 0;
    unsigned long c = atomic_fetch_add(&counted, 1) + 1;
    if ((c + seed) % every != 0)
        return 0;
    atomic_fetch_add(&failed, 1);
    return 1;
}

void *malloc(size_t n)
{
    if (should_fail(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    if (should_fail(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (n && should_fail(__builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}
