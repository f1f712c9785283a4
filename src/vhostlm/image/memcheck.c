/*
 * vhostlm-memcheck: an in-guest memory integrity checker for live migration.
 *
 * It owns a region of guest RAM, rewrites it at a known rate while the guest is migrated
 * and verifies every page continuously, so that after the switch-over a page that was
 * written but never sent again (a dirty page the migration missed) is found and named.
 *
 * Each 4 KiB page holds a header {u32 magic "VHMC", u32 page index, u64 generation} and a
 * body of 64-bit words derived from (index, generation, word index): a page of another
 * index or generation is recognised as such, and any changed byte is found.
 *
 * One thread, ticks of --tick-ms (10 ms) to absolute deadlines. Per tick the writer
 * rewrites the next rate*tick worth of pages in order (cursor k; at the end it wraps and
 * the generation g goes up), verifying each page's full content before rewriting it.
 * Pages below k hold generation g, the others g-1. Every --scan-ms a header scan checks
 * every page's header against exactly that: cheap, and a stale whole page (a missed dirty
 * page) is what it catches. Output lines (one write() each):
 *
 *   VHLMC ready pages=<N> mb=<N> rate_mb_s=<R> first_gpa=0x<hex>
 *   VHLMC bad page=<i> gpa=0x<hex> kind=<stale|corrupt|foreign> seen_gen=<g'>
 *         expect_gen=<g> offset=<first bad byte>        (one line; first 16 bad pages)
 *   VHLMC scan=<S> pages=<N> bad=<total> written=<rewrites> gen=<g> ms=<CLOCK_MONOTONIC>
 *
 * A bad page is counted once, then rewritten with what it must hold. SIGTERM: one last
 * scan, its line, exit 0. --selftest clean|stale|flip|foreign runs on a small region in
 * simulated time (no sleeping), injecting the named fault, for the unit tests.
 *
 * Build: gcc -O2 -static -o vhostlm-memcheck memcheck.c (C99 + GNU, libc only).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE_B 4096u
#define WORDS (PAGE_SIZE_B / 8u)
#define MAGIC 0x434d4856u /* the bytes 'V' 'H' 'M' 'C' in little-endian memory */
#define STEP 0x9e3779b97f4a7c15ull
#define MAX_REPORTED 16
#define MAX_MB (1u << 20)

enum kind { OK = 0, STALE, CORRUPT, FOREIGN };
static const char *const kind_name[] = {"ok", "stale", "corrupt", "foreign"};

struct mc {
    uint64_t *mem;
    uint32_t npages;
    uint32_t mb;
    uint32_t cursor;      /* next page the writer rewrites */
    uint64_t gen;         /* generation pages < cursor hold; the others hold gen - 1 */
    uint8_t *badmap;      /* one bit per page: already counted as bad */
    uint64_t bad;         /* distinct bad pages so far */
    uint64_t written;     /* pages rewritten by the writer so far */
    uint64_t scans;
    int reported;         /* bad lines printed so far (at most MAX_REPORTED) */
    int out_fd;
    int pagemap_fd;
    int simulated;        /* selftest: ms= is simulated time */
    uint64_t sim_ms;
};

static volatile sig_atomic_t stop_requested;

