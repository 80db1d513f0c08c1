/* The native thin client: the fast path of the Python thin client, without a Python start.

   Usage (as the installer writes it into a settings file):
     hookopt-client stack SCOPE PYTHON -S /abs/hooks/stack.py [SCOPE]   a consolidated event
     hookopt-client legacy - PYTHON -S SCRIPT [ARGS...]                 one installed stub

   It reads the event on stdin, sends one frame (wire.py's format: for stack, SCOPE as the
   argv section; for legacy, SCRIPT and ARGS as the stub would send them) to the project's
   daemon and writes the daemon's answer: stdout, stderr, exit code. Whenever that is not
   the plain case (no daemon, a daemon of another user, an unsafe runtime directory,
   optimization switched off, an oversized event, a refusal, a timeout...), it execs
   PYTHON [PYTHON-ARGS...] with the same environment and the event it read on stdin: the
   Python client then does what it always does (start the daemon, evaluate in-process).
   Once it has tried the daemon (connected or not), HOOKOPT_CLIENT_ASKED=1 tells the Python
   client not to ask and wait a second time. A stub run while its original runs (LEGACY_ENV) is
   exec'd before anything is read: it runs the original itself.

   Linux only (memfd_create, SO_PEERCRED). Built by the installer: cc -O2 -Wall. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <fcntl.h>

#define VERSION 1
#define MAX_EVENT_BYTES (16 * 1024 * 1024) /* wire.MAX_EVENT_BYTES */
#define MAX_HEADER_BYTES 4096
#define DEFAULT_TIMEOUT_MS 3000
#define ASKED_ENV "HOOKOPT_CLIENT_ASKED"
#define LEGACY_ENV "HOOKOPT_RUNNING_LEGACY" /* wire.LEGACY_ENV */
#define USAGE "usage: hookopt-client stack SCOPE PYTHON [PYTHON-ARGS...]\n       hookopt-client legacy - PYTHON -S SCRIPT [ARGS...]\n"

extern char **environ;

static char **python_argv;
static char *body;
static size_t body_len;

