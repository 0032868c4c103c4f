/* Token set-up: read a configured token or file, or generate one into a private file. */
#include "tandem/token.h"
#include "tandem/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN_RANDOM_BYTES 32

int token_default_path(char *out, size_t outsz)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (xdg && xdg[0] == '/') {
        n = snprintf(out, outsz, "%s/tandem/token", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || home[0] != '/') {
            struct passwd *pw = getpwuid(getuid());
            home = pw ? pw->pw_dir : NULL;
        }
        if (!home)
            return -1;
        n = snprintf(out, outsz, "%s/.local/state/tandem/token", home);
    }
    return (n < 0 || (size_t)n >= outsz) ? -1 : 0;
}

static int valid_token(const char *t, size_t n)
{
    if (n < 16 || n > TOKEN_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f)
            return 0;
    return 1;
}

/* Reads the first line of an already opened token file into app. */
static int read_token_fd(struct app *app, int fd, const char *path, FILE *err)
{
    char buf[TOKEN_MAX_LEN + 64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n < 0) {
        fprintf(err, "tandemd: cannot read token file %s: %s\n", path, strerror(errno));
        return -1;
    }
    buf[n] = '\0';
    size_t len = strcspn(buf, "\r\n");
    while (len && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        len--;
    if (!valid_token(buf, len)) {
        fprintf(err, "tandemd: token file %s must hold one line of 16-256 printable ASCII characters\n", path);
        return -1;
    }
    memcpy(app->token, buf, len);
    app->token[len] = '\0';
    app->token_len = len;
    explicit_bzero(buf, sizeof buf);
    return 0;
}

static int mkdir_private(const char *dir, FILE *err)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    /* parents: ordinary user directories */
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
            fprintf(err, "tandemd: cannot create %s: %s\n", tmp, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(err, "tandemd: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        fprintf(err, "tandemd: %s must be a directory owned by this user\n", dir);
        return -1;
    }
    if ((st.st_mode & 077) && chmod(dir, 0700) != 0) {
        fprintf(err, "tandemd: cannot make %s private (chmod 0700): %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int generate(struct app *app, const char *path, FILE *err)
{
    unsigned char raw[TOKEN_RANDOM_BYTES];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        fprintf(err, "tandemd: cannot get random bytes for the token: %s\n", strerror(errno));
        return -1;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        app->token[2 * i] = hex[raw[i] >> 4];
        app->token[2 * i + 1] = hex[raw[i] & 15];
    }
    app->token_len = 2 * sizeof raw;
    app->token[app->token_len] = '\0';
    explicit_bzero(raw, sizeof raw);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(err, "tandemd: cannot create token file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[TOKEN_MAX_LEN + 2];
    int n = snprintf(line, sizeof line, "%s\n", app->token);
    int ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    close(fd);
    explicit_bzero(line, sizeof line);
    if (!ok) {
        fprintf(err, "tandemd: cannot write token file %s\n", path);
        unlink(path);
        return -1;
    }
    log_info("token_generated", "token_file=%s", path);
    return 0;
}

int token_setup(struct app *app, const struct config *cfg, FILE *err)
{
    if (cfg->token) {
        app->token_len = strlen(cfg->token);
        memcpy(app->token, cfg->token, app->token_len + 1);
        app->token_path[0] = '\0';
        return 0;
    }
    int generated_location = !cfg->token_file;
    if (cfg->token_file) {
        snprintf(app->token_path, sizeof app->token_path, "%s", cfg->token_file);
    } else if (token_default_path(app->token_path, sizeof app->token_path) != 0) {
        fprintf(err, "tandemd: no place for the token file: set XDG_RUNTIME_DIR or HOME, or TANDEM_TOKEN_FILE\n");
        return -1;
    }
    const char *path = app->token_path;
    /* our own location must not be a planted link; a configured file may be one (Kubernetes
     * Secret volumes expose each key as a symlink): its target's mode is checked below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | (generated_location ? O_NOFOLLOW : 0));
    if (fd < 0 && errno == ENOENT && generated_location) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        if (mkdir_private(dir, err) != 0)
            return -1;
        if (generate(app, path, err) == 0)
            return 0;
        /* lost a race with another instance creating it: read theirs */
        fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
        fprintf(err, "tandemd: cannot open token file %s (TANDEM_TOKEN_FILE): %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(err, "tandemd: token file %s is not a regular file\n", path);
    } else if (generated_location && (st.st_uid != geteuid() || (st.st_mode & 077))) {
        /* our own file: must be private and ours, or someone may have planted or read it */
        fprintf(err, "tandemd: refusing token file %s: it must be owned by this user with mode 0600 (chmod 600 it, or delete it to get a new token)\n", path);
    } else if (!generated_location && (st.st_mode & (S_IWGRP | S_IRWXO))) {
        /* mounted secrets may be group-readable (fsGroup), never world-accessible */
        fprintf(err, "tandemd: refusing TANDEM_TOKEN_FILE %s: it is writable by group or accessible by others (use mode 0400, 0440 or 0600)\n", path);
    } else {
        rc = read_token_fd(app, fd, path, err);
    }
    close(fd);
    if (rc == 0)
        log_info("token_loaded", "token_file=%s", path);
    return rc;
}