static void on_term(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Print one line with a single write() (retrying only the rest of a short write). */
static void out_line(struct mc *m, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = (int)(sizeof buf - 2);
    buf[n++] = '\n';
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(m->out_fd, p, (size_t)n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        p += w;
        n -= (int)w;
    }
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* The body's base word of page (index, gen): every body word is base + w * STEP. */
static uint64_t body_base(uint32_t index, uint64_t gen)
{
    return mix64(((uint64_t)index << 32) ^ mix64(gen + 0x56484d43ull));
}

static uint64_t expect_word(uint32_t index, uint64_t gen, uint64_t base, unsigned w)
{
    if (w == 0)
        return (uint64_t)MAGIC | ((uint64_t)index << 32);
    if (w == 1)
        return gen;
    return base + (uint64_t)w * STEP;
}

static uint64_t *page_ptr(struct mc *m, uint32_t i)
{
    return m->mem + (size_t)i * WORDS;
}

static void write_page(struct mc *m, uint32_t i, uint64_t gen)
{
    uint64_t *p = page_ptr(m, i);
    uint64_t base = body_base(i, gen);
    p[0] = (uint64_t)MAGIC | ((uint64_t)i << 32);
    p[1] = gen;
    for (unsigned w = 2; w < WORDS; w++)
        p[w] = base + (uint64_t)w * STEP;
}

/* Byte offset of the first byte of page p that differs from page (index, gen), or -1. */
static long first_diff(const volatile uint64_t *p, uint32_t index, uint64_t gen)
{
    uint64_t base = body_base(index, gen);
    for (unsigned w = 0; w < WORDS; w++) {
        uint64_t x = p[w] ^ expect_word(index, gen, base, w);
        if (x)
            return (long)(w * 8u + (unsigned)__builtin_ctzll(x) / 8u);
    }
    return -1;
}

static uint64_t expected_gen(const struct mc *m, uint32_t i)
{
    return i < m->cursor ? m->gen : m->gen - 1;
}

/* What is wrong with page i, which must hold generation expect; OK if nothing. */
static enum kind classify(struct mc *m, uint32_t i, uint64_t expect, uint64_t *seen, long *offset)
{
    const volatile uint64_t *p = page_ptr(m, i);
    long off = first_diff(p, i, expect);
    uint64_t w0 = p[0], gen = p[1];
    uint32_t magic = (uint32_t)w0, index = (uint32_t)(w0 >> 32);
    *seen = gen;
    *offset = off;
    if (off < 0)
        return OK;
    if (magic != MAGIC)
        return CORRUPT;
    /* A whole, consistent page: of another index (misplaced) or an older generation. */
    if (index != i && index < m->npages && gen >= 1 && first_diff(p, index, gen) < 0)
        return FOREIGN;
    if (index == i && gen >= 1 && gen < expect && first_diff(p, i, gen) < 0)
        return STALE;
    return CORRUPT;
}

static uint64_t page_gpa(struct mc *m, uint32_t i)
{
    if (m->pagemap_fd < 0)
        return 0;
    uint64_t entry = 0;
    uintptr_t va = (uintptr_t)page_ptr(m, i);
    off_t pos = (off_t)(va / PAGE_SIZE_B) * 8;
    if (pread(m->pagemap_fd, &entry, sizeof entry, pos) != (ssize_t)sizeof entry)
        return 0;
    if (!(entry >> 63)) /* not present */
        return 0;
    uint64_t pfn = entry & ((1ull << 55) - 1);
    return pfn * PAGE_SIZE_B;
}

/* Count a bad page once, print it (first MAX_REPORTED), then rewrite it as expected. */
static void report_bad(struct mc *m, uint32_t i, enum kind k, uint64_t seen, uint64_t expect,
                       long offset)
{
    uint8_t bit = (uint8_t)(1u << (i & 7));
    if (!(m->badmap[i >> 3] & bit)) {
        m->badmap[i >> 3] |= bit;
        m->bad++;
        if (m->reported < MAX_REPORTED) {
            m->reported++;
            out_line(m,
                     "VHLMC bad page=%" PRIu32 " gpa=0x%" PRIx64 " kind=%s seen_gen=%" PRIu64
                     " expect_gen=%" PRIu64 " offset=%ld",
                     i, page_gpa(m, i), kind_name[k], seen, expect, offset);
        }
    }
    write_page(m, i, expect);
}

/* The writer: verify the page at the cursor in full, then rewrite it one generation on. */
static void write_next(struct mc *m)
{
    uint32_t i = m->cursor;
    uint64_t seen;
    long offset;
    uint64_t expect = m->gen - 1;
    enum kind k = classify(m, i, expect, &seen, &offset);
    if (k != OK)
        report_bad(m, i, k, seen, expect, offset);
    write_page(m, i, m->gen);
    m->written++;
    if (++m->cursor == m->npages) {
        m->cursor = 0;
        m->gen++;
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The header scan: every page's header must be exactly (magic, index, expected gen). */
static void scan(struct mc *m)
{
    for (uint32_t i = 0; i < m->npages; i++) {
        const volatile uint64_t *p = page_ptr(m, i);
        uint64_t expect = expected_gen(m, i);
        if (p[0] == ((uint64_t)MAGIC | ((uint64_t)i << 32)) && p[1] == expect)
            continue;
        uint64_t seen;
        long offset;
        enum kind k = classify(m, i, expect, &seen, &offset);
        if (k != OK)
            report_bad(m, i, k, seen, expect, offset);
    }
    m->scans++;
    out_line(m,
             "VHLMC scan=%" PRIu64 " pages=%" PRIu32 " bad=%" PRIu64 " written=%" PRIu64
             " gen=%" PRIu64 " ms=%" PRIu64,
             m->scans, m->npages, m->bad, m->written, m->gen,
             m->simulated ? m->sim_ms : mono_ms());
}

static int setup_region(struct mc *m, uint32_t mb)
{
    size_t bytes = (size_t)mb << 20;
    m->mb = mb;
    m->npages = (uint32_t)(bytes / PAGE_SIZE_B);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "vhostlm-memcheck: mmap of %" PRIu32 " MiB failed: %s\n", mb,
                strerror(errno));
        return -1;
    }
#ifdef MADV_NOHUGEPAGE
    /* 4 KiB pages: one guest-physical page per checked page, and none moved by khugepaged. */
    madvise(mem, bytes, MADV_NOHUGEPAGE);
#endif
    /* mlock populates the region and keeps it in RAM; without it the first pass faults it in. */
    if (mlock(mem, bytes) != 0) {
#ifdef MADV_POPULATE_WRITE
        madvise(mem, bytes, MADV_POPULATE_WRITE);
#endif
    }
    m->mem = mem;
    m->badmap = calloc((m->npages + 7u) / 8u, 1);
    if (!m->badmap) {
        fprintf(stderr, "vhostlm-memcheck: out of memory\n");
        return -1;
    }
    m->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    /* The first pass: generation 1 everywhere, at full speed. */
    for (uint32_t i = 0; i < m->npages; i++)
        write_page(m, i, 1);
    m->gen = 2;
    m->cursor = 0;
    return 0;
}

static void print_ready(struct mc *m, int rate)
{
    out_line(m, "VHLMC ready pages=%" PRIu32 " mb=%" PRIu32 " rate_mb_s=%d first_gpa=0x%" PRIx64,
             m->npages, m->mb, rate, page_gpa(m, 0));
}

/* Open the output: a serial tty gets raw mode and CLOCAL (no carrier wait, no \r added);
 * a regular file is created or appended to. */
static int open_out(const char *path)
{
    int fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        return -1;
    struct termios t;
    if (tcgetattr(fd, &t) == 0) {
        cfmakeraw(&t);
        t.c_cflag |= CLOCAL;
        tcsetattr(fd, TCSANOW, &t);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

/* Pages-per-second bookkeeping: each tick earns rate * 256 credits, a page costs ticks/s. */
struct pacer {
    uint64_t credit;
    uint64_t earn;
    uint64_t cost;
};

static void pace_tick(struct mc *m, struct pacer *pc)
{
    pc->credit += pc->earn;
    while (pc->credit >= pc->cost) {
        pc->credit -= pc->cost;
        write_next(m);
    }
}

static void ts_add_ms(struct timespec *ts, unsigned ms)
{
    ts->tv_sec += ms / 1000u;
    ts->tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_nsec -= 1000000000L;
        ts->tv_sec++;
    }
}

static uint64_t ts_ms(const struct timespec *ts)
{
    return (uint64_t)ts->tv_sec * 1000u + (uint64_t)ts->tv_nsec / 1000000u;
}

static int run_loop(struct mc *m, int rate, unsigned tick_ms, unsigned scan_ms)
{
    struct pacer pc = {0, (uint64_t)rate * 256u * tick_ms, 1000u};
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint64_t next_scan = ts_ms(&next) + scan_ms;
    while (!stop_requested) {
        ts_add_ms(&next, tick_ms);
        int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        if (r == EINTR)
            continue;
        uint64_t now = mono_ms();
        if (now > ts_ms(&next) + 1000u) {
            /* Far behind (the guest was paused): start again from now rather than burst. */
            clock_gettime(CLOCK_MONOTONIC, &next);
        }
        pace_tick(m, &pc);
        if (now >= next_scan) {
            scan(m);
            next_scan += scan_ms;
            if (next_scan <= now)
                next_scan = now + scan_ms;
        }
    }
    scan(m);
    return 0;
}

/* The selftest: a small region in simulated time, with one injected fault (or none). */
static int selftest(struct mc *m, const char *mode)
{
    enum { TICK_MS = 10, SCAN_TICKS = 8, PAGES_PER_TICK = 8 };
    const uint32_t target = m->npages / 2 + 44, other = target + 1;
    const long flip_at = 1234;
    int is_stale = !strcmp(mode, "stale"), is_flip = !strcmp(mode, "flip");
    int is_foreign = !strcmp(mode, "foreign");
    uint64_t *saved = malloc(PAGE_SIZE_B);
    if (!saved)
        return 1;
    m->simulated = 1;
    int injected = 0;
    unsigned ticks_per_round = (m->npages + PAGES_PER_TICK - 1) / PAGES_PER_TICK;
    unsigned total_ticks = 3 * ticks_per_round;
    for (unsigned t = 1; t <= total_ticks; t++) {
        for (int n = 0; n < PAGES_PER_TICK; n++)
            write_next(m);
        m->sim_ms += TICK_MS;
        /* Inject once, in the second round (gen 3), while the cursor is below the target. */
        if (!injected && m->gen == 3 && m->cursor >= 8 && m->cursor < target - 16) {
            if (is_stale) {
                /* a copy of the page now; the writer rewrites it; the old copy comes back */
                memcpy(saved, page_ptr(m, target), PAGE_SIZE_B);
                while (m->cursor <= target + 8)
                    write_next(m);
                memcpy(page_ptr(m, target), saved, PAGE_SIZE_B);
                out_line(m, "VHLMC inject mode=stale page=%" PRIu32 " offset=8", target);
            } else if (is_flip) {
                ((uint8_t *)page_ptr(m, target))[flip_at] ^= 0xff;
                out_line(m, "VHLMC inject mode=flip page=%" PRIu32 " offset=%ld", target,
                         flip_at);
            } else if (is_foreign) {
                memcpy(page_ptr(m, target), page_ptr(m, other), PAGE_SIZE_B);
                out_line(m, "VHLMC inject mode=foreign page=%" PRIu32 " offset=4", target);
            }
            injected = 1;
        }
        if (t % SCAN_TICKS == 0)
            scan(m);
    }
    scan(m);
    free(saved);
    return 0;
}

static int parse_uint(const char *s, const char *name, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || errno || s[0] == '-' || v > max) {
        fprintf(stderr, "vhostlm-memcheck: %s wants a whole number up to %lu, not '%s'\n", name,
                max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: vhostlm-memcheck --mb N [--rate-mb-s R] [--scan-ms MS] [--tick-ms MS]\n"
          "                        [--out PATH] [--selftest clean|stale|flip|foreign]\n"
          "Owns N MiB of RAM, rewrites it at R MiB/s (default 8) and verifies every page;\n"
          "prints VHLMC lines to PATH (default stdout).\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mb", required_argument, NULL, 'm'},       {"rate-mb-s", required_argument, NULL, 'r'},
        {"scan-ms", required_argument, NULL, 's'},  {"tick-ms", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},      {"selftest", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    unsigned long mb = 0, rate = 8, scan_ms = 500, tick_ms = 10;
    int have_mb = 0;
    const char *out = NULL, *mode = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (parse_uint(optarg, "--mb", MAX_MB, &mb))
                return 2;
            have_mb = 1;
            break;
        case 'r':
            if (parse_uint(optarg, "--rate-mb-s", 1u << 16, &rate))
                return 2;
            break;
        case 's':
            if (parse_uint(optarg, "--scan-ms", 3600000u, &scan_ms) || !scan_ms)
                goto bad;
            break;
        case 't':
            if (parse_uint(optarg, "--tick-ms", 1000u, &tick_ms) || !tick_ms)
                goto bad;
            break;
        case 'o':
            out = optarg;
            break;
        case 'T':
            mode = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vhostlm-memcheck: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (mode && strcmp(mode, "clean") && strcmp(mode, "stale") && strcmp(mode, "flip") &&
        strcmp(mode, "foreign")) {
        fprintf(stderr, "vhostlm-memcheck: --selftest takes clean, stale, flip or foreign\n");
        return 2;
    }
    if (mode && !have_mb)
        mb = 4;
    if (mb == 0) {
        fprintf(stderr, "vhostlm-memcheck: --mb N (N >= 1 MiB) is required\n");
        return 2;
    }

    /* SIGTERM (or SIGINT) from now on, even during the first pass: a last scan, exit 0. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct mc m;
    memset(&m, 0, sizeof m);
    m.out_fd = STDOUT_FILENO;
    if (out) {
        m.out_fd = open_out(out);
        if (m.out_fd < 0) {
            fprintf(stderr, "vhostlm-memcheck: cannot open %s: %s\n", out, strerror(errno));
            return 2;
        }
        /* from now on, errors go where the host reads (the console stays the shell's) */
        dup2(m.out_fd, STDERR_FILENO);
    }
    if (setup_region(&m, (uint32_t)mb) != 0)
        return 1;
    print_ready(&m, (int)rate);
    if (mode)
        return selftest(&m, mode);
    return run_loop(&m, (int)rate, (unsigned)tick_ms, (unsigned)scan_ms);

bad:
    fprintf(stderr, "vhostlm-memcheck: --scan-ms and --tick-ms must be at least 1\n");
    return 2;
}