/* A file holding the event, at offset 0: a memfd, else an unnamed file in /tmp; -1 if neither. */
static int replay_fd(void) {
    int fd = memfd_create("hookopt-event", 0);
    if (fd < 0) fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < body_len) {
        ssize_t n = write(fd, body + done, body_len - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += (size_t)n;
    }
    if (done != body_len || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Become the Python client, the event we read replayed on its stdin. */
static void hand_over(int asked) {
    int fd = replay_fd();
    if (fd < 0 || dup2(fd, 0) != 0) {
        /* The event is read and cannot be passed on: block rather than let the call through. */
        fprintf(stderr, "hookopt-client: cannot pass the event on to %s: %s\n", python_argv[0], strerror(errno));
        exit(2);
    }
    close(fd);
    if (asked) setenv(ASKED_ENV, "1", 1);
    execv(python_argv[0], python_argv);
    fprintf(stderr, "hookopt-client: cannot run %s: %s\n", python_argv[0], strerror(errno));
    exit(2); /* blocking, as python3 exits when it cannot open its script: never fail open */
}

/* All of buf to fd; to the socket with MSG_NOSIGNAL: a daemon that closes early must not
   kill us with SIGPIPE, which would let the call through. */
static int write_all(int fd, const char *buf, size_t len, int is_socket) {
    while (len) {
        ssize_t n = is_socket ? send(fd, buf, len, MSG_NOSIGNAL) : write(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_exactly(int fd, char *buf, size_t len) {
    while (len) {
        ssize_t n = read(fd, buf, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* stdin up to MAX_EVENT_BYTES + 1, as the Python client reads it. */
static int read_body(void) {
    size_t cap = 1 << 16;
    body = malloc(cap);
    if (!body) return -1;
    for (;;) {
        if (body_len == cap) {
            if (cap > MAX_EVENT_BYTES) return 0;
            cap *= 2;
            char *grown = realloc(body, cap);
            if (!grown) return -1;
            body = grown;
        }
        size_t want = cap - body_len;
        if (body_len + want > (size_t)MAX_EVENT_BYTES + 1) want = (size_t)MAX_EVENT_BYTES + 1 - body_len;
        if (want == 0) return 0;
        ssize_t n = read(0, body + body_len, want);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) return 0;
        body_len += (size_t)n;
    }
}

/* wire.project_key: FNV-1a 64 of the project path. */
static uint64_t project_key(const char *project) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (const unsigned char *p = (const unsigned char *)project; *p; p++) h = (h ^ *p) * 0x100000001B3ULL;
    return h;
}

/* The environment as posix.environ holds it: entries with '=', the first of a repeated name. */
static int is_first(char **env, char **entry) {
    size_t name = (size_t)(strchr(*entry, '=') - *entry);
    for (char **e = env; e < entry; e++)
        if (strncmp(*e, *entry, name + 1) == 0) return 0;
    return 1;
}

struct buf {
    char *data;
    size_t len, cap;
};

static int put(struct buf *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return -1;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

static int environment(struct buf *env) {
    int first = 1;
    for (char **e = environ; *e; e++) {
        if (!strchr(*e, '=') || !is_first(environ, e)) continue;
        if ((!first && put(env, "", 1)) || put(env, *e, strlen(*e))) return -1;
        first = 0;
    }
    return 0;
}

/* The header's integer field, or -1 when absent. */
static long field(const char *header, const char *name) {
    const char *at = strstr(header, name);
    if (!at) return -1;
    char *end;
    long value = strtol(at + strlen(name), &end, 10);
    return end == at + strlen(name) ? -1 : value;
}

static long timeout_ms(const char *dir, const char *key) {
    char path[1100], text[33] = {0};
    snprintf(path, sizeof path, "%s/%s.timeout", dir, key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return DEFAULT_TIMEOUT_MS;
    ssize_t n = read(fd, text, 32);
    close(fd);
    char *end = text;
    long ms = n > 0 ? strtol(text, &end, 10) : -1;
    while (*end == ' ' || *end == '\n' || *end == '\t' || *end == '\r') end++;
    return end != text && *end == 0 && ms >= 0 ? ms : DEFAULT_TIMEOUT_MS;
}

int main(int argc, char **argv) {
    const char *op = argc > 1 ? argv[1] : "";
    int legacy = strcmp(op, "legacy") == 0;
    if (argc < 4 || (!legacy && strcmp(op, "stack") != 0)) {
        fputs(USAGE, stderr);
        return 2;
    }
    python_argv = argv + 3;
    if (legacy && (argc < 6 || strcmp(python_argv[1], "-S") != 0 || getenv(LEGACY_ENV))) {
        execv(python_argv[0], python_argv); /* the stub itself, stdin untouched */
        fprintf(stderr, "hookopt-client: cannot run %s: %s\n", python_argv[0], strerror(errno));
        return 2;
    }
    if (read_body() < 0 || body_len > MAX_EVENT_BYTES) hand_over(0);

    const char *off = getenv("CLAUDE_HOOKS_OPTIMIZATION");
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; off && i < sizeof no / sizeof *no; i++)
        if (strcasecmp(off, no[i]) == 0) hand_over(0);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) hand_over(0);
    const char *project = getenv("CLAUDE_PROJECT_DIR");
    if (!project || !*project) project = cwd;

    const char *root = getenv("HOOKOPT_RUNTIME_DIR");
    char dir[1024], key[17], path[1100];
    if ((size_t)snprintf(dir, sizeof dir, "%s/hookopt-%u", root && *root ? root : "/tmp", (unsigned)getuid()) >= sizeof dir)
        hand_over(0);
    snprintf(key, sizeof key, "%016llx", (unsigned long long)project_key(project));
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077)) hand_over(0);
    snprintf(path, sizeof path, "%s/%s.disabled", dir, key);
    if (access(path, F_OK) == 0) hand_over(0);

    struct buf frame = {0}, env = {0}, args = {0};
    if (environment(&env)) hand_over(0);
    /* stack: the scope; legacy: the stub's sys.argv[1:], NUL-separated, its sys.argv[0] the script. */
    const char *script = legacy ? python_argv[2] : "";
    char **first = legacy ? python_argv + 3 : argv + 2;
    for (char **a = first; *a && (legacy || a == first); a++)
        if ((a != first && put(&args, "", 1)) || put(&args, *a, strlen(*a))) hand_over(0);
    size_t project_len = strlen(project), cwd_len = strlen(cwd), script_len = strlen(script);
    char header[512];
    int header_len = snprintf(header, sizeof header,
        "{\"v\":%d,\"op\":\"%s\",\"project\":%zu,\"env\":%zu,\"cwd\":%zu,\"script\":%zu,\"argv\":%zu,\"body\":%zu}",
        VERSION, op, project_len, env.len, cwd_len, script_len, args.len, body_len);
    if (header_len <= 0 || header_len >= (int)sizeof header) hand_over(0);
    unsigned char size[4] = {header_len >> 24, header_len >> 16, header_len >> 8, header_len};
    if (put(&frame, size, 4) || put(&frame, header, (size_t)header_len) || put(&frame, project, project_len)
        || put(&frame, env.data, env.len) || put(&frame, cwd, cwd_len) || put(&frame, script, script_len)
        || put(&frame, args.data, args.len) || put(&frame, body, body_len))
        hand_over(0);

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if ((size_t)snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s.sock", dir, key) >= sizeof addr.sun_path) hand_over(0);
    long ms = timeout_ms(dir, key);
    if (ms <= 0) hand_over(0);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) hand_over(0);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    /* From here on the Python client would have asked and failed the same way (refused, timed
       out, a stranger): it starts the daemon and answers itself, without asking again. */
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) hand_over(1);
    struct ucred cred;
    socklen_t cred_len = sizeof cred;
    /* Only trust a daemon running as us: anyone else could answer "allow". */
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0 || cred.uid != getuid()) hand_over(1);
    if (write_all(sock, frame.data, frame.len, 1)) hand_over(1);
    shutdown(sock, SHUT_WR);

    unsigned char reply_size[4];
    char reply[MAX_HEADER_BYTES + 1];
    if (read_exactly(sock, (char *)reply_size, 4)) hand_over(1);
    uint32_t n = (uint32_t)reply_size[0] << 24 | reply_size[1] << 16 | reply_size[2] << 8 | reply_size[3];
    if (n > MAX_HEADER_BYTES || read_exactly(sock, reply, n)) hand_over(1);
    reply[n] = 0;
    long code = field(reply, "\"exit\":"), out_len = field(reply, "\"out\":"), err_len = field(reply, "\"err\":");
    if (strstr(reply, "\"error\"") || field(reply, "\"v\":") != VERSION || out_len < 0 || err_len < 0
        || strstr(reply, "\"exit\":") == NULL)
        hand_over(1);
    char *out = malloc((size_t)out_len + (size_t)err_len + 1);
    if (!out || read_exactly(sock, out, (size_t)(out_len + err_len))) hand_over(1);
    close(sock);
    write_all(1, out, (size_t)out_len, 0);
    write_all(2, out + out_len, (size_t)err_len, 0);
    return (int)code;
}
